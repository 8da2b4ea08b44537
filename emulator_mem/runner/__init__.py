"""Run x86 PE payloads as Windows processes over the memory manager.

* :class:`Process` — load a PE32/PE32+ image (``Process.load``/``load_file``), run it
  (``run``), snapshot it (``save``) and restore it into a fresh CPU (``Process.resume``);
* :mod:`.api` — the registry of emulated DLL functions (``@api``) and data imports;
* :mod:`.kernel32` — the built-in kernel32 handlers over :class:`~emulator_mem.win32.Kernel32`;
* :mod:`.environment`, :mod:`.heap`, :mod:`.stubs`, :mod:`.console` — TEB/PEB/stack, the
  process heap, the import stubs and the console, each a piece of the process;
* :mod:`.devices` — ``devices.dll`` data imports: MMIO devices from ``hooks/devices.py``;
* :mod:`.persist` — snapshots of whole processes; :mod:`.plugins` — ``hooks/`` loading.
"""

from __future__ import annotations

from .api import ApiCall, ApiSpec, api, data_import
from .process import Process, RunResult
from .report import GuestException

__all__ = ["ApiCall", "ApiSpec", "GuestException", "Process", "RunResult", "api", "data_import"]
