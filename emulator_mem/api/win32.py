"""kernel32's virtual-memory API over the NT layer, with Win32 failure conventions.

:class:`Kernel32` is what a guest's ``kernel32.dll`` imports resolve to. Each method calls the
matching :mod:`emulator_mem.nt` function exactly as kernelbase does, and on failure returns
0 / False / None and sets the thread's last error to ``RtlNtStatusToDosError(status)`` — the
value Windows' ``GetLastError()`` would report. Success leaves the last error alone, as on
Windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import EmulatorMemError
from ..space.address_space import PAGE_SIZE, page_round_down
from ..space.records import MemoryBasicInformation
from ..windows import constants as C
from ..windows import protection
from . import nt
from .win32_sections import FileMappingApi

if TYPE_CHECKING:
    from ..manager import MemoryManager

__all__ = ["Kernel32", "SystemInfo"]


@dataclass(slots=True, frozen=True)
class SystemInfo:
    """SYSTEM_INFO, field for field (sysinfoapi.h names), as GetSystemInfo fills it."""

    wProcessorArchitecture: int
    wReserved: int
    dwPageSize: int
    lpMinimumApplicationAddress: int
    lpMaximumApplicationAddress: int
    dwActiveProcessorMask: int
    dwNumberOfProcessors: int
    dwProcessorType: int
    dwAllocationGranularity: int
    wProcessorLevel: int
    wProcessorRevision: int


class Kernel32(FileMappingApi):
    """The Virtual* family, GetLastError/SetLastError, IsBad*Ptr and GetSystemInfo.

    File mappings and write watch (CreateFileMapping, MapViewOfFile, GetWriteWatch…) come
    from :class:`~emulator_mem.win32_sections.FileMappingApi`. One instance stands for one
    guest thread's view of kernel32: it owns that thread's last error value (and the last
    NTSTATUS, as ``RtlGetLastNtStatus`` would return it).
    """

    def __init__(self, mm: MemoryManager) -> None:
        self.mm = mm
        self._last_error = C.ERROR_SUCCESS
        self.last_status = C.STATUS_SUCCESS

    # -- last error --------------------------------------------------------------------
    def GetLastError(self) -> int:
        """The calling thread's last-error code."""
        return self._last_error

    def SetLastError(self, code: int) -> None:
        """Set the last-error code (a DWORD: truncated to 32 bits)."""
        self._last_error = code & 0xFFFFFFFF

    def _fail(self, status: int) -> None:
        """SetLastError(RtlNtStatusToDosError(status)), as kernelbase's set_ntstatus."""
        self.last_status = status
        self._last_error = nt.RtlNtStatusToDosError(status)

    # -- Virtual* ----------------------------------------------------------------------
    def VirtualAlloc(self, address: int, size: int, allocation_type: int, protect: int) -> int:
        """NtAllocateVirtualMemory(address, ZeroBits=0, …); returns the base or 0.

        The result is the rounded base (64 KiB for MEM_RESERVE, a page otherwise), so
        ``VirtualAlloc(p + 0x123, …, MEM_COMMIT, …)`` returns the page of ``p + 0x123``.
        """
        status, base, _ = nt.NtAllocateVirtualMemory(
            self.mm, address, 0, size, allocation_type, protect
        )
        if not nt.NT_SUCCESS(status):
            self._fail(status)
            return 0
        return base

    def VirtualFree(self, address: int, size: int, free_type: int) -> bool:
        """Decommit or release; MEM_RELEASE with a nonzero size fails ERROR_INVALID_PARAMETER.

        That check is kernelbase's own (Windows' NtFreeVirtualMemory would release part of
        an allocation); everything else is NtFreeVirtualMemory's verdict.
        """
        if free_type == C.MEM_RELEASE and size:
            self._last_error = C.ERROR_INVALID_PARAMETER
            return False
        status, _, _ = nt.NtFreeVirtualMemory(self.mm, address, size, free_type)
        if not nt.NT_SUCCESS(status):
            self._fail(status)
            return False
        return True

    def VirtualProtect(self, address: int, size: int, new_protect: int) -> tuple[bool, int]:
        """Returns ``(success, old protection of the first page)``; ``(False, 0)`` on failure.

        Reserved pages in the range fail with ERROR_INVALID_ADDRESS, bad protections with
        ERROR_INVALID_PARAMETER, as on Windows.
        """
        status, _, _, old = nt.NtProtectVirtualMemory(self.mm, address, size, new_protect)
        if not nt.NT_SUCCESS(status):
            self._fail(status)
            return False, 0
        return True, old

    def VirtualQuery(self, address: int) -> MemoryBasicInformation | None:
        """MEMORY_BASIC_INFORMATION of the region at ``address``; None with
        ERROR_INVALID_PARAMETER above lpMaximumApplicationAddress, as Windows returns 0."""
        status, mbi = nt.NtQueryVirtualMemory(self.mm, address)
        if mbi is None or not nt.NT_SUCCESS(status):
            self._fail(status)
            return None
        return mbi

    # -- pointer probes ----------------------------------------------------------------
    def IsBadReadPtr(self, address: int, size: int) -> bool:
        """True unless every byte of ``[address, address+size)`` is readable by the guest.

        Reproduces kernelbase's probe (size 0 is always fine, NULL never is) including its
        side effect: the first PAGE_GUARD page the probe touches loses its guard, exactly
        as the read that Windows performs would consume it; the probe stops there.
        """
        return self._probe(address, size, protection.UC_READ)

    def IsBadWritePtr(self, address: int, size: int) -> bool:
        """True unless every byte of ``[address, address+size)`` is writable by the guest.

        Windows probes by rewriting one byte per page (``*p |= 0``); the visible effects of
        that are reproduced: guard pages lose their guard, copy-on-write pages get their
        private copy and write-watched pages are reported by GetWriteWatch.
        """
        return self._probe(address, size, protection.UC_WRITE)

    def _probe(self, address: int, size: int, need: int) -> bool:
        if size <= 0:
            return False
        if address <= 0 or address + size > self.mm.highest_address:
            return True
        end = address + size
        pos = address
        try:
            while pos < end:
                mbi = self.mm.query(pos)
                stop = min(end, mbi.BaseAddress + mbi.RegionSize)
                prot = mbi.Protect
                if mbi.State != C.MEM_COMMIT:
                    return True
                if prot & C.PAGE_GUARD:
                    self.mm.protect(page_round_down(pos), PAGE_SIZE, prot & ~C.PAGE_GUARD)
                    return True
                if not protection.cpu_perms(prot) & need:
                    return True
                if need == protection.UC_WRITE:
                    self._touch(pos, stop, prot)
                pos = stop
        except EmulatorMemError:
            return True
        return False

    def _touch(self, start: int, stop: int, prot: int) -> None:
        """Rewrite one byte per page where a write is observable (COW, write watch)."""
        alloc = self.mm.allocation_at(start)
        watched = alloc is not None and alloc.write_watch is not None
        if not watched and not protection.is_writecopy(prot):
            return
        pos = start
        while pos < stop:
            self.mm.write(pos, self.mm.read(pos, 1))
            pos = page_round_down(pos) + PAGE_SIZE

    # -- system information ------------------------------------------------------------
    def GetSystemInfo(self) -> SystemInfo:
        """SYSTEM_INFO of the emulated machine: one processor, 4 KiB pages, 64 KiB granularity,
        the guest's user range (0x10000..0x7FFEFFFF or 0x10000..0x7FFFFFFEFFFF)."""
        mm = self.mm
        return SystemInfo(
            wProcessorArchitecture=(
                C.PROCESSOR_ARCHITECTURE_AMD64 if mm.is_64bit else C.PROCESSOR_ARCHITECTURE_INTEL
            ),
            wReserved=0,
            dwPageSize=mm.page_size,
            lpMinimumApplicationAddress=mm.lowest_address,
            lpMaximumApplicationAddress=mm.highest_address - 1,
            dwActiveProcessorMask=1,
            dwNumberOfProcessors=1,
            dwProcessorType=C.PROCESSOR_AMD_X8664 if mm.is_64bit else C.PROCESSOR_INTEL_PENTIUM,
            dwAllocationGranularity=mm.allocation_granularity,
            wProcessorLevel=6,
            wProcessorRevision=0,
        )
