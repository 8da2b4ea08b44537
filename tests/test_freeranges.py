"""Tests for FreeRangeIndex: a stateful model check plus alignment and fragmentation cases.

The model is a bitmap of free units over a small space, so every answer (free ranges, first and
last fit for any size, alignment and window) can be recomputed by brute force and compared
after every step. White-box checks of the treap invariants catch a stale capacity maximum:
one too small makes a search miss a fit (the model catches that too), one too large only
makes searches slower, which only the invariant check sees. The O(log n) claim itself is
checked by counting the lines a search executes on a space with 20,000 holes (no timing).
"""

from __future__ import annotations

import math
import random
import sys

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from emulator_mem.errors import ConflictingAddressesError, InvalidParameterError
from emulator_mem.space import freeranges
from emulator_mem.space.freeranges import FreeRangeIndex, _Node

LO, HI = 8, 72  # model space: units [LO, HI); addresses below/above probe the edges
coord = st.integers(min_value=0, max_value=HI + 8)
# more distinct alignments than the index keeps classes for, one not a power of two
alignments = st.sampled_from([1, 2, 3, 4, 8, 16, 32])


def capacity(start: int, end: int, align: int) -> int:
    """Longest aligned request that fits in [start, end); 0 when none does."""
    first = start + (-start) % align
    return max(end - first, 0)


def check_treap(index: FreeRangeIndex) -> int:
    """Assert BST order, heap order and exact capacity maxima everywhere; return the depth."""
    classes = index.alignment_classes
    none = [0] * len(classes)

    def walk(node: _Node | None, lo: int, hi: int) -> tuple[list[int], int]:
        if node is None:
            return none, 0
        assert lo <= node.start < node.end <= hi
        for child in (node.left, node.right):
            assert child is None or child.prio <= node.prio
        lcaps, ldepth = walk(node.left, lo, node.start)
        rcaps, rdepth = walk(node.right, node.end, hi)
        own = [capacity(node.start, node.end, a) for a in classes]
        expect = [max(t) for t in zip(own, lcaps, rcaps, strict=True)]
        # no fit at all may be kept as any capacity <= 0
        kept = (node.cap, node.cap1, node.cap2)[: len(classes)]
        assert [max(c, 0) for c in kept] == expect
        return expect, 1 + max(ldepth, rdepth)

    return walk(index._root, 0, 1 << 64)[1]


class Model:
    """Naive reference: one bool per unit address."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.free = {a: True for a in range(lo, hi)}

    def all_free(self, start: int, end: int) -> bool:
        return all(self.free.get(a, False) for a in range(start, end))

    def all_used(self, start: int, end: int) -> bool:
        return self.lo <= start and end <= self.hi and not any(
            self.free[a] for a in range(start, end)
        )

    def ranges(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for a in range(self.lo, self.hi):
            if not self.free[a]:
                continue
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], a + 1)
            else:
                out.append((a, a + 1))
        return out

    def fits(self, size: int, align: int, lo: int, hi: int) -> list[int]:
        return [
            a
            for a in range(max(lo, 0), hi - size + 1)
            if a % align == 0 and self.all_free(a, a + size)
        ]


class FreeRangeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = FreeRangeIndex(LO, HI)
        self.model = Model(LO, HI)

    @initialize(used=st.sets(st.integers(LO, HI - 1)), granularity=st.sampled_from([1, 4, 8]))
    def fragment(self, used: set[int], granularity: int) -> None:
        """Start from a random bitmap: random single steps rarely fragment the space much."""
        self.index = FreeRangeIndex(LO, HI, granularity)
        for a in sorted(used):
            self.index.reserve(a, a + 1)
            self.model.free[a] = False

    @rule(start=coord, length=st.integers(min_value=-2, max_value=24))
    def reserve(self, start: int, length: int) -> None:
        end = start + length
        before = self.index.ranges()
        if length <= 0:
            with pytest.raises(InvalidParameterError):
                self.index.reserve(start, end)
        elif not self.model.all_free(start, end):
            with pytest.raises(ConflictingAddressesError):
                self.index.reserve(start, end)
        else:
            self.index.reserve(start, end)
            for a in range(start, end):
                self.model.free[a] = False
            return
        assert self.index.ranges() == before

    @rule(start=coord, length=st.integers(min_value=-2, max_value=24))
    def release(self, start: int, length: int) -> None:
        end = start + length
        before = self.index.ranges()
        if length > 0 and self.model.all_used(start, end):
            self.index.release(start, end)
            for a in range(start, end):
                self.model.free[a] = True
            return
        with pytest.raises(InvalidParameterError):
            self.index.release(start, end)
        assert self.index.ranges() == before

    @rule(data=st.data())
    def release_exact_used_run(self, data: st.DataObject) -> None:
        """Random releases rarely hit a wholly used range; pick one from the model instead."""
        used = [a for a, free in self.model.free.items() if not free]
        if not used:
            return
        start = data.draw(st.sampled_from(used))
        end = start
        while end < self.model.hi and not self.model.free[end]:
            end += 1
        end = data.draw(st.integers(min_value=start + 1, max_value=end))
        self.index.release(start, end)
        for a in range(start, end):
            self.model.free[a] = True

    @rule(data=st.data())
    def reserve_inside_free_range(self, data: st.DataObject) -> None:
        """Likewise, carve a valid reservation out of a real free range (often at its edges)."""
        ranges = self.model.ranges()
        if not ranges:
            return
        lo, hi = data.draw(st.sampled_from(ranges))
        start = data.draw(st.one_of(st.just(lo), st.integers(lo, hi - 1)))
        end = data.draw(st.one_of(st.just(hi), st.integers(start + 1, hi)))
        self.index.reserve(start, end)
        for a in range(start, end):
            self.model.free[a] = False

    @rule(data=st.data(), size=st.integers(1, 12), align=alignments)
    def find_near_boundaries(self, data: st.DataObject, size: int, align: int) -> None:
        """Windows whose edges sit just beside range edges, where off-by-one pruning hides."""
        edges = [e for r in self.model.ranges() for e in r] or [LO, HI]
        near = st.builds(lambda e, d: max(e + d, 0), st.sampled_from(edges), st.integers(-3, 3))
        self.find(size, align, data.draw(near), data.draw(near))

    @rule(size=st.integers(1, 12), align=alignments, top_down=st.booleans())
    def allocate(self, size: int, align: int, top_down: bool) -> None:
        """Search the whole space then reserve the answer, as VirtualAlloc(NULL, …) does (the
        reserve reuses the search's path)."""
        fits = self.model.fits(size, align, 0, HI + 8)
        search = self.index.find_last if top_down else self.index.find_first
        found = search(size, align, 0, HI + 8)
        assert found == ((fits[-1] if top_down else fits[0]) if fits else None)
        if found is not None:
            self.index.reserve(found, found + size)
            for a in range(found, found + size):
                self.model.free[a] = False

    @rule(start=coord, length=st.integers(min_value=1, max_value=24))
    def is_free(self, start: int, length: int) -> None:
        assert self.index.is_free(start, start + length) == self.model.all_free(
            start, start + length
        )

    @rule(size=st.integers(1, 24), align=alignments, lo=coord, hi=coord)
    def find(self, size: int, align: int, lo: int, hi: int) -> None:
        fits = self.model.fits(size, align, lo, hi)
        assert self.index.find_first(size, align, lo, hi) == (fits[0] if fits else None)
        assert self.index.find_last(size, align, lo, hi) == (fits[-1] if fits else None)

    @invariant()
    def matches_model(self) -> None:
        assert self.index.ranges() == self.model.ranges()
        assert len(self.index) == len(self.model.ranges())
        check_treap(self.index)


FreeRangeMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
TestFreeRangeMachine = FreeRangeMachine.TestCase


# -- unit tests ------------------------------------------------------------------------------

PAGE, GRAN, MB = 0x1000, 0x10000, 0x100000
USER_LO, USER_HI = 0x10000, 0x7FFF_0000


def test_initial_state_and_empty_space() -> None:
    index = FreeRangeIndex(USER_LO, USER_HI)
    assert index.ranges() == [(USER_LO, USER_HI)] and len(index) == 1
    empty = FreeRangeIndex(0x1000, 0x1000)
    assert empty.ranges() == [] and len(empty) == 0
    assert empty.find_first(1, 1, 0, 1 << 32) is None
    with pytest.raises(InvalidParameterError):
        FreeRangeIndex(0x2000, 0x1000)


@pytest.mark.parametrize("align", [PAGE, GRAN, MB])
def test_alignment_skips_unaligned_start(align: int) -> None:
    index = FreeRangeIndex(USER_LO, USER_HI)
    index.reserve(USER_LO, USER_LO + PAGE)  # first hole now starts at 0x11000
    first = index.find_first(PAGE, align, 0, USER_HI)
    expect = max(USER_LO + PAGE, -(-(USER_LO + PAGE) // align) * align)
    assert first == expect and first % align == 0
    last = index.find_last(PAGE, align, 0, USER_HI)
    assert last == (USER_HI - PAGE) // align * align


@pytest.mark.parametrize("align", [PAGE, GRAN, MB])
def test_hole_exactly_size_fits_only_when_aligned(align: int) -> None:
    index = FreeRangeIndex(0, 0x1_0000_0000)
    index.reserve(0, 0x1_0000_0000)
    size = 2 * align
    index.release(align + PAGE, align + PAGE + size)  # long enough, misaligned: near miss
    index.release(8 * align, 8 * align + size)  # exactly size, aligned
    index.release(16 * align, 16 * align + size + align - 1 + PAGE)  # always fits
    near_miss = PAGE < align
    assert index.find_first(size, align, 0, 1 << 32) == (8 * align if near_miss else align + PAGE)
    assert index.find_last(size, align, 0, 1 << 32) == 17 * align  # ends at 19a - 1 + PAGE
    assert index.find_last(size, align, 0, 16 * align) == 8 * align


def test_min_max_bounds_clip_ranges() -> None:
    index = FreeRangeIndex(USER_LO, USER_HI)
    assert index.find_first(GRAN, GRAN, 0x12345, USER_HI) == 0x20000
    assert index.find_first(GRAN, GRAN, 0x20000, 0x30000) == 0x20000
    assert index.find_first(GRAN, GRAN, 0x20001, 0x30000) is None
    assert index.find_last(GRAN, GRAN, 0x20000, 0x3FFFF) == 0x20000
    assert index.find_last(GRAN, GRAN, 0, 0x40000) == 0x30000
    assert index.find_first(GRAN, GRAN, 0, USER_LO) is None  # window wholly below lo
    assert index.find_first(GRAN, GRAN, 0x9000_0000, 0xA000_0000) is None  # above hi
    assert index.find_first(GRAN, GRAN, 0x30000, 0x20000) is None  # inverted window
    assert index.find_last(PAGE, PAGE, 0, 1 << 64) == USER_HI - PAGE


def test_bad_arguments_raise_and_change_nothing() -> None:
    index = FreeRangeIndex(USER_LO, USER_HI)
    index.reserve(0x20000, 0x30000)
    before = index.ranges()
    bad: list[tuple[type[Exception], tuple[int, int], str]] = [
        (ConflictingAddressesError, (0x2F000, 0x31000), "reserve"),  # straddles used
        (ConflictingAddressesError, (0x0, 0x11000), "reserve"),  # below lo
        (ConflictingAddressesError, (USER_HI - PAGE, USER_HI + PAGE), "reserve"),  # above hi
        (InvalidParameterError, (0x40000, 0x40000), "reserve"),  # empty
        (InvalidParameterError, (0x1F000, 0x21000), "release"),  # partly free
        (InvalidParameterError, (0x40000, 0x50000), "release"),  # wholly free
        (InvalidParameterError, (0x0, 0x1000), "release"),  # outside [lo, hi)
        (InvalidParameterError, (0x28000, 0x27000), "release"),  # inverted
    ]
    for exc, (start, end), op in bad:
        with pytest.raises(exc):
            getattr(index, op)(start, end)
        assert index.ranges() == before
    for size, align in [(0, PAGE), (PAGE, 0), (-1, 1)]:
        with pytest.raises(InvalidParameterError):
            index.find_first(size, align, 0, USER_HI)
        with pytest.raises(InvalidParameterError):
            index.find_last(size, align, 0, USER_HI)


def test_release_coalesces_both_sides() -> None:
    index = FreeRangeIndex(0, 0x100000)
    index.reserve(0x10000, 0x40000)
    index.release(0x20000, 0x30000)
    assert len(index) == 3
    index.release(0x10000, 0x20000)  # joins the left range with the middle hole
    assert index.ranges() == [(0, 0x30000), (0x40000, 0x100000)]
    index.release(0x30000, 0x40000)  # joins both neighbours
    assert index.ranges() == [(0, 0x100000)] and len(index) == 1


@pytest.mark.parametrize("seed", range(4))
def test_every_window_on_a_fragmented_space(seed: int) -> None:
    """Exhaustive over windows: off-by-one pruning near window edges only shows in some shapes."""
    rng = random.Random(seed)
    index, model = FreeRangeIndex(2, 42), Model(2, 42)
    for a in range(2, 42):
        if rng.random() < 0.4:
            index.reserve(a, a + 1)
            model.free[a] = False
    assert index.ranges() == model.ranges()
    for lo in range(0, 45):
        for hi in range(lo, 45):
            for size in (1, 2, 3):
                for align in (1, 2, 4):
                    fits = model.fits(size, align, lo, hi)
                    assert index.find_first(size, align, lo, hi) == (fits[0] if fits else None)
                    assert index.find_last(size, align, lo, hi) == (fits[-1] if fits else None)


def _fragmented(holes: int, hole: int, stride: int, top: int) -> FreeRangeIndex:
    index = FreeRangeIndex(USER_LO, USER_HI)
    index.reserve(USER_LO, USER_HI)
    for i in range(holes):
        start = USER_LO + i * stride + (stride - hole)
        index.release(start, start + hole)
    index.release(top, top + 64 * MB)
    return index


def test_twenty_thousand_holes_then_a_large_range() -> None:
    holes = 20_000
    index = _fragmented(holes, PAGE, 2 * PAGE, 0x6000_0000)
    assert len(index) == holes + 1
    depth = check_treap(index)
    assert depth <= 4 * math.log2(len(index)) + 10  # balanced, so searches stay O(log n)
    assert index.find_first(MB, GRAN, 0, USER_HI) == 0x6000_0000
    assert index.find_last(MB, GRAN, 0, USER_HI) == 0x6000_0000 + 63 * MB
    assert index.find_first(PAGE, PAGE, 0, USER_HI) == USER_LO + PAGE
    assert index.find_last(PAGE, PAGE, 0, 0x6000_0000) == USER_LO + (2 * holes - 1) * PAGE
    assert index.find_first(2 * PAGE, PAGE, 0, 0x6000_0000) is None
    assert index.is_free(0x6000_0000, 0x6000_0000 + 64 * MB)
    assert not index.is_free(0x6000_0000 - PAGE, 0x6000_0000)


def test_twenty_thousand_misaligned_near_misses_are_checked_exactly() -> None:
    # Each hole is the two pages just below a 64K boundary: as long as the request, so no
    # subtree can be pruned by length, yet none fits aligned; each must be rejected exactly.
    holes = 20_000
    index = _fragmented(holes, 2 * PAGE, GRAN, 0x6000_0000)
    assert index.find_first(2 * PAGE, GRAN, 0, USER_HI) == 0x6000_0000
    assert index.find_first(PAGE, GRAN, 0, USER_HI) == 0x6000_0000
    index.release(USER_LO + 5000 * GRAN, USER_LO + 5000 * GRAN + GRAN - 2 * PAGE)
    assert index.find_first(2 * PAGE, GRAN, 0, USER_HI) == USER_LO + 5000 * GRAN
    assert index.find_last(2 * PAGE, GRAN, 0, 0x6000_0000) == USER_LO + 5000 * GRAN


# -- cost: lines executed, not time ----------------------------------------------------------


def lines_run(call: object) -> int:
    """Lines of freeranges.py executed by ``call()``: a deterministic measure of search work."""
    count = 0

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        nonlocal count
        if frame.f_code.co_filename != freeranges.__file__:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        call()  # type: ignore[operator]
    finally:
        sys.settrace(None)
    return count


def test_small_reservations_keep_searches_logarithmic() -> None:
    """VirtualAlloc(NULL, 0x1000) in a loop: every reservation leaves the rest of its granule
    free, a hole longer than the next request but with no 64 KiB-aligned start. A search
    pruned by length alone visits all of them; pruned by aligned capacity it stays O(log n).
    """
    index = FreeRangeIndex(USER_LO, USER_HI, GRAN)
    n = 20_000
    for i in range(n):
        base = index.find_first(PAGE, GRAN, 0, USER_HI)
        assert base == USER_LO + i * GRAN
        index.reserve(base, base + PAGE)
    assert len(index) == n  # n - 1 sub-granule holes and the rest of the space
    budget = 60 * math.log2(n)  # ~860 lines; a walk over the holes would run > 60,000
    mid = USER_LO + n // 2 * GRAN + 0x800  # a window edge in the middle of the holes
    searches = [
        lambda: index.find_first(PAGE, GRAN, 0, USER_HI),
        lambda: index.find_last(PAGE, GRAN, 0, USER_LO + n * GRAN),  # top-down below the top
        lambda: index.find_first(3 * PAGE, GRAN, mid, USER_HI),
        lambda: index.find_last(PAGE, GRAN, mid, USER_LO + n * GRAN + GRAN),
        lambda: index.find_first(PAGE, MB, 0, USER_HI),  # an extra alignment class
        lambda: index.find_last(2 * MB, 2 * MB, 0, USER_HI),
    ]
    lines_run(searches[4])  # registering a class is the one O(n) pass; then it is kept
    lines_run(searches[5])
    for search in searches:
        assert lines_run(search) < budget
    assert index.find_first(PAGE, GRAN, 0, USER_HI) == USER_LO + n * GRAN
    assert index.find_first(3 * PAGE, GRAN, mid, USER_HI) == USER_LO + n * GRAN
    assert index.find_last(PAGE, GRAN, 0, USER_LO + n * GRAN) is None  # only sub-granule holes
    assert index.find_first(PAGE, MB, 0, USER_HI) == -(-(USER_LO + n * GRAN) // MB) * MB
    # freeing one reservation in the middle makes its granule the lowest fit again
    hole = USER_LO + 1234 * GRAN
    assert lines_run(lambda: index.release(hole, hole + PAGE)) < budget
    assert index.find_first(2 * PAGE, GRAN, 0, USER_HI) == hole
    assert index.find_last(2 * PAGE, GRAN, 0, USER_LO + n * GRAN) == hole
    check_treap(index)


def test_alignment_classes_come_and_go_exactly() -> None:
    """More alignments than kept classes: the least recently used one gives way, and answers
    stay those of a brute-force scan whichever classes are kept."""
    rng = random.Random(7)
    index = FreeRangeIndex(0, 1 << 28, PAGE)
    used: list[tuple[int, int]] = []
    for _ in range(300):
        size = rng.randint(1, 40) * PAGE
        base = index.find_first(size, GRAN, 0, 1 << 28)
        assert base is not None
        index.reserve(base, base + size)
        used.append((base, size))
    for base, size in rng.sample(used, 120):
        index.release(base, base + size)
    free = index.ranges()

    def brute(size: int, align: int, top_down: bool) -> int | None:
        """Linear scan of every free range: its lowest and highest aligned fit."""
        fits = []
        for lo, hi in free:
            first, last = -(-lo // align) * align, (hi - size) // align * align
            if first <= last:
                fits.append(last if top_down else first)
        return (max(fits) if top_down else min(fits)) if fits else None

    aligns = [PAGE, 2 * PAGE, GRAN, 4 * GRAN, MB, 2 * MB, 3 * PAGE]
    for _ in range(60):
        align, size = rng.choice(aligns), rng.randint(1, 64) * PAGE
        assert index.find_first(size, align, 0, 1 << 28) == brute(size, align, False)
        assert index.find_last(size, align, 0, 1 << 28) == brute(size, align, True)
        assert len(index.alignment_classes) <= 1 + freeranges.EXTRA_CLASSES
    check_treap(index)
