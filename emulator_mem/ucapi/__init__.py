"""Unicorn's own API on a ``Uc`` the manager runs: existing Unicorn code works unchanged.

:func:`install` (called by ``MemoryManager.__init__``) replaces the memory methods of that one
``Uc`` instance — ``mem_map``, ``mem_map_ptr``, ``mmio_map``, ``mem_unmap``, ``mem_protect``,
``mem_regions``, ``mem_read``, ``mem_write``, ``hook_add``, ``hook_del`` — with versions that
keep Unicorn's documented behaviour but act on the manager's Windows address space in virtual
addresses (:mod:`.memory`, :mod:`.hooks`). ``emu_start`` is wrapped one layer down (the MMU)
and raises the ``UcError`` plain Unicorn would. The layers below reach Unicorn itself
through :mod:`emulator_mem.mmu.raw`.
"""

from __future__ import annotations

from .hooks import UnicornHooks
from .host import Manager
from .memory import UnicornMemory

__all__ = ["UnicornApi", "install"]


class UnicornApi:
    """The replaced methods of one ``Uc``; ``mm.unicorn`` holds it."""

    def __init__(self, mm: Manager) -> None:
        self.memory = UnicornMemory(mm)
        self.hooks = UnicornHooks(mm)


def install(mm: Manager) -> UnicornApi:
    api = UnicornApi(mm)
    uc, memory, hooks = mm.uc, api.memory, api.hooks
    uc.mem_map = memory.mem_map
    uc.mem_map_ptr = memory.mem_map_ptr
    uc.mmio_map = memory.mmio_map
    uc.mem_unmap = memory.mem_unmap
    uc.mem_protect = memory.mem_protect
    uc.mem_regions = memory.mem_regions
    uc.mem_read = memory.mem_read
    uc.mem_write = memory.mem_write
    uc.hook_add = hooks.hook_add
    uc.hook_del = hooks.hook_del
    mm.mmu.holes.read_memory = mm.try_read
    mm.mmu.holes.write_memory = memory.write_through_prot
    return api
