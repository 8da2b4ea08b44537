"""Unicorn's memory calls on a ``Uc`` the manager runs: one address space, Unicorn's rules.

``uc.mem_map`` & co. keep their documented behaviour — arguments, ``UcError`` codes, region
splitting, what ``mem_regions()`` lists — but act on the manager's Windows address space, in
virtual addresses:

* ``mem_map`` commits private memory at exactly that address (one allocation, so
  ``VirtualQuery`` sees it and ``VirtualFree(base, 0, MEM_RELEASE)`` releases it whole);
  the protection comes from :mod:`emulator_mem.ucapi.perms`. Below the end of the identity
  area (4 GiB for 32-bit guests, 128 TiB for 64-bit ones) pages are identity backed like any
  allocation; higher 64-bit mappings get a host buffer of their own in the alias area.
* ``mem_map_ptr`` puts the caller's buffer in the alias area and points the virtual pages
  at it: guest, ``uc.mem_read`` and the caller's pointer all see the same bytes.
* ``mmio_map`` is an MMIO allocation whose callbacks get Unicorn's arguments.
* ``mem_unmap``/``mem_protect`` work on any committed page range, across allocations,
  splitting them (a partial unmap releases those pages, as NtFreeVirtualMemory would);
  ``mem_regions()`` lists committed runs and splits them where Unicorn would have split its
  regions (every ``mem_protect``/``mem_unmap`` edge), never merging — as Unicorn never does.
* ``mem_read``/``mem_write`` are host accesses by virtual address (protection ignored, as in
  Unicorn) and raise ``UC_ERR_READ_UNMAPPED``/``UC_ERR_WRITE_UNMAPPED`` on uncommitted pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedSet
from unicorn import (
    UC_ERR_ARG,
    UC_ERR_MAP,
    UC_ERR_NOMEM,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
    UcError,
)

from ..errors import EmulatorMemError, MemoryAccessError
from ..mmu.physmem import Chunk
from ..regions import mmio
from ..space.address_space import PAGE_SHIFT, Allocation, RegionKind
from ..windows import constants as C
from .host import Manager
from .perms import PAGE_FROM_UC, UC_PROT_ALL, uc_perms

PAGE_MASK = 0xFFF


@dataclass(slots=True, eq=False)
class HostBacking:
    """The host buffer behind a mapping outside the identity area (``mem_map_ptr``, or a
    64-bit ``mem_map`` above it); released with the last of its pages."""

    chunk: Chunk
    live_pages: int


class UnicornMemory:
    """The instance's ``mem_map``, ``mem_map_ptr``, ``mmio_map``, ``mem_unmap``,
    ``mem_protect``, ``mem_regions``, ``mem_read`` and ``mem_write``."""

    def __init__(self, mm: Manager) -> None:
        self.mm = mm
        self.uc = mm.uc
        #: highest address + 1 a mapping may reach (the guest's address width)
        self.limit = 1 << (64 if mm.is_64bit else 32)
        #: region edges Unicorn would keep inside allocations: every mem_protect's ends
        self.edges: SortedSet = SortedSet()
        mm.on_release.append(self._on_release)

    # -- mapping ---------------------------------------------------------------------------
    def mem_map(self, address: int, size: int, perms: int = UC_PROT_ALL) -> None:
        self._check_new(address, size, perms)
        protect = PAGE_FROM_UC[perms]
        if address + size <= self.mm.phys.identity_end:
            self._insert(Allocation(address, size, protect, RegionKind.PRIVATE, phys_base=address))
        else:
            chunk = self.mm.phys.alias_chunk(size)
            self._insert(Allocation(address, size, protect, RegionKind.PRIVATE, phys_base=chunk.phys,
                                    owner=HostBacking(chunk, size >> PAGE_SHIFT)))

    def mem_map_ptr(self, address: int, size: int, perms: int, ptr: int) -> None:
        if not ptr:
            raise UcError(UC_ERR_ARG)
        self._check_new(address, size, perms)
        chunk = self.mm.phys.map_foreign(size, ptr)
        self._insert(Allocation(address, size, PAGE_FROM_UC[perms], RegionKind.PRIVATE,
                                phys_base=chunk.phys, owner=HostBacking(chunk, size >> PAGE_SHIFT)))

    def mmio_map(self, address: int, size: int, read_cb: Callable[..., int] | None, read_ud: Any,
                 write_cb: Callable[..., None] | None, write_ud: Any) -> None:
        """MMIO with Unicorn's callbacks: ``read_cb(uc, offset, size, read_ud) -> int`` and
        ``write_cb(uc, offset, size, value, write_ud)``, offsets from ``address``.

        As in Unicorn, a missing callback takes the right away: no ``write_cb`` makes the
        range read-only; with no ``read_cb`` (write-only, which x86 cannot express) reads
        return 0.
        """
        self._check_new(address, size, UC_PROT_ALL)
        uc = self.uc

        # Unicorn delivers MMIO in accesses of at most 4 bytes (8-byte ones as two halves,
        # low first); host reads and writes through the manager do the same here
        def read(offset: int, n: int) -> int:
            if read_cb is None:
                return 0
            if n == 8:
                return read(offset, 4) | read(offset + 4, 4) << 32
            return int(read_cb(uc, offset, n, read_ud))

        def write(offset: int, n: int, value: int) -> None:
            if write_cb is None:
                return
            if n == 8:
                write(offset, 4, value & 0xFFFFFFFF)
                write(offset + 4, 4, value >> 32)
                return
            write_cb(uc, offset, n, value, write_ud)

        protect = C.PAGE_READWRITE if write_cb is not None else (
            C.PAGE_READONLY if read_cb is not None else C.PAGE_NOACCESS)
        phys = self.mm.phys.alias_range(size)
        device = mmio.MmioDevice(address, size, phys, read, write)
        mmio.map_device(uc, device)
        self._insert(Allocation(address, size, protect, RegionKind.MMIO, phys_base=phys, owner=device))

    def _check_new(self, address: int, size: int, perms: int) -> None:
        """Unicorn's ``mem_map_check``: UC_ERR_ARG for bad arguments, UC_ERR_MAP on overlap."""
        if (size <= 0 or address < 0 or address & PAGE_MASK or size & PAGE_MASK
                or perms & ~UC_PROT_ALL or address + size > self.limit):
            raise UcError(UC_ERR_ARG)
        if self.mm.space.overlaps(address, address + size):
            raise UcError(UC_ERR_MAP)

    def _insert(self, alloc: Allocation) -> None:
        self._forget_edges(alloc.base, alloc.end)
        self.mm.insert_allocation(alloc, reserve_only=False)

    # -- unmapping and protection ------------------------------------------------------------
    def mem_unmap(self, address: int, size: int) -> None:
        if size == 0:
            return  # Unicorn: nothing to unmap, whatever the address
        pieces = self._committed_pieces(address, size)
        for alloc, start, stop in pieces:
            whole = start == alloc.base and stop == alloc.end
            if alloc.alias_count or not whole and alloc.kind is not RegionKind.PRIVATE:
                raise UcError(UC_ERR_ARG)  # an alias source, or part of a view/image/MMIO
        mm = self.mm
        for alloc, start, stop in pieces:
            if start == alloc.base and stop == alloc.end:
                if getattr(alloc.owner, "unmap_only", False):
                    mm.unmap_view(alloc.base)
                else:
                    mm.release(alloc.base)
                continue
            mm.release(start, stop - start)
            backing = alloc.owner
            if isinstance(backing, HostBacking):
                self._drop_backing(backing, (stop - start) >> PAGE_SHIFT)
        self._forget_edges(address, address + size)

    def mem_protect(self, address: int, size: int, perms: int) -> None:
        if size == 0:
            return  # Unicorn: a trivial change, whatever the address
        if address & PAGE_MASK or size & PAGE_MASK or perms & ~UC_PROT_ALL:
            raise UcError(UC_ERR_ARG)
        pieces = self._committed_pieces(address, size)
        protect = PAGE_FROM_UC[perms]
        mm = self.mm
        for alloc, _, _ in pieces:
            if alloc.kind is RegionKind.MMIO:
                raise UcError(UC_ERR_ARG)  # MMIO rights come from its callbacks
            try:
                mm._page_protect(alloc, protect)
            except EmulatorMemError:
                raise UcError(UC_ERR_ARG) from None  # beyond what the section allows
        for _, start, stop in pieces:
            mm.protect(start, stop - start, protect)
        if pieces:
            self.edges.update((address, address + size))

    def _committed_pieces(self, address: int, size: int) -> list[tuple[Allocation, int, int]]:
        """(allocation, start, stop) pieces of a page range that must be committed throughout.

        UC_ERR_ARG for misaligned arguments, UC_ERR_NOMEM when a page is not mapped (as
        Unicorn's ``check_mem_area``). Size 0 is no range at all, as in Unicorn.
        """
        if address & PAGE_MASK or size & PAGE_MASK or size < 0 or address < 0:
            raise UcError(UC_ERR_ARG)
        pieces = []
        pos, end = address, address + size
        space = self.mm.space
        while pos < end:
            alloc = space.find(pos)
            if alloc is None:
                raise UcError(UC_ERR_NOMEM)
            stop = min(end, alloc.end)
            first, last = (pos - alloc.base) >> PAGE_SHIFT, (stop - alloc.base) >> PAGE_SHIFT
            if not alloc.all_pages(first, last, bool):
                raise UcError(UC_ERR_NOMEM)
            pieces.append((alloc, pos, stop))
            pos = stop
        return pieces

    # -- regions and edges -------------------------------------------------------------------
    def mem_regions(self) -> Iterator[tuple[int, int, int]]:
        """(begin, end inclusive, UC_PROT_* perms) of every committed run, in address order."""
        out = []
        edges = self.edges
        for alloc in self.mm.space:
            for s, e, p in alloc.runs():
                if not p:
                    continue
                start, stop = alloc.base + (s << PAGE_SHIFT), alloc.base + (e << PAGE_SHIFT)
                perms = uc_perms(p)
                for edge in edges.irange(start, stop, inclusive=(False, False)):
                    out.append((start, edge - 1, perms))
                    start = edge
                out.append((start, stop - 1, perms))
        return iter(out)

    def _forget_edges(self, start: int, stop: int) -> None:
        for edge in list(self.edges.irange(start, stop)):
            self.edges.discard(edge)

    def _on_release(self, alloc: Allocation) -> None:
        """A whole allocation goes (any API): its edges and maybe its host buffer go too."""
        self._forget_edges(alloc.base, alloc.end)
        if isinstance(alloc.owner, HostBacking):
            self._drop_backing(alloc.owner, alloc.page_count)

    def _drop_backing(self, backing: HostBacking, pages: int) -> None:
        backing.live_pages -= pages
        if backing.live_pages <= 0 and backing.chunk.phys in self.mm.phys.chunks:
            self.mm.phys.release_chunk(backing.chunk)

    def write_through_prot(self, address: int, data: bytes) -> None:
        """A WRITE_PROT hook let a guest store through: as in Unicorn, it lands only if the
        page is writable by now (Unicorn drops stores to read-only RAM)."""
        alloc = self.mm.space.find(address)
        if alloc is not None and uc_perms(alloc.page_protect((address - alloc.base) >> PAGE_SHIFT)) & 2:
            self.mm.try_write(address, data)

    # -- host access -------------------------------------------------------------------------
    def mem_read(self, address: int, size: int) -> bytearray:
        try:
            return bytearray(self.mm.read(address, size))
        except MemoryAccessError:
            raise UcError(UC_ERR_READ_UNMAPPED, address, size) from None

    def mem_write(self, address: int, data: bytes) -> None:
        try:
            self.mm.write(address, data)
        except MemoryAccessError:
            raise UcError(UC_ERR_WRITE_UNMAPPED, address, len(data)) from None
