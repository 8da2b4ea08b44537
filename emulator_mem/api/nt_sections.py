"""NT section calls (NtCreateSection, NtMapViewOfSection, …) over :mod:`emulator_mem.sections`.

Same convention as :mod:`emulator_mem.nt`: the manager first, the NTSTATUS first in the
result, guest mistakes returned as statuses, never raised. Re-exported by ``nt``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import EmulatorMemError
from ..regions.image_map import MappedImage
from ..windows import constants as C

if TYPE_CHECKING:
    from ..manager import MemoryManager

#: allocation types NtMapViewOfSection accepts
_MAP_TYPES = C.MEM_TOP_DOWN | C.MEM_RESERVE | C.MEM_LARGE_PAGES


def NtCreateSection(  # noqa: N802 - Windows name
    mm: MemoryManager,
    desired_access: int,
    maximum_size: int,
    page_protection: int,
    allocation_attributes: int,
    file: str | os.PathLike[str] | bytes | None = None,
    name: str | None = None,
) -> tuple[int, int]:
    """(status, handle). ``file``: a host path, or the bytes of a PE file for SEC_IMAGE.

    An existing ``name`` opens that section and returns STATUS_OBJECT_NAME_EXISTS (a
    success code), as Windows does.
    """
    if maximum_size < 0:
        return C.STATUS_INVALID_PARAMETER_4, 0
    data = file if isinstance(file, bytes) else None
    path = None if isinstance(file, bytes) else file
    if path is None and data is None:
        if allocation_attributes & C.SEC_IMAGE:
            # an image section needs a file: the pagefile is not one (ERROR_BAD_EXE_FORMAT,
            # as Wine records for CreateFileMapping(INVALID_HANDLE_VALUE, ..., SEC_IMAGE))
            return C.STATUS_INVALID_FILE_FOR_SECTION, 0
        if maximum_size == 0:
            return C.STATUS_INVALID_PARAMETER_4, 0
    try:
        handle, existed = mm.sections.create(
            maximum_size, page_protection, allocation_attributes or C.SEC_COMMIT, name=name,
            file_path=path, data=data, access=desired_access or None,
        )
    except EmulatorMemError as exc:
        return exc.status, 0
    return (C.STATUS_OBJECT_NAME_EXISTS if existed else C.STATUS_SUCCESS), handle


def NtOpenSection(mm: MemoryManager, desired_access: int, name: str) -> tuple[int, int]:  # noqa: N802
    """(status, handle) of the named section (STATUS_OBJECT_NAME_NOT_FOUND if none)."""
    try:
        return C.STATUS_SUCCESS, mm.sections.open(name, desired_access)
    except EmulatorMemError as exc:
        return exc.status, 0


def NtMapViewOfSection(  # noqa: N802
    mm: MemoryManager,
    section_handle: int,
    base_address: int,
    zero_bits: int,
    commit_size: int,
    section_offset: int,
    view_size: int,
    inherit_disposition: int,
    allocation_type: int,
    protect: int,
) -> tuple[int, int, int]:
    """(status, base, view size). STATUS_IMAGE_NOT_AT_BASE when an image had to move."""
    if inherit_disposition not in (C.ViewShare, C.ViewUnmap):
        return C.STATUS_INVALID_PARAMETER_8, base_address, view_size
    if allocation_type & ~_MAP_TYPES:
        return C.STATUS_INVALID_PARAMETER_9, base_address, view_size
    if base_address % C.ALLOCATION_GRANULARITY:
        return C.STATUS_MAPPED_ALIGNMENT, base_address, view_size
    max_address = None
    if 0 < zero_bits <= 21:
        max_address = 1 << ((64 if mm.is_64bit else 32) - zero_bits)
    try:
        base, size = mm.sections.map_view(
            section_handle, protect, address=base_address or None, offset=section_offset,
            size=view_size, top_down=bool(allocation_type & C.MEM_TOP_DOWN), max_address=max_address,
        )
    except EmulatorMemError as exc:
        return exc.status, base_address, view_size
    image = mm.images.get(base)
    if isinstance(image, MappedImage) and image.layout.image_base != base:
        return C.STATUS_IMAGE_NOT_AT_BASE, base, size
    return C.STATUS_SUCCESS, base, size


def NtUnmapViewOfSection(mm: MemoryManager, base_address: int) -> tuple[int]:  # noqa: N802
    """(status,): unmap the view or image containing ``base_address``."""
    try:
        mm.unmap_view(base_address)
    except EmulatorMemError as exc:
        return (exc.status,)
    return (C.STATUS_SUCCESS,)


def NtClose(mm: MemoryManager, handle: int) -> tuple[int]:  # noqa: N802
    """(status,): close a section handle; the section lives on while views remain."""
    try:
        mm.sections.close(handle)
    except EmulatorMemError as exc:
        return (exc.status,)
    return (C.STATUS_SUCCESS,)
