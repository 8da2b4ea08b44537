"""The built-in ``kernel32.dll`` functions: guest ABI on one side, :class:`Kernel32` on the other.

Each handler unpacks the guest's arguments, calls the matching :class:`~emulator_mem.win32.Kernel32`
method (which owns the Windows semantics and the last error), and writes results back
through the guest's pointers in the layout of the real structure for the guest's bitness.
Structure layouts (winnt.h/sysinfoapi.h): MEMORY_BASIC_INFORMATION is 28 bytes on x86 and
48 on x64 (with PartitionId and padding); SYSTEM_INFO is 36 and 48 bytes.

To add a function see :mod:`emulator_mem.runner.api`; the registry is keyed by DLL and
name, so ``@api("kernel32.dll", argc=...)`` here (or in any imported module) is all it takes.
"""

from __future__ import annotations

import struct

from ..windows import constants as C
from .api import ApiCall, api
from .environment import PROCESS_ID, THREAD_ID

K32 = "kernel32.dll"
MBI_32 = struct.Struct("<IIIIIII")
MBI_64 = struct.Struct("<QQIHHQIIII")
SYSINFO_32 = struct.Struct("<HHIIIIIIIHH")
SYSINFO_64 = struct.Struct("<HHIQQQIIIHH")


def _heap_of(call: ApiCall, handle: int) -> bool:
    heap = call.process.heap
    if heap is None or handle != heap.handle:
        call.k32.SetLastError(C.ERROR_INVALID_HANDLE)
        return False
    return True


# -- virtual memory ------------------------------------------------------------------------
@api(K32, 4, dwords=(2, 3))
def VirtualAlloc(call: ApiCall) -> int:
    address, size, allocation_type, protect = call.args
    return call.k32.VirtualAlloc(address, size, allocation_type, protect)


@api(K32, 3, dwords=(2,))
def VirtualFree(call: ApiCall) -> int:
    address, size, free_type = call.args
    return int(call.k32.VirtualFree(address, size, free_type))


@api(K32, 4, dwords=(2,))
def VirtualProtect(call: ApiCall) -> int:
    address, size, new_protect, old_out = call.args
    if not old_out:
        call.k32.SetLastError(C.ERROR_NOACCESS)  # Windows probes lpflOldProtect first
        return 0
    ok, old = call.k32.VirtualProtect(address, size, new_protect)
    if ok:
        call.write_u32(old_out, old)
    return int(ok)


@api(K32, 3)
def VirtualQuery(call: ApiCall) -> int:
    address, buffer, length = call.args
    layout = MBI_64 if call.mm.is_64bit else MBI_32
    if length < layout.size:
        call.k32.SetLastError(C.ERROR_BAD_LENGTH)
        return 0
    mbi = call.k32.VirtualQuery(address)
    if mbi is None:
        return 0
    if call.mm.is_64bit:
        raw = layout.pack(mbi.BaseAddress, mbi.AllocationBase, mbi.AllocationProtect, 0, 0,
                          mbi.RegionSize, mbi.State, mbi.Protect, mbi.Type, 0)
    else:
        raw = layout.pack(mbi.BaseAddress, mbi.AllocationBase, mbi.AllocationProtect, mbi.RegionSize,
                          mbi.State, mbi.Protect, mbi.Type)
    call.write(buffer, raw)
    return layout.size


@api(K32, 2)
def IsBadReadPtr(call: ApiCall) -> int:
    address, size = call.args
    return int(call.k32.IsBadReadPtr(address, size))


@api(K32, 2)
def IsBadWritePtr(call: ApiCall) -> int:
    address, size = call.args
    return int(call.k32.IsBadWritePtr(address, size))


# -- system information and errors ----------------------------------------------------------
@api(K32, 1)
def GetSystemInfo(call: ApiCall) -> None:
    (buffer,) = call.args
    si = call.k32.GetSystemInfo()
    layout = SYSINFO_64 if call.mm.is_64bit else SYSINFO_32
    call.write(buffer, layout.pack(
        si.wProcessorArchitecture, si.wReserved, si.dwPageSize, si.lpMinimumApplicationAddress,
        si.lpMaximumApplicationAddress, si.dwActiveProcessorMask, si.dwNumberOfProcessors,
        si.dwProcessorType, si.dwAllocationGranularity, si.wProcessorLevel, si.wProcessorRevision,
    ))
    return None


@api(K32, 0)
def GetLastError(call: ApiCall) -> int:
    return call.k32.GetLastError()


@api(K32, 1, dwords=(0,))
def SetLastError(call: ApiCall) -> None:
    call.k32.SetLastError(call.args[0])
    return None


@api(K32, 0)
def GetCurrentProcessId(call: ApiCall) -> int:
    return PROCESS_ID


@api(K32, 0)
def GetCurrentThreadId(call: ApiCall) -> int:
    return THREAD_ID


# -- console and process -------------------------------------------------------------------
@api(K32, 1, dwords=(0,))
def GetStdHandle(call: ApiCall) -> int:
    handle = call.process.console.std_handle(call.args[0])
    if handle is None:
        call.k32.SetLastError(C.ERROR_INVALID_HANDLE)
        return call.process.abi.ptr_mask  # INVALID_HANDLE_VALUE
    return handle


@api(K32, 5, dwords=(2,))
def WriteFile(call: ApiCall) -> int:
    handle, buffer, length, written_out, _overlapped = call.args
    data = call.read(buffer, length) if length else b""
    if not call.process.console.write(handle, data):
        call.k32.SetLastError(C.ERROR_INVALID_HANDLE)
        return 0
    if written_out:
        call.write_u32(written_out, len(data))
    return 1


@api(K32, 1, noreturn=True, dwords=(0,))
def ExitProcess(call: ApiCall) -> None:
    call.process.terminate(call.args[0])
    return None


# -- file mappings and write watch ----------------------------------------------------------
def _create_mapping(call: ApiCall, wide: bool) -> int:
    file_handle, _attributes, protect, size_high, size_low, name_ptr = call.args
    name = None
    if name_ptr:
        name = call.read_wstr(name_ptr) if wide else call.read_cstr(name_ptr)
    if file_handle == call.process.abi.ptr_mask:
        file_handle = C.INVALID_HANDLE_VALUE
    return call.k32.CreateFileMapping(file_handle, protect, size_high, size_low, name)


@api(K32, 6, dwords=(2, 3, 4))
def CreateFileMappingA(call: ApiCall) -> int:
    return _create_mapping(call, wide=False)


@api(K32, 6, dwords=(2, 3, 4))
def CreateFileMappingW(call: ApiCall) -> int:
    return _create_mapping(call, wide=True)


@api(K32, 5, dwords=(1, 2, 3))
def MapViewOfFile(call: ApiCall) -> int:
    handle, access, offset_high, offset_low, size = call.args
    return call.k32.MapViewOfFile(handle, access, offset_high, offset_low, size)


@api(K32, 6, dwords=(1, 2, 3))
def MapViewOfFileEx(call: ApiCall) -> int:
    handle, access, offset_high, offset_low, size, base = call.args
    return call.k32.MapViewOfFileEx(handle, access, offset_high, offset_low, size, base)


@api(K32, 1)
def UnmapViewOfFile(call: ApiCall) -> int:
    return int(call.k32.UnmapViewOfFile(call.args[0]))


@api(K32, 1)
def CloseHandle(call: ApiCall) -> int:
    return int(call.k32.CloseHandle(call.args[0]))


@api(K32, 6, dwords=(0,))
def GetWriteWatch(call: ApiCall) -> int:
    flags, base, size, addresses_out, count_inout, granularity_out = call.args
    # NtGetWriteWatch probes its output pointers: a NULL one is ERROR_NOACCESS, except that a
    # zero count is ERROR_INVALID_PARAMETER first (Wine's test_write_watch, as on Windows)
    if not count_inout or not granularity_out:
        call.k32.SetLastError(C.ERROR_NOACCESS)
        return 0xFFFFFFFF
    max_count = call.read_ptr(count_inout)
    if not addresses_out and max_count:
        call.k32.SetLastError(C.ERROR_NOACCESS)
        return 0xFFFFFFFF
    result, found, granularity = call.k32.GetWriteWatch(flags, base, size, max_count)
    if result == 0:
        pack = call.process.abi.pack_ptr
        if found:
            call.write(addresses_out, b"".join(pack(a) for a in found))
        call.write_ptr(count_inout, len(found))
        call.write_u32(granularity_out, granularity)
    return result


@api(K32, 2)
def ResetWriteWatch(call: ApiCall) -> int:
    base, size = call.args
    return call.k32.ResetWriteWatch(base, size)


# -- the process heap -----------------------------------------------------------------------
@api(K32, 0)
def GetProcessHeap(call: ApiCall) -> int:
    heap = call.process.heap
    return 0 if heap is None else heap.handle


@api(K32, 3, dwords=(1,))
def HeapAlloc(call: ApiCall) -> int:
    handle, flags, size = call.args
    if not _heap_of(call, handle) or call.process.heap is None:
        return 0
    pointer = call.process.heap.alloc(size, flags)
    if not pointer:
        call.k32.SetLastError(C.ERROR_NOT_ENOUGH_MEMORY)
    return pointer


@api(K32, 3, dwords=(1,))
def HeapFree(call: ApiCall) -> int:
    handle, _flags, pointer = call.args
    if not pointer:
        return 1  # HeapFree(NULL) succeeds
    if not _heap_of(call, handle) or call.process.heap is None:
        return 0
    if not call.process.heap.free(pointer):
        call.k32.SetLastError(C.ERROR_INVALID_PARAMETER)
        return 0
    return 1


@api(K32, 4, dwords=(1,))
def HeapReAlloc(call: ApiCall) -> int:
    handle, flags, pointer, size = call.args
    if not _heap_of(call, handle) or call.process.heap is None:
        return 0
    new = call.process.heap.realloc(pointer, size, flags)
    if not new:
        call.k32.SetLastError(C.ERROR_NOT_ENOUGH_MEMORY)
    return new


@api(K32, 3, dwords=(1,))
def HeapSize(call: ApiCall) -> int:
    handle, _flags, pointer = call.args
    if not _heap_of(call, handle) or call.process.heap is None:
        return call.process.abi.ptr_mask
    size = call.process.heap.size(pointer)
    if size is None:
        call.k32.SetLastError(C.ERROR_INVALID_PARAMETER)
        return call.process.abi.ptr_mask  # (SIZE_T)-1
    return size
