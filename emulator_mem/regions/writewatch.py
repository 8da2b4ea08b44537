"""Write watch (MEM_WRITE_WATCH, GetWriteWatch, ResetWriteWatch) over the MMU's first-write miss.

A write-watched allocation keeps the set of its page indexes written since the last reset
(``Allocation.write_watch``). Clean pages enter the TLB without write permission, so the
first guest write to each one misses, the MMU adds the page to the set and refills it
writable; later writes run at full speed. Host writes (``mm.write``) mark pages the same way.
Resetting drops pages from the set and flushes the TLB so their next write misses again.
No per-access hook, no ``uc.mem_protect`` per page.

Semantics follow Wine's ``NtGetWriteWatch``/``NtResetWriteWatch``: the range must lie inside
one write-watched allocation (STATUS_INVALID_PARAMETER otherwise, also for size 0 or a zero
count), at most ``max_count`` page addresses are returned in address order, and with
WRITE_WATCH_FLAG_RESET only the part of the range that was scanned is reset.

Decommit and the "latch" (Wine's test_write_watch, which records Windows): decommitting
pages drops them from the watch — unless a protection change (VirtualProtect) covered them
after they were written. Windows keeps the dirty state in the page-table entries and moves
it into the write-watch bitmap only when it rewrites those entries (a protection change);
a decommit throws the entries away. So a page written, then re-protected, then decommitted
is still reported; one written after the last protection change is not. Resetting clears
both.
"""

from __future__ import annotations

from ..errors import EmulatorMemError, InvalidParameterError
from ..space.address_space import PAGE_SHIFT, PAGE_SIZE, Allocation, page_round_down, page_round_up
from ..windows import constants as C
from .host import RegionHost


def _watched_range(mm: RegionHost, address: int, size: int) -> tuple[Allocation, int, int]:
    if size <= 0:
        raise InvalidParameterError("write-watch range needs a size")
    start = page_round_down(address)
    end = page_round_up(address + size)
    alloc = mm.space.find(start)
    if alloc is None or alloc.write_watch is None or end > alloc.end:
        raise InvalidParameterError(f"{address:#x}+{size:#x} is not inside a write-watched allocation")
    return alloc, (start - alloc.base) >> PAGE_SHIFT, (end - alloc.base) >> PAGE_SHIFT


def get_write_watch(
    mm: RegionHost, address: int, size: int, *, reset: bool = False, max_count: int | None = None
) -> list[int]:
    """Addresses of the pages in [address, address+size) written since the last reset."""
    alloc, first, last = _watched_range(mm, address, size)
    if max_count is not None and max_count <= 0:
        raise InvalidParameterError("max_count must be positive")
    watch = alloc.write_watch
    if watch is None:  # pragma: no cover - _watched_range checked it
        raise InvalidParameterError("not write-watched")
    limit = len(watch) if max_count is None else max_count
    if last - first <= 4 * len(watch):
        hits = [i for i in range(first, last) if i in watch]
    else:
        hits = sorted(i for i in watch if first <= i < last)
    hits = hits[:limit]
    if reset:
        stop = last if len(hits) < limit or not hits else hits[-1] + 1
        _reset(mm, alloc, first, stop)
    return [alloc.base + (i << PAGE_SHIFT) for i in hits]


def reset_write_watch(mm: RegionHost, address: int, size: int) -> None:
    """Forget the writes to [address, address+size); the next write to each page is seen."""
    alloc, first, last = _watched_range(mm, address, size)
    _reset(mm, alloc, first, last)


def latch(alloc: Allocation, first: int, last: int) -> None:
    """A protection change over pages [first, last): their written state now survives a decommit."""
    watch = alloc.write_watch
    if watch:
        alloc.watch_latched.update(i for i in _in_range(watch, first, last))


def decommitted(alloc: Allocation, first: int, last: int) -> None:
    """Pages [first, last) were decommitted: forget the writes no protection change latched."""
    watch = alloc.write_watch
    if watch:
        latched = alloc.watch_latched
        watch.difference_update([i for i in _in_range(watch, first, last) if i not in latched])


def _in_range(pages: set[int], first: int, last: int) -> list[int]:
    if last - first <= len(pages):
        return [i for i in range(first, last) if i in pages]
    return [i for i in pages if first <= i < last]


def _reset(mm: RegionHost, alloc: Allocation, first: int, last: int) -> None:
    watch = alloc.write_watch
    alloc.watch_latched.difference_update(_in_range(alloc.watch_latched, first, last))
    if not watch:
        return
    dropped = _in_range(watch, first, last)
    if dropped:
        watch.difference_update(dropped)
        mm.mmu.flush()  # their writable TLB entries must go so the next write misses


# -- NT calling convention -------------------------------------------------------------
def NtGetWriteWatch(  # noqa: N802 - Windows name
    mm: RegionHost, flags: int, base: int, size: int, max_count: int
) -> tuple[int, list[int], int]:
    """(status, addresses, granularity) like ntdll's NtGetWriteWatch."""
    if flags & ~C.WRITE_WATCH_FLAG_RESET or max_count <= 0:
        return C.STATUS_INVALID_PARAMETER, [], 0
    try:
        found = get_write_watch(mm, base, size, reset=bool(flags & C.WRITE_WATCH_FLAG_RESET),
                                max_count=max_count)
    except EmulatorMemError as exc:
        return exc.status, [], 0
    return C.STATUS_SUCCESS, found, PAGE_SIZE


def NtResetWriteWatch(mm: RegionHost, base: int, size: int) -> tuple[int]:  # noqa: N802
    """(status,) like ntdll's NtResetWriteWatch."""
    try:
        reset_write_watch(mm, base, size)
    except EmulatorMemError as exc:
        return (exc.status,)
    return (C.STATUS_SUCCESS,)
