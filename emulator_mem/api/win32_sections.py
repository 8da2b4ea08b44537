"""kernel32's file-mapping and write-watch calls, mixed into :class:`~emulator_mem.win32.Kernel32`.

Win32 conventions over :mod:`emulator_mem.nt_sections` and :mod:`emulator_mem.writewatch`:
failures return 0/False (GetWriteWatch/ResetWriteWatch: ``~0``) and set the last error from
the NTSTATUS. ``MapViewOfFile``'s access → protection rule is kernelbase's
(:func:`emulator_mem.windows.protection.file_map_protect`).

File-backed mappings: pass a host path (``str`` or ``os.PathLike``) as ``file_handle``; the
file is read when the mapping is created and written back when a writable mapping is
flushed (FlushViewOfFile), unmapped or closed for the last time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import EmulatorMemError
from ..regions import writewatch
from ..regions.sections import ACCESS_BASE, HANDLE_ACCESS
from ..windows import constants as C
from ..windows import protection
from . import nt_sections

if TYPE_CHECKING:
    from ..manager import MemoryManager

UINT_FAILURE = 0xFFFFFFFF  # (UINT)-1, what GetWriteWatch/ResetWriteWatch return on failure
_INVALID_HANDLES = (C.INVALID_HANDLE_VALUE, 0xFFFFFFFF, -1)


class FileMappingApi:
    """CreateFileMapping, MapViewOfFile(Ex), UnmapViewOfFile, CloseHandle, write watch."""

    mm: MemoryManager

    if TYPE_CHECKING:  # provided by Kernel32

        def SetLastError(self, code: int) -> None: ...  # noqa: N802

        def _fail(self, status: int) -> None: ...

    def CreateFileMapping(  # noqa: N802
        self,
        file_handle: int | str | os.PathLike[str],
        protect: int,
        maximum_size_high: int,
        maximum_size_low: int,
        name: str | None = None,
    ) -> int:
        """A section handle, or 0. ``file_handle``: INVALID_HANDLE_VALUE or a host path.

        SEC_* flags ride in the high bits of ``protect`` (SEC_COMMIT by default). An
        existing ``name`` returns a new handle to it with last error ERROR_ALREADY_EXISTS.
        """
        if isinstance(file_handle, int):
            if file_handle not in _INVALID_HANDLES:
                self._fail(C.STATUS_INVALID_HANDLE)
                return 0
            file: str | os.PathLike[str] | None = None
        else:
            file = file_handle
        attributes = protect & 0xFFF00000 or C.SEC_COMMIT
        size = (maximum_size_high << 32) | maximum_size_low
        # kernelbase asks only for the rights the protection allows (so FILE_MAP_WRITE on a
        # read-only mapping is ERROR_ACCESS_DENIED, not a protection mismatch)
        access = ACCESS_BASE | HANDLE_ACCESS.get(protect & 0xFF, 0)
        status, handle = nt_sections.NtCreateSection(
            self.mm, access, size, protect & 0x000FFFFF, attributes, file, name
        )
        if status == C.STATUS_OBJECT_NAME_EXISTS:
            self.SetLastError(C.ERROR_ALREADY_EXISTS)
            return handle
        if status != C.STATUS_SUCCESS:
            self._fail(status)
            return 0
        self.SetLastError(C.ERROR_SUCCESS)
        return handle

    def CreateFileMappingA(self, *args: object, **kwargs: object) -> int:  # noqa: N802
        return self.CreateFileMapping(*args, **kwargs)  # type: ignore[arg-type]

    CreateFileMappingW = CreateFileMappingA

    def OpenFileMapping(self, desired_access: int, inherit_handle: bool, name: str) -> int:  # noqa: N802
        status, handle = nt_sections.NtOpenSection(self.mm, desired_access, name)
        if status != C.STATUS_SUCCESS:
            self._fail(status)
            return 0
        return handle

    def MapViewOfFile(  # noqa: N802
        self, handle: int, desired_access: int, offset_high: int, offset_low: int, bytes_to_map: int
    ) -> int:
        return self.MapViewOfFileEx(handle, desired_access, offset_high, offset_low, bytes_to_map, 0)

    def MapViewOfFileEx(  # noqa: N802
        self,
        handle: int,
        desired_access: int,
        offset_high: int,
        offset_low: int,
        bytes_to_map: int,
        base_address: int,
    ) -> int:
        """The view's base, or 0 with the last error set."""
        offset = (offset_high << 32) | offset_low
        status, base, _ = nt_sections.NtMapViewOfSection(
            self.mm, handle, base_address, 0, 0, offset, bytes_to_map, C.ViewShare, 0,
            protection.file_map_protect(desired_access),
        )
        if status not in (C.STATUS_SUCCESS, C.STATUS_IMAGE_NOT_AT_BASE):
            self._fail(status)
            return 0
        return base

    def UnmapViewOfFile(self, address: int) -> bool:  # noqa: N802
        (status,) = nt_sections.NtUnmapViewOfSection(self.mm, address)
        if status != C.STATUS_SUCCESS:
            self._fail(status)
            return False
        return True

    def FlushViewOfFile(self, address: int, size: int) -> bool:  # noqa: N802
        """Write a file-backed view's bytes back to its host file."""
        alloc = self.mm.allocation_at(address)
        section = getattr(getattr(alloc, "owner", None), "section", None)
        if section is None:
            self._fail(C.STATUS_NOT_MAPPED_VIEW)
            return False
        self.mm.sections.flush(section)
        return True

    def DuplicateHandle(self, handle: int, desired_access: int, options: int = 0) -> int:  # noqa: N802
        """DuplicateHandle within the process for a file-mapping handle; the new handle or 0.

        ``options``: DUPLICATE_SAME_ACCESS keeps the source's access (``desired_access`` is
        ignored), DUPLICATE_CLOSE_SOURCE closes the source.
        """
        if options & ~(C.DUPLICATE_SAME_ACCESS | C.DUPLICATE_CLOSE_SOURCE):
            self._fail(C.STATUS_INVALID_PARAMETER)
            return 0
        try:
            new = self.mm.sections.duplicate(
                handle, None if options & C.DUPLICATE_SAME_ACCESS else desired_access)
        except EmulatorMemError as exc:
            self._fail(exc.status)
            return 0
        if options & C.DUPLICATE_CLOSE_SOURCE:
            self.mm.sections.close(handle)
        return new

    def CloseHandle(self, handle: int) -> bool:  # noqa: N802
        (status,) = nt_sections.NtClose(self.mm, handle)
        if status != C.STATUS_SUCCESS:
            self._fail(status)
            return False
        return True

    def GetWriteWatch(  # noqa: N802
        self, flags: int, base: int, size: int, max_count: int
    ) -> tuple[int, list[int], int]:
        """(0, addresses, page size) on success; (~0, [], 0) with the last error set."""
        status, found, granularity = writewatch.NtGetWriteWatch(self.mm, flags, base, size, max_count)
        if status != C.STATUS_SUCCESS:
            self._fail(status)
            return UINT_FAILURE, [], 0
        return 0, found, granularity

    def ResetWriteWatch(self, base: int, size: int) -> int:  # noqa: N802
        (status,) = writewatch.NtResetWriteWatch(self.mm, base, size)
        if status != C.STATUS_SUCCESS:
            self._fail(status)
            return UINT_FAILURE
        return 0


