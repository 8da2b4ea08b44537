"""emulator_mem.win32.Kernel32: Win32 results, last-error values, pointer probes, SYSTEM_INFO.

Expected values are Windows literals (winnt.h / winerror.h / sysinfoapi.h).
"""

from __future__ import annotations

from emulator_mem.win32 import Kernel32

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
MEM_DECOMMIT = 0x4000
MEM_RELEASE = 0x8000
MEM_FREE = 0x10000
MEM_WRITE_WATCH = 0x200000
SEC_COMMIT = 0x08000000
FILE_MAP_COPY = 0x0001
INVALID_HANDLE_VALUE = 0xFFFFFFFFFFFFFFFF
ERROR_INVALID_PARAMETER = 87
ERROR_NOT_ENOUGH_MEMORY = 8
ERROR_INVALID_ADDRESS = 487


# -- last error ------------------------------------------------------------------------
def test_last_error_starts_clear_and_is_a_dword(k32: Kernel32) -> None:
    assert k32.GetLastError() == 0
    k32.SetLastError(0xDEADBEEF)
    assert k32.GetLastError() == 0xDEADBEEF
    k32.SetLastError(-1)
    assert k32.GetLastError() == 0xFFFFFFFF


def test_success_leaves_last_error_alone(k32: Kernel32) -> None:
    k32.SetLastError(1234)
    base = k32.VirtualAlloc(0, 0x1000, MEM_COMMIT, PAGE_READWRITE)
    assert base != 0
    assert k32.VirtualProtect(base, 0x1000, PAGE_READONLY) == (True, PAGE_READWRITE)
    assert k32.VirtualQuery(base) is not None
    assert k32.VirtualFree(base, 0, MEM_RELEASE) is True
    assert k32.GetLastError() == 1234


def test_failures_set_the_mapped_error_and_keep_the_status(k32: Kernel32) -> None:
    assert k32.VirtualAlloc(0, 0x1000, MEM_COMMIT, PAGE_WRITECOPY) == 0
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.last_status == 0xC0000045  # STATUS_INVALID_PAGE_PROTECTION
    middle = k32.mm.highest_address // 2 & ~0xFFFF
    assert k32.VirtualAlloc(middle, 0x10000, MEM_RESERVE, PAGE_READWRITE) == middle
    assert k32.VirtualAlloc(0, middle + 0x10000, MEM_RESERVE, PAGE_READWRITE) == 0
    assert k32.GetLastError() == ERROR_NOT_ENOUGH_MEMORY
    assert k32.last_status == 0xC0000017  # STATUS_NO_MEMORY


# -- VirtualAlloc / VirtualFree / VirtualProtect / VirtualQuery ------------------------
def test_VirtualAlloc_returns_the_rounded_base(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x10000, MEM_RESERVE, PAGE_READWRITE)
    assert k32.VirtualAlloc(base + 0x1234, 0x10, MEM_COMMIT, PAGE_READWRITE) == base + 0x1000
    k32.VirtualFree(base, 0, MEM_RELEASE)
    assert k32.VirtualAlloc(base + 0x1234, 0x10, MEM_RESERVE, PAGE_READWRITE) == base


def test_VirtualAlloc_commit_on_free_memory(k32: Kernel32) -> None:
    assert k32.VirtualAlloc(0x500000, 0x1000, MEM_COMMIT, PAGE_READWRITE) == 0
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS


def test_VirtualFree_release_with_size_is_refused_before_ntdll(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x1000, MEM_COMMIT, PAGE_READWRITE)
    # even the exact size: kernelbase refuses any nonzero size for MEM_RELEASE
    assert k32.VirtualFree(base, 0x1000, MEM_RELEASE) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    assert k32.last_status == 0  # NtFreeVirtualMemory was never called
    assert k32.VirtualQuery(base) is not None
    info = k32.VirtualQuery(base)
    assert info is not None and info.State == MEM_COMMIT


def test_VirtualFree_errors(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x10000, MEM_COMMIT, PAGE_READWRITE)
    assert k32.VirtualFree(base + 0x1000, 0, MEM_RELEASE) is False
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS  # STATUS_FREE_VM_NOT_AT_BASE
    assert k32.VirtualFree(base + 0x10000, 0, MEM_RELEASE) is False
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS  # STATUS_MEMORY_NOT_ALLOCATED
    assert k32.VirtualFree(base, 0x20000, MEM_DECOMMIT) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER  # STATUS_UNABLE_TO_FREE_VM
    assert k32.VirtualFree(base, 0x1000, MEM_DECOMMIT | MEM_RELEASE) is False
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER


def test_VirtualProtect_failure_shape(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x10000, MEM_RESERVE, PAGE_READWRITE)
    assert k32.VirtualProtect(base, 0x1000, PAGE_READONLY) == (False, 0)
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS  # STATUS_NOT_COMMITTED
    assert k32.VirtualProtect(base + 0x10000, 0x1000, PAGE_READONLY) == (False, 0)
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS  # free memory
    assert k32.VirtualProtect(base, 0x1000, 0x3) == (False, 0)
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER


def test_VirtualProtect_old_protection_is_the_first_page(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x3000, MEM_COMMIT, PAGE_READWRITE)
    assert k32.VirtualProtect(base + 0x1000, 0x1000, PAGE_EXECUTE_READ)[0]
    assert k32.VirtualProtect(base + 0x1000, 0x2000, PAGE_READONLY) == (True, PAGE_EXECUTE_READ)
    assert k32.VirtualProtect(base, 0x3000, PAGE_NOACCESS) == (True, PAGE_READWRITE)


def test_VirtualQuery_range(k32: Kernel32) -> None:
    top = k32.mm.highest_address
    k32.SetLastError(0)
    assert k32.VirtualQuery(top) is None
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    k32.SetLastError(0)
    info = k32.VirtualQuery(top - 1)
    assert info is not None
    assert info.State == MEM_FREE
    assert info.BaseAddress == top - 0x1000
    assert k32.GetLastError() == 0


def test_VirtualQuery_splits_and_merges_regions(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x10000, MEM_RESERVE, PAGE_NOACCESS)
    assert k32.VirtualAlloc(base + 0x2000, 0x4000, MEM_COMMIT, PAGE_READWRITE) == base + 0x2000
    assert k32.VirtualProtect(base + 0x3000, 0x1000, PAGE_READONLY)[0]
    regions = []
    address = base
    while address < base + 0x10000:
        info = k32.VirtualQuery(address)
        assert info is not None
        assert info.AllocationBase == base
        assert info.AllocationProtect == PAGE_NOACCESS
        regions.append((info.BaseAddress - base, info.RegionSize, info.State, info.Protect))
        address = info.BaseAddress + info.RegionSize
    assert regions == [
        (0x0000, 0x2000, MEM_RESERVE, 0),
        (0x2000, 0x1000, MEM_COMMIT, PAGE_READWRITE),
        (0x3000, 0x1000, MEM_COMMIT, PAGE_READONLY),
        (0x4000, 0x2000, MEM_COMMIT, PAGE_READWRITE),
        (0x6000, 0xA000, MEM_RESERVE, 0),
    ]
    assert k32.VirtualProtect(base + 0x3000, 0x1000, PAGE_READWRITE)[0]
    info = k32.VirtualQuery(base + 0x2800)
    assert info is not None
    assert (info.BaseAddress, info.RegionSize) == (base + 0x2000, 0x4000)


# -- IsBadReadPtr / IsBadWritePtr ------------------------------------------------------
def test_IsBadPtr_by_protection(k32: Kernel32) -> None:
    expectations = {  # protection: (bad to read, bad to write)
        PAGE_NOACCESS: (True, True),
        PAGE_READONLY: (False, True),
        PAGE_READWRITE: (False, False),
        PAGE_EXECUTE: (False, True),  # x86 cannot make a page execute-only
        PAGE_EXECUTE_READ: (False, True),
        PAGE_EXECUTE_READWRITE: (False, False),
    }
    for protect, (bad_read, bad_write) in expectations.items():
        base = k32.VirtualAlloc(0, 0x2000, MEM_COMMIT, protect)
        assert k32.IsBadReadPtr(base + 0x800, 0x1000) is bad_read, hex(protect)
        assert k32.IsBadWritePtr(base + 0x800, 0x1000) is bad_write, hex(protect)


def test_IsBadPtr_spans_regions_and_allocations(k32: Kernel32) -> None:
    first = k32.VirtualAlloc(0x200000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
    second = k32.VirtualAlloc(0x210000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY)
    assert (first, second) == (0x200000, 0x210000)
    assert k32.IsBadReadPtr(first + 0xFFF0, 0x20) is False
    assert k32.IsBadWritePtr(first + 0xFFF0, 0x20) is True
    assert k32.IsBadWritePtr(first + 0xFFF0, 0x10) is False
    assert k32.VirtualFree(first + 0x8000, 0x1000, MEM_DECOMMIT) is True
    assert k32.IsBadReadPtr(first, 0x10000) is True
    assert k32.IsBadReadPtr(second + 0x10000 - 4, 8) is True  # runs into free memory
    assert k32.IsBadReadPtr(k32.mm.highest_address - 4, 8) is True


def test_IsBadReadPtr_consumes_a_guard_page(k32: Kernel32) -> None:
    base = k32.VirtualAlloc(0, 0x3000, MEM_COMMIT, PAGE_READWRITE)
    assert k32.VirtualProtect(base + 0x1000, 0x2000, PAGE_READWRITE | PAGE_GUARD)[0]
    assert k32.IsBadReadPtr(base, 0x3000) is True
    # only the first guard page the probe touched lost its guard
    info = k32.VirtualQuery(base + 0x1000)
    assert info is not None
    assert (info.BaseAddress, info.RegionSize, info.Protect) == (base + 0x1000, 0x1000, PAGE_READWRITE)
    info = k32.VirtualQuery(base)
    assert info is not None
    assert (info.BaseAddress, info.RegionSize, info.Protect) == (base, 0x2000, PAGE_READWRITE)
    info = k32.VirtualQuery(base + 0x2000)
    assert info is not None
    assert info.Protect == PAGE_READWRITE | PAGE_GUARD
    assert k32.IsBadWritePtr(base, 0x3000) is True
    assert k32.IsBadReadPtr(base, 0x3000) is False


def test_IsBadWritePtr_writes_like_the_guest(k32: Kernel32) -> None:
    mm = k32.mm
    watched = k32.VirtualAlloc(0, 0x4000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
                               PAGE_READWRITE)
    mm.write(watched + 0x1000, b"data")
    assert k32.GetWriteWatch(1, watched, 0x4000, 16)[1] == [watched + 0x1000]
    assert k32.IsBadWritePtr(watched + 0x1FFF, 0x1002) is False
    assert k32.GetWriteWatch(0, watched, 0x4000, 16)[1] == [
        watched + 0x1000, watched + 0x2000, watched + 0x3000]
    assert mm.read(watched + 0x1000, 4) == b"data"
    assert k32.IsBadReadPtr(watched, 0x4000) is False
    assert k32.GetWriteWatch(0, watched, 0x4000, 16)[1] == [
        watched + 0x1000, watched + 0x2000, watched + 0x3000]

    mapping = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE | SEC_COMMIT, 0, 0x2000)
    view = k32.MapViewOfFile(mapping, FILE_MAP_COPY, 0, 0, 0)
    info = k32.VirtualQuery(view)
    assert info is not None and info.Protect == PAGE_WRITECOPY
    assert k32.IsBadWritePtr(view, 1) is False
    info = k32.VirtualQuery(view)  # the probe's write made the private copy
    assert info is not None
    assert (info.Protect, info.RegionSize) == (PAGE_READWRITE, 0x1000)


# -- GetSystemInfo ---------------------------------------------------------------------
def test_GetSystemInfo(k32: Kernel32) -> None:
    si = k32.GetSystemInfo()
    assert si.dwPageSize == 0x1000
    assert si.dwAllocationGranularity == 0x10000
    assert si.lpMinimumApplicationAddress == 0x10000
    assert si.dwNumberOfProcessors >= 1
    assert si.dwActiveProcessorMask & 1
    if k32.mm.is_64bit:
        assert si.lpMaximumApplicationAddress == 0x7FFFFFFEFFFF
        assert si.wProcessorArchitecture == 9  # PROCESSOR_ARCHITECTURE_AMD64
        assert si.dwProcessorType == 8664  # PROCESSOR_AMD_X8664
    else:
        assert si.lpMaximumApplicationAddress == 0x7FFEFFFF
        assert si.wProcessorArchitecture == 0  # PROCESSOR_ARCHITECTURE_INTEL
        assert si.dwProcessorType == 586  # PROCESSOR_INTEL_PENTIUM
    # the whole user range is usable: the extremes can be reserved
    assert k32.VirtualAlloc(si.lpMinimumApplicationAddress, 0x1000, MEM_RESERVE,
                            PAGE_NOACCESS) == 0x10000
    last = (si.lpMaximumApplicationAddress + 1) - 0x10000
    assert k32.VirtualAlloc(last, 0x10000, MEM_RESERVE, PAGE_NOACCESS) == last
