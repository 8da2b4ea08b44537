"""Tests for JitAllocator: guest code through the RW view runs at RX, W^X, pools, fill
pattern, errors that change nothing, reset policies, and a stateful model check.

Expected protections and statuses are written as Windows literals (0x20 PAGE_EXECUTE_READ,
0x40 PAGE_EXECUTE_READWRITE, 0x04 PAGE_READWRITE, 0xC0000005 STATUS_ACCESS_VIOLATION).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_RAX

from emulator_mem.allocators import JitAllocator, JitAllocatorOptions, ResetPolicy
from emulator_mem.errors import (
    AllocationTooLargeError,
    AllocatorError,
    AllocatorOutOfMemoryError,
    DoubleReleaseError,
    InvalidAllocationSizeError,
    InvalidParameterError,
    UnknownAllocationError,
)
from emulator_mem.manager import MemoryManager

Opt = JitAllocatorOptions
DUAL = Opt.USE_DUAL_MAPPING
FILL = Opt.FILL_UNUSED_MEMORY
POOLS = Opt.USE_MULTIPLE_POOLS
IMMEDIATE = Opt.IMMEDIATE_RELEASE


def make_mm(bits: int = 64) -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if bits == 64 else UC_MODE_32))


def asm(source: str, address: int, bits: int = 64) -> bytes:
    encoding, _ = Ks(KS_ARCH_X86, KS_MODE_64 if bits == 64 else KS_MODE_32).asm(source, address)
    return bytes(encoding)


def run(mm: MemoryManager, start: int, until: int, bits: int = 64) -> int:
    mm.uc.emu_start(start, until)
    return int(mm.uc.reg_read(UC_X86_REG_RAX if bits == 64 else UC_X86_REG_EAX))


def emit_and_run(jit: JitAllocator, source: str, bits: int = 64) -> tuple[int, int]:
    """Assemble for the RX address, write through RW, run at RX; (rx, result)."""
    probe = asm(source, 0x10000, bits)
    rx, rw = jit.alloc(len(probe))
    code = asm(source, rx, bits)
    jit.mm.write(rw, code)
    return rx, run(jit.mm, rx, rx + len(code), bits)


SUM_64 = "xor rax, rax; mov rcx, 10; l: add rax, rcx; dec rcx; jnz l"
SUM_32 = "xor eax, eax; mov ecx, 10; l: add eax, ecx; dec ecx; jnz l"


# -- defaults and construction ---------------------------------------------------------
def test_defaults_match_asmjit() -> None:
    jit = JitAllocator(make_mm())
    assert jit.block_size == 0x10000
    assert jit.granularity == 64
    assert jit.fill_pattern == 0xCCCCCCCC
    assert jit.options == Opt.NONE
    assert not jit.has_option(DUAL)
    assert jit.statistics().block_count == 0


def test_options_and_custom_pattern() -> None:
    jit = JitAllocator(make_mm(), DUAL | FILL, fill_pattern=0x90909090, block_size=0x20000,
                       granularity=128)
    assert jit.has_option(DUAL) and jit.has_option(FILL) and jit.has_option(DUAL | FILL)
    assert jit.has_option(Opt.CUSTOM_FILL_PATTERN)
    assert not jit.has_option(POOLS)
    assert (jit.fill_pattern, jit.block_size, jit.granularity) == (0x90909090, 0x20000, 128)


@pytest.mark.parametrize(
    "kwargs",
    [{"block_size": 0x18000}, {"block_size": 0x1000}, {"granularity": 32},
     {"granularity": 96}, {"fill_pattern": 1 << 32}],
)
def test_bad_construction(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidParameterError):
        JitAllocator(make_mm(), **kwargs)


def test_custom_pattern_flag_needs_a_pattern() -> None:
    with pytest.raises(InvalidParameterError):
        JitAllocator(make_mm(), FILL | Opt.CUSTOM_FILL_PATTERN)


# -- code runs -------------------------------------------------------------------------
@pytest.mark.parametrize("options", [Opt.NONE, DUAL, DUAL | FILL | POOLS])
@pytest.mark.parametrize("bits", [32, 64])
def test_code_written_through_rw_runs_at_rx(options: JitAllocatorOptions, bits: int) -> None:
    mm = make_mm(bits)
    jit = JitAllocator(mm, options)
    rx, result = emit_and_run(jit, SUM_64 if bits == 64 else SUM_32, bits)
    assert result == 55
    assert jit.query(rx)[0] == rx


def test_rip_relative_code_and_data_in_one_allocation() -> None:
    jit = JitAllocator(make_mm(), DUAL)
    rx, rw = jit.alloc(64)
    code = asm("mov rax, qword ptr [rip + data]; add rax, 1; jmp done; "
               "data: .quad 0x41; done: nop", rx)
    jit.mm.write(rw, code)
    assert run(jit.mm, rx, rx + len(code)) == 0x42


def test_without_dual_mapping_rx_is_rw_and_rwx() -> None:
    mm = make_mm()
    jit = JitAllocator(mm)
    rx, rw = jit.alloc(100)
    assert rx == rw
    assert mm.query(rx).Protect == 0x40


def test_dual_mapping_views_share_pages() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, DUAL)
    rx, rw = jit.alloc(100)
    assert rx != rw
    assert mm.query(rx).Protect == 0x20
    assert mm.query(rw).Protect == 0x04
    mm.write(rw, b"\x90\xc3")
    assert mm.read(rx, 2) == b"\x90\xc3"


@pytest.mark.parametrize("options", [Opt.NONE, FILL, DUAL, DUAL | FILL])
def test_reused_memory_runs_the_new_code(options: JitAllocatorOptions) -> None:
    """Unicorn caches translations: new code at an old address must still be the code run."""
    jit = JitAllocator(jit_mm := make_mm(), options)
    rx1, result1 = emit_and_run(jit, "mov eax, 1")
    assert result1 == 1
    jit.release(rx1)
    rx2, result2 = emit_and_run(jit, "mov eax, 2")
    assert rx2 == rx1
    assert result2 == 2
    assert jit_mm.take_fault() is None


@pytest.mark.parametrize("options", [Opt.NONE, DUAL])
def test_guest_writes_code_through_rw_then_runs_it(options: JitAllocatorOptions) -> None:
    """A guest-side JIT: code at one allocation rewrites another through its RW view."""
    mm = make_mm()
    jit = JitAllocator(mm, options)
    target_rx, target_rw = jit.alloc(16)
    old = asm("mov eax, 1", target_rx)
    mm.write(target_rw, old)
    assert run(mm, target_rx, target_rx + len(old)) == 1  # now translated and cached
    new = asm("mov eax, 0x12345678", target_rx)  # b8 78 56 34 12
    writer_rx, writer_rw = jit.alloc(64)
    writer = asm(
        f"mov rdi, {target_rw}; mov dword ptr [rdi], {int.from_bytes(new[:4], 'little')}; "
        f"mov byte ptr [rdi + 4], {new[4]}; mov rax, {target_rx}; jmp rax",
        writer_rx,
    )
    mm.write(writer_rw, writer)
    assert run(mm, writer_rx, target_rx + len(new)) == 0x12345678


def test_guest_write_to_rx_faults_with_dual_mapping() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, DUAL)
    rx, rw = jit.alloc(64)
    code = asm(f"mov rbx, {rx}; mov byte ptr [rbx], 0x90", rx)
    mm.write(rw, code)
    with pytest.raises(UcError):
        run(mm, rx, rx + len(code))
    fault = mm.take_fault()
    assert fault is not None
    assert (fault.status, fault.access, fault.address) == (0xC0000005, 1, rx)
    assert mm.read(rx, len(code)) == code  # nothing was written


def test_executing_the_rw_view_faults() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, DUAL)
    rx, rw = jit.alloc(64)
    mm.write(rw, asm("nop", rw))
    with pytest.raises(UcError):
        run(mm, rw, rw + 1)
    fault = mm.take_fault()
    assert fault is not None and (fault.status, fault.access) == (0xC0000005, 8)


def test_jump_into_freed_code_hits_int3() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, FILL | DUAL)
    rx, _ = emit_and_run(jit, "mov eax, 7")
    jit.release(rx)
    interrupts: list[int] = []

    def on_interrupt(uc: Uc, intno: int, _data: object) -> None:
        interrupts.append(intno)
        uc.emu_stop()

    mm.uc.hook_add(UC_HOOK_INTR, on_interrupt)
    mm.uc.emu_start(rx, rx + 0x40)
    assert interrupts == [3]


# -- fill pattern ----------------------------------------------------------------------
def test_fill_pattern_on_new_blocks_and_freed_spans() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, FILL | DUAL)
    rx, rw = jit.alloc(200)
    block = jit.blocks()[0]
    assert mm.read(block.rx, block.size) == b"\xcc" * block.size
    mm.write(rw, b"\x01" * 200)
    jit.release(rx)
    assert mm.read(rx, 256) == b"\xcc" * 256


def test_custom_fill_pattern_is_a_little_endian_uint32() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, FILL, fill_pattern=0x11223344)
    rx, _ = jit.alloc(64)
    assert mm.read(rx, 8) == bytes.fromhex("4433221144332211")


def test_without_fill_freed_memory_is_left_alone() -> None:
    mm = make_mm()
    jit = JitAllocator(mm)
    rx, rw = jit.alloc(64)
    other, _ = jit.alloc(64)  # keeps the block in use
    mm.write(rw, b"\x01" * 64)
    jit.release(rx)
    assert mm.read(rx, 64) == b"\x01" * 64
    assert other != rx


# -- pools, sizes, blocks --------------------------------------------------------------
def test_multiple_pools_pick_the_coarsest_granularity_that_fits() -> None:
    jit = JitAllocator(make_mm(), POOLS)
    sizes = {64: 64, 128: 128, 256: 256, 192: 64, 512: 256, 1: 64, 129: 64, 384: 128}
    got = {}
    for size in sizes:
        rx, _ = jit.alloc(size)
        got[size] = next(b.granularity for b in jit.blocks() if b.rx <= rx < b.rx + b.size)
        assert jit.query(rx)[2] == (size + 63) // 64 * 64
    assert got == sizes
    assert jit.statistics().block_count == 3


def test_query_rounds_to_granularity_and_accepts_interior_pointers() -> None:
    jit = JitAllocator(make_mm(), DUAL)
    a_rx, a_rw = jit.alloc(1)
    b_rx, b_rw = jit.alloc(130)
    assert jit.query(a_rx) == (a_rx, a_rw, 64)
    assert jit.query(b_rx) == (b_rx, b_rw, 192)
    assert jit.query(b_rx + 150) == (b_rx, b_rw, 192)
    assert b_rx == a_rx + 64  # no metadata between allocations
    with pytest.raises(UnknownAllocationError):
        jit.query(b_rx + 192)  # free granule


def test_large_allocation_gets_its_own_block() -> None:
    jit = JitAllocator(make_mm())
    rx, _ = jit.alloc(0x30001)
    assert jit.query(rx)[2] == 0x30040
    assert [b.size for b in jit.blocks()] == [0x40000]


def test_blocks_grow_by_doubling() -> None:
    jit = JitAllocator(make_mm())
    for _ in range(7 * 0x10000 // 0x1000):
        jit.alloc(0x1000)
    assert [b.size for b in jit.blocks()] == [0x10000, 0x20000, 0x40000]


def test_shrink_frees_the_tail_for_reuse() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, FILL)
    rx, rw = jit.alloc(256)
    mm.write(rw, b"\x01" * 256)
    jit.shrink(rx, 65)
    assert jit.query(rx)[2] == 128
    assert mm.read(rx, 128) == b"\x01" * 128
    assert mm.read(rx + 128, 128) == b"\xcc" * 128
    assert jit.alloc(128)[0] == rx + 128
    assert jit.statistics().used_size == 256
    jit.shrink(rx, 128)  # same size: nothing to do
    jit.shrink(rx, 0)  # zero releases, as asmjit does
    assert jit.statistics().allocation_count == 1


# -- errors change nothing -------------------------------------------------------------
def snapshot(jit: JitAllocator) -> tuple[object, ...]:
    blocks = jit.blocks()
    return (jit.statistics(), blocks, [jit.mm.read(b.rx, b.size) for b in blocks])


def test_errors_are_typed_and_change_nothing() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, FILL | DUAL)
    a, a_rw = jit.alloc(128)
    b, _ = jit.alloc(64)
    mm.write(a_rw, b"\x05" * 128)
    jit.release(b)
    before = snapshot(jit)
    cases: list[tuple[type[AllocatorError], object]] = [
        (InvalidAllocationSizeError, lambda: jit.alloc(0)),
        (InvalidAllocationSizeError, lambda: jit.alloc(-5)),
        (AllocationTooLargeError, lambda: jit.alloc(1 << 31)),
        (DoubleReleaseError, lambda: jit.release(b)),
        (UnknownAllocationError, lambda: jit.release(a + 64)),  # inside an allocation
        (UnknownAllocationError, lambda: jit.release(a + 1)),  # not granule aligned
        (UnknownAllocationError, lambda: jit.release(0x1234_0000)),  # foreign
        (UnknownAllocationError, lambda: jit.release(a_rw)),  # the RW view is not a handle
        (InvalidAllocationSizeError, lambda: jit.shrink(a, 129)),
        (InvalidAllocationSizeError, lambda: jit.shrink(a, -1)),
        (DoubleReleaseError, lambda: jit.shrink(b, 10)),
        (UnknownAllocationError, lambda: jit.query(0x10)),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()  # type: ignore[operator]
        assert snapshot(jit) == before, error
    assert issubclass(DoubleReleaseError, UnknownAllocationError)
    assert InvalidAllocationSizeError("x").status == 0xC000000D


def test_no_room_for_a_block_is_a_typed_error() -> None:
    mm = make_mm(32)
    jit = JitAllocator(mm, DUAL)
    jit.alloc(64)
    before = (snapshot(jit), mm.reserved_regions())
    with pytest.raises(AllocatorOutOfMemoryError) as info:
        jit.alloc(0x7FF00000)  # the RX view fits, its RW alias does not
    assert info.value.status == 0xC0000017
    assert (snapshot(jit), mm.reserved_regions()) == before


# -- empty blocks and reset ------------------------------------------------------------
def test_one_empty_block_is_kept_per_pool() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, DUAL)
    first = [jit.alloc(0x8000)[0] for _ in range(2)]  # fills the 64 KiB block
    second = jit.alloc(0x8000)[0]  # second block (128 KiB)
    for rx in first:
        jit.release(rx)
    assert jit.statistics().block_count == 2  # the first block is kept, empty
    jit.release(second)
    assert jit.statistics().block_count == 1  # only one empty block stays
    assert mm.query(second).State == 0x10000  # MEM_FREE
    assert len(mm.reserved_regions()) == 2  # RX + RW of the kept block


def test_immediate_release_unmaps_both_views() -> None:
    mm = make_mm()
    jit = JitAllocator(mm, DUAL | IMMEDIATE)
    rx, rw = jit.alloc(100)
    jit.release(rx)
    assert jit.statistics().block_count == 0
    assert mm.query(rx).State == 0x10000 and mm.query(rw).State == 0x10000
    assert mm.reserved_regions() == []


@pytest.mark.parametrize("options", [FILL | DUAL | POOLS, FILL | DUAL | POOLS | IMMEDIATE])
def test_reset_policies(options: JitAllocatorOptions) -> None:
    mm = make_mm()
    jit = JitAllocator(mm, options)
    live = [jit.alloc(size)[1] for size in (64, 128, 256) for _ in range(300)]
    for rw in live[::7]:
        mm.write(rw, b"\x01" * 64)
    assert jit.statistics().block_count > 3
    jit.reset(ResetPolicy.SOFT)
    stats = jit.statistics()
    assert (stats.allocation_count, stats.used_size) == (0, 0)
    if options & IMMEDIATE:
        assert stats.block_count == 0 and mm.reserved_regions() == []
    else:
        blocks = jit.blocks()
        assert stats.block_count == 3 and {b.granularity for b in blocks} == {64, 128, 256}
        assert all(mm.read(b.rx, b.size) == b"\xcc" * b.size for b in blocks)
        assert jit.alloc(64)[0] == next(b.rx for b in blocks if b.granularity == 64)
    jit.reset(ResetPolicy.HARD)
    assert jit.statistics().block_count == 0
    assert mm.reserved_regions() == []


def test_statistics_add_up() -> None:
    jit = JitAllocator(make_mm(), POOLS)
    for size in (1, 64, 100, 128, 256, 1000):
        jit.alloc(size)
    stats = jit.statistics()
    assert stats.allocation_count == 6
    assert stats.used_size == 64 + 64 + 128 + 128 + 256 + 1024
    assert stats.reserved_size == sum(b.size for b in jit.blocks()) == 3 * 0x10000
    assert stats.used_size == sum(b.used_size for b in jit.blocks())
    assert 0 < stats.overhead_size < stats.reserved_size
    assert stats.unused_size == stats.reserved_size - stats.used_size
    assert stats.used == stats.used_size and stats.reserved == stats.reserved_size


# -- stateful model check --------------------------------------------------------------
@dataclass(order=True)
class Live:
    rx: int
    rw: int
    size: int  # requested (after shrinks)
    tag: int
    granularity: int  # of the pool it came from

    @property
    def rounded(self) -> int:
        return -(-self.size // self.granularity) * self.granularity


class JitModel(RuleBasedStateMachine):
    """Random alloc/release/shrink/query against a plain list of live spans.

    Every allocation is filled with its own tag through RW; reading through RX must give
    the tag back (no two live spans overlap), and every granule not in a live span must
    hold the fill pattern.
    """

    handles = Bundle("handles")
    released = Bundle("released")

    def __init__(self) -> None:
        super().__init__()
        self.mm = make_mm()
        self.jit: JitAllocator
        self.live: dict[int, Live] = {}
        self.next_tag = 1

    @initialize(extra=st.sampled_from([Opt.NONE, DUAL, POOLS, DUAL | POOLS | IMMEDIATE,
                                       IMMEDIATE]))
    def setup(self, extra: JitAllocatorOptions) -> None:
        self.jit = JitAllocator(self.mm, FILL | extra, fill_pattern=0xF4F4F4F4)

    def granularity(self, size: int) -> int:
        """Pool granularity: the largest of 256/128/64 dividing the 64-rounded size."""
        rounded = -(-size // 64) * 64
        if self.jit.has_option(POOLS):
            return next(g for g in (256, 128, 64) if rounded % g == 0)
        return 64

    @rule(target=handles, size=st.one_of(st.integers(1, 600), st.integers(0x8000, 0x24000)))
    def alloc(self, size: int) -> int:
        rx, rw = self.jit.alloc(size)
        tag = self.next_tag
        self.next_tag = self.next_tag % 250 + 1
        self.mm.write(rw, bytes([tag]) * size)
        self.live[rx] = Live(rx, rw, size, tag, self.granularity(size))
        return rx

    @rule(target=released, rx=consumes(handles))
    def release(self, rx: int) -> int:
        if rx in self.live:
            self.jit.release(rx)
            del self.live[rx]
        else:  # shrunk to 0 earlier: already released
            self.double_release_changes_nothing(rx)
        return rx

    @rule(rx=released)
    def double_release_changes_nothing(self, rx: int) -> None:
        if rx in self.live:
            return  # the address was handed out again
        before = self.jit.statistics()
        # a free granule start is a double release; anything else (the block is gone, or a
        # block of another pool now covers the address) is merely unknown
        on_free_granule = self.covers(rx) is None and any(
            b.rx <= rx < b.rx + b.size and (rx - b.rx) % b.granularity == 0
            for b in self.jit.blocks()
        )
        expected = DoubleReleaseError if on_free_granule else UnknownAllocationError
        with pytest.raises(expected):
            self.jit.release(rx)
        assert self.jit.statistics() == before

    @rule(rx=handles, fraction=st.floats(0, 1))
    def shrink(self, rx: int, fraction: float) -> None:
        entry = self.live.get(rx)
        if entry is None:
            return
        new = int(entry.size * fraction)
        self.jit.shrink(rx, new)
        if new == 0:
            del self.live[rx]
        else:
            entry.size = new

    @rule(rx=handles, data=st.data())
    def query(self, rx: int, data: st.DataObject) -> None:
        entry = self.live.get(rx)
        if entry is None:
            return
        offset = data.draw(st.integers(0, entry.rounded - 1))
        assert self.jit.query(rx + offset) == (rx, entry.rw, entry.rounded)

    def covers(self, address: int) -> Live | None:
        for entry in self.live.values():
            if entry.rx <= address < entry.rx + entry.rounded:
                return entry
        return None

    @invariant()
    def spans_disjoint_and_statistics_add_up(self) -> None:
        if not hasattr(self, "jit"):
            return
        spans = sorted((e.rx, e.rx + e.rounded) for e in self.live.values())
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))
        stats = self.jit.statistics()
        blocks = self.jit.blocks()
        assert stats.allocation_count == len(self.live)
        assert stats.used_size == sum(e.rounded for e in self.live.values())
        assert stats.block_count == len(blocks)
        assert stats.reserved_size == sum(b.size for b in blocks)
        if self.jit.has_option(IMMEDIATE):
            assert all(b.used_size for b in blocks)

    @invariant()
    def contents_match_the_model(self) -> None:
        if not hasattr(self, "jit"):
            return
        for block in self.jit.blocks():
            memory = self.mm.read(block.rx, block.size)
            pos = 0
            inside = sorted(e for e in self.live.values() if block.rx <= e.rx < block.rx + block.size)
            for entry in inside:
                start = entry.rx - block.rx
                assert memory[pos:start] == b"\xf4" * (start - pos)  # free gap
                assert memory[start : start + entry.size] == bytes([entry.tag]) * entry.size
                pos = start + entry.rounded
            assert memory[pos:] == b"\xf4" * (block.size - pos)


    @invariant()
    def free_run_index_matches_the_bit_vectors(self) -> None:
        """White box: the free-run index holds exactly the maximal free runs of ``used``."""
        if not hasattr(self, "jit"):
            return
        for pool in self.jit._pools:
            expected = set()
            for block in pool.blocks:
                runs = {}
                start = block.used.find(0)
                while start >= 0:
                    end = block.used.find(1, start)
                    end = block.area_size if end < 0 else end
                    runs[start] = end
                    start = block.used.find(0, end)
                assert block.run_end == runs
                assert block.run_start == {e: s for s, e in runs.items()}
                assert block.area_used == block.area_size - sum(e - s for s, e in runs.items())
                assert block.stop.count(1) <= block.area_used
                expected |= {(e - s, block.rx, s) for s, e in runs.items()}
            assert set(pool.runs) == expected and len(pool.runs) == len(expected)
            assert pool.empty_blocks == sum(1 for b in pool.blocks if not b.area_used)


JitModel.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJitModel = JitModel.TestCase
