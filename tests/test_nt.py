"""emulator_mem.nt: NTSTATUS results, Windows parameter rules, nothing changed on failure.

Expected values are Windows literals (winnt.h / ntstatus.h / winerror.h).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator_mem import MemoryManager, nt
from emulator_mem.win32 import Kernel32

PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_GUARD = 0x100
PAGE_NOCACHE = 0x200
PAGE_WRITECOMBINE = 0x400
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_DECOMMIT = 0x4000
MEM_RELEASE = 0x8000
MEM_FREE = 0x10000
MEM_PRIVATE = 0x20000
MEM_RESET = 0x80000
MEM_TOP_DOWN = 0x100000
MEM_WRITE_WATCH = 0x200000
MEM_PHYSICAL = 0x400000
MEM_RESET_UNDO = 0x1000000
MEM_LARGE_PAGES = 0x20000000
MEM_COALESCE_PLACEHOLDERS = 0x1
MEM_PRESERVE_PLACEHOLDER = 0x2
STATUS_SUCCESS = 0
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NO_MEMORY = 0xC0000017
STATUS_CONFLICTING_ADDRESSES = 0xC0000018
STATUS_NOT_MAPPED_VIEW = 0xC0000019
STATUS_UNABLE_TO_FREE_VM = 0xC000001A
STATUS_UNABLE_TO_DELETE_SECTION = 0xC000001B
STATUS_ALREADY_COMMITTED = 0xC0000021
STATUS_NOT_COMMITTED = 0xC000002D
STATUS_INVALID_PAGE_PROTECTION = 0xC0000045
STATUS_FREE_VM_NOT_AT_BASE = 0xC000009F
STATUS_MEMORY_NOT_ALLOCATED = 0xC00000A0
STATUS_INVALID_PARAMETER_3 = 0xC00000F1
STATUS_INVALID_PARAMETER_4 = 0xC00000F2


def alloc(mm: MemoryManager, size: int = 0x10000, kind: int = MEM_RESERVE | MEM_COMMIT,
          protect: int = PAGE_READWRITE, base: int = 0) -> int:
    status, address, _ = nt.NtAllocateVirtualMemory(mm, base, 0, size, kind, protect)
    assert status == STATUS_SUCCESS, hex(status)
    return address


def layout(mm: MemoryManager) -> list[tuple[int, int, int, int, int]]:
    """Every region as (base, size, state, protect, allocation protect): the whole picture."""
    return [(r.BaseAddress, r.RegionSize, r.State, r.Protect, r.AllocationProtect)
            for r in mm.regions()]


# -- RtlNtStatusToDosError -------------------------------------------------------------
@pytest.mark.parametrize(("status", "error"), [
    (0x00000000, 0),
    (0xC000000D, 87),  # STATUS_INVALID_PARAMETER
    (0xC0000017, 8),  # STATUS_NO_MEMORY -> ERROR_NOT_ENOUGH_MEMORY
    (0xC0000018, 487),  # STATUS_CONFLICTING_ADDRESSES -> ERROR_INVALID_ADDRESS
    (0xC0000019, 487),  # STATUS_NOT_MAPPED_VIEW
    (0xC000001A, 87),  # STATUS_UNABLE_TO_FREE_VM
    (0xC000001B, 87),  # STATUS_UNABLE_TO_DELETE_SECTION
    (0xC0000021, 5),  # STATUS_ALREADY_COMMITTED -> ERROR_ACCESS_DENIED
    (0xC000002D, 487),  # STATUS_NOT_COMMITTED
    (0xC0000045, 87),  # STATUS_INVALID_PAGE_PROTECTION
    (0xC000004E, 87),  # STATUS_SECTION_PROTECTION
    (0xC000009F, 487),  # STATUS_FREE_VM_NOT_AT_BASE
    (0xC00000A0, 487),  # STATUS_MEMORY_NOT_ALLOCATED
    (0xC0000005, 998),  # STATUS_ACCESS_VIOLATION -> ERROR_NOACCESS
    (0xC0000008, 6),  # STATUS_INVALID_HANDLE
    (0xC00000BB, 50),  # STATUS_NOT_SUPPORTED
    (0xC00000F1, 87),  # STATUS_INVALID_PARAMETER_3
    (0xC000012D, 1455),  # STATUS_COMMITMENT_LIMIT
    (0xC0000220, 1132),  # STATUS_MAPPED_ALIGNMENT
    (0x80000001, 0x80000001),  # STATUS_GUARD_PAGE_VIOLATION maps 1:1
    (0x8000000D, 299),  # STATUS_PARTIAL_COPY
    (0x40000002, 87),  # STATUS_WORKING_SET_LIMIT_RANGE
    (0xD000000D, 87),  # the 0xD facility reads as 0xC
    (0xE0001234, 0xE0001234),  # customer code: unchanged
    (0xC0010057, 0x57),  # wrapped Win32 error
    (0x80070005, 5),  # HRESULT_FROM_WIN32
    (0xC0FFEE00, 317),  # unknown -> ERROR_MR_MID_NOT_FOUND
])
def test_RtlNtStatusToDosError(status: int, error: int) -> None:
    assert nt.RtlNtStatusToDosError(status) == error


def test_NT_SUCCESS() -> None:
    assert nt.NT_SUCCESS(0)
    assert nt.NT_SUCCESS(0x40000003)  # informational (STATUS_IMAGE_NOT_AT_BASE)
    assert not nt.NT_SUCCESS(0x80000001)
    assert not nt.NT_SUCCESS(0xC000000D)


# -- NtAllocateVirtualMemory: parameters -----------------------------------------------
@pytest.mark.parametrize("allocation_type", [
    0,
    MEM_TOP_DOWN,
    MEM_WRITE_WATCH,
    MEM_RESET | MEM_COMMIT,
    MEM_RESET | MEM_RESERVE,
    MEM_RESET | MEM_RESET_UNDO,
    MEM_RESET_UNDO | MEM_COMMIT,
    MEM_COMMIT | MEM_LARGE_PAGES,
    MEM_RESERVE | MEM_PHYSICAL,
    MEM_COMMIT | 0x40000000,  # AT_ROUND_TO_PAGE
    MEM_COMMIT | MEM_DECOMMIT,
    MEM_RESERVE | MEM_RELEASE,
])
def test_allocate_rejects_bad_types_and_changes_nothing(mm: MemoryManager,
                                                        allocation_type: int) -> None:
    existing = alloc(mm)
    before = layout(mm)
    for base in (0, existing):
        result = nt.NtAllocateVirtualMemory(mm, base, 0, 0x1000, allocation_type, PAGE_READWRITE)
        assert result == (STATUS_INVALID_PARAMETER, base, 0x1000)
    assert layout(mm) == before


@pytest.mark.parametrize("size", [0, -1])
def test_allocate_needs_a_size(mm: MemoryManager, size: int) -> None:
    assert nt.NtAllocateVirtualMemory(mm, 0, 0, size, MEM_COMMIT, PAGE_READWRITE) == (
        STATUS_INVALID_PARAMETER, 0, size)


def test_allocate_zero_bits_validation(mm: MemoryManager) -> None:
    bad = list(range(22, 32))
    bad += [33, 0x1000, 0xFFFE] if mm.is_64bit else [32, 0xFFFF, 0x1AAAAAAA]
    for zero_bits in bad + [-1]:
        status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, zero_bits, 0x1000, MEM_COMMIT,
                                                  PAGE_READWRITE)
        assert status == STATUS_INVALID_PARAMETER_3, hex(zero_bits)
    assert mm.stats().allocations == 0


def test_allocate_zero_bits_limit(mm: MemoryManager) -> None:
    # zero_bits 15: the address must stay below 2**17, which leaves one 64 KiB slot
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0, 15, 0x1000, MEM_COMMIT, PAGE_READWRITE)
    assert (status, base) == (STATUS_SUCCESS, 0x10000)
    status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, 15, 0x1000, MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_NO_MEMORY
    # zero_bits 16: below 0x10000, where nothing can ever be allocated
    status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, 16, 0x1000, MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_NO_MEMORY
    # an explicit base ignores zero_bits (only their validity counts)
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0x100000, 16, 0x1000, MEM_RESERVE,
                                                 PAGE_READWRITE)
    assert (status, base) == (STATUS_SUCCESS, 0x100000)


def test_allocate_zero_bits_top_down(mm: MemoryManager) -> None:
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0, 4, 0x10000, MEM_COMMIT | MEM_TOP_DOWN,
                                                 PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    assert base == 0x0FFF0000  # highest 64 KiB slot below 2**28


def test_allocate_zero_bits_mask_on_64bit(mm: MemoryManager) -> None:
    if not mm.is_64bit:
        return
    # a mask: only its highest set bit matters (the address must fit below it)
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0, 0x2AAAAAAA, 0x10000,
                                                 MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
    assert (status, base) == (STATUS_SUCCESS, 0x3FFF0000)
    status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, 0xFFFF, 0x1000, MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_NO_MEMORY  # below 0x10000
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0, 1 << 40, 0x1000,
                                                 MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
    assert (status, base) == (STATUS_SUCCESS, (1 << 41) - 0x10000)


def test_allocate_top_down_and_bottom_up(mm: MemoryManager) -> None:
    low = alloc(mm, 0x10000)
    high = alloc(mm, 0x10000, MEM_RESERVE | MEM_TOP_DOWN)
    assert high == mm.highest_address - 0x10000
    assert low < high


def test_allocate_reserve_rounds_base_down_to_64k(mm: MemoryManager) -> None:
    status, base, size = nt.NtAllocateVirtualMemory(mm, 0x123456, 0, 0x1000, MEM_RESERVE,
                                                    PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    assert base == 0x120000
    assert size == 0x5000  # covers [0x120000, 0x124456) in pages
    mbi = mm.query(0x120000)
    assert (mbi.AllocationBase, mbi.RegionSize, mbi.State) == (0x120000, 0x5000, MEM_RESERVE)


def test_allocate_commit_rounds_to_pages(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000, MEM_RESERVE)
    status, start, size = nt.NtAllocateVirtualMemory(mm, base + 0x1FFF, 0, 2, MEM_COMMIT,
                                                     PAGE_READWRITE)
    assert (status, start, size) == (STATUS_SUCCESS, base + 0x1000, 0x2000)
    mbi = mm.query(base + 0x1000)
    assert (mbi.BaseAddress, mbi.RegionSize, mbi.State) == (base + 0x1000, 0x2000, MEM_COMMIT)


def test_allocate_commit_alone_with_null_base_reserves(mm: MemoryManager) -> None:
    status, base, size = nt.NtAllocateVirtualMemory(mm, 0, 0, 0x1234, MEM_COMMIT, PAGE_READONLY)
    assert status == STATUS_SUCCESS
    assert base % 0x10000 == 0
    assert size == 0x2000
    mbi = mm.query(base)
    assert (mbi.State, mbi.Protect, mbi.Type, mbi.RegionSize) == (
        MEM_COMMIT, PAGE_READONLY, MEM_PRIVATE, 0x2000)


def test_allocate_outside_user_range(mm: MemoryManager) -> None:
    top = mm.highest_address
    for base, size in ((0x1000, 0x1000), (top - 0x1000, 0x2000), (top, 0x1000),
                       (-0x10000, 0x1000)):
        result = nt.NtAllocateVirtualMemory(mm, base, 0, size, MEM_RESERVE, PAGE_READWRITE)
        assert result == (STATUS_INVALID_PARAMETER, base, size), hex(base)
    assert mm.stats().allocations == 0


def test_allocate_conflicts(mm: MemoryManager) -> None:
    base = alloc(mm, 0x20000, base=0x100000)
    before = layout(mm)
    for address in (base, base + 0x10000, base - 0x10000):
        status, _, _ = nt.NtAllocateVirtualMemory(mm, address, 0, 0x20000, MEM_RESERVE,
                                                  PAGE_READWRITE)
        assert status == STATUS_CONFLICTING_ADDRESSES, hex(address)
    assert layout(mm) == before


def test_allocate_no_memory(mm: MemoryManager) -> None:
    """A size that fits the user range but no free gap is STATUS_NO_MEMORY; one larger than
    the range itself is STATUS_INVALID_PARAMETER (Wine records 87 for both 2 GiB on x86 and
    SIZE_T -1, tests/oracle valloc size.*)."""
    middle = mm.highest_address // 2 & ~0xFFFF
    assert nt.NtAllocateVirtualMemory(mm, middle, 0, 0x10000, MEM_RESERVE, PAGE_READWRITE)[0] == 0
    status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, 0, middle + 0x10000, MEM_RESERVE,
                                              PAGE_READWRITE)
    assert status == STATUS_NO_MEMORY
    for size in (mm.highest_address, (1 << (64 if mm.is_64bit else 32)) - 1):
        status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, 0, size, MEM_RESERVE, PAGE_READWRITE)
        assert status == STATUS_INVALID_PARAMETER


def test_write_watch_with_commit_at_null_reserves(mm: MemoryManager) -> None:
    """MEM_COMMIT at a NULL base reserves too, so MEM_WRITE_WATCH is allowed (Wine: valloc
    type.write_watch_commit); with an explicit base it still needs MEM_RESERVE."""
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0, 0, 0x1000, MEM_WRITE_WATCH | MEM_COMMIT,
                                                 PAGE_READWRITE)
    assert status == STATUS_SUCCESS and base
    assert mm.query(base).State == MEM_COMMIT
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base, 0, 0x1000, MEM_WRITE_WATCH | MEM_COMMIT,
                                              PAGE_READWRITE)
    assert status == STATUS_INVALID_PARAMETER


@pytest.mark.parametrize("protect", [0, PAGE_WRITECOPY, PAGE_NOACCESS | PAGE_GUARD,
                                     PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE, 0x800])
def test_allocate_invalid_protection(mm: MemoryManager, protect: int) -> None:
    status, _, _ = nt.NtAllocateVirtualMemory(mm, 0, 0, 0x1000, MEM_COMMIT, protect)
    assert status == STATUS_INVALID_PAGE_PROTECTION
    base = alloc(mm, 0x10000, MEM_RESERVE)
    before = layout(mm)
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base, 0, 0x1000, MEM_COMMIT, protect)
    assert status == STATUS_INVALID_PAGE_PROTECTION
    assert layout(mm) == before


def test_commit_outside_a_reservation(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000, MEM_RESERVE)
    for address, size in ((base + 0x10000, 0x1000), (base + 0xF000, 0x2000)):
        status, _, _ = nt.NtAllocateVirtualMemory(mm, address, 0, size, MEM_COMMIT,
                                                  PAGE_READWRITE)
        assert status == STATUS_CONFLICTING_ADDRESSES
    assert mm.query(base).State == MEM_RESERVE


def test_commit_takes_the_allocation_cache_attribute(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000, MEM_RESERVE, PAGE_READWRITE | PAGE_NOCACHE)
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base, 0, 0x1000, MEM_COMMIT, PAGE_READONLY)
    assert status == STATUS_SUCCESS
    assert mm.query(base).Protect == PAGE_READONLY | PAGE_NOCACHE
    # a guard page cannot be uncached: the attribute gives way
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base + 0x1000, 0, 0x1000, MEM_COMMIT,
                                              PAGE_READWRITE | PAGE_GUARD)
    assert status == STATUS_SUCCESS
    assert mm.query(base + 0x1000).Protect == PAGE_READWRITE | PAGE_GUARD


def test_commit_on_a_file_view_is_refused(mm: MemoryManager, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(bytes(0x2000))
    k32 = Kernel32(mm)
    file_view = k32.MapViewOfFile(k32.CreateFileMapping(str(path), PAGE_READWRITE, 0, 0x2000),
                                  0x2, 0, 0, 0)  # FILE_MAP_WRITE
    anonymous = k32.MapViewOfFile(
        k32.CreateFileMapping(0xFFFFFFFFFFFFFFFF, PAGE_READWRITE, 0, 0x2000), 0x2, 0, 0, 0)
    assert file_view and anonymous
    before = layout(mm)
    assert nt.NtAllocateVirtualMemory(mm, file_view, 0, 0x1000, MEM_COMMIT, PAGE_READONLY) == (
        STATUS_ALREADY_COMMITTED, file_view, 0x1000)
    assert layout(mm) == before
    assert nt.NtAllocateVirtualMemory(mm, anonymous, 0, 0x1000, MEM_COMMIT, PAGE_READONLY) == (
        STATUS_SUCCESS, anonymous, 0x1000)


def test_write_watch_flag_reaches_the_allocation(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_NOACCESS)
    watched = mm.allocation_at(base)
    assert watched is not None and watched.write_watch is not None
    plain = mm.allocation_at(alloc(mm))
    assert plain is not None and plain.write_watch is None


# -- MEM_RESET / MEM_RESET_UNDO --------------------------------------------------------
@pytest.mark.parametrize("reset", [MEM_RESET, MEM_RESET_UNDO])
def test_reset_keeps_state_and_contents(mm: MemoryManager, reset: int) -> None:
    base = alloc(mm, 0x10000, MEM_RESERVE)
    alloc(mm, 0x2000, MEM_COMMIT, PAGE_READWRITE, base=base)
    mm.write(base, b"keep")
    before = layout(mm)
    assert nt.NtAllocateVirtualMemory(mm, base + 0x10, 0, 0x3000, reset, PAGE_NOACCESS) == (
        STATUS_SUCCESS, base, 0x4000)
    assert layout(mm) == before
    assert mm.read(base, 4) == b"keep"


def test_reset_errors(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000)
    before = layout(mm)
    assert nt.NtAllocateVirtualMemory(mm, base, 0, 0x1000, MEM_RESET, 0)[0] == (
        STATUS_INVALID_PAGE_PROTECTION)
    assert nt.NtAllocateVirtualMemory(mm, base + 0xF000, 0, 0x2000, MEM_RESET,
                                      PAGE_NOACCESS)[0] == STATUS_NOT_MAPPED_VIEW
    assert nt.NtAllocateVirtualMemory(mm, base + 0x10000, 0, 0x1000, MEM_RESET,
                                      PAGE_NOACCESS)[0] == STATUS_NOT_MAPPED_VIEW
    assert nt.NtAllocateVirtualMemory(mm, 0, 0, 0x1000, MEM_RESET,
                                      PAGE_NOACCESS)[0] == STATUS_INVALID_PARAMETER
    assert layout(mm) == before


# -- NtFreeVirtualMemory ---------------------------------------------------------------
@pytest.mark.parametrize(("free_type", "status"), [
    (0, STATUS_INVALID_PARAMETER),
    (MEM_FREE, STATUS_INVALID_PARAMETER),
    (MEM_DECOMMIT | MEM_RELEASE, STATUS_INVALID_PARAMETER),
    (MEM_COMMIT, STATUS_INVALID_PARAMETER),
    (MEM_DECOMMIT | MEM_PRESERVE_PLACEHOLDER, STATUS_INVALID_PARAMETER),
    (MEM_COALESCE_PLACEHOLDERS, STATUS_INVALID_PARAMETER_4),
    (MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER, STATUS_CONFLICTING_ADDRESSES),
    (MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS, STATUS_CONFLICTING_ADDRESSES),
])
def test_free_type_validation(mm: MemoryManager, free_type: int, status: int) -> None:
    base = alloc(mm)
    before = layout(mm)
    assert nt.NtFreeVirtualMemory(mm, base, 0, free_type) == (status, base, 0)
    assert layout(mm) == before


def test_free_errors_change_nothing(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000)
    before = layout(mm)
    cases = [
        (0, 0, MEM_RELEASE, STATUS_INVALID_PARAMETER),
        (0x800, 0, MEM_RELEASE, STATUS_INVALID_PARAMETER),  # rounds down to NULL
        (base + 0x10000, 0, MEM_RELEASE, STATUS_MEMORY_NOT_ALLOCATED),
        (base + 0x1000, 0, MEM_RELEASE, STATUS_FREE_VM_NOT_AT_BASE),
        (base + 0x1000, 0, MEM_DECOMMIT, STATUS_FREE_VM_NOT_AT_BASE),
        (base + 0xF000, 0x2000, MEM_DECOMMIT, STATUS_UNABLE_TO_FREE_VM),
        (base, 0x10001, MEM_RELEASE, STATUS_UNABLE_TO_FREE_VM),
        (base, -1, MEM_RELEASE, STATUS_INVALID_PARAMETER),
    ]
    for address, size, free_type, status in cases:
        assert nt.NtFreeVirtualMemory(mm, address, size, free_type) == (status, address, size)
    assert layout(mm) == before


def test_decommit_range_and_whole(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000)
    mm.write(base + 0x3000, b"gone")
    assert nt.NtFreeVirtualMemory(mm, base + 0x3000, 0x1000, MEM_DECOMMIT) == (
        STATUS_SUCCESS, base + 0x3000, 0x1000)
    mbi = mm.query(base + 0x3000)
    assert (mbi.State, mbi.Protect, mbi.RegionSize) == (MEM_RESERVE, 0, 0x1000)
    alloc(mm, 0x1000, MEM_COMMIT, base=base + 0x3000)
    assert mm.read(base + 0x3000, 4) == bytes(4)  # decommitted pages come back zeroed

    assert nt.NtFreeVirtualMemory(mm, base, 0, MEM_DECOMMIT) == (STATUS_SUCCESS, base, 0)
    mbi = mm.query(base)
    assert (mbi.State, mbi.RegionSize, mbi.AllocationBase) == (MEM_RESERVE, 0x10000, base)


def test_release_whole_allocation_with_its_size(mm: MemoryManager) -> None:
    base = alloc(mm, 0x3000)
    assert nt.NtFreeVirtualMemory(mm, base + 0x10, 0x2FF0, MEM_RELEASE) == (
        STATUS_SUCCESS, base, 0x3000)
    assert mm.query(base).State == MEM_FREE


def test_views_are_not_freed_here(mm: MemoryManager) -> None:
    source = alloc(mm, 0x10000)
    view = mm.map_alias(source, 0x10000, PAGE_READWRITE)
    before = layout(mm)
    for free_type, size in ((MEM_RELEASE, 0), (MEM_DECOMMIT, 0x1000)):
        assert nt.NtFreeVirtualMemory(mm, view, size, free_type) == (
            STATUS_UNABLE_TO_DELETE_SECTION, view, size)
    assert layout(mm) == before


# -- NtProtectVirtualMemory ------------------------------------------------------------
def test_protect_returns_first_page_protection_and_rounds(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000)
    assert nt.NtProtectVirtualMemory(mm, base + 0x1000, 0x1000, PAGE_READONLY)[0] == 0
    assert nt.NtProtectVirtualMemory(mm, base + 0x1FFF, 2, PAGE_EXECUTE_READ) == (
        STATUS_SUCCESS, base + 0x1000, 0x2000, PAGE_READONLY)
    assert mm.query(base + 0x2000).Protect == PAGE_EXECUTE_READ


def test_protect_errors_change_nothing(mm: MemoryManager) -> None:
    base = alloc(mm, 0x10000, MEM_RESERVE)
    alloc(mm, 0x1000, MEM_COMMIT, base=base)
    other = alloc(mm, 0x10000)
    before = layout(mm)
    cases = [
        (base, 0x1000, 0, STATUS_INVALID_PAGE_PROTECTION),
        (base, 0x1000, PAGE_READONLY | PAGE_EXECUTE_READ, STATUS_INVALID_PAGE_PROTECTION),
        (base, 0x1000, PAGE_WRITECOPY, STATUS_INVALID_PAGE_PROTECTION),  # private memory
        (base, 0x2000, PAGE_READONLY, STATUS_NOT_COMMITTED),
        (base + 0x1000, 0x1000, PAGE_READONLY, STATUS_NOT_COMMITTED),
        (base + 0xF000, 0x2000, PAGE_READONLY, STATUS_CONFLICTING_ADDRESSES),
        (other + 0x10000, 0x1000, PAGE_READONLY, STATUS_CONFLICTING_ADDRESSES),
        (base + 0x1000, 0, PAGE_READONLY, STATUS_NOT_COMMITTED),  # size 0: the page's state counts
    ]
    for address, size, protect, status in cases:
        assert nt.NtProtectVirtualMemory(mm, address, size, protect) == (
            status, address, size, 0), (hex(address), hex(protect))
    assert layout(mm) == before


def test_protect_copy_on_write_allowed_on_views(mm: MemoryManager) -> None:
    source = alloc(mm, 0x10000)
    view = mm.map_alias(source, 0x10000, PAGE_READWRITE)
    assert nt.NtProtectVirtualMemory(mm, view, 0x1000, PAGE_WRITECOPY) == (
        STATUS_SUCCESS, view, 0x1000, PAGE_READWRITE)


def test_protect_cache_attributes_follow_the_allocation(mm: MemoryManager) -> None:
    cached = alloc(mm, 0x2000, protect=PAGE_READWRITE)
    uncached = alloc(mm, 0x2000, protect=PAGE_READWRITE | PAGE_WRITECOMBINE)
    assert nt.NtProtectVirtualMemory(mm, cached, 0x1000, PAGE_READONLY | PAGE_NOCACHE)[3] == (
        PAGE_READWRITE)
    assert mm.query(cached).Protect == PAGE_READONLY
    assert nt.NtProtectVirtualMemory(mm, uncached, 0x1000, PAGE_READONLY)[3] == (
        PAGE_READWRITE | PAGE_WRITECOMBINE)
    assert mm.query(uncached).Protect == PAGE_READONLY | PAGE_WRITECOMBINE
    assert nt.NtProtectVirtualMemory(mm, uncached, 0x1000, PAGE_NOACCESS)[0] == STATUS_SUCCESS
    assert mm.query(uncached).Protect == PAGE_NOACCESS


# -- NtQueryVirtualMemory --------------------------------------------------------------
def test_query_bounds(mm: MemoryManager) -> None:
    top = mm.highest_address
    for address in (top, top + 0x10000, -1, 1 << 64):
        assert nt.NtQueryVirtualMemory(mm, address) == (STATUS_INVALID_PARAMETER, None)
    status, mbi = nt.NtQueryVirtualMemory(mm, top - 1)
    assert status == STATUS_SUCCESS and mbi is not None
    assert mbi.State == MEM_FREE
    assert mbi.BaseAddress + mbi.RegionSize == top
    status, mbi = nt.NtQueryVirtualMemory(mm, 0)
    assert status == STATUS_SUCCESS and mbi is not None
    assert (mbi.BaseAddress, mbi.State, mbi.Protect, mbi.AllocationBase) == (
        0, MEM_FREE, PAGE_NOACCESS, 0)


def test_query_free_gap_ends_at_next_allocation(mm: MemoryManager) -> None:
    first = alloc(mm, 0x1000)
    second = alloc(mm, 0x1000, base=first + 0x30000)
    status, mbi = nt.NtQueryVirtualMemory(mm, first + 0x1234)
    assert status == STATUS_SUCCESS and mbi is not None
    assert (mbi.BaseAddress, mbi.RegionSize, mbi.State, mbi.Type) == (
        first + 0x1000, second - first - 0x1000, MEM_FREE, 0)


# -- never raise -----------------------------------------------------------------------
def test_garbage_never_raises(mm: MemoryManager) -> None:
    huge = 1 << 70
    for base, size in ((huge, 0x1000), (0x10000, huge), (-huge, -huge)):
        for kind in (MEM_COMMIT, MEM_RESERVE, MEM_RESERVE | MEM_COMMIT, MEM_RESET):
            status, _, _ = nt.NtAllocateVirtualMemory(mm, base, 0, size, kind, PAGE_READWRITE)
            assert not nt.NT_SUCCESS(status)
        assert not nt.NT_SUCCESS(nt.NtFreeVirtualMemory(mm, base, size, MEM_RELEASE)[0])
        assert not nt.NT_SUCCESS(nt.NtFreeVirtualMemory(mm, base, size, MEM_DECOMMIT)[0])
        assert not nt.NT_SUCCESS(nt.NtProtectVirtualMemory(mm, base, size, PAGE_READONLY)[0])
        if base != 0x10000:
            assert not nt.NT_SUCCESS(nt.NtQueryVirtualMemory(mm, base)[0])
    assert mm.stats().allocations == 0


def test_protect_of_size_zero_changes_nothing_and_reports_the_page(mm: MemoryManager) -> None:
    """VirtualProtect(p, 0, ...) is an empty range: success, the page's old protection, no
    change (Wine's answer, tests/oracle vprotect split.size_zero); the page must be committed."""
    status, base, _ = nt.NtAllocateVirtualMemory(mm, 0, 0, 0x2000, MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    status, _, size, old = nt.NtProtectVirtualMemory(mm, base + 0x1000, 0, PAGE_READONLY)
    assert (status, size, old) == (STATUS_SUCCESS, 0, PAGE_READWRITE)
    assert mm.query(base).Protect == PAGE_READWRITE and mm.query(base).RegionSize == 0x2000
    nt.NtFreeVirtualMemory(mm, base + 0x1000, 0x1000, MEM_DECOMMIT)
    status, *_ = nt.NtProtectVirtualMemory(mm, base + 0x1000, 0, PAGE_READONLY)
    assert status == 0xC000002D  # STATUS_NOT_COMMITTED
