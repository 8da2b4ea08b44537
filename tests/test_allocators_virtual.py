"""Tests for VirtualAllocator (IVirtualAllocator): reserve/commit with hints and alignment,
decommit and release, PartialFree exactly as the seed's note describes, C-style failures
that change nothing.

Windows literals: MEM_COMMIT 0x1000, MEM_RESERVE 0x2000, MEM_DECOMMIT 0x4000,
MEM_RELEASE 0x8000, MEM_FREE 0x10000, PAGE_NOACCESS 0x01, PAGE_READWRITE 0x04,
PAGE_EXECUTE_READWRITE 0x40.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_EAX

from emulator_mem.allocators import VirtualAllocator
from emulator_mem.errors import MemoryAccessError
from emulator_mem.manager import MemoryManager

MEM_COMMIT, MEM_RESERVE, MEM_DECOMMIT, MEM_RELEASE, MEM_FREE = (
    0x1000, 0x2000, 0x4000, 0x8000, 0x10000,
)
MEM_TOP_DOWN = 0x100000
PAGE_NOACCESS, PAGE_READWRITE, PAGE_EXECUTE_READWRITE = 0x01, 0x04, 0x40
BOTH = MEM_RESERVE | MEM_COMMIT


def make(bits: int = 64) -> tuple[MemoryManager, VirtualAllocator]:
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if bits == 64 else UC_MODE_32))
    return mm, VirtualAllocator(mm)


def state_at(mm: MemoryManager, address: int) -> int:
    return mm.query(address).State


def layout(mm: MemoryManager) -> list[object]:
    return list(mm.regions())


def test_page_sizes() -> None:
    _, va = make()
    assert va.allocation_page_size() == 0x10000
    assert va.commit_page_size() == 0x1000


def test_reserve_then_commit_pieces() -> None:
    mm, va = make()
    base = va.allocate(0, 0x30000, 0, PAGE_NOACCESS, MEM_RESERVE)
    assert base and base % 0x10000 == 0
    assert state_at(mm, base) == MEM_RESERVE
    with pytest.raises(MemoryAccessError):
        mm.read(base, 1)
    got = va.allocate(base + 0x1234, 0x2000, 0, PAGE_READWRITE, MEM_COMMIT)
    assert got == base + 0x1000  # committing rounds down to the page, as VirtualAlloc
    mbi = mm.query(base + 0x1000)
    assert (mbi.State, mbi.Protect, mbi.RegionSize, mbi.AllocationBase) == (
        MEM_COMMIT, PAGE_READWRITE, 0x3000, base)  # 0x1234 + 0x2000 spans three pages
    mm.write(base + 0x1000, b"hello")
    assert mm.read(base + 0x1000, 5) == b"hello"
    assert state_at(mm, base) == MEM_RESERVE
    assert state_at(mm, base + 0x4000) == MEM_RESERVE
    assert va.last_status == 0


def test_reserve_and_commit_at_once() -> None:
    mm, va = make()
    base = va.allocate(0, 0x1800, 0, PAGE_READWRITE, BOTH)
    mbi = mm.query(base)
    assert (mbi.State, mbi.RegionSize, mbi.Protect) == (MEM_COMMIT, 0x2000, PAGE_READWRITE)
    assert [r.size for r in va.reservations()] == [0x2000]


def test_commit_without_address_reserves_too() -> None:
    mm, va = make()
    base = va.allocate(0, 0x1000, 0, PAGE_READWRITE, MEM_COMMIT)
    assert base and state_at(mm, base) == MEM_COMMIT


@pytest.mark.parametrize("alignment", [0, 1, 16, 0x1000, 0x10000, 0x20000, 0x100000, 0x400000])
def test_result_honours_alignment(alignment: int) -> None:
    _, va = make()
    va.allocate(0, 0x10000, 0, PAGE_READWRITE, BOTH)  # the lowest address is now taken
    base = va.allocate(0, 0x3000, alignment, PAGE_READWRITE, BOTH)
    assert base and base % max(alignment, 0x10000) == 0


def test_hint_is_used_when_free() -> None:
    mm, va = make(32)
    assert va.allocate(0x50000000, 0x1000, 0, PAGE_READWRITE, MEM_RESERVE) == 0x50000000
    assert va.allocate(0x50112345, 0x1000, 0, PAGE_READWRITE, MEM_RESERVE) == 0x50110000
    assert va.allocate(0x50523456, 0x1000, 0x100000, PAGE_READWRITE, BOTH) == 0x50500000
    assert mm.query(0x50500000).State == MEM_COMMIT


def test_occupied_hint_falls_back_to_a_free_range_above_it() -> None:
    _, va = make(32)
    first = va.allocate(0x50000000, 0x20000, 0, PAGE_READWRITE, MEM_RESERVE)
    second = va.allocate(0x50000000, 0x10000, 0, PAGE_READWRITE, MEM_RESERVE)
    assert first == 0x50000000 and second == 0x50020000
    high = 0x7FFE0000  # the last 64 KiB of a 32-bit user space
    assert va.allocate(high, 0x10000, 0, PAGE_READWRITE, MEM_RESERVE) == high
    anywhere = va.allocate(high, 0x10000, 0, PAGE_READWRITE, MEM_RESERVE)
    assert anywhere and anywhere != high


def test_executable_memory_runs_guest_code() -> None:
    mm, va = make(32)
    base = va.allocate(0, 0x1000, 0, PAGE_EXECUTE_READWRITE, BOTH)
    code = bytes(Ks(KS_ARCH_X86, KS_MODE_32).asm("mov eax, 6; imul eax, eax, 7", base)[0])
    mm.write(base, code)
    mm.uc.emu_start(base, base + len(code))
    assert mm.uc.reg_read(UC_X86_REG_EAX) == 42


# -- Free ------------------------------------------------------------------------------
def test_decommit_and_recommit_gives_zeroes() -> None:
    mm, va = make()
    base = va.allocate(0, 0x4000, 0, PAGE_READWRITE, BOTH)
    mm.write(base, b"\x55" * 0x4000)
    assert va.free(base + 0x1000, 0x1000, MEM_DECOMMIT)
    assert state_at(mm, base + 0x1000) == MEM_RESERVE
    assert state_at(mm, base) == state_at(mm, base + 0x2000) == MEM_COMMIT
    assert va.allocate(base + 0x1000, 0x1000, 0, PAGE_READWRITE, MEM_COMMIT) == base + 0x1000
    assert mm.read(base + 0x1000, 0x1000) == bytes(0x1000)
    assert mm.read(base, 4) == b"\x55" * 4


def test_decommit_size_zero_at_base_decommits_everything() -> None:
    mm, va = make()
    base = va.allocate(0, 0x4000, 0, PAGE_READWRITE, BOTH)
    assert va.free(base, 0, MEM_DECOMMIT)
    mbi = mm.query(base)
    assert (mbi.State, mbi.RegionSize) == (MEM_RESERVE, 0x4000)
    assert not va.free(base + 0x1000, 0, MEM_DECOMMIT)


def test_release_frees_everything_and_ignores_size() -> None:
    mm, va = make()
    base = va.allocate(0, 0x30000, 0, PAGE_READWRITE, MEM_RESERVE)
    va.allocate(base, 0x1000, 0, PAGE_READWRITE, MEM_COMMIT)
    assert va.free(base, 0x123, MEM_RELEASE)  # release also decommits; size is ignored
    assert state_at(mm, base) == state_at(mm, base + 0x20000) == MEM_FREE
    assert va.reservations() == []
    assert not va.free(base, 0, MEM_RELEASE)
    assert va.last_status == 0xC00000A0  # STATUS_MEMORY_NOT_ALLOCATED


def test_release_needs_the_base() -> None:
    mm, va = make()
    base = va.allocate(0, 0x20000, 0, PAGE_READWRITE, BOTH)
    assert not va.free(base + 0x1000, 0, MEM_RELEASE)
    assert va.last_status == 0xC000009F  # STATUS_FREE_VM_NOT_AT_BASE
    assert state_at(mm, base) == MEM_COMMIT


def test_memory_of_others_is_out_of_reach() -> None:
    """Only reservations made through the allocator can be committed, freed or released."""
    mm, va = make()
    foreign = mm.allocate(0x10000, PAGE_READWRITE, reserve_only=True)
    before = layout(mm)
    assert va.allocate(foreign, 0x1000, 0, PAGE_READWRITE, MEM_COMMIT) == 0
    assert not va.free(foreign, 0, MEM_RELEASE)
    assert not va.free(foreign, 0x1000, MEM_DECOMMIT)
    assert not va.partial_free(foreign, 0x10000, 0x1000, MEM_DECOMMIT)
    assert layout(mm) == before


# -- PartialFree -----------------------------------------------------------------------
def test_partial_decommit_keeps_the_head() -> None:
    mm, va = make()
    base = va.allocate(0, 0x40000, 0, PAGE_READWRITE, BOTH)
    mm.write(base, b"\x11" * 0x40000)
    assert va.partial_free(base, 0x40000, 0x18000, MEM_DECOMMIT)
    head, tail = mm.query(base), mm.query(base + 0x18000)
    assert (head.State, head.RegionSize) == (MEM_COMMIT, 0x18000)
    assert (tail.State, tail.RegionSize, tail.AllocationBase) == (MEM_RESERVE, 0x28000, base)
    assert mm.read(base, 0x18000) == b"\x11" * 0x18000


def test_partial_release_decommits_then_final_release_frees_all() -> None:
    """The seed's note: Windows cannot partially release, so decommit the tail and let the
    final release (which passes new_size) free the whole reservation."""
    mm, va = make()
    base = va.allocate(0, 0x40000, 0, PAGE_READWRITE, BOTH)
    mm.write(base, b"\x22" * 0x40000)
    assert va.partial_free(base, 0x40000, 0x10000, MEM_RELEASE)
    tail = mm.query(base + 0x10000)
    assert (tail.State, tail.AllocationBase, tail.RegionSize) == (MEM_RESERVE, base, 0x30000)
    assert mm.read(base, 0x10000) == b"\x22" * 0x10000
    (res,) = va.reservations()
    assert (res.base, res.size, res.logical_size) == (base, 0x40000, 0x10000)
    # a second shrink of the same region, again to a smaller size
    assert va.partial_free(base, 0x10000, 0x8000, MEM_RELEASE)
    assert state_at(mm, base + 0x8000) == MEM_RESERVE
    assert va.free(base, 0x8000, MEM_RELEASE)
    for offset in (0, 0x8000, 0x10000, 0x3F000):
        assert state_at(mm, base + offset) == MEM_FREE
    assert mm.reserved_regions() == []


def test_partial_free_keeps_the_page_of_the_last_byte() -> None:
    mm, va = make()
    base = va.allocate(0, 0x8000, 0, PAGE_READWRITE, BOTH)
    assert va.partial_free(base, 0x8000, 0x1801, MEM_DECOMMIT)
    assert mm.query(base).RegionSize == 0x2000
    assert state_at(mm, base + 0x2000) == MEM_RESERVE
    assert va.partial_free(base, 0x1801, 0x1801, MEM_DECOMMIT)  # nothing to give back
    assert mm.query(base).RegionSize == 0x2000


def test_partial_release_to_zero_is_a_whole_release() -> None:
    mm, va = make()
    base = va.allocate(0, 0x20000, 0, PAGE_READWRITE, BOTH)
    assert va.partial_free(base, 0x20000, 0, MEM_RELEASE)
    assert state_at(mm, base) == MEM_FREE and va.reservations() == []


# -- failures --------------------------------------------------------------------------
def test_failures_return_zero_or_false_and_change_nothing() -> None:
    mm, va = make(32)
    base = va.allocate(0, 0x20000, 0, PAGE_READWRITE, MEM_RESERVE)
    va.allocate(base, 0x1000, 0, PAGE_READWRITE, MEM_COMMIT)
    before, reservations = layout(mm), va.reservations()
    failures: list[tuple[Callable[[], int | bool], int]] = [
        (lambda: va.allocate(0, 0x1000, 0, PAGE_READWRITE, MEM_RESERVE | MEM_TOP_DOWN),
         0xC000000D),
        (lambda: va.allocate(0, 0x1000, 0, PAGE_READWRITE, 0), 0xC000000D),
        (lambda: va.allocate(0, 0, 0, PAGE_READWRITE, BOTH), 0xC000000D),
        (lambda: va.allocate(0, 0x1000, 0x30000, PAGE_READWRITE, BOTH), 0xC000000D),
        (lambda: va.allocate(0, 0x1000, 0, 0x3, BOTH), 0xC0000045),
        (lambda: va.allocate(0, 0x1000, 0, 0x08, BOTH), 0xC0000045),  # WRITECOPY: not private
        (lambda: va.allocate(0, 0x80000000, 0, PAGE_READWRITE, MEM_RESERVE), 0xC0000017),
        (lambda: va.allocate(base + 0x1F000, 0x2000, 0, PAGE_READWRITE, MEM_COMMIT),
         0xC0000018),  # crosses the end of the reservation
        (lambda: va.allocate(base + 0x1000, 0x1000, 0x10000, PAGE_READWRITE, MEM_COMMIT),
         0xC000000D),  # the commit address lacks the alignment
        (lambda: va.allocate(0x60000000, 0x1000, 0, PAGE_READWRITE, MEM_COMMIT), 0xC00000A0),
        (lambda: va.free(base, 0x1000, MEM_DECOMMIT | MEM_RELEASE), 0xC000000D),
        (lambda: va.free(base, 0x1000, 0), 0xC000000D),
        (lambda: va.free(base, -1, MEM_DECOMMIT), 0xC000000D),
        (lambda: va.partial_free(base, 0x1000, 0x2000, MEM_DECOMMIT), 0xC000000D),
        (lambda: va.partial_free(base, 0x1000, 0x800, MEM_RESERVE), 0xC000000D),
        (lambda: va.partial_free(base, 0x30000, 0x1000, MEM_DECOMMIT), 0xC0000018),
        (lambda: va.partial_free(base + 0x10000, 0x1000, 0x800, MEM_RELEASE), 0xC000009F),
    ]
    for call, status in failures:
        va.last_status = 0
        assert not call()
        assert va.last_status == status, call
        assert layout(mm) == before and va.reservations() == reservations
    assert va.allocate(0, 0x1000, 0, PAGE_READWRITE, BOTH)
    assert va.last_status == 0
