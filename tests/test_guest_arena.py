"""Tests for GuestArena (the kmem subsystem): the seed's examples, lazy initialisation,
zeroing, per-reason usage, coalescing reuse, fragmentation, typed errors that change
nothing, guest access, and a stateful model check.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc

from emulator_mem.allocators import GuestArena
from emulator_mem.errors import (
    AllocatorError,
    AllocatorOutOfMemoryError,
    ArenaExhausted,
    DoubleReleaseError,
    InvalidAllocationSizeError,
    InvalidParameterError,
    UnknownAllocationError,
)
from emulator_mem.manager import MemoryManager


def make_mm() -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))


def usage_table(arena: GuestArena) -> dict[str, tuple[int, int]]:
    return {reason: (u.count, u.bytes) for reason, u in arena.usage().items()}


# -- the seed's examples ---------------------------------------------------------------
def test_seed_examples() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x10000)
    buffer = arena.allocate(101, "101 bytes")
    ints = arena.allocate(2 * 4, "A pair of ints")
    assert mm.read(buffer, 101) == bytes(101)
    mm.write(buffer, bytes([82]))
    mm.write(ints + 4, (1234).to_bytes(4, "little"))
    assert arena.sizeof_allocation(buffer) == 101
    assert arena.sizeof_allocation(arena.allocate(44, "x")) == 44
    buffer = arena.release(buffer)
    assert buffer == 0
    assert int.from_bytes(mm.read(ints + 4, 4), "little") == 1234


def test_buffer_is_reserved_lazily_once() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x30000)
    assert not arena.initialized and arena.base == 0
    assert mm.reserved_regions() == []
    assert arena.free_size() == 0x30000 and arena.fragmentation() == 0.0
    first = arena.allocate(1, "first")
    assert arena.initialized and first == arena.base
    regions = mm.reserved_regions()
    assert [(r.base, r.size, r.committed) for r in regions] == [(arena.base, 0x30000, 0x30000)]
    assert regions[0].allocation_protect == 0x04
    for _ in range(100):
        arena.allocate(100, "more")
    assert len(mm.reserved_regions()) == 1


def test_allocations_are_zeroed_even_when_reusing_dirty_memory() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x1000)
    p = arena.allocate(256, "scratch")
    mm.write(p, b"\xff" * 256)
    arena.release(p)
    q = arena.allocate(200, "again")
    assert q == p
    assert mm.read(q, 208) == bytes(208)


@pytest.mark.parametrize("size", [1, 15, 16, 17, 31, 100, 4095])
def test_alignment_is_16_bytes(size: int) -> None:
    arena = GuestArena(make_mm(), 0x10000)
    addresses = [arena.allocate(size, "a") for _ in range(5)]
    assert all(a % 16 == 0 for a in addresses)
    assert [b - a for a, b in pairwise(addresses)] == [(size + 15) // 16 * 16] * 4


def test_usage_per_reason() -> None:
    arena = GuestArena(make_mm(), 0x10000)
    a = arena.allocate(10, "Scratchbuffer")
    arena.allocate(20, "Scratchbuffer")
    c = arena.allocate(7, "Palette")
    assert usage_table(arena) == {"Scratchbuffer": (2, 30), "Palette": (1, 7)}
    arena.release(a)
    arena.release(c)
    assert usage_table(arena) == {"Scratchbuffer": (1, 20)}
    assert arena.reason_of(arena.allocate(1, "x")) == "x"
    table = arena.usage()
    table["x"].count = 99  # a copy: the arena's bookkeeping is not touched
    assert usage_table(arena)["x"] == (1, 1)


def test_scoped_releases_at_exit_and_on_error() -> None:
    arena = GuestArena(make_mm(), 0x1000)
    with arena.scoped(64, "heap_mem") as p:
        assert arena.sizeof_allocation(p) == 64
        assert usage_table(arena) == {"heap_mem": (1, 64)}
    assert usage_table(arena) == {} and len(arena) == 0
    with pytest.raises(RuntimeError), arena.scoped(32, "heap_mem") as q:
        raise RuntimeError("boom")
    assert len(arena) == 0
    with pytest.raises(DoubleReleaseError):
        arena.release(q)


# -- reuse, coalescing and fragmentation -----------------------------------------------
def test_free_space_coalesces() -> None:
    arena = GuestArena(make_mm(), 0x300)
    a, b, c = (arena.allocate(0x100, r) for r in "abc")
    with pytest.raises(ArenaExhausted):
        arena.allocate(1, "full")
    arena.release(a)
    arena.release(c)
    assert arena.statistics().free_spans == 2
    assert arena.fragmentation() == pytest.approx(0.5)
    arena.release(b)  # merges with both neighbours
    assert arena.statistics().free_spans == 1 and arena.fragmentation() == 0.0
    assert arena.allocate(0x300, "everything") == a


def test_best_fit_keeps_large_spans_whole() -> None:
    arena = GuestArena(make_mm(), 0x1000)
    small = arena.allocate(0x40, "s")
    arena.allocate(0x10, "pin")
    big = arena.allocate(0x400, "b")
    arena.allocate(0x10, "pin")
    arena.release(small)
    arena.release(big)
    assert arena.allocate(0x30, "fits the small hole") == small
    assert arena.allocate(0x400, "still fits") == big


def test_fragmentation_metric() -> None:
    arena = GuestArena(make_mm(), 0x1000)
    pieces = [arena.allocate(0x80, "p") for _ in range(32)]
    assert arena.fragmentation() == 0.0  # nothing free
    for p in pieces[::2]:
        arena.release(p)
    stats = arena.statistics()
    assert (stats.free_size, stats.largest_free, stats.free_spans) == (0x800, 0x80, 16)
    assert arena.fragmentation() == pytest.approx(1 - 0x80 / 0x800)
    with pytest.raises(ArenaExhausted) as info:
        arena.allocate(0x100, "too big for any hole")
    assert "largest span 128" in str(info.value)


# -- errors ----------------------------------------------------------------------------
def state(arena: GuestArena) -> tuple[object, ...]:
    return (arena.statistics(), usage_table(arena), arena.allocations(),
            arena.mm.read(arena.base, arena.capacity) if arena.base else b"")


def test_errors_are_typed_and_change_nothing() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x1000)
    a = arena.allocate(0x100, "a")
    mm.write(a, b"\x07" * 0x100)
    b = arena.allocate(0x100, "b")
    arena.release(b)
    before = state(arena)
    cases: list[tuple[type[AllocatorError], object]] = [
        (InvalidAllocationSizeError, lambda: arena.allocate(0, "zero")),
        (InvalidAllocationSizeError, lambda: arena.allocate(-1, "negative")),
        (ArenaExhausted, lambda: arena.allocate(0x1001, "more than capacity")),
        (ArenaExhausted, lambda: arena.allocate(0xF01, "more than is free")),
        (DoubleReleaseError, lambda: arena.release(b)),
        (UnknownAllocationError, lambda: arena.release(a + 16)),
        (UnknownAllocationError, lambda: arena.release(0)),
        (UnknownAllocationError, lambda: arena.release(arena.base + 0x1000)),
        (UnknownAllocationError, lambda: arena.sizeof_allocation(b)),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()  # type: ignore[operator]
        assert state(arena) == before, error
    assert ArenaExhausted("x").status == 0xC0000017


def test_oversized_request_does_not_initialise() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x100)
    with pytest.raises(ArenaExhausted):
        arena.allocate(0x101, "big")
    assert not arena.initialized and mm.reserved_regions() == []


def test_capacity_must_be_positive_and_fit_the_guest() -> None:
    with pytest.raises(InvalidParameterError):
        GuestArena(make_mm(), 0)
    arena = GuestArena(MemoryManager(Uc(UC_ARCH_X86, UC_MODE_32)), 0x7FFF0000)
    with pytest.raises(AllocatorOutOfMemoryError):
        arena.allocate(16, "x")
    assert not arena.initialized


def test_close_releases_the_buffer() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x1000)
    arena.allocate(16, "x")
    arena.close()
    assert mm.reserved_regions() == [] and len(arena) == 0 and not arena.initialized


# -- guest access ----------------------------------------------------------------------
def test_guest_code_reads_and_writes_arena_memory() -> None:
    mm = make_mm()
    arena = GuestArena(mm, 0x1000)
    data = arena.allocate(16, "data")
    mm.write(data, (40).to_bytes(8, "little"))
    code_base = mm.allocate(0x1000, 0x20)  # PAGE_EXECUTE_READ
    code, _ = Ks(KS_ARCH_X86, KS_MODE_64).asm(
        f"mov rbx, {data}; mov rax, qword ptr [rbx]; add rax, 2; mov qword ptr [rbx + 8], rax",
        code_base,
    )
    mm.write(code_base, bytes(code))
    mm.uc.emu_start(code_base, code_base + len(code))
    assert mm.take_fault() is None
    assert int.from_bytes(mm.read(data + 8, 8), "little") == 42


# -- stateful model check --------------------------------------------------------------
class ArenaModel(RuleBasedStateMachine):
    """allocate/release against a dict of live spans; free space is their complement."""

    CAPACITY = 0x2000
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.mm = make_mm()
        self.arena = GuestArena(self.mm, self.CAPACITY)
        self.live: dict[int, tuple[int, str, int]] = {}  # address -> (size, reason, tag)
        self.tag = 0

    def gaps(self) -> list[int]:
        if not self.arena.initialized:
            return [self.CAPACITY]
        pos, gaps = self.arena.base, []
        for address in sorted(self.live):
            if address > pos:
                gaps.append(address - pos)
            pos = address + -(-self.live[address][0] // 16) * 16
        end = self.arena.base + self.CAPACITY
        if end > pos:
            gaps.append(end - pos)
        return gaps

    @rule(target=handles, size=st.integers(1, 0x300), reason=st.sampled_from("abc"))
    def allocate(self, size: int, reason: str) -> int:
        span = -(-size // 16) * 16
        if span > max(self.gaps(), default=0):
            with pytest.raises(ArenaExhausted):
                self.arena.allocate(size, reason)
            return 0
        address = self.arena.allocate(size, reason)
        assert self.mm.read(address, size) == bytes(size)
        self.tag = self.tag % 255 + 1
        self.mm.write(address, bytes([self.tag]) * size)
        self.live[address] = (size, reason, self.tag)
        return address

    @rule(address=consumes(handles))
    def release(self, address: int) -> None:
        if address not in self.live:
            with pytest.raises(UnknownAllocationError):
                self.arena.release(address)
            return
        assert self.arena.release(address) == 0
        del self.live[address]
        with pytest.raises(DoubleReleaseError):
            self.arena.release(address)

    @invariant()
    def matches_the_model(self) -> None:
        arena = self.arena
        for address, (size, _, tag) in self.live.items():
            assert address % 16 == 0
            assert arena.sizeof_allocation(address) == size
            assert self.mm.read(address, size) == bytes([tag]) * size
        gaps = self.gaps()
        stats = arena.statistics()
        assert stats.free_size == sum(gaps) == arena.free_size()
        assert stats.free_spans == len(gaps)  # fully coalesced
        assert arena.largest_free() == max(gaps, default=0)
        expected_fragmentation = 1 - max(gaps) / sum(gaps) if gaps else 0.0
        assert arena.fragmentation() == pytest.approx(expected_fragmentation)
        table: dict[str, tuple[int, int]] = {}
        for size, reason, _ in self.live.values():
            count, total = table.get(reason, (0, 0))
            table[reason] = (count + 1, total + size)
        assert usage_table(arena) == table


ArenaModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestArenaModel = ArenaModel.TestCase
