"""Wine's virtual-memory conformance tests, ported.

Sources: ``dlls/kernel32/tests/virtual.c`` (test_VirtualAlloc, test_VirtualProtect,
test_VirtualAlloc_protection, test_MapViewOfFile, test_IsBadReadPtr, test_IsBadWritePtr,
test_write_watch) and ``dlls/ntdll/tests/virtual.c`` (test_NtAllocateVirtualMemory,
test_NtFreeVirtualMemory, test_stack_size_thread). Those assertions hold on real Windows;
each ``assert`` here is one of Wine's ``ok()`` lines (``broken()`` alternatives for old
Windows versions dropped). Parts needing files, processes, threads or windows are not ported.
Every expectation is a Windows literal; 32- and 64-bit guests both run where it matters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from unicorn import UcError
from unicorn.x86_const import UC_X86_REG_EBX, UC_X86_REG_RBX

from emulator_mem import MemoryManager, nt
from emulator_mem.win32 import Kernel32

# winnt.h / ntstatus.h / winerror.h values, written out
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE = 0x10
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_EXECUTE_WRITECOPY = 0x80
PAGE_GUARD = 0x100
PAGE_NOCACHE = 0x200
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_DECOMMIT = 0x4000
MEM_RELEASE = 0x8000
MEM_FREE = 0x10000
MEM_PRIVATE = 0x20000
MEM_MAPPED = 0x40000
MEM_RESERVE_PLACEHOLDER = 0x40000
MEM_PRESERVE_PLACEHOLDER = 0x2
MEM_RESET = 0x80000
MEM_TOP_DOWN = 0x100000
MEM_WRITE_WATCH = 0x200000
AT_ROUND_TO_PAGE = 0x40000000
STATUS_SUCCESS = 0
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NO_MEMORY = 0xC0000017
STATUS_CONFLICTING_ADDRESSES = 0xC0000018
STATUS_UNABLE_TO_FREE_VM = 0xC000001A
STATUS_FREE_VM_NOT_AT_BASE = 0xC000009F
STATUS_MEMORY_NOT_ALLOCATED = 0xC00000A0
STATUS_INVALID_PARAMETER_3 = 0xC00000F1
STATUS_INVALID_PARAMETER_5 = 0xC00000F3
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_INVALID_ADDRESS = 487
SEC_RESERVE = 0x04000000
SEC_COMMIT = 0x08000000
FILE_MAP_WRITE = 0x0002
FILE_MAP_READ = 0x0004
FILE_MAP_EXECUTE = 0x0020
INVALID_HANDLE_VALUE = 0xFFFFFFFFFFFFFFFF
PAGE_SIZE = 0x1000
MAPPING_SIZE = 0x100000


def dword(mm: MemoryManager, address: int) -> int:
    return int.from_bytes(mm.read(address, 4), "little")


def expect_mbi(k32: Kernel32, address: int, **fields: int) -> None:
    info = k32.VirtualQuery(address)
    assert info is not None
    for name, value in fields.items():
        assert getattr(info, name) == value, (name, hex(getattr(info, name)), hex(value))


# --------------------------------------------------------------------------------------
# kernel32: test_VirtualAlloc
# --------------------------------------------------------------------------------------
def test_VirtualAlloc_zero_size(k32: Kernel32) -> None:
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualAlloc(0, 0, MEM_RESERVE, PAGE_NOACCESS) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER


def test_VirtualAlloc_reserve_commit_protect_free(k32: Kernel32, mm: MemoryManager) -> None:
    addr1 = k32.VirtualAlloc(0, 0xFFFC, MEM_RESERVE, PAGE_NOACCESS)
    assert addr1 != 0

    # a not committed memory
    expect_mbi(k32, addr1, BaseAddress=addr1, AllocationBase=addr1, AllocationProtect=PAGE_NOACCESS,
               RegionSize=0x10000, State=MEM_RESERVE, Protect=0, Type=MEM_PRIVATE)

    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualProtect(addr1, 0xFFFC, PAGE_READONLY)[0] is False
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS

    assert k32.VirtualAlloc(addr1, 0x1000, MEM_COMMIT, PAGE_NOACCESS) == addr1

    # a committed memory
    expect_mbi(k32, addr1, BaseAddress=addr1, AllocationBase=addr1, AllocationProtect=PAGE_NOACCESS,
               RegionSize=0x1000, State=MEM_COMMIT, Protect=PAGE_NOACCESS, Type=MEM_PRIVATE)

    # this should fail, since not the whole range is committed yet
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualProtect(addr1, 0xFFFC, PAGE_READONLY)[0] is False
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS

    assert k32.VirtualProtect(addr1, 0x1000, PAGE_READONLY) == (True, PAGE_NOACCESS)
    assert k32.VirtualProtect(addr1, 0x1000, PAGE_READWRITE) == (True, PAGE_READONLY)

    expect_mbi(k32, addr1, RegionSize=0x1000, State=MEM_COMMIT, Protect=PAGE_READWRITE)
    mm.write(addr1, b"\x55" * 20)
    assert dword(mm, addr1) == 0x55555555

    assert k32.VirtualAlloc(addr1, 0x1000, MEM_RESET, PAGE_NOACCESS) == addr1
    assert dword(mm, addr1) in (0x55555555, 0)
    expect_mbi(k32, addr1, RegionSize=0x1000, State=MEM_COMMIT, Protect=PAGE_READWRITE)

    addr2 = k32.VirtualAlloc(addr1 + 0x1000, 0x1000, MEM_RESET, PAGE_NOACCESS)
    assert addr2 == addr1 + 0x1000
    expect_mbi(k32, addr2, RegionSize=0xF000, State=MEM_RESERVE, Protect=0)

    assert k32.VirtualAlloc(addr1 + 0xF000, 0x2000, MEM_RESET, PAGE_NOACCESS) == 0
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS

    # invalid protection values
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualAlloc(0, 0x1000, MEM_RESERVE, 0) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualAlloc(0, 0x1000, MEM_COMMIT, 0) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualAlloc(addr1, 0x1000, MEM_COMMIT, PAGE_READONLY | PAGE_EXECUTE) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    k32.SetLastError(0xDEADBEEF)
    ok, _ = k32.VirtualProtect(addr1, 0x1000, PAGE_READWRITE | PAGE_EXECUTE_WRITECOPY)
    assert not ok
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualProtect(addr1, 0x1000, 0)[0] is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER

    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualFree(addr1, 0x10000, 0) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualFree(addr1, 0, MEM_FREE) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER

    assert k32.VirtualFree(addr1, 0x10000, MEM_DECOMMIT) is True
    # if the type is MEM_RELEASE, size must be 0
    assert k32.VirtualFree(addr1, 1, MEM_RELEASE) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.VirtualFree(addr1, 0, MEM_RELEASE) is True


def test_VirtualAlloc_nocache_is_per_allocation(k32: Kernel32) -> None:
    # PAGE_NOCACHE cannot be set per page in recent Windows
    addr1 = k32.VirtualAlloc(0, 0x2000, MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE)
    assert addr1 != 0
    expect_mbi(k32, addr1, BaseAddress=addr1, AllocationBase=addr1,
               AllocationProtect=PAGE_READWRITE | PAGE_NOCACHE, RegionSize=0x2000, State=MEM_COMMIT,
               Protect=PAGE_READWRITE | PAGE_NOCACHE, Type=MEM_PRIVATE)

    assert k32.VirtualProtect(addr1, 0x1000, PAGE_READWRITE) == (True, PAGE_READWRITE | PAGE_NOCACHE)
    expect_mbi(k32, addr1, AllocationProtect=PAGE_READWRITE | PAGE_NOCACHE, RegionSize=0x2000,
               State=MEM_COMMIT, Protect=PAGE_READWRITE | PAGE_NOCACHE)

    assert k32.VirtualProtect(addr1, 0x1000, PAGE_READONLY) == (True, PAGE_READWRITE | PAGE_NOCACHE)
    expect_mbi(k32, addr1, AllocationProtect=PAGE_READWRITE | PAGE_NOCACHE, RegionSize=0x1000,
               State=MEM_COMMIT, Protect=PAGE_READONLY | PAGE_NOCACHE)
    assert k32.VirtualFree(addr1, 0, MEM_RELEASE) is True

    addr1 = k32.VirtualAlloc(0, 0x2000, MEM_COMMIT, PAGE_READWRITE)
    assert addr1 != 0
    expect_mbi(k32, addr1, AllocationProtect=PAGE_READWRITE, RegionSize=0x2000,
               Protect=PAGE_READWRITE)

    assert k32.VirtualProtect(addr1, 0x1000, PAGE_READONLY | PAGE_NOCACHE) == (True, PAGE_READWRITE)
    expect_mbi(k32, addr1, BaseAddress=addr1, AllocationProtect=PAGE_READWRITE, RegionSize=0x1000,
               State=MEM_COMMIT, Protect=PAGE_READONLY, Type=MEM_PRIVATE)
    assert k32.VirtualFree(addr1, 0, MEM_RELEASE) is True


def test_VirtualAlloc_64k_aligned_and_reusable(k32: Kernel32) -> None:
    # memory returned by VirtualAlloc should be aligned to 64k
    addr1 = k32.VirtualAlloc(0, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert addr1 != 0
    assert addr1 & 0xFFFF == 0
    assert k32.VirtualFree(addr1, 0, MEM_RELEASE) is True
    addr2 = k32.VirtualAlloc(addr1, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert addr2 == addr1

    # AT_ROUND_TO_PAGE flag is not supported for VirtualAlloc
    k32.SetLastError(0xDEADBEEF)
    flags = MEM_RESERVE | MEM_COMMIT | AT_ROUND_TO_PAGE
    assert k32.VirtualAlloc(addr1, 0x1000, flags, PAGE_EXECUTE_READWRITE) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.VirtualFree(addr1, 0, MEM_RELEASE) is True


# --------------------------------------------------------------------------------------
# kernel32: test_VirtualProtect
# --------------------------------------------------------------------------------------
VIRTUALPROTECT_TABLE = [  # (prot_set, prot_get): 0 means VirtualProtect must fail
    (0, 0),
    (PAGE_NOACCESS, PAGE_NOACCESS),
    (PAGE_READONLY, PAGE_READONLY),
    (PAGE_READONLY | PAGE_NOACCESS, 0),
    (PAGE_READWRITE, PAGE_READWRITE),
    (PAGE_READWRITE | PAGE_NOACCESS, 0),
    (PAGE_READWRITE | PAGE_READONLY, 0),
    (PAGE_READWRITE | PAGE_READONLY | PAGE_NOACCESS, 0),
    (PAGE_WRITECOPY, 0),
    (PAGE_WRITECOPY | PAGE_NOACCESS, 0),
    (PAGE_WRITECOPY | PAGE_READONLY, 0),
    (PAGE_WRITECOPY | PAGE_NOACCESS | PAGE_READONLY, 0),
    (PAGE_WRITECOPY | PAGE_READWRITE, 0),
    (PAGE_WRITECOPY | PAGE_READWRITE | PAGE_NOACCESS, 0),
    (PAGE_WRITECOPY | PAGE_READWRITE | PAGE_READONLY, 0),
    (PAGE_WRITECOPY | PAGE_READWRITE | PAGE_READONLY | PAGE_NOACCESS, 0),
    (PAGE_EXECUTE, PAGE_EXECUTE),
    (PAGE_EXECUTE_READ, PAGE_EXECUTE_READ),
    (PAGE_EXECUTE_READ | PAGE_EXECUTE, 0),
    (PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_READWRITE),
    (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE, 0),
    (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ, 0),
    (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ | PAGE_EXECUTE, 0),
    (PAGE_EXECUTE_WRITECOPY, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READ, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READ | PAGE_EXECUTE, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ, 0),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ | PAGE_EXECUTE, 0),
]


def test_VirtualProtect_table(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, PAGE_SIZE, MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS)
    assert base != 0
    assert k32.VirtualProtect(base, PAGE_SIZE, PAGE_NOACCESS) == (True, PAGE_NOACCESS)
    status, _, _, old = nt.NtProtectVirtualMemory(k32.mm, base, PAGE_SIZE, PAGE_NOACCESS)
    assert status == STATUS_SUCCESS
    assert old == PAGE_NOACCESS

    for prot_set, prot_get in VIRTUALPROTECT_TABLE:
        expect_mbi(k32, base, BaseAddress=base, RegionSize=PAGE_SIZE, Protect=PAGE_NOACCESS,
                   AllocationBase=base, AllocationProtect=PAGE_NOACCESS, State=MEM_COMMIT,
                   Type=MEM_PRIVATE)

        k32.SetLastError(0xDEADBEEF)
        ok, old = k32.VirtualProtect(base, PAGE_SIZE, prot_set)
        if prot_get:
            assert ok, hex(prot_set)
            assert old == PAGE_NOACCESS
            expect_mbi(k32, base, BaseAddress=base, RegionSize=PAGE_SIZE, Protect=prot_get,
                       AllocationBase=base, AllocationProtect=PAGE_NOACCESS, State=MEM_COMMIT,
                       Type=MEM_PRIVATE)
        else:
            assert not ok, hex(prot_set)
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER

        ok, old = k32.VirtualProtect(base, PAGE_SIZE, PAGE_NOACCESS)
        assert ok
        assert old == (prot_get or PAGE_NOACCESS)

    assert k32.VirtualFree(base, 0, MEM_RELEASE) is True


def test_VirtualProtect_exec_rw_combinations(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, PAGE_SIZE, MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS)
    assert base != 0
    exec_prot = 0
    for i in range(5):
        rw_prot = 0
        for j in range(5):
            prot = exec_prot | rw_prot
            invalid = bool(rw_prot and exec_prot) or not (rw_prot or exec_prot)
            writecopy = bool(prot & (PAGE_WRITECOPY | PAGE_EXECUTE_WRITECOPY))

            k32.SetLastError(0xDEADBEEF)
            ptr = k32.VirtualAlloc(base, PAGE_SIZE, MEM_COMMIT, prot)
            if invalid or writecopy:
                assert ptr == 0, hex(prot)
                assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            else:
                assert ptr == base, hex(prot)

            k32.SetLastError(0xDEADBEEF)
            ok, _ = k32.VirtualProtect(base, PAGE_SIZE, prot)
            if invalid or writecopy:
                assert not ok, hex(prot)
                assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            else:
                assert ok, hex(prot)
            rw_prot = 1 << j
        exec_prot = 1 << (i + 4)
    assert k32.VirtualFree(base, 0, MEM_RELEASE) is True


# --------------------------------------------------------------------------------------
# kernel32: test_VirtualAlloc_protection
# --------------------------------------------------------------------------------------
VIRTUALALLOC_PROTECTION_TABLE = [(prot, prot in {
    PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE,
    PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE,
}) for prot, _ in VIRTUALPROTECT_TABLE]


def test_VirtualAlloc_protection(k32: Kernel32, mm: MemoryManager) -> None:
    for prot, success in VIRTUALALLOC_PROTECTION_TABLE:
        k32.SetLastError(0xDEADBEEF)
        base = k32.VirtualAlloc(0, PAGE_SIZE, MEM_COMMIT, prot)
        if not success:
            assert base == 0, hex(prot)
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            continue
        assert base != 0, hex(prot)
        expect_mbi(k32, base, BaseAddress=base, RegionSize=PAGE_SIZE, Protect=prot,
                   AllocationBase=base, AllocationProtect=prot, State=MEM_COMMIT, Type=MEM_PRIVATE)
        if prot in (PAGE_READWRITE, PAGE_EXECUTE_READWRITE):
            mm.write(base, b"\xfe")
            expect_mbi(k32, base, Protect=prot)
        assert k32.VirtualAlloc(base, PAGE_SIZE, MEM_COMMIT, prot) == base
        assert k32.VirtualFree(base, 0, MEM_RELEASE) is True


# --------------------------------------------------------------------------------------
# kernel32: test_MapViewOfFile (the parts that hold for any view; views made by map_alias)
# --------------------------------------------------------------------------------------
def test_view_reset_commit_and_decommit(k32: Kernel32, mm: MemoryManager) -> None:
    src = k32.VirtualAlloc(0, 0x20000, MEM_COMMIT, PAGE_READWRITE)
    assert src != 0
    ptr = mm.map_alias(src, 0x20000, PAGE_READWRITE)
    expect_mbi(k32, ptr, BaseAddress=ptr, AllocationBase=ptr, RegionSize=0x20000, State=MEM_COMMIT,
               AllocationProtect=PAGE_READWRITE, Protect=PAGE_READWRITE, Type=MEM_MAPPED)

    assert k32.VirtualAlloc(ptr, 0x10000, MEM_COMMIT, PAGE_READONLY) == ptr
    expect_mbi(k32, ptr, BaseAddress=ptr, AllocationBase=ptr, RegionSize=0x10000, State=MEM_COMMIT,
               AllocationProtect=PAGE_READWRITE, Protect=PAGE_READONLY, Type=MEM_MAPPED)

    assert k32.VirtualAlloc(ptr, 0x20000, MEM_RESET, PAGE_READONLY) == ptr

    assert k32.VirtualFree(ptr, 0x10000, MEM_DECOMMIT) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.IsBadReadPtr(ptr, 0x20000) is False


def test_VirtualQuery_inside_a_region_reports_from_its_page(k32: Kernel32, mm: MemoryManager) -> None:
    """Wine's NtQueryVirtualMemory: ``base = ROUND_ADDR(addr, page_mask)``; RegionSize counts
    from that page to the end of the run (the issue's 5-page example)."""
    b = k32.VirtualAlloc(0, 0x5000, MEM_COMMIT, PAGE_READWRITE)
    for address, base, size in ((b, b, 0x5000), (b + 0x2000, b + 0x2000, 0x3000),
                                (b + 0x2FFF, b + 0x2000, 0x3000), (b + 0x4FFF, b + 0x4000, 0x1000)):
        expect_mbi(k32, address, BaseAddress=base, RegionSize=size, AllocationBase=b,
                   AllocationProtect=PAGE_READWRITE, State=MEM_COMMIT, Protect=PAGE_READWRITE,
                   Type=MEM_PRIVATE)
        status, info = nt.NtQueryVirtualMemory(mm, address)
        assert status == STATUS_SUCCESS and info is not None
        assert (info.BaseAddress, info.RegionSize) == (base, size)
    # a run that ends before the allocation does: counted to the end of the run only
    assert k32.VirtualProtect(b + 0x3000, 0x1000, PAGE_READONLY)[0]
    expect_mbi(k32, b + 0x1800, BaseAddress=b + 0x1000, RegionSize=0x2000, Protect=PAGE_READWRITE)
    # reserved pages the same way
    r = k32.VirtualAlloc(0, 0x10000, MEM_RESERVE, PAGE_NOACCESS)
    expect_mbi(k32, r + 0x7123, BaseAddress=r + 0x7000, RegionSize=0x9000, State=MEM_RESERVE,
               Protect=0, AllocationBase=r)
    # and mapped views
    h = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE | SEC_COMMIT, 0, 0x4000)
    v = k32.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    expect_mbi(k32, v + 0x1004, BaseAddress=v + 0x1000, RegionSize=0x3000, AllocationBase=v,
               Type=MEM_MAPPED, Protect=PAGE_READWRITE)


def test_query_after_free_reports_free_memory(k32: Kernel32) -> None:
    addr = k32.VirtualAlloc(0, 0x10000, MEM_COMMIT, PAGE_READONLY)
    assert addr != 0
    assert k32.IsBadReadPtr(addr, 0x10000) is False
    assert k32.VirtualFree(addr, 0, MEM_RELEASE) is True
    assert k32.IsBadReadPtr(addr, 0x10000) is True
    expect_mbi(k32, addr, BaseAddress=addr, Protect=PAGE_NOACCESS, AllocationBase=0,
               AllocationProtect=0, State=MEM_FREE, Type=0)


# --------------------------------------------------------------------------------------
# kernel32: test_IsBadReadPtr / test_IsBadWritePtr
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("probe", ["IsBadReadPtr", "IsBadWritePtr"])
def test_IsBadPtr(k32: Kernel32, probe: str) -> None:
    is_bad = getattr(k32, probe)
    assert is_bad(0, 0) is False
    assert is_bad(0, 1) is True
    assert is_bad(0xDEADBEEF, 0) is False
    assert is_bad(0xDEADBEEF, 1) is True

    stack = k32.VirtualAlloc(0, 0x10000, MEM_RESERVE, PAGE_READWRITE)
    assert k32.VirtualAlloc(stack + 0xE000, 0x2000, MEM_COMMIT, PAGE_READWRITE) != 0
    var = stack + 0xFF00
    assert is_bad(var, 0) is False
    assert is_bad(var, 1) is False
    # the DeallocationStack + 4096 page is reserved, not committed
    assert is_bad(stack + 4096, 4) is True
    assert is_bad(stack + 4096, 4) is True


# --------------------------------------------------------------------------------------
# kernel32: test_write_watch (allocation flags and region bookkeeping)
# --------------------------------------------------------------------------------------
def test_write_watch_allocation_and_regions(k32: Kernel32) -> None:
    size = 0x10000
    base = k32.VirtualAlloc(0, size, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE)
    assert base != 0
    expect_mbi(k32, base, BaseAddress=base, AllocationProtect=PAGE_READWRITE, RegionSize=size,
               State=MEM_COMMIT, Protect=PAGE_READWRITE, Type=MEM_PRIVATE)

    # changing protections doesn't affect watches
    assert k32.VirtualProtect(base, 3 * PAGE_SIZE, PAGE_READONLY) == (True, PAGE_READWRITE)
    expect_mbi(k32, base, BaseAddress=base, RegionSize=3 * PAGE_SIZE, State=MEM_COMMIT,
               Protect=PAGE_READONLY)

    assert k32.VirtualProtect(base, 3 * PAGE_SIZE, PAGE_READWRITE) == (True, PAGE_READONLY)
    expect_mbi(k32, base, BaseAddress=base, RegionSize=size, State=MEM_COMMIT,
               Protect=PAGE_READWRITE)
    assert k32.VirtualFree(base, 0, MEM_RELEASE) is True

    base = k32.VirtualAlloc(0, size, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE)
    assert base != 0
    assert k32.VirtualFree(base, 0, MEM_RELEASE) is True

    assert k32.VirtualAlloc(0, size, MEM_WRITE_WATCH, PAGE_READWRITE) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER

    # initial protect doesn't matter
    base = k32.VirtualAlloc(0, size, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_NOACCESS)
    assert base != 0
    assert k32.VirtualAlloc(base, size, MEM_COMMIT, PAGE_READWRITE) == base


# --------------------------------------------------------------------------------------
# ntdll: test_NtAllocateVirtualMemory
# --------------------------------------------------------------------------------------
def test_NtAllocateVirtualMemory_conflicts(mm: MemoryManager) -> None:
    # simple allocation should succeed
    status, addr1, size = nt.NtAllocateVirtualMemory(
        mm, 0, 0, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert status == STATUS_SUCCESS
    assert size == 0x1000

    # allocation conflicts because of 64k align
    status, _, _ = nt.NtAllocateVirtualMemory(
        mm, addr1 + 0x1000, 0, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert status == STATUS_CONFLICTING_ADDRESSES

    # it should conflict, even when zero_bits is explicitly set
    status, _, _ = nt.NtAllocateVirtualMemory(
        mm, addr1 + 0x1000, 12, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert status == STATUS_CONFLICTING_ADDRESSES

    # AT_ROUND_TO_PAGE flag is not supported for NtAllocateVirtualMemory
    status, _, _ = nt.NtAllocateVirtualMemory(
        mm, addr1 + 0x1000, 0, 0x1000, MEM_RESERVE | MEM_COMMIT | AT_ROUND_TO_PAGE,
        PAGE_EXECUTE_READWRITE)
    assert status in (STATUS_INVALID_PARAMETER_5, STATUS_INVALID_PARAMETER)

    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0, MEM_RELEASE)
    assert status == STATUS_SUCCESS

    # placeholders are not reservations NtAllocateVirtualMemory makes
    status, _, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 0, 0x10000, MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS)
    assert status == STATUS_INVALID_PARAMETER


def test_NtAllocateVirtualMemory_zero_bits(mm: MemoryManager) -> None:
    for zero_bits in range(1, 21):
        status, addr2, _ = nt.NtAllocateVirtualMemory(
            mm, 0, zero_bits, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
        assert status in (STATUS_SUCCESS, STATUS_NO_MEMORY), zero_bits
        if status == STATUS_SUCCESS:
            assert addr2 >> (32 - zero_bits) == 0, (zero_bits, hex(addr2))
            status, _, _ = nt.NtFreeVirtualMemory(mm, addr2, 0, MEM_RELEASE)
            assert status == STATUS_SUCCESS
    # the top-down allocations with few zero bits do find room in a fresh address space
    status, addr2, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 1, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    assert addr2 >> 31 == 0

    # 21 zero bits never succeeds
    status, _, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 21, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert status in (STATUS_NO_MEMORY, STATUS_INVALID_PARAMETER)

    # 22 zero bits is invalid
    status, _, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 22, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert status in (STATUS_INVALID_PARAMETER_3, STATUS_INVALID_PARAMETER)


def test_NtAllocateVirtualMemory_zero_bits_mask(mm: MemoryManager) -> None:
    # zero bits > 31 should be considered as a leading zeroes bitmask on 64bit and WoW64
    zero_bits = 0x1AAAAAAA
    status, addr2, _ = nt.NtAllocateVirtualMemory(
        mm, 0, zero_bits, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
    if not mm.is_64bit:
        assert status == STATUS_INVALID_PARAMETER_3
        return
    assert status in (STATUS_SUCCESS, STATUS_NO_MEMORY)
    assert status == STATUS_SUCCESS  # there is room below 0x20000000 in a fresh process
    assert addr2 & ~0x1FFFFFFF == 0
    assert addr2 & ~zero_bits != 0  # only the leading zeroes matter
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr2, 0, MEM_RELEASE)
    assert status == STATUS_SUCCESS


def test_NtFreeVirtualMemory_rounding(mm: MemoryManager) -> None:
    status, addr1, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 0, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    assert status == STATUS_SUCCESS

    status, addr2, size = nt.NtFreeVirtualMemory(mm, addr1 + 0x1FFF, 2, MEM_DECOMMIT)
    assert status == STATUS_SUCCESS
    assert size == 0x2000
    assert addr2 == addr1 + 0x1000

    status, addr2, size = nt.NtFreeVirtualMemory(mm, addr1 + 0x1001, 0, MEM_DECOMMIT)
    assert status == STATUS_FREE_VM_NOT_AT_BASE
    assert size == 0
    assert addr2 == addr1 + 0x1001

    status, addr2, size = nt.NtFreeVirtualMemory(mm, addr1 + 0xFFE, 0, MEM_DECOMMIT)
    assert status == STATUS_SUCCESS
    assert size == 0
    assert addr2 == addr1

    status, addr2, size = nt.NtFreeVirtualMemory(mm, addr1 + 0x1001, 0, MEM_RELEASE)
    assert status == STATUS_FREE_VM_NOT_AT_BASE
    assert size == 0
    assert addr2 == addr1 + 0x1001

    status, addr2, size = nt.NtFreeVirtualMemory(mm, addr1 + 0xFFF, 0, MEM_RELEASE)
    assert status == STATUS_SUCCESS
    assert size == 0x10000
    assert addr2 == addr1


# --------------------------------------------------------------------------------------
# ntdll: test_NtFreeVirtualMemory
# --------------------------------------------------------------------------------------
def test_NtFreeVirtualMemory_range_errors(mm: MemoryManager) -> None:
    status, addr1, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 0, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_SUCCESS

    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1 + 0x1000, 0, MEM_RELEASE)
    assert status == STATUS_FREE_VM_NOT_AT_BASE

    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0x11000, MEM_RELEASE)
    assert status == STATUS_UNABLE_TO_FREE_VM

    status, addr, size = nt.NtFreeVirtualMemory(mm, addr1 + 0x1001, 0xFFFF, MEM_RELEASE)
    assert status == STATUS_UNABLE_TO_FREE_VM
    assert size == 0xFFFF
    assert addr == addr1 + 0x1001

    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0x11000, MEM_DECOMMIT)
    assert status == STATUS_UNABLE_TO_FREE_VM

    status, addr, size = nt.NtFreeVirtualMemory(mm, addr1, 0x10000, MEM_RELEASE)
    assert status == STATUS_SUCCESS
    assert (addr, size) == (addr1, 0x10000)

    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0, MEM_RELEASE)
    assert status == STATUS_MEMORY_NOT_ALLOCATED
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1 + 0x1000, 0x1000, MEM_DECOMMIT)
    assert status == STATUS_MEMORY_NOT_ALLOCATED


def test_NtFreeVirtualMemory_preserve_placeholder_on_plain_reservation(mm: MemoryManager) -> None:
    """test_NtAllocateVirtualMemoryEx, "Placeholder region splitting" (first part)."""
    status, addr1, size = nt.NtAllocateVirtualMemory(mm, 0, 0, 0x10000, MEM_RESERVE,
                                                     PAGE_NOACCESS)
    assert status == STATUS_SUCCESS
    status, p, size = nt.NtFreeVirtualMemory(mm, addr1, size,
                                             MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER)
    assert status == STATUS_CONFLICTING_ADDRESSES
    assert size == 0x10000
    status, p, size = nt.NtFreeVirtualMemory(mm, p, size, MEM_RELEASE)
    assert status == STATUS_SUCCESS
    assert size == 0x10000
    assert p == addr1


def test_NtFreeVirtualMemory_partial_release(mm: MemoryManager) -> None:
    """Windows releases part of an allocation, splitting it (Wine test_NtFreeVirtualMemory)."""
    status, addr1, _ = nt.NtAllocateVirtualMemory(
        mm, 0, 0, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_SUCCESS

    status, addr, size = nt.NtFreeVirtualMemory(mm, addr1 + 0x1001, 0xFFF, MEM_RELEASE)
    assert status == STATUS_SUCCESS
    mm.write(addr1, b"\x01")
    mm.write(addr1 + 0x2000, b"\x01")
    assert size == 0x1000
    assert addr == addr1 + 0x1000

    status, addr, size = nt.NtFreeVirtualMemory(mm, addr1 + 1, 0xFFF, MEM_RELEASE)
    assert status == STATUS_SUCCESS
    mm.write(addr1 + 0x2000, b"\x01")
    assert size == 0x1000
    assert addr == addr1

    status, addr, size = nt.NtAllocateVirtualMemory(
        mm, addr1, 0, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    assert addr == addr1
    assert size == 0x1000

    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0x10000, MEM_DECOMMIT)
    assert status == STATUS_UNABLE_TO_FREE_VM
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0x10000, MEM_RELEASE)
    assert status == STATUS_UNABLE_TO_FREE_VM
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1 + 0x1000, 0, MEM_RELEASE)
    assert status == STATUS_MEMORY_NOT_ALLOCATED
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1 + 0x1000, 0x1000, MEM_DECOMMIT)
    assert status == STATUS_MEMORY_NOT_ALLOCATED
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1 + 0x2000, 0, MEM_RELEASE)
    assert status == STATUS_SUCCESS
    status, _, _ = nt.NtFreeVirtualMemory(mm, addr1, 0x1000, MEM_RELEASE)
    assert status == STATUS_SUCCESS


# --------------------------------------------------------------------------------------
# ntdll: test_stack_size_thread (regions of a thread stack: reserve, guard, commit)
# --------------------------------------------------------------------------------------
def test_stack_like_regions_and_guard_protect(mm: MemoryManager) -> None:
    status, stack, size = nt.NtAllocateVirtualMemory(mm, 0, 0, 0x100000, MEM_RESERVE,
                                                     PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    limit = stack + size - 0x6000
    status, _, _ = nt.NtAllocateVirtualMemory(mm, limit, 0, 0x6000, MEM_COMMIT, PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    status, guard, _ = nt.NtAllocateVirtualMemory(mm, limit - 0x2000, 0, 0x2000, MEM_COMMIT,
                                                  PAGE_READWRITE | PAGE_GUARD)
    assert status == STATUS_SUCCESS

    status, mbi = nt.NtQueryVirtualMemory(mm, stack)
    assert status == STATUS_SUCCESS and mbi is not None
    assert mbi.AllocationBase == stack
    assert mbi.AllocationProtect == PAGE_READWRITE
    assert mbi.BaseAddress == stack
    assert mbi.State == MEM_RESERVE
    assert mbi.Protect == 0
    assert mbi.Type == MEM_PRIVATE
    guard_size = size - 0x6000 - mbi.RegionSize
    assert guard_size == 0x2000

    status, mbi = nt.NtQueryVirtualMemory(mm, stack + mbi.RegionSize)
    assert status == STATUS_SUCCESS and mbi is not None
    assert mbi.AllocationBase == stack
    assert mbi.AllocationProtect == PAGE_READWRITE
    assert mbi.BaseAddress == guard
    assert mbi.RegionSize == guard_size
    assert mbi.State == MEM_COMMIT
    assert mbi.Protect == PAGE_READWRITE | PAGE_GUARD
    assert mbi.Type == MEM_PRIVATE

    status, mbi = nt.NtQueryVirtualMemory(mm, limit)
    assert status == STATUS_SUCCESS and mbi is not None
    assert mbi.AllocationBase == stack
    assert mbi.BaseAddress == limit
    assert mbi.RegionSize == 0x6000
    assert mbi.State == MEM_COMMIT
    assert mbi.Protect == PAGE_READWRITE

    # clearing the guard pages
    status, _, _, prot = nt.NtProtectVirtualMemory(mm, limit + 0x2000, 0x1000,
                                                   PAGE_READWRITE | PAGE_GUARD)
    assert status == STATUS_SUCCESS
    assert prot == PAGE_READWRITE
    status, _, _, prot = nt.NtProtectVirtualMemory(mm, limit + 0x2000, 0x1000, PAGE_READWRITE)
    assert status == STATUS_SUCCESS
    assert prot == PAGE_READWRITE | PAGE_GUARD


# --------------------------------------------------------------------------------------
# kernel32: test_MapViewOfFile (anonymous mappings), test_CreateFileMapping_protection
# --------------------------------------------------------------------------------------


def test_MapViewOfFile_sec_reserve(k32: Kernel32) -> None:
    mapping = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE | SEC_RESERVE, 0,
                                    MAPPING_SIZE)
    assert mapping != 0
    ptr = k32.MapViewOfFile(mapping, FILE_MAP_WRITE, 0, 0, 0)
    assert ptr != 0
    ptr2 = k32.MapViewOfFile(mapping, FILE_MAP_WRITE, 0, 0, 0)
    assert ptr2 != 0
    assert ptr != ptr2
    for view in (ptr, ptr2):
        expect_mbi(k32, view, BaseAddress=view, AllocationBase=view, RegionSize=MAPPING_SIZE,
                   State=MEM_RESERVE, AllocationProtect=PAGE_READWRITE, Protect=0,
                   Type=MEM_MAPPED)

    assert k32.VirtualAlloc(ptr, 0x10000, MEM_COMMIT, PAGE_READONLY) == ptr
    expect_mbi(k32, ptr, BaseAddress=ptr, AllocationBase=ptr, RegionSize=0x10000,
               State=MEM_COMMIT, Protect=PAGE_READONLY, AllocationProtect=PAGE_READWRITE,
               Type=MEM_MAPPED)
    # the VirtualAlloc above affects the mapping, not just this view
    expect_mbi(k32, ptr2, BaseAddress=ptr2, AllocationBase=ptr2,
               AllocationProtect=PAGE_READWRITE, RegionSize=0x10000, State=MEM_COMMIT,
               Protect=PAGE_READWRITE, Type=MEM_MAPPED)

    assert k32.VirtualAlloc(ptr, MAPPING_SIZE, MEM_RESET, PAGE_READONLY) == ptr
    assert k32.VirtualFree(ptr, 0x10000, MEM_DECOMMIT) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.UnmapViewOfFile(ptr2) is True
    assert k32.UnmapViewOfFile(ptr) is True
    assert k32.CloseHandle(mapping) is True


def test_MapViewOfFile_sec_commit(k32: Kernel32) -> None:
    mapping = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE | SEC_COMMIT, 0,
                                    MAPPING_SIZE)
    assert mapping != 0
    ptr = k32.MapViewOfFile(mapping, FILE_MAP_WRITE, 0, 0, 0)
    assert ptr != 0
    expect_mbi(k32, ptr, BaseAddress=ptr, AllocationBase=ptr, RegionSize=MAPPING_SIZE,
               State=MEM_COMMIT, AllocationProtect=PAGE_READWRITE, Protect=PAGE_READWRITE,
               Type=MEM_MAPPED)
    assert k32.VirtualAlloc(ptr, 0x10000, MEM_COMMIT, PAGE_READONLY) == ptr
    expect_mbi(k32, ptr, BaseAddress=ptr, AllocationBase=ptr, RegionSize=0x10000,
               State=MEM_COMMIT, AllocationProtect=PAGE_READWRITE, Protect=PAGE_READONLY,
               Type=MEM_MAPPED)
    assert k32.VirtualAlloc(ptr, MAPPING_SIZE, MEM_RESET, PAGE_READONLY) == ptr
    assert k32.VirtualFree(ptr, 0x10000, MEM_DECOMMIT) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.UnmapViewOfFile(ptr) is True
    assert k32.CloseHandle(mapping) is True

    addr = k32.VirtualAlloc(0, 0x10000, MEM_COMMIT, PAGE_READONLY)
    assert addr != 0
    for bad in (addr, addr + 0x3000, 0xDEADBEEF):
        k32.SetLastError(0xDEADBEEF)
        assert k32.UnmapViewOfFile(bad) is False
        assert k32.GetLastError() == ERROR_INVALID_ADDRESS
    assert k32.VirtualFree(addr, 0, MEM_RELEASE) is True


def test_view_outlives_its_handle(k32: Kernel32) -> None:
    mapping = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE, 0, MAPPING_SIZE, "Foo")
    assert mapping != 0
    ptr = k32.MapViewOfFile(mapping, FILE_MAP_WRITE, 0, 0, 0)
    assert ptr != 0
    assert k32.CloseHandle(mapping) is True
    assert k32.IsBadReadPtr(ptr, MAPPING_SIZE) is False
    expect_mbi(k32, ptr, BaseAddress=ptr, RegionSize=MAPPING_SIZE, Protect=PAGE_READWRITE,
               AllocationBase=ptr, AllocationProtect=PAGE_READWRITE, State=MEM_COMMIT,
               Type=MEM_MAPPED)
    assert k32.UnmapViewOfFile(ptr) is True
    assert k32.IsBadReadPtr(ptr, MAPPING_SIZE) is True
    expect_mbi(k32, ptr, BaseAddress=ptr, Protect=PAGE_NOACCESS, AllocationBase=0,
               AllocationProtect=0, State=MEM_FREE, Type=0)


CREATEFILEMAPPING_PROTECTION_TABLE = [  # (prot, success, prot_after_write)
    (0, False, 0),
    (PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_READONLY, True, PAGE_READONLY),
    (PAGE_READONLY | PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_READWRITE, True, PAGE_READWRITE),
    (PAGE_READWRITE | PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_READWRITE | PAGE_READONLY, False, PAGE_NOACCESS),
    (PAGE_READWRITE | PAGE_READONLY | PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY, True, PAGE_READWRITE),
    (PAGE_WRITECOPY | PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY | PAGE_READONLY, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY | PAGE_NOACCESS | PAGE_READONLY, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY | PAGE_READWRITE, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY | PAGE_READWRITE | PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY | PAGE_READWRITE | PAGE_READONLY, False, PAGE_NOACCESS),
    (PAGE_WRITECOPY | PAGE_READWRITE | PAGE_READONLY | PAGE_NOACCESS, False, PAGE_NOACCESS),
    (PAGE_EXECUTE, False, PAGE_EXECUTE),
    (PAGE_EXECUTE_READ, True, PAGE_EXECUTE_READ),
    (PAGE_EXECUTE_READ | PAGE_EXECUTE, False, PAGE_EXECUTE_READ),
    (PAGE_EXECUTE_READWRITE, True, PAGE_EXECUTE_READWRITE),
    (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ | PAGE_EXECUTE, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY, True, PAGE_EXECUTE_READWRITE),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READ, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READ | PAGE_EXECUTE, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ, False, PAGE_NOACCESS),
    (PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_READ | PAGE_EXECUTE, False,
     PAGE_NOACCESS),
]


def file_mapping(k32: Kernel32, tmp_path: Path, prot: int) -> int:
    path = tmp_path / "map.bin"
    if not path.exists():
        path.write_bytes(bytes(PAGE_SIZE))
    k32.SetLastError(0xDEADBEEF)
    return k32.CreateFileMapping(str(path), prot, 0, PAGE_SIZE)


def test_CreateFileMapping_protection_of_read_views(k32: Kernel32, tmp_path: Path) -> None:
    for prot, success, _ in CREATEFILEMAPPING_PROTECTION_TABLE:
        hmap = file_mapping(k32, tmp_path, prot | SEC_COMMIT)
        if not success:
            assert hmap == 0, hex(prot)
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            continue
        assert hmap != 0, hex(prot)
        base = k32.MapViewOfFile(hmap, FILE_MAP_READ, 0, 0, 0)
        assert base != 0
        expect_mbi(k32, base, BaseAddress=base, RegionSize=PAGE_SIZE, Protect=PAGE_READONLY,
                   AllocationBase=base, AllocationProtect=PAGE_READONLY, State=MEM_COMMIT,
                   Type=MEM_MAPPED)

        k32.SetLastError(0xDEADBEEF)
        assert k32.VirtualAlloc(base, PAGE_SIZE, MEM_COMMIT, prot) == 0, hex(prot)
        assert k32.GetLastError() == ERROR_ACCESS_DENIED
        assert k32.UnmapViewOfFile(base) is True
        assert k32.CloseHandle(hmap) is True


def test_VirtualProtect_on_read_views(k32: Kernel32, tmp_path: Path) -> None:
    """A view allows what its own protection allows, not what the section does."""
    for prot, success, _ in CREATEFILEMAPPING_PROTECTION_TABLE:
        if not success:
            continue
        hmap = file_mapping(k32, tmp_path, prot | SEC_COMMIT)
        base = k32.MapViewOfFile(hmap, FILE_MAP_READ, 0, 0, 0)
        assert base != 0
        k32.SetLastError(0xDEADBEEF)
        ok, _ = k32.VirtualProtect(base, PAGE_SIZE, prot)
        if prot in (PAGE_READONLY, PAGE_WRITECOPY):
            assert ok, hex(prot)
        else:
            assert not ok, hex(prot)
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER
        assert k32.UnmapViewOfFile(base) is True
        assert k32.CloseHandle(hmap) is True


def test_CreateFileMapping_protection_of_rwx_views(k32: Kernel32, mm: MemoryManager,
                                                   tmp_path: Path) -> None:
    alloc_prot = PAGE_EXECUTE_READWRITE
    hmap = file_mapping(k32, tmp_path, alloc_prot)
    assert hmap != 0
    for prot, success, prot_after_write in CREATEFILEMAPPING_PROTECTION_TABLE:
        base = k32.MapViewOfFile(hmap, FILE_MAP_READ | FILE_MAP_WRITE | FILE_MAP_EXECUTE, 0, 0, 0)
        assert base != 0
        assert k32.VirtualProtect(base, PAGE_SIZE, PAGE_NOACCESS) == (True, alloc_prot)
        expect_mbi(k32, base, BaseAddress=base, RegionSize=PAGE_SIZE, Protect=PAGE_NOACCESS,
                   AllocationBase=base, AllocationProtect=alloc_prot, State=MEM_COMMIT,
                   Type=MEM_MAPPED)

        k32.SetLastError(0xDEADBEEF)
        ok, old = k32.VirtualProtect(base, PAGE_SIZE, prot)
        if success or prot in (PAGE_NOACCESS, PAGE_EXECUTE):
            assert ok, hex(prot)
            assert old == PAGE_NOACCESS
            expect_mbi(k32, base, BaseAddress=base, RegionSize=PAGE_SIZE, Protect=prot,
                       AllocationBase=base, AllocationProtect=alloc_prot, State=MEM_COMMIT,
                       Type=MEM_MAPPED)
            if prot in (PAGE_READWRITE, PAGE_WRITECOPY, PAGE_EXECUTE_READWRITE,
                        PAGE_EXECUTE_WRITECOPY):
                mm.write(base, b"\xfe")
                expect_mbi(k32, base, Protect=prot_after_write)
        else:
            assert not ok, hex(prot)
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            assert k32.UnmapViewOfFile(base) is True
            continue
        ok, old = k32.VirtualProtect(base, PAGE_SIZE, PAGE_NOACCESS)
        assert ok
        assert old == prot_after_write, hex(prot)
        assert k32.UnmapViewOfFile(base) is True
    assert k32.CloseHandle(hmap) is True


# --------------------------------------------------------------------------------------
# kernel32: test_guard_page (run as guest code: mov eax,[rbx] / mov [rbx],eax)
# --------------------------------------------------------------------------------------
STORE = b"\x89\x03"  # mov [rbx], eax  (mov [ebx], eax in 32-bit code)
LOAD = b"\x8b\x03"  # mov eax, [rbx]


def run_guest(mm: MemoryManager, code: int, insn: bytes, pointer: int) -> tuple[int, int] | None:
    """Execute one instruction with (r|e)bx = pointer; (status, address) of its fault, or None."""
    mm.write(code, insn)
    mm.uc.reg_write(UC_X86_REG_RBX if mm.is_64bit else UC_X86_REG_EBX, pointer)
    try:
        mm.uc.emu_start(code, code + len(insn))
    except UcError:
        fault = mm.take_fault()
        assert fault is not None
        return fault.status, fault.address
    return None


def add_0x100(mm: MemoryManager, address: int) -> None:
    """What Wine's guard_page_handler does to ExceptionInformation[1] before resuming."""
    mm.write(address, (dword(mm, address) + 0x100).to_bytes(4, "little"))


def test_guard_page(k32: Kernel32, mm: MemoryManager) -> None:
    size = 0x1000
    base = k32.VirtualAlloc(0, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD)
    assert base != 0
    expect_mbi(k32, base, BaseAddress=base, AllocationProtect=PAGE_READWRITE | PAGE_GUARD,
               RegionSize=size, State=MEM_COMMIT, Protect=PAGE_READWRITE | PAGE_GUARD,
               Type=MEM_PRIVATE)

    # put some initial value into the memory
    assert k32.VirtualProtect(base, size, PAGE_READWRITE) == (True, PAGE_READWRITE | PAGE_GUARD)
    mm.write(base, (1).to_bytes(4, "little") + (2).to_bytes(4, "little"))
    assert k32.VirtualProtect(base, size, PAGE_READWRITE | PAGE_GUARD) == (True, PAGE_READWRITE)

    code = k32.VirtualAlloc(0, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READWRITE)
    # the first access raises STATUS_GUARD_PAGE_VIOLATION once; the handler resumes it
    fault = run_guest(mm, code, LOAD, base)
    assert fault is not None
    assert fault[0] == STATUS_GUARD_PAGE_VIOLATION
    add_0x100(mm, base)
    assert run_guest(mm, code, LOAD, base) is None
    assert dword(mm, base) == 0x101
    # PAGE_GUARD is removed now
    expect_mbi(k32, base, Protect=PAGE_READWRITE)

    assert k32.VirtualProtect(base, size, PAGE_READWRITE | PAGE_GUARD) == (True, PAGE_READWRITE)
    fault = run_guest(mm, code, LOAD, base + 4)
    assert fault is not None
    assert fault[0] == STATUS_GUARD_PAGE_VIOLATION
    assert run_guest(mm, code, LOAD, base + 4) is None
    assert run_guest(mm, code, STORE, base) is None
    assert k32.VirtualFree(base, 0, MEM_RELEASE) is True

    # combined guard page / write watch: writing triggers the guard page first
    base = k32.VirtualAlloc(0, size, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
                            PAGE_READWRITE | PAGE_GUARD)
    assert base != 0
    expect_mbi(k32, base, BaseAddress=base, AllocationProtect=PAGE_READWRITE | PAGE_GUARD,
               RegionSize=size, State=MEM_COMMIT, Protect=PAGE_READWRITE | PAGE_GUARD,
               Type=MEM_PRIVATE)
    assert k32.GetWriteWatch(0, base, size, 64)[1] == []
    fault = run_guest(mm, code, STORE, base)
    assert fault is not None
    assert fault[0] == STATUS_GUARD_PAGE_VIOLATION
    assert run_guest(mm, code, STORE, base) is None
    assert k32.GetWriteWatch(1, base, size, 64)[1] == [base]


def test_guard_page_exception_address(k32: Kernel32, mm: MemoryManager) -> None:
    """ExceptionInformation[1] is the faulting byte: the handler's += 0x100 hits value[1]."""
    base = k32.VirtualAlloc(0, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
    mm.write(base, (1).to_bytes(4, "little") + (2).to_bytes(4, "little"))
    assert k32.VirtualProtect(base, 0x1000, PAGE_READWRITE | PAGE_GUARD) == (True, PAGE_READWRITE)
    code = k32.VirtualAlloc(0, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READWRITE)

    fault = run_guest(mm, code, LOAD, base + 4)
    assert fault is not None
    status, address = fault
    assert status == STATUS_GUARD_PAGE_VIOLATION
    add_0x100(mm, address)
    assert run_guest(mm, code, LOAD, base + 4) is None
    assert dword(mm, base + 4) == 0x102
    assert dword(mm, base) == 1
