"""Pure bookkeeping of a Windows address space: allocations and their page runs.

No Unicorn here. An :class:`Allocation` is one reservation (VirtualAlloc's AllocationBase);
its pages are stored run-length encoded as two parallel lists, ``starts`` (first page index of
each run) and ``protects`` (the run's protection, 0 meaning reserved-but-uncommitted). Runs are
kept canonical — neighbours always differ — so a run *is* the region VirtualQuery reports,
and a query costs one bisect. Allocations are indexed by base in a ``SortedDict`` and free
space in a :class:`~emulator_mem.freeranges.FreeRangeIndex`, so every operation is
O(log n) in the number of allocations.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict

from ..windows import constants as C
from .freeranges import FreeRangeIndex

PAGE_SHIFT = 12
PAGE_SIZE = C.PAGE_SIZE
GRANULARITY = C.ALLOCATION_GRANULARITY
SMALL_GRANULES = 4096  # allocations up to 256 MiB are indexed per 64 KiB granule


class RegionKind(enum.IntEnum):
    """What backs an allocation; :func:`memory_type` gives its Windows MEM_* type."""

    PRIVATE = 0
    MAPPED = 1  # a view of a section object
    IMAGE = 2  # a PE image mapped like the loader does
    MMIO = 3  # reads/writes go to Python callbacks


_MEMORY_TYPE = {
    RegionKind.PRIVATE: C.MEM_PRIVATE,
    RegionKind.MAPPED: C.MEM_MAPPED,
    RegionKind.IMAGE: C.MEM_IMAGE,
    RegionKind.MMIO: C.MEM_MAPPED,
}


def memory_type(kind: RegionKind) -> int:
    """The ``Type`` field VirtualQuery reports for a kind (MMIO looks like a mapped view)."""
    return _MEMORY_TYPE[kind]


def page_round_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def page_round_down(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


@dataclass(slots=True, eq=False)
class Allocation:
    """One reservation. ``phys_base`` is where page 0 lives in guest-physical memory.

    For ordinary memory ``phys_base == base`` (the identity map that keeps ``uc.mem_read`` and
    address-range hooks truthful); section views, aliases and MMIO point elsewhere.
    ``private_pages`` maps page index -> physical address for copy-on-write copies.
    """

    base: int
    size: int
    allocation_protect: int
    kind: RegionKind
    phys_base: int
    starts: list[int] = field(default_factory=lambda: [0])
    protects: list[int] = field(default_factory=lambda: [0])
    committed_pages: int = 0
    write_watch: set[int] | None = None  # page indexes written since the last reset
    name: str | None = None
    owner: Any = None  # the section / image / MMIO device / alias source behind it
    private_pages: dict[int, int] | None = None
    alias_count: int = 0  # live map_alias views of this allocation's pages
    #: pages of an identity-backed image whose copy-on-write was resolved (shared pages
    #: record theirs in ``private_pages``)
    copied: set[int] = field(default_factory=set)
    #: written pages a protection change has "latched": they survive a decommit (see
    #: :mod:`emulator_mem.regions.writewatch`); always a subset of ``write_watch``
    watch_latched: set[int] = field(default_factory=set)

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def page_count(self) -> int:
        return self.size >> PAGE_SHIFT

    def page_protect(self, index: int) -> int:
        """Protection of page ``index`` (0 = reserved)."""
        return self.protects[bisect_right(self.starts, index) - 1]

    def run_at(self, index: int) -> tuple[int, int, int]:
        """(first page, end page, protect) of the run holding page ``index``."""
        i = bisect_right(self.starts, index) - 1
        end = self.starts[i + 1] if i + 1 < len(self.starts) else self.page_count
        return self.starts[i], end, self.protects[i]

    def runs(self, first: int = 0, last: int | None = None) -> Iterator[tuple[int, int, int]]:
        """Runs clipped to pages [first, last): (start, end, protect)."""
        last = self.page_count if last is None else last
        i = bisect_right(self.starts, first) - 1
        n = len(self.starts)
        while i < n and self.starts[i] < last:
            end = self.starts[i + 1] if i + 1 < n else self.page_count
            yield max(self.starts[i], first), min(end, last), self.protects[i]
            i += 1

    def committed_in(self, first: int, last: int) -> int:
        """How many of pages [first, last) are committed (O(runs in the range))."""
        return sum(e - s for s, e, p in self.runs(first, last) if p)

    def set_pages(self, first: int, last: int, protect: int) -> int:
        """Give pages [first, last) one protection; returns the change in committed pages."""
        delta = 0
        for s, e, p in self.runs(first, last):
            delta += (e - s) * ((protect != 0) - (p != 0))
        starts, protects = self.starts, self.protects
        i = bisect_right(starts, first) - 1
        j = bisect_right(starts, last - 1) - 1
        after = protects[j]
        new_starts: list[int] = []
        new_protects: list[int] = []
        if starts[i] < first:
            new_starts.append(starts[i])
            new_protects.append(protects[i])
        new_starts.append(first)
        new_protects.append(protect)
        if last < self.page_count and (j + 1 >= len(starts) or starts[j + 1] > last):
            new_starts.append(last)
            new_protects.append(after)
        starts[i : j + 1] = new_starts
        protects[i : j + 1] = new_protects
        self._merge_around(i, i + len(new_starts))
        self.committed_pages += delta
        return delta

    def _merge_around(self, lo: int, hi: int) -> None:
        """Restore canonical form (no two neighbouring runs equal) in runs lo-1..hi."""
        starts, protects = self.starts, self.protects
        k = min(hi, len(starts) - 1)
        while k > max(lo - 1, 0):
            if protects[k] == protects[k - 1]:
                del starts[k]
                del protects[k]
            k -= 1

    def copied_pages(self, first: int, last: int) -> list[int]:
        """Pages in [first, last) that already have their private copy-on-write copy."""
        private = self.private_pages
        found = [i for i in self.copied if first <= i < last]
        if private:
            found += [i for i in private if first <= i < last]
        return sorted(found)

    def all_pages(self, first: int, last: int, predicate: Any) -> bool:
        return all(predicate(p) for _, _, p in self.runs(first, last))

    def slice(self, first: int, last: int) -> Allocation:
        """A new allocation for pages [first, last) of this one, based at their address.

        What NtFreeVirtualMemory leaves behind when it releases the middle of an allocation:
        Windows splits it, and the pieces become allocations of their own.
        """
        piece = Allocation(
            self.base + (first << PAGE_SHIFT), (last - first) << PAGE_SHIFT,
            self.allocation_protect, self.kind, self.phys_base + (first << PAGE_SHIFT),
            name=self.name, owner=self.owner,
        )
        piece.starts, piece.protects = [], []
        for s, e, p in self.runs(first, last):
            piece.starts.append(s - first)
            piece.protects.append(p)
            piece.committed_pages += (e - s) if p else 0
        if self.write_watch is not None:
            piece.write_watch = {i - first for i in self.write_watch if first <= i < last}
            piece.watch_latched = {i - first for i in self.watch_latched if first <= i < last}
        piece.copied = {i - first for i in self.copied if first <= i < last}
        return piece

    def restore_pages(self, saved: Allocation) -> None:
        """Take the page state of ``saved`` (a clone of this allocation): page runs, commit
        count and copy-on-write copies. What an in-place rollback undoes; the identity,
        owner and write-watch sets stay (rollback restores those apart)."""
        self.starts = list(saved.starts)
        self.protects = list(saved.protects)
        self.committed_pages = saved.committed_pages
        self.copied = set(saved.copied)
        self.private_pages = None if saved.private_pages is None else dict(saved.private_pages)

    def clone(self) -> Allocation:
        """A copy whose page runs can change independently (checkpoints use it)."""
        return Allocation(
            self.base, self.size, self.allocation_protect, self.kind, self.phys_base,
            list(self.starts), list(self.protects), self.committed_pages,
            None if self.write_watch is None else set(self.write_watch),
            self.name, self.owner,
            None if self.private_pages is None else dict(self.private_pages),
            self.alias_count, set(self.copied), set(self.watch_latched),
        )


class AddressSpace:
    """Allocations indexed by base plus the free ranges between them."""

    def __init__(self, lowest: int, highest: int) -> None:
        #: usable user range [lowest, highest) — e.g. 0x10000..0x7FFF0000 for a 32-bit guest
        self.lowest = lowest
        self.highest = highest
        self.allocations: SortedDict = SortedDict()
        self.free = FreeRangeIndex(lowest, highest, GRANULARITY)
        self.layout_version = 0
        #: moves only when an allocation comes or goes (``layout_version`` moves on every
        #: change): a checkpoint whose shape still holds can undo page changes in place
        self.shape_version = 0
        #: allocations whose pages changed protection, while a checkpoint is listening
        #: (None otherwise): what that checkpoint's rollback must put back
        self.touched: set[Allocation] | None = None
        self.committed_pages = 0
        self.reserved_bytes = 0
        #: 64 KiB granule -> the allocation in it, for allocations of at most SMALL_GRANULES
        #: granules: the common lookup is one dict probe whatever the allocation count.
        #: Bases are granule aligned except for the pieces a partial release leaves, so a
        #: granule normally has one allocation; a shared granule maps to None ("bisect").
        self._by_granule: dict[int, Allocation | None] = {}

    def find(self, address: int) -> Allocation | None:
        """The allocation containing ``address``, or None. Hot: the MMU calls it per TLB miss."""
        alloc = self._by_granule.get(address >> 16)
        if alloc is not None and alloc.base <= address < alloc.base + alloc.size:
            return alloc
        allocations = self.allocations
        i = allocations.bisect_right(address) - 1
        if i < 0:
            return None
        found: Allocation = allocations.peekitem(i)[1]
        return found if address < found.base + found.size else None

    def insert(self, alloc: Allocation) -> None:
        self.free.reserve(alloc.base, alloc.end)
        self.allocations[alloc.base] = alloc
        first, last = alloc.base >> 16, (alloc.end - 1) >> 16
        if last - first < SMALL_GRANULES:
            index = self._by_granule
            for granule in range(first, last + 1):
                index[granule] = alloc if granule not in index else None
        self.reserved_bytes += alloc.size
        self.committed_pages += alloc.committed_pages
        self.layout_version += 1
        self.shape_version += 1

    def remove(self, alloc: Allocation) -> None:
        self.free.release(alloc.base, alloc.end)
        del self.allocations[alloc.base]
        first, last = alloc.base >> 16, (alloc.end - 1) >> 16
        if last - first < SMALL_GRANULES:
            index = self._by_granule
            for granule in range(first, last + 1):
                if index.get(granule, alloc) is alloc:  # a shared (None) entry stays: harmless
                    index.pop(granule, None)
        self.reserved_bytes -= alloc.size
        self.committed_pages -= alloc.committed_pages
        self.layout_version += 1
        self.shape_version += 1

    def set_pages(self, alloc: Allocation, first: int, last: int, protect: int) -> None:
        self.committed_pages += alloc.set_pages(first, last, protect)
        self.layout_version += 1
        if self.touched is not None:
            self.touched.add(alloc)

    def overlaps(self, start: int, end: int) -> bool:
        """Does [start, end) touch any allocation?"""
        allocations = self.allocations
        i = allocations.bisect_left(end) - 1
        if i < 0:
            return False
        alloc: Allocation = allocations.peekitem(i)[1]
        return alloc.base + alloc.size > start

    def __iter__(self) -> Iterator[Allocation]:
        return iter(self.allocations.values())

    def __len__(self) -> int:
        return len(self.allocations)

    def clear(self) -> None:
        for alloc in list(self):
            self.remove(alloc)
