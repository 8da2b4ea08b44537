"""Drop-in hook plugins for emulator-mem (``emulator-mem run --hook NAME[:key=value,...]``).

A plugin is a module here with ``install(uc, mm, **options)`` that returns a handle whose
``remove()`` uninstalls it. Plugins read guest memory through ``mm`` (``mm.read`` sees views,
aliases and copy-on-write copies as the guest does and raises the manager's typed errors);
``uc.mem_read`` and memory hooks take virtual addresses too (:mod:`emulator_mem.ucapi`),
so code written for plain Unicorn also works. Two options are supplied by the runner when
the plugin accepts them:
``symbols`` (address -> name: API stubs, IAT slots, exports, the entry point) and
``output`` (a ``bytes`` sink: the process console).

* :mod:`hooks.tracer` — a capstone instruction trace with symbols, to a file;
* :mod:`hooks.access_log` — reads and writes inside chosen address ranges;
* :mod:`hooks.devices` — MMIO devices (a UART, a tick counter) via ``mm.allocate_mmio``.
"""
