"""GuestArena: the kmem subsystem (seed ``kmem_arena.txt``) over one guest buffer.

One fixed-size buffer is reserved and committed in the guest the first time anything is
allocated (kmem initialises on its first ``kmem_allocate``), then dealt out in pieces:

* ``allocate(num_bytes, reason)`` returns zeroed guest memory, 16-byte aligned;
* ``release(address)`` returns 0, so callers write ``p = arena.release(p)`` — the Python
  form of ``kmem_release(&p)`` setting the caller's pointer to NULL;
* ``sizeof_allocation(address)`` is exactly the size that was requested;
* ``usage()`` is the per-reason bookkeeping kmem keeps for monitoring;
* ``scoped(num_bytes, reason)`` is the seed's ``heap_mem`` RAII wrapper.

Where kmem asserts, this raises: ArenaExhausted when no free span fits, typed
:class:`~emulator_mem.errors.AllocatorError` subclasses for unknown or double releases;
a failed call changes nothing.

Free space is a coalescing free list held twice — by address (to merge with neighbours on
release) and by (size, address) (best fit on allocate) — both ``sortedcontainers``
structures, so allocate and release are O(log n) in the number of free spans. Best fit
keeps large spans whole, which is what :meth:`GuestArena.fragmentation` measures.
No bookkeeping lives in guest memory: a guest overrun cannot corrupt the allocator.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sortedcontainers import SortedDict, SortedList

from ..errors import (
    AllocatorOutOfMemoryError,
    ArenaExhausted,
    DoubleReleaseError,
    EmulatorMemError,
    InvalidAllocationSizeError,
    InvalidParameterError,
    UnknownAllocationError,
)
from ..manager import MemoryManager
from ..windows import constants as C
from ..windows import protection

ALIGNMENT = 16


@dataclass(slots=True)
class ArenaAllocation:
    """One live allocation: ``size`` as requested, ``span`` as carved (16-byte multiple)."""

    address: int
    size: int
    span: int
    reason: str


@dataclass(slots=True)
class ReasonUsage:
    """Live allocations made for one reason: how many and how many bytes were requested."""

    count: int = 0
    bytes: int = 0


@dataclass(slots=True, frozen=True)
class ArenaStatistics:
    """Whole-arena numbers; ``overhead_size`` is host bookkeeping (nothing is in the guest)."""

    capacity: int
    allocation_count: int
    requested_size: int
    used_size: int
    free_size: int
    largest_free: int
    free_spans: int
    overhead_size: int


class GuestArena:
    """A fixed-capacity guest buffer dealt out as zeroed, 16-byte aligned pieces."""

    def __init__(self, mm: MemoryManager, capacity: int, *, protect: int = C.PAGE_READWRITE,
                 name: str = "kmem") -> None:
        if capacity <= 0:
            raise InvalidParameterError(f"arena capacity {capacity} must be positive")
        protection.check(protect, allow_writecopy=False)  # fail now, not on first use
        self.mm = mm
        #: usable bytes: the requested capacity rounded up to the alignment
        self.capacity = (capacity + ALIGNMENT - 1) & -ALIGNMENT
        self.protect = protect
        self.name = name
        self._base = 0
        self._live: dict[int, ArenaAllocation] = {}
        self._free_by_addr: SortedDict = SortedDict()  # start -> size
        self._free_by_size: SortedList = SortedList()  # (size, start)
        self._free_total = 0
        self._requested = 0
        self._usage: dict[str, ReasonUsage] = {}

    # -- lifetime ------------------------------------------------------------------------
    @property
    def base(self) -> int:
        """Guest address of the buffer; 0 until the first allocation initialises it."""
        return self._base

    @property
    def initialized(self) -> bool:
        return self._base != 0

    def _initialize(self) -> None:
        """Reserve and commit the whole buffer once, as kmem does on its first allocation."""
        try:
            base = self.mm.allocate(self.capacity, self.protect, name=self.name)
        except EmulatorMemError as exc:
            raise AllocatorOutOfMemoryError(
                f"cannot reserve a {self.capacity:#x}-byte arena: {exc}", status=exc.status
            ) from exc
        self._base = base
        self._add_free(base, self.capacity)

    def close(self) -> None:
        """Release the guest buffer; every pointer into it becomes invalid."""
        if self._base:
            self.mm.release(self._base)
        self._base = 0
        self._live.clear()
        self._free_by_addr.clear()
        self._free_by_size.clear()
        self._free_total = self._requested = 0
        self._usage.clear()

    # -- free list -----------------------------------------------------------------------
    def _add_free(self, start: int, size: int) -> None:
        self._free_by_addr[start] = size
        self._free_by_size.add((size, start))
        self._free_total += size

    def _remove_free(self, start: int, size: int) -> None:
        del self._free_by_addr[start]
        self._free_by_size.remove((size, start))
        self._free_total -= size

    def _free_span_at(self, address: int) -> tuple[int, int] | None:
        """The free span (start, size) containing ``address``, if any."""
        spans = self._free_by_addr
        i = spans.bisect_right(address) - 1
        if i < 0:
            return None
        start, size = spans.peekitem(i)
        return (start, size) if address < start + size else None

    # -- kmem_allocate -------------------------------------------------------------------
    def allocate(self, num_bytes: int, reason: str) -> int:
        """``kmem_allocate``: ``num_bytes`` zeroed bytes, 16-byte aligned, noted under ``reason``."""
        if num_bytes <= 0:
            raise InvalidAllocationSizeError(f"allocation size {num_bytes} must be positive")
        span = (num_bytes + ALIGNMENT - 1) & -ALIGNMENT
        if span > self.capacity:
            raise ArenaExhausted(
                f"{num_bytes} bytes for {reason!r} exceed the arena capacity {self.capacity}"
            )
        if not self._base:
            self._initialize()
        by_size = self._free_by_size
        i = by_size.bisect_left((span, 0))
        if i == len(by_size):
            raise ArenaExhausted(
                f"no free span of {span} bytes for {reason!r}: {self._free_total} bytes free, "
                f"largest span {self.largest_free()}"
            )
        size: int
        start: int
        size, start = by_size[i]
        self.mm.write(start, bytes(span))  # zero first: if it failed, nothing has changed
        self._remove_free(start, size)
        if size > span:
            self._add_free(start + span, size - span)
        self._live[start] = ArenaAllocation(start, num_bytes, span, reason)
        self._requested += num_bytes
        usage = self._usage.get(reason)
        if usage is None:
            usage = self._usage[reason] = ReasonUsage()
        usage.count += 1
        usage.bytes += num_bytes
        return start

    # -- kmem_release --------------------------------------------------------------------
    def release(self, address: int) -> int:
        """``kmem_release``: free the allocation at ``address`` and return 0 (the NULL).

        DoubleReleaseError if ``address`` lies in free arena space, UnknownAllocationError
        for an address outside the arena or inside an allocation (not its start).
        """
        record = self._live.get(address)
        if record is None:
            raise self._unknown(address)
        del self._live[address]
        start, size = address, record.span
        spans = self._free_by_addr
        i = spans.bisect_left(address)
        if i < len(spans):
            nxt, nxt_size = spans.peekitem(i)
            if nxt == start + size:
                self._remove_free(nxt, nxt_size)
                size += nxt_size
        if i > 0:
            prev, prev_size = spans.peekitem(i - 1)
            if prev + prev_size == start:
                self._remove_free(prev, prev_size)
                start, size = prev, size + prev_size
        self._add_free(start, size)
        self._requested -= record.size
        usage = self._usage[record.reason]
        usage.count -= 1
        usage.bytes -= record.size
        if not usage.count:
            del self._usage[record.reason]
        return 0

    def _unknown(self, address: int) -> UnknownAllocationError:
        if not self._base or not self._base <= address < self._base + self.capacity:
            return UnknownAllocationError(f"{address:#x} is not in the arena")
        if self._free_span_at(address) is not None:
            return DoubleReleaseError(f"{address:#x} is free arena memory (already released?)")
        return UnknownAllocationError(f"{address:#x} is inside an allocation, not its start")

    # -- kmem_sizeof_allocation / bookkeeping --------------------------------------------
    def sizeof_allocation(self, address: int) -> int:
        """``kmem_sizeof_allocation``: the size requested for the allocation at ``address``."""
        record = self._live.get(address)
        if record is None:
            raise self._unknown(address)
        return record.size

    def reason_of(self, address: int) -> str:
        record = self._live.get(address)
        if record is None:
            raise self._unknown(address)
        return record.reason

    def usage(self) -> dict[str, ReasonUsage]:
        """Live allocations per reason (count, requested bytes): a copy, safe to keep."""
        return {reason: ReasonUsage(u.count, u.bytes) for reason, u in self._usage.items()}

    def allocations(self) -> list[ArenaAllocation]:
        """Every live allocation, lowest address first."""
        return [self._live[a] for a in sorted(self._live)]

    def largest_free(self) -> int:
        """Bytes in the largest free span: the biggest request that can still succeed."""
        if not self._base:
            return self.capacity
        return int(self._free_by_size[-1][0]) if self._free_by_size else 0

    def free_size(self) -> int:
        return self._free_total if self._base else self.capacity

    def fragmentation(self) -> float:
        """``1 - largest_free / total_free``: 0 when free space is one span, near 1 when it
        is scattered into many small ones; 0 when nothing is free."""
        total = self.free_size()
        return 0.0 if total == 0 else 1.0 - self.largest_free() / total

    def statistics(self) -> ArenaStatistics:
        overhead = sys.getsizeof(self._live) + sum(sys.getsizeof(r) for r in self._live.values())
        overhead += 2 * len(self._free_by_addr) * sys.getsizeof((0, 0))
        return ArenaStatistics(
            self.capacity, len(self._live), self._requested,
            self.capacity - self.free_size(), self.free_size(), self.largest_free(),
            len(self._free_by_addr) if self._base else 1, overhead,
        )

    def __len__(self) -> int:
        return len(self._live)

    # -- heap_mem --------------------------------------------------------------------------
    @contextmanager
    def scoped(self, num_bytes: int, reason: str) -> Iterator[int]:
        """The seed's ``heap_mem``: an allocation released when the ``with`` block ends."""
        address = self.allocate(num_bytes, reason)
        try:
            yield address
        finally:
            self.release(address)
