"""``uc.hook_add`` for memory hooks, in virtual addresses whatever backs the page.

In the manager's virtual-TLB mode Unicorn hands memory hooks *physical* addresses and filters
their ranges by them. For ordinary memory that is the same thing (identity map), so a hook
gets registered with Unicorn as asked, clipped to the identity area, and runs at Unicorn's own
speed. Everything else — section views, copy-on-write copies, MMIO, ``mem_map_ptr`` buffers,
mappings above the identity area, and the *holes* refused accesses go to
(:mod:`emulator_mem.mmu.holes`) — lives above the identity area; one more registration over
that area runs a trampoline that turns the physical address back into the virtual one,
applies the caller's range and calls the callback with Unicorn's arguments.

Every memory hook also tells the MMU which virtual ranges it watches: a refused access
there is sent to a hole, so that Unicorn itself calls ``UC_HOOK_MEM_WRITE`` before
``UC_ERR_WRITE_UNMAPPED``, ``*_UNMAPPED``/``*_PROT`` hooks with the exact address, size and
value, and retries the access when one returns True.

Known limit: views of one section share its physical pages, so an access through one view
reaches a hook watching another view's range (at that view's address); and ``mm.map_alias``
views of identity pages (JIT dual mapping) are seen at the source's address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unicorn import (
    UC_HOOK_MEM_FETCH,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_AFTER,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
)

from ..mmu import raw
from ..mmu.holes import UC_MEM_FETCH, UC_MEM_READ, UC_MEM_WRITE
from .host import Manager

#: hook type bit -> the access it watches
ACCESS_OF_HOOK = {
    UC_HOOK_MEM_READ: UC_MEM_READ,
    UC_HOOK_MEM_READ_AFTER: UC_MEM_READ,
    UC_HOOK_MEM_READ_UNMAPPED: UC_MEM_READ,
    UC_HOOK_MEM_READ_PROT: UC_MEM_READ,
    UC_HOOK_MEM_WRITE: UC_MEM_WRITE,
    UC_HOOK_MEM_WRITE_UNMAPPED: UC_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT: UC_MEM_WRITE,
    UC_HOOK_MEM_FETCH: UC_MEM_FETCH,
    UC_HOOK_MEM_FETCH_UNMAPPED: UC_MEM_FETCH,
    UC_HOOK_MEM_FETCH_PROT: UC_MEM_FETCH,
}
INVALID = (UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED
           | UC_HOOK_MEM_READ_PROT | UC_HOOK_MEM_WRITE_PROT | UC_HOOK_MEM_FETCH_PROT)
MEMORY = INVALID | UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE | UC_HOOK_MEM_FETCH | UC_HOOK_MEM_READ_AFTER
TOP = (1 << 64) - 1


class UnicornHooks:
    """The instance's ``hook_add``/``hook_del``."""

    def __init__(self, mm: Manager) -> None:
        self.mm = mm
        self.uc = mm.uc
        #: public handle -> (Unicorn handles, accesses watched, begin, end)
        self._groups: dict[int, tuple[list[int], list[int], int, int]] = {}
        self._reverse_version = -1
        self._reverse: list[tuple[int, int, int]] = []  # (phys start, phys end, virtual start)
        self._private: dict[int, int] = {}  # physical page -> virtual page (copy-on-write)

    def hook_add(self, htype: int, callback: Callable[..., Any], user_data: Any = None,
                 begin: int = 1, end: int = 0, aux1: int = 0, aux2: int = 0) -> int:
        """``Uc.hook_add`` with memory-hook ranges and addresses in virtual terms."""
        uc = self.uc
        if not htype & MEMORY or htype & ~MEMORY:
            return raw.hook_add(uc, htype, callback, user_data, begin, end, aux1, aux2)
        phys = self.mm.phys
        everything = begin > end
        handles: list[int] = []
        try:
            if not htype & INVALID:
                # identity pages: physical == virtual, so Unicorn applies the range itself
                top = phys.identity_end - 1
                lo, hi = (0, top) if everything else (begin, min(end, top))
                if lo <= hi:
                    handles.append(raw.hook_add(uc, htype, callback, user_data, lo, hi))
            tramp = self._trampoline(callback, user_data, begin, end, bool(htype & INVALID))
            handles.append(raw.hook_add(uc, htype, tramp, None, phys.alias_base, TOP))
        except Exception:
            for handle in handles:
                raw.hook_del(uc, handle)
            raise
        accesses = sorted({a for bit, a in ACCESS_OF_HOOK.items() if htype & bit})
        self.mm.mmu.holes.watch(accesses, begin, end)
        self._groups[handles[0]] = (handles, accesses, begin, end)
        return handles[0]

    def hook_del(self, handle: int) -> None:
        group = self._groups.pop(handle, None)
        if group is None:
            raw.hook_del(self.uc, handle)
            return
        handles, accesses, begin, end = group
        for h in handles:
            raw.hook_del(self.uc, h)
        self.mm.mmu.holes.unwatch(accesses, begin, end)

    # -- physical -> virtual ------------------------------------------------------------------
    def _trampoline(self, callback: Callable[..., Any], user_data: Any, begin: int, end: int,
                    invalid: bool) -> Callable[..., Any]:
        everything = begin > end
        mmu = self.mm.mmu

        def trampoline(uc: Any, access: int, paddr: int, size: int, value: int, _ud: Any) -> Any:
            for vaddr in self.to_virtual(paddr):
                if everything or begin <= vaddr <= end:
                    break
            else:
                return False
            result = callback(uc, access, vaddr, size, value, user_data)
            if invalid and result:
                mmu.fault = None  # handled: the access goes on, no exception
            return result

        return trampoline

    def to_virtual(self, paddr: int) -> list[int]:
        """The virtual addresses a physical address above the identity area stands for.

        Several when views share a section's page: a hook then sees the one inside its range.
        """
        vaddr = self.mm.mmu.holes.to_virtual(paddr)
        if vaddr is not None:
            return [vaddr]
        if self._reverse_version != self.mm.space.layout_version:
            self._rebuild()
        page = self._private.get(paddr >> 12)
        if page is not None:
            return [page | (paddr & 0xFFF)]
        return [virtual + (paddr - start) for start, stop, virtual in self._reverse
                if start <= paddr < stop]

    def _rebuild(self) -> None:
        reverse: list[tuple[int, int, int]] = []
        private: dict[int, int] = {}
        for alloc in self.mm.space:
            if alloc.phys_base != alloc.base:
                reverse.append((alloc.phys_base, alloc.phys_base + alloc.size, alloc.base))
            if alloc.private_pages:
                for index, page in alloc.private_pages.items():
                    private[page >> 12] = alloc.base + (index << 12)
        self._reverse, self._private = reverse, private
        self._reverse_version = self.mm.space.layout_version
