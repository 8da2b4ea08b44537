"""Unit tests of MemoryManager's Pythonic API, one method (and its error cases) at a time.

Expected values are Windows literals (winnt.h / ntstatus.h), never imported from the package.
Every refused call must raise a typed ``EmulatorMemError`` carrying the NTSTATUS Windows would
return and leave the address space exactly as it was (the whole query walk, the stats and
``layout_version``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_RAX, UC_X86_REG_RBX

from emulator_mem import MemoryManager
from emulator_mem.errors import (
    ConflictingAddressesError,
    EmulatorMemError,
    InvalidParameterError,
    MemoryAccessError,
    NoMemoryError,
    NotAllocatedError,
    NotCommittedError,
)

# --- Windows literals -------------------------------------------------------------------------
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE = 0x10
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_GUARD = 0x100
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_FREE = 0x10000
MEM_PRIVATE = 0x20000
MEM_MAPPED = 0x40000
STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NO_MEMORY = 0xC0000017
STATUS_CONFLICTING_ADDRESSES = 0xC0000018
STATUS_NOT_COMMITTED = 0xC000002D
STATUS_INVALID_PAGE_PROTECTION = 0xC0000045
STATUS_FREE_VM_NOT_AT_BASE = 0xC000009F
STATUS_MEMORY_NOT_ALLOCATED = 0xC00000A0

LOWEST = 0x10000
HIGHEST_32 = 0x7FFEFFFF  # lpMaximumApplicationAddress
HIGHEST_64 = 0x7FFFFFFEFFFF
END = {32: HIGHEST_32 + 1, 64: HIGHEST_64 + 1}

BASE = 0x1000_0000  # a quiet place for fixed-address allocations


def make(bits: int) -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if bits == 64 else UC_MODE_32))


@pytest.fixture(params=[32, 64], ids=["x86", "x64"])
def bits(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def mm(bits: int) -> MemoryManager:
    return make(bits)


def mbi(mm: MemoryManager, address: int) -> tuple[int, int, int, int, int, int, int]:
    m = mm.query(address)
    return (m.BaseAddress, m.AllocationBase, m.AllocationProtect, m.RegionSize, m.State,
            m.Protect, m.Type)


def snapshot(mm: MemoryManager) -> tuple[Any, ...]:
    return (
        tuple(mbi(mm, r.BaseAddress) for r in mm.regions()),
        mm.layout_version,
        mm.stats(),
        tuple(mm.reserved_regions()),
    )


def refused(mm: MemoryManager, error: type[EmulatorMemError], status: int | None,
            call: Callable[..., Any], *args: Any, **kwargs: Any) -> EmulatorMemError:
    """``call`` raises ``error`` (with ``status``) and leaves everything as it was."""
    before = snapshot(mm)
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    if status is not None:
        assert info.value.status == status, hex(info.value.status)
    assert snapshot(mm) == before
    return info.value


# --- allocate -------------------------------------------------------------------------------
class TestAllocate:
    def test_commits_and_rounds_size_up_to_pages(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x1801, PAGE_READWRITE, address=BASE)
        assert base == BASE
        mm.allocate(0x1000, PAGE_READWRITE, address=BASE + 0x10000)
        assert mbi(mm, BASE) == (BASE, BASE, 0x04, 0x2000, MEM_COMMIT, 0x04, MEM_PRIVATE)
        # mid-region: Windows reports the page holding the address and the rest of the run
        assert mbi(mm, BASE + 0x1234) == (BASE + 0x1000, BASE, 0x04, 0x1000, MEM_COMMIT, 0x04,
                                          MEM_PRIVATE)
        # the rest of the 64 KiB granule stays free, up to the next allocation
        assert mbi(mm, BASE + 0x2000) == (BASE + 0x2000, 0, 0, 0xE000, MEM_FREE, 0x01, 0)
        assert mbi(mm, BASE + 0x5432) == (BASE + 0x5000, 0, 0, 0xB000, MEM_FREE, 0x01, 0)

    def test_reserve_only(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x30000, PAGE_EXECUTE_READWRITE, address=BASE, reserve_only=True)
        assert mbi(mm, base) == (BASE, BASE, 0x40, 0x30000, MEM_RESERVE, 0, MEM_PRIVATE)
        assert mm.stats().committed_memory == 0
        assert mm.stats().reserved_memory == 0x30000

    def test_guard_allocation_protect_is_kept(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x1000, PAGE_READWRITE | PAGE_GUARD, address=BASE)
        assert mbi(mm, base) == (BASE, BASE, 0x104, 0x1000, MEM_COMMIT, 0x104, MEM_PRIVATE)

    def test_without_address_takes_lowest_free_granule(self, mm: MemoryManager) -> None:
        assert mm.allocate(0x1000, PAGE_READWRITE) == 0x10000
        assert mm.allocate(0x1000, PAGE_READWRITE) == 0x20000  # not 0x11000: 64 KiB granules
        assert mm.allocate(0x20000, PAGE_READWRITE) == 0x30000

    def test_top_down(self, mm: MemoryManager, bits: int) -> None:
        top = END[bits]
        assert mm.allocate(0x3000, PAGE_READWRITE, top_down=True) == top - 0x10000
        assert mm.allocate(0x20000, PAGE_READWRITE, top_down=True) == top - 0x30000

    def test_alignment(self, mm: MemoryManager) -> None:
        mm.allocate(0x1000, PAGE_READWRITE)
        base = mm.allocate(0x1000, PAGE_READWRITE, alignment=0x100000)
        assert base == 0x100000

    def test_bad_sizes(self, mm: MemoryManager) -> None:
        for size in (0, -1, -0x1000):
            refused(mm, InvalidParameterError, STATUS_INVALID_PARAMETER, mm.allocate, size,
                    PAGE_READWRITE, address=BASE)
            refused(mm, InvalidParameterError, STATUS_INVALID_PARAMETER, mm.allocate, size,
                    PAGE_READWRITE)

    @pytest.mark.parametrize("protect", [0x00, 0x03, 0x06, PAGE_WRITECOPY, 0x80, PAGE_GUARD,
                                         PAGE_NOACCESS | PAGE_GUARD, 0x304])
    def test_bad_protections(self, mm: MemoryManager, protect: int) -> None:
        refused(mm, InvalidParameterError, STATUS_INVALID_PAGE_PROTECTION, mm.allocate, 0x1000,
                protect, address=BASE)
        refused(mm, InvalidParameterError, STATUS_INVALID_PAGE_PROTECTION, mm.allocate, 0x1000,
                protect, reserve_only=True)

    @pytest.mark.parametrize("offset", [0x1000, 0x800, 0x8000, 1])
    def test_unaligned_address(self, mm: MemoryManager, offset: int) -> None:
        refused(mm, InvalidParameterError, None, mm.allocate, 0x1000, PAGE_READWRITE,
                address=BASE + offset)

    def test_overlaps(self, mm: MemoryManager) -> None:
        mm.allocate(0x20000, PAGE_READWRITE, address=BASE)
        for address in (BASE, BASE + 0x10000):
            refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.allocate,
                    0x1000, PAGE_READWRITE, address=address)
        # runs into an existing allocation from below
        refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.allocate,
                0x10001, PAGE_READWRITE, address=BASE - 0x10000)
        # a reserved-only allocation conflicts just the same
        mm.allocate(0x1000, PAGE_READWRITE, address=BASE + 0x40000, reserve_only=True)
        refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.allocate,
                0x1000, PAGE_READWRITE, address=BASE + 0x40000)
        # but the free tail of a partly used granule is not an allocation base
        mm.allocate(0x1000, PAGE_READWRITE, address=BASE - 0x10000)  # exactly fits below

    def test_bad_alignment_argument(self, mm: MemoryManager) -> None:
        for alignment in (0x1000, 0x18000, 0):
            refused(mm, InvalidParameterError, None, mm.allocate, 0x1000, PAGE_READWRITE,
                    alignment=alignment)

    def test_no_room(self, mm: MemoryManager) -> None:
        mm.allocate(0x20000, PAGE_READWRITE, address=BASE)
        refused(mm, NoMemoryError, STATUS_NO_MEMORY, mm.allocate, 0x1000, PAGE_READWRITE,
                min_address=BASE, max_address=BASE + 0x20000)
        refused(mm, NoMemoryError, STATUS_NO_MEMORY, mm.allocate, 0x30000, PAGE_READWRITE,
                min_address=BASE, max_address=BASE + 0x40000)


# --- user range limits ------------------------------------------------------------------------
class TestUserRange:
    def test_lowest_and_highest(self, mm: MemoryManager, bits: int) -> None:
        top = END[bits]
        assert mm.allocate(0x10000, PAGE_READWRITE, address=0x10000) == 0x10000
        assert mm.allocate(0x10000, PAGE_READWRITE, address=top - 0x10000) == top - 0x10000
        assert mm.query(top - 1).AllocationBase == top - 0x10000

    def test_outside(self, mm: MemoryManager, bits: int) -> None:
        top = END[bits]
        for address, size in ((0, 0x1000), (0, 0x20000), (top, 0x1000), (top - 0x10000, 0x10001),
                              (top + 0x10000, 0x1000)):
            refused(mm, EmulatorMemError, None, mm.allocate, size, PAGE_READWRITE, address=address)
        if bits == 32:
            refused(mm, EmulatorMemError, None, mm.allocate, 0x1000, PAGE_READWRITE,
                    address=0x80000000)

    def test_query_limits(self, mm: MemoryManager, bits: int) -> None:
        top = END[bits]
        assert mbi(mm, 0) == (0, 0, 0, top, MEM_FREE, PAGE_NOACCESS, 0)
        assert mbi(mm, top - 1) == (top - 0x1000, 0, 0, 0x1000, MEM_FREE, PAGE_NOACCESS, 0)
        for address in (top, top + 0x1000, -1):
            refused(mm, InvalidParameterError, STATUS_INVALID_PARAMETER, mm.query, address)

    def test_walk_covers_exactly_the_user_range(self, mm: MemoryManager, bits: int) -> None:
        mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        walk = list(mm.regions())
        assert walk[0].BaseAddress == 0
        assert walk[-1].BaseAddress + walk[-1].RegionSize == END[bits]
        for a, b in zip(walk, walk[1:], strict=False):
            assert a.BaseAddress + a.RegionSize == b.BaseAddress

    def test_find_free_limits(self, mm: MemoryManager, bits: int) -> None:
        assert mm.find_free(0x1000) == 0x10000
        assert mm.find_free(0x1000, top_down=True) == END[bits] - 0x10000
        refused(mm, NoMemoryError, STATUS_NO_MEMORY, mm.find_free, END[bits])


# --- commit -----------------------------------------------------------------------------------
class TestCommit:
    def test_partial_commit(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x10000, PAGE_READWRITE, address=BASE, reserve_only=True)
        assert mm.commit(base + 0x2000, 0x2000, PAGE_READONLY) == base + 0x2000
        assert mbi(mm, base) == (base, base, 0x04, 0x2000, MEM_RESERVE, 0, MEM_PRIVATE)
        assert mbi(mm, base + 0x2000) == (base + 0x2000, base, 0x04, 0x2000, MEM_COMMIT, 0x02,
                                          MEM_PRIVATE)
        assert mbi(mm, base + 0x4000) == (base + 0x4000, base, 0x04, 0xC000, MEM_RESERVE, 0,
                                          MEM_PRIVATE)
        assert mm.stats().committed_memory == 0x2000

    def test_unaligned_range_covers_touched_pages(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x10000, PAGE_READWRITE, address=BASE, reserve_only=True)
        assert mm.commit(base + 0xFFF, 2, PAGE_READWRITE) == base
        assert mbi(mm, base) == (base, base, 0x04, 0x2000, MEM_COMMIT, 0x04, MEM_PRIVATE)

    def test_recommit_changes_protection(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE)
        mm.write(base + 0x1000, b"keep")
        mm.commit(base + 0x1000, 0x1000, PAGE_EXECUTE_READ)
        assert mbi(mm, base + 0x1000)[3:6] == (0x1000, MEM_COMMIT, 0x20)
        assert mm.read(base + 0x1000, 4) == b"keep"  # committed pages keep their contents

    def test_merges_back_into_one_region(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE, reserve_only=True)
        mm.commit(base, 0x1000, PAGE_READWRITE)
        mm.commit(base + 0x2000, 0x2000, PAGE_READWRITE)
        mm.commit(base + 0x1000, 0x1000, PAGE_READWRITE)
        assert mbi(mm, base) == (base, base, 0x04, 0x4000, MEM_COMMIT, 0x04, MEM_PRIVATE)

    def test_errors(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x3000, PAGE_READWRITE, address=BASE, reserve_only=True)
        mm.allocate(0x10000, PAGE_READWRITE, address=BASE + 0x10000, reserve_only=True)
        refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.commit, base + 0x3000,
                0x1000, PAGE_READWRITE)  # the free tail of the granule
        refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.commit, BASE + 0x100000,
                0x1000, PAGE_READWRITE)
        refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.commit,
                base + 0x2000, 0x2000, PAGE_READWRITE)  # runs past the end
        refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.commit, base,
                0x20000, PAGE_READWRITE)  # across two allocations
        for size in (0, -0x1000):
            refused(mm, InvalidParameterError, STATUS_INVALID_PARAMETER, mm.commit, base, size,
                    PAGE_READWRITE)
        for protect in (0, PAGE_WRITECOPY, PAGE_NOACCESS | PAGE_GUARD, 0x06):
            refused(mm, InvalidParameterError, STATUS_INVALID_PAGE_PROTECTION, mm.commit, base,
                    0x1000, protect)


# --- decommit ---------------------------------------------------------------------------------
class TestDecommit:
    def test_decommit_middle(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE)
        assert mm.decommit(base + 0x1800, 0x1000) == base + 0x1000  # pages 1 and 2
        assert mbi(mm, base + 0x1000) == (base + 0x1000, base, 0x04, 0x2000, MEM_RESERVE, 0,
                                          MEM_PRIVATE)
        assert mm.stats().committed_memory == 0x2000
        assert mm.stats().reserved_memory == 0x4000

    def test_reserved_pages_are_fine(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE, reserve_only=True)
        before = [mbi(mm, r.BaseAddress) for r in mm.regions()]
        assert mm.decommit(base, 0x4000) == base
        assert [mbi(mm, r.BaseAddress) for r in mm.regions()] == before

    def test_zero_after_recommit(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.write(base, b"\xAA" * 0x3000)
        mm.decommit(base + 0x1000, 0x1000)
        mm.commit(base + 0x1000, 0x1000, PAGE_READWRITE)
        assert mm.read(base + 0x1000, 0x1000) == bytes(0x1000)
        assert mm.read(base, 0x1000) == b"\xAA" * 0x1000
        assert mm.read(base + 0x2000, 0x1000) == b"\xAA" * 0x1000

    def test_zero_after_recommit_seen_by_guest(self, mm: MemoryManager, bits: int) -> None:
        base = mm.allocate(0x1000, PAGE_READWRITE, address=BASE)
        code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=BASE + 0x10000)
        mm.write(code, b"\x8b\x03")  # mov eax, [ebx] / [rbx]
        ax, bx = ((UC_X86_REG_RAX, UC_X86_REG_RBX) if bits == 64
                  else (UC_X86_REG_EAX, UC_X86_REG_EBX))
        mm.write(base, b"\x11\x22\x33\x44")
        mm.uc.reg_write(bx, base)
        mm.uc.emu_start(code, code + 2)
        assert mm.uc.reg_read(ax) == 0x44332211
        mm.decommit(base, 0x1000)
        mm.commit(base, 0x1000, PAGE_READWRITE)
        mm.uc.emu_start(code, code + 2)
        assert mm.uc.reg_read(ax) == 0

    def test_errors(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x2000, PAGE_READWRITE, address=BASE)
        refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.decommit, base + 0x2000,
                0x1000)
        refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.decommit, base,
                0x3000)
        for size in (0, -1):
            refused(mm, InvalidParameterError, STATUS_INVALID_PARAMETER, mm.decommit, base, size)


# --- release ----------------------------------------------------------------------------------
class TestRelease:
    def test_release(self, mm: MemoryManager, bits: int) -> None:
        base = mm.allocate(0x5000, PAGE_READWRITE, address=BASE)
        mm.decommit(base + 0x1000, 0x1000)
        assert mm.release(base) == 0x5000
        assert mbi(mm, base) == (base, 0, 0, END[bits] - base, MEM_FREE, PAGE_NOACCESS, 0)
        assert mm.stats().reserved_memory == 0
        assert mm.stats().committed_memory == 0
        assert mm.stats().allocations == 0
        assert mm.reserved_regions() == []

    def test_released_memory_comes_back_zeroed(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x2000, PAGE_READWRITE, address=BASE)
        mm.write(base, b"\x77" * 0x2000)
        mm.release(base)
        assert mm.allocate(0x2000, PAGE_READWRITE, address=BASE) == base
        assert mm.read(base, 0x2000) == bytes(0x2000)

    def test_errors(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        for inside in (base + 1, base + 0x1000, base + 0x2FFF):
            refused(mm, EmulatorMemError, STATUS_FREE_VM_NOT_AT_BASE, mm.release, inside)
        for free in (base + 0x3000, BASE + 0x10000, 0, 0x10000):
            refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.release, free)
        mm.release(base)
        refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.release, base)

    def test_partial_release_splits_the_allocation(self, mm: MemoryManager) -> None:
        """NtFreeVirtualMemory(MEM_RELEASE) with a size: the pieces become allocations."""
        base = mm.allocate(0x20000, PAGE_READWRITE, address=BASE, reserve_only=True)
        mm.commit(base, 0x3000, PAGE_READONLY)
        mm.commit(base + 0x6000, 0x2000, PAGE_EXECUTE_READ)
        mm.write(base, b"left")
        mm.write(base + 0x6000, b"right")
        assert mm.release(base + 0x2800, 0x2000) == 0x3000  # pages 2..4
        assert [mbi(mm, a) for a in (base, base + 0x2000, base + 0x5000, base + 0x6000)] == [
            (base, base, 0x04, 0x2000, MEM_COMMIT, 0x02, MEM_PRIVATE),
            (base + 0x2000, 0, 0, 0x3000, MEM_FREE, PAGE_NOACCESS, 0),
            (base + 0x5000, base + 0x5000, 0x04, 0x1000, MEM_RESERVE, 0, MEM_PRIVATE),
            (base + 0x6000, base + 0x5000, 0x04, 0x2000, MEM_COMMIT, 0x20, MEM_PRIVATE),
        ]
        assert [(r.base, r.size, r.committed) for r in mm.reserved_regions()] == [
            (base, 0x2000, 0x2000), (base + 0x5000, 0x1B000, 0x2000)]
        assert mm.stats().reserved_memory == 0x1D000
        assert mm.read(base, 4) == b"left"
        assert mm.read(base + 0x6000, 5) == b"right"
        # each piece is released on its own, at its own base
        refused(mm, EmulatorMemError, STATUS_FREE_VM_NOT_AT_BASE, mm.release, base + 0x6000)
        assert mm.release(base + 0x5000) == 0x1B000
        assert mm.release(base) == 0x2000
        assert mm.stats().allocations == 0

    def test_partial_release_of_everything_or_an_end(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE)
        assert mm.release(base + 0x3000, 0x1000) == 0x1000  # the tail
        assert mbi(mm, base)[:6] == (base, base, 0x04, 0x3000, MEM_COMMIT, 0x04)
        assert mm.release(base, 0x1000) == 0x1000  # the head: the rest is based higher
        assert mm.query(base + 0x1000).AllocationBase == base + 0x1000
        assert mm.release(base + 0x1000, 0x2000) == 0x2000  # all that is left
        assert mm.stats().allocations == 0
        # the hole is reusable
        assert mm.allocate(0x4000, PAGE_READWRITE, address=BASE) == BASE
        assert mm.read(BASE, 0x4000) == bytes(0x4000)

    def test_partial_release_errors(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.allocate(0x1000, PAGE_READWRITE, address=BASE + 0x10000)
        refused(mm, EmulatorMemError, None, mm.release, base + 0x1000, 0x3000)  # past the end
        refused(mm, EmulatorMemError, None, mm.release, base, 0x11000)  # into the next one
        refused(mm, EmulatorMemError, None, mm.release, base, -0x1000)
        refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.release, base + 0x3000,
                0x1000)


# --- protect ----------------------------------------------------------------------------------
class TestProtect:
    def test_returns_old_protection_of_first_page(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE)
        assert mm.protect(base + 0x1000, 0x1000, PAGE_READONLY) == 0x04
        assert mm.protect(base + 0x1000, 0x3000, PAGE_EXECUTE_READ) == 0x02
        assert mm.protect(base + 0x1000, 0x1000, PAGE_READWRITE | PAGE_GUARD) == 0x20
        assert mm.protect(base + 0x1000, 0x1000, PAGE_NOACCESS) == 0x104
        assert [mbi(mm, a)[3:6] for a in (base, base + 0x1000, base + 0x2000)] == [
            (0x1000, MEM_COMMIT, 0x04), (0x1000, MEM_COMMIT, 0x01), (0x2000, MEM_COMMIT, 0x20)]
        assert mm.query(base + 0x2000).AllocationProtect == 0x04  # never changes

    def test_unaligned_range(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.protect(base + 0xFFF, 2, PAGE_READONLY)
        assert mbi(mm, base)[3:6] == (0x2000, MEM_COMMIT, 0x02)

    def test_errors(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE)
        mm.decommit(base + 0x2000, 0x1000)
        refused(mm, NotCommittedError, STATUS_NOT_COMMITTED, mm.protect, base + 0x2000, 0x1000,
                PAGE_READONLY)
        refused(mm, NotCommittedError, STATUS_NOT_COMMITTED, mm.protect, base, 0x4000,
                PAGE_READONLY)  # partly reserved
        refused(mm, NotAllocatedError, STATUS_MEMORY_NOT_ALLOCATED, mm.protect, base + 0x4000,
                0x1000, PAGE_READONLY)
        refused(mm, ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES, mm.protect,
                base + 0x3000, 0x2000, PAGE_READONLY)
        for protect in (0, 0x03, PAGE_WRITECOPY, PAGE_GUARD, PAGE_NOACCESS | PAGE_GUARD):
            refused(mm, InvalidParameterError, STATUS_INVALID_PAGE_PROTECTION, mm.protect, base,
                    0x1000, protect)
        for size in (0, -1):
            refused(mm, InvalidParameterError, STATUS_INVALID_PARAMETER, mm.protect, base, size,
                    PAGE_READONLY)


# --- find_free --------------------------------------------------------------------------------
class TestFindFree:
    def test_bottom_up(self, mm: MemoryManager) -> None:
        mm.allocate(0x10000, PAGE_READWRITE, address=0x10000)
        mm.allocate(0x1000, PAGE_READWRITE, address=0x30000)
        assert mm.find_free(0x10000) == 0x20000
        assert mm.find_free(0x10001) == 0x40000  # the hole at 0x20000 is one granule
        before = snapshot(mm)
        mm.find_free(0x1000)
        assert snapshot(mm) == before  # a search changes nothing

    def test_top_down(self, mm: MemoryManager, bits: int) -> None:
        top = END[bits]
        mm.allocate(0x10000, PAGE_READWRITE, address=top - 0x10000)
        assert mm.find_free(0x1000, top_down=True) == top - 0x20000
        assert mm.find_free(0x20000, top_down=True) == top - 0x30000

    def test_min_and_max_address(self, mm: MemoryManager) -> None:
        assert mm.find_free(0x1000, min_address=BASE + 0x1234) == BASE + 0x10000
        assert mm.find_free(0x1000, min_address=BASE, max_address=BASE + 0x20000) == BASE
        assert mm.find_free(0x1000, min_address=BASE, max_address=BASE + 0x20000,
                            top_down=True) == BASE + 0x10000
        mm.allocate(0x10000, PAGE_READWRITE, address=BASE)
        assert mm.find_free(0x1000, min_address=BASE, max_address=BASE + 0x20000) == BASE + 0x10000
        found = mm.find_free(0x8000, min_address=BASE, max_address=BASE + 0x30000, top_down=True)
        assert found == BASE + 0x20000 and found + 0x8000 <= BASE + 0x30000
        refused(mm, NoMemoryError, STATUS_NO_MEMORY, mm.find_free, 0x20001, min_address=BASE,
                max_address=BASE + 0x30000)

    def test_alignment(self, mm: MemoryManager) -> None:
        mm.allocate(0x10000, PAGE_READWRITE, address=0x100000)
        assert mm.find_free(0x1000, alignment=0x100000) == 0x200000
        assert mm.find_free(0x1000, alignment=0x100000, min_address=0x200001) == 0x300000
        top = mm.find_free(0x1000, alignment=0x100000, top_down=True)
        assert top % 0x100000 == 0

    def test_default_allocation_address(self, mm: MemoryManager) -> None:
        assert mm.default_allocation_address == 0x10000
        mm.default_allocation_address = 0x40000000
        assert mm.default_allocation_address == 0x40000000
        assert mm.find_free(0x1000) == 0x40000000
        assert mm.allocate(0x1000, PAGE_READWRITE) == 0x40000000
        assert mm.allocate(0x1000, PAGE_READWRITE) == 0x40010000
        # an explicit min_address wins over the default
        assert mm.find_free(0x1000, min_address=0x20000) == 0x20000

    def test_default_allocation_address_falls_back_to_the_bottom(self, mm: MemoryManager,
                                                                 bits: int) -> None:
        mm.default_allocation_address = END[bits] - 0x100000
        assert mm.find_free(0x200000) == 0x10000

    def test_default_allocation_address_bounds(self, mm: MemoryManager, bits: int) -> None:
        for bad in (0, 0xFFFF, END[bits], -1):
            with pytest.raises(InvalidParameterError):
                mm.default_allocation_address = bad
            assert mm.default_allocation_address == 0x10000

    def test_top_down_ignores_a_high_default_allocation_address(self, mm: MemoryManager,
                                                                bits: int) -> None:
        """VirtualAlloc(NULL, 2 MiB, MEM_TOP_DOWN) in an empty space must succeed.

        The default allocation address is where *bottom-up* searches start (and they fall back
        to the bottom); a top-down search must not be confined above it.
        """
        top = END[bits]
        mm.default_allocation_address = top - 0x100000
        assert mm.find_free(0x200000, top_down=True) == top - 0x200000
        assert mm.allocate(0x200000, PAGE_READWRITE, top_down=True) == top - 0x200000


# --- region_info / reserved_regions / stats ------------------------------------------------------
class TestInfo:
    def test_region_info(self, mm: MemoryManager, bits: int) -> None:
        base = mm.allocate(0x4000, PAGE_EXECUTE_READ, address=BASE, reserve_only=True,
                           name="x")
        mm.commit(base + 0x1000, 0x1000, PAGE_READWRITE)
        info = mm.region_info(base + 0x1800)
        assert (info.start, info.length, info.allocation_base, info.allocation_length,
                info.is_reserved, info.is_committed, info.protect, info.initial_protect) == (
            base + 0x1000, 0x1000, base, 0x4000, True, True, 0x04, 0x20)
        assert int(info.kind) == 0  # private
        info = mm.region_info(base + 0x2000)
        assert (info.start, info.length, info.is_reserved, info.is_committed, info.protect) == (
            base + 0x2000, 0x2000, True, False, 0)
        info = mm.region_info(base + 0x4000)
        assert (info.start, info.length, info.allocation_base, info.is_reserved,
                info.is_committed, info.kind) == (
            base + 0x4000, END[bits] - base - 0x4000, 0, False, False, None)

    def test_reserved_regions_and_stats(self, mm: MemoryManager) -> None:
        a = mm.allocate(0x3000, PAGE_READWRITE, address=BASE, name="heap")
        b = mm.allocate(0x20000, PAGE_EXECUTE_READ, address=BASE + 0x10000, reserve_only=True)
        mm.commit(b + 0x5000, 0x2000, PAGE_EXECUTE_READ)
        got = [(r.base, r.size, r.allocation_protect, int(r.kind), r.committed, r.name)
               for r in mm.reserved_regions()]
        assert got == [(a, 0x3000, 0x04, 0, 0x3000, "heap"), (b, 0x20000, 0x20, 0, 0x2000, None)]
        stats = mm.stats()
        assert (stats.reserved_memory, stats.committed_memory, stats.allocations) == (
            0x23000, 0x5000, 2)
        assert stats.unicorn_regions >= 1

    def test_overlaps_reserved(self, mm: MemoryManager) -> None:
        mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        assert mm.overlaps_reserved(BASE + 0x2000, 0x1000)
        assert mm.overlaps_reserved(BASE - 0x1000, 0x1001)
        assert not mm.overlaps_reserved(BASE + 0x3000, 0x1000)
        assert not mm.overlaps_reserved(BASE - 0x1000, 0x1000)


# --- layout_version ---------------------------------------------------------------------------
class TestLayoutVersion:
    def test_bumps_on_every_layout_change(self, mm: MemoryManager) -> None:
        versions = [mm.layout_version]

        def bumped() -> None:
            versions.append(mm.layout_version)
            assert versions[-1] > versions[-2]

        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE, reserve_only=True)
        bumped()
        mm.commit(base, 0x2000, PAGE_READWRITE)
        bumped()
        mm.protect(base, 0x1000, PAGE_READONLY)
        bumped()
        mm.decommit(base, 0x1000)
        bumped()
        mm.release(base)
        bumped()
        mm.allocate(0x1000, PAGE_READWRITE)
        bumped()
        mm.unmap_all()
        bumped()

    def test_unchanged_by_reads_queries_and_failures(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x2000, PAGE_READWRITE, address=BASE)
        version = mm.layout_version
        mm.write(base, b"abc")
        mm.read(base, 3)
        mm.query(base)
        list(mm.regions())
        mm.find_free(0x1000)
        mm.region_info(base)
        mm.stats()
        for call in (lambda: mm.release(base + 0x1000), lambda: mm.commit(base + 0x2000, 1, 4),
                     lambda: mm.protect(base, 0x1000, 0x08), lambda: mm.read(base + 0x2000, 1)):
            with pytest.raises(EmulatorMemError):
                call()
        assert mm.layout_version == version


# --- unmap_all --------------------------------------------------------------------------------
class TestUnmapAll:
    def test_everything_goes(self, mm: MemoryManager, bits: int) -> None:
        a = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.allocate(0x10000, PAGE_EXECUTE_READ, address=BASE + 0x10000, reserve_only=True)
        mm.allocate(0x1000, PAGE_READWRITE, top_down=True)
        mm.write(a, b"\x55" * 16)
        mm.unmap_all()
        assert [mbi(mm, r.BaseAddress) for r in mm.regions()] == [
            (0, 0, 0, END[bits], MEM_FREE, PAGE_NOACCESS, 0)]
        stats = mm.stats()
        assert (stats.reserved_memory, stats.committed_memory, stats.allocations) == (0, 0, 0)
        assert mm.reserved_regions() == []
        err = refused(mm, MemoryAccessError, None, mm.read, a, 1)
        assert err.address == a
        # the space is usable again, and fresh memory is zero
        assert mm.allocate(0x3000, PAGE_READWRITE, address=BASE) == a
        assert mm.read(a, 16) == bytes(16)

    def test_empty(self, mm: MemoryManager) -> None:
        mm.unmap_all()
        assert mm.stats().allocations == 0


# --- host access ------------------------------------------------------------------------------
class TestHostAccess:
    def test_read_write_roundtrip_ignores_protection(self, mm: MemoryManager) -> None:
        for protect in (PAGE_NOACCESS, PAGE_READONLY, PAGE_EXECUTE, PAGE_READWRITE | PAGE_GUARD):
            base = mm.allocate(0x1000, protect)
            mm.write(base + 0x10, b"hello")
            assert mm.read(base + 0x10, 5) == b"hello"
            assert mm.query(base).Protect == protect  # host access does not consume a guard

    def test_across_adjacent_allocations(self, mm: MemoryManager) -> None:
        a = mm.allocate(0x10000, PAGE_READWRITE, address=BASE)
        b = mm.allocate(0x10000, PAGE_READONLY, address=BASE + 0x10000)
        data = bytes(range(256)) * 32
        mm.write(b - 0x1000, data)  # spans both allocations
        assert mm.read(b - 0x1000, len(data)) == data
        assert mm.read(a + 0xF000, 0x1000) == data[:0x1000]
        assert mm.read(b, 0x1000) == data[0x1000:]
        assert mm.try_read(b - 8, 16) == data[0xFF8:0x1008]
        assert mm.try_write(b - 2, b"xyzw") is True
        assert mm.read(b - 2, 4) == b"xyzw"

    def test_gap_between_allocations(self, mm: MemoryManager) -> None:
        a = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.allocate(0x10000, PAGE_READWRITE, address=BASE + 0x10000)
        mm.write(a + 0x2FF0, b"\x11" * 0x10)
        err = refused(mm, MemoryAccessError, STATUS_ACCESS_VIOLATION, mm.read, a + 0x2FF0, 0x20)
        assert err.address == a + 0x3000
        err = refused(mm, MemoryAccessError, STATUS_ACCESS_VIOLATION, mm.write, a + 0x2FF0,
                      b"\x22" * 0x20)
        assert err.address == a + 0x3000
        assert mm.read(a + 0x2FF0, 0x10) == b"\x11" * 0x10  # all or nothing
        assert mm.try_read(a + 0x2FF0, 0x20) is None
        assert mm.try_write(a + 0x2FF0, b"\x22" * 0x20) is False
        assert mm.read(a + 0x2FF0, 0x10) == b"\x11" * 0x10

    def test_uncommitted_page(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x4000, PAGE_READWRITE, address=BASE)
        mm.decommit(base + 0x2000, 0x1000)
        mm.write(base + 0x1000, b"\x33" * 0x1000)
        err = refused(mm, MemoryAccessError, None, mm.read, base + 0x1800, 0x2000)
        assert err.address == base + 0x2000
        err = refused(mm, MemoryAccessError, None, mm.read, base + 0x2800, 0x10)
        assert err.address == base + 0x2800  # the first byte when it is itself uncommitted
        err = refused(mm, MemoryAccessError, None, mm.write, base + 0x1800, b"\x44" * 0x2000)
        assert err.address == base + 0x2000
        assert mm.read(base + 0x1000, 0x1000) == b"\x33" * 0x1000  # all or nothing
        reserved = mm.allocate(0x1000, PAGE_READWRITE, address=BASE + 0x10000, reserve_only=True)
        err = refused(mm, MemoryAccessError, None, mm.read, reserved, 1)
        assert err.address == reserved

    def test_free_memory(self, mm: MemoryManager) -> None:
        for address in (0, 0x10000, BASE, BASE + 0x123):
            err = refused(mm, MemoryAccessError, None, mm.read, address, 4)
            assert err.address == address
            assert mm.try_read(address, 4) is None
            assert mm.try_write(address, b"1234") is False

    def test_sizes(self, mm: MemoryManager) -> None:
        base = mm.allocate(0x1000, PAGE_READWRITE, address=BASE)
        assert mm.read(base, 0) == b""
        refused(mm, InvalidParameterError, None, mm.read, base, -1)
        mm.write(base, b"")
        assert mm.read(base, 0x1000) == bytes(0x1000)


# --- aliases ----------------------------------------------------------------------------------
class TestMapAlias:
    def test_shares_bytes_both_ways(self, mm: MemoryManager) -> None:
        src = mm.allocate(0x2000, PAGE_READWRITE, address=BASE)
        alias = mm.map_alias(src, 0x2000, PAGE_READONLY)
        assert mbi(mm, alias) == (alias, alias, 0x02, 0x2000, MEM_COMMIT, 0x02, MEM_MAPPED)
        mm.write(src + 0x1000, b"via source")
        assert mm.read(alias + 0x1000, 10) == b"via source"
        mm.write(alias + 0x10, b"via alias")  # host writes ignore the alias' protection
        assert mm.read(src + 0x10, 9) == b"via alias"

    def test_guest_writes_through_alias(self, mm: MemoryManager, bits: int) -> None:
        src = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=BASE)
        alias = mm.map_alias(src, 0x1000, PAGE_READWRITE, address=BASE + 0x10000)
        assert alias == BASE + 0x10000
        code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=BASE + 0x20000)
        mm.write(code, b"\x89\x03")  # mov [ebx], eax / mov [rbx], eax
        ax, bx = ((UC_X86_REG_RAX, UC_X86_REG_RBX) if bits == 64
                  else (UC_X86_REG_EAX, UC_X86_REG_EBX))
        mm.uc.reg_write(ax, 0x1234ABCD)
        mm.uc.reg_write(bx, alias + 0x40)
        mm.uc.emu_start(code, code + 2)
        assert mm.read(src + 0x40, 4) == bytes.fromhex("cdab3412")

    def test_release_alias_keeps_source(self, mm: MemoryManager) -> None:
        src = mm.allocate(0x1000, PAGE_READWRITE, address=BASE)
        mm.write(src, b"data")
        alias = mm.map_alias(src, 0x1000, PAGE_READWRITE)
        assert mm.release(alias) == 0x1000
        assert mm.read(src, 4) == b"data"

    def test_released_source_lives_on_in_its_aliases(self, mm: MemoryManager) -> None:
        """Windows keeps a page until its last mapping goes: releasing the source leaves the
        aliases their bytes, still shared between them; the last alias frees them."""
        src = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.write(src + 0x1000, b"page one")
        mm.write(src + 0x2000, b"page two")
        a1 = mm.map_alias(src + 0x1000, 0x2000, PAGE_READWRITE)
        a2 = mm.map_alias(src + 0x2000, 0x1000, PAGE_READONLY)
        regions = mm.stats().unicorn_regions
        assert mm.release(src) == 0x3000
        assert mm.query(src).State == MEM_FREE
        assert mm.read(a1, 8) == b"page one" and mm.read(a2, 8) == b"page two"
        mm.write(a1 + 0x1000, b"PAGE TWO")  # the two aliases still share that page
        assert mm.read(a2, 8) == b"PAGE TWO"
        fresh = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)  # the old range is reusable
        assert mm.read(fresh + 0x1000, 8) == bytes(8)
        mm.write(fresh + 0x2000, b"unrelated")
        assert mm.read(a2, 8) == b"PAGE TWO"
        info = mm.query(a1)
        assert (info.Type, info.Protect, info.AllocationBase) == (MEM_MAPPED, PAGE_READWRITE, a1)
        assert mm.release(a1) == 0x2000
        assert mm.read(a2, 8) == b"PAGE TWO"
        mm.unmap_view(a2)  # a view of the pages now: unmapping works too
        assert mm.stats().unicorn_regions <= regions  # the pages went with the last alias

    def test_errors(self, mm: MemoryManager) -> None:
        src = mm.allocate(0x3000, PAGE_READWRITE, address=BASE)
        mm.decommit(src + 0x2000, 0x1000)
        refused(mm, InvalidParameterError, None, mm.map_alias, src + 1, 0x1000, PAGE_READWRITE)
        refused(mm, MemoryAccessError, None, mm.map_alias, src, 0x3000, PAGE_READWRITE)
        refused(mm, EmulatorMemError, None, mm.map_alias, src, 0x1000, PAGE_WRITECOPY)
        refused(mm, EmulatorMemError, None, mm.map_alias, src, 0x1000, PAGE_READWRITE,
                address=src)
        refused(mm, EmulatorMemError, None, mm.map_alias, src, 0x1000, PAGE_READWRITE,
                address=BASE + 0x18000)

    def test_released_source_does_not_leak_into_a_new_allocation(self, mm: MemoryManager) -> None:
        """Releasing the source must not leave the alias on the source's physical pages.

        Otherwise the next allocation at the source's address shares memory with the
        surviving alias: two unrelated allocations see each other's bytes (and the alias lost
        its contents when the source was released). On Windows a view keeps its own pages
        alive until it is unmapped.
        """
        src = mm.allocate(0x1000, PAGE_READWRITE, address=BASE)
        mm.write(src, b"SRC!")
        alias = mm.map_alias(src, 0x1000, PAGE_READWRITE)
        before = snapshot(mm)
        try:
            mm.release(src)
        except EmulatorMemError:  # refusing while an alias lives is a fine answer too
            assert snapshot(mm) == before
            return
        fresh = mm.allocate(0x1000, PAGE_READWRITE, address=BASE)
        mm.write(fresh, b"NEW!")
        assert mm.read(alias, 4) != b"NEW!", "the alias shares pages with an unrelated allocation"
        mm.write(alias, b"ALI!")
        assert mm.read(fresh, 4) == b"NEW!", "writes through the alias land in a new allocation"

    def test_partial_release_of_an_alias_source(self, mm: MemoryManager) -> None:
        src = mm.allocate(0x2000, PAGE_READWRITE, address=BASE)
        alias = mm.map_alias(src, 0x2000, PAGE_READWRITE)
        before = snapshot(mm)
        try:
            mm.release(src + 0x1000, 0x1000)
        except EmulatorMemError:  # refusing while an alias lives is a fine answer
            assert snapshot(mm) == before
            return
        mm.write(alias + 0x1000, b"ALI!")  # must not reach memory that is free now
        assert mm.try_read(src + 0x1000, 4) is None
