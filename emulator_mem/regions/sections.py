"""Section objects and their views: one set of physical pages, mapped many times.

A section's bytes live in one chunk of the alias area of guest-physical memory. Each view is
an allocation (``MEM_MAPPED``) whose pages translate to that chunk, so every view, the host
and the guest see the same bytes without copying; ``FILE_MAP_COPY`` views are
``PAGE_WRITECOPY`` and get private pages on their first write (the MMU's write miss).

Windows rules reproduced (ReactOS ``MiIsProtectionCompatible`` and Wine's kernelbase):
the section's protection fixes which view protections are compatible
(STATUS_SECTION_PROTECTION otherwise); a handle carries the access CreateFileMapping grants
for that protection, so mapping a read-only section writable fails with
STATUS_ACCESS_DENIED; view offsets are 64 KiB multiples (STATUS_MAPPED_ALIGNMENT); a view
outlives its handle; the section dies with its last handle and view. File-backed sections
read a host file and write modified bytes back when flushed, unmapped or destroyed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import (
    ConflictingAddressesError,
    EmulatorMemError,
    InvalidHandleError,
    InvalidParameterError,
    NotAllocatedError,
    SectionError,
)
from ..mmu.physmem import Chunk
from ..space.address_space import Allocation, RegionKind, page_round_up
from ..windows import constants as C
from ..windows import protection
from .host import RegionHost

#: section protection -> view protections compatible with it (ReactOS MmCompatibleProtectionMask,
#: plus PAGE_EXECUTE_WRITECOPY views of PAGE_EXECUTE_READ sections, which Windows maps:
#: Wine's test_mapping, FILE_MAP_EXECUTE | FILE_MAP_COPY)
_RO = C.PAGE_NOACCESS | C.PAGE_READONLY | C.PAGE_WRITECOPY
COMPATIBLE: dict[int, int] = {
    C.PAGE_READONLY: _RO,
    C.PAGE_EXECUTE: C.PAGE_NOACCESS | C.PAGE_EXECUTE,
    C.PAGE_EXECUTE_READ: _RO | C.PAGE_EXECUTE | C.PAGE_EXECUTE_READ | C.PAGE_EXECUTE_WRITECOPY,
    C.PAGE_READWRITE: _RO | C.PAGE_READWRITE,
    C.PAGE_WRITECOPY: _RO,
    C.PAGE_EXECUTE_READWRITE: _RO | C.PAGE_READWRITE | C.PAGE_EXECUTE | C.PAGE_EXECUTE_READ
    | C.PAGE_EXECUTE_READWRITE | C.PAGE_EXECUTE_WRITECOPY,
    C.PAGE_EXECUTE_WRITECOPY: _RO | C.PAGE_EXECUTE | C.PAGE_EXECUTE_READ | C.PAGE_EXECUTE_WRITECOPY,
}

#: section protection -> access a CreateFileMapping handle gets (Wine kernelbase)
_MAP_RW = C.SECTION_MAP_READ | C.SECTION_MAP_WRITE
#: (PAGE_EXECUTE is absent: CreateFileMapping refuses it, Wine's test_CreateFileMapping_protection)
HANDLE_ACCESS: dict[int, int] = {
    C.PAGE_READONLY: C.SECTION_MAP_READ,
    C.PAGE_WRITECOPY: C.SECTION_MAP_READ,
    C.PAGE_READWRITE: _MAP_RW,
    C.PAGE_EXECUTE_READ: C.SECTION_MAP_READ | C.SECTION_MAP_EXECUTE,
    C.PAGE_EXECUTE_WRITECOPY: C.SECTION_MAP_READ | C.SECTION_MAP_EXECUTE,
    C.PAGE_EXECUTE_READWRITE: _MAP_RW | C.SECTION_MAP_EXECUTE,
}
ACCESS_BASE = C.STANDARD_RIGHTS_REQUIRED | C.SECTION_QUERY


def _read_file(path: str) -> bytes:
    """The bytes behind a file-backed section (STATUS_INVALID_FILE_FOR_SECTION if unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise SectionError(f"cannot read {path}: {exc}",
                           status=C.STATUS_INVALID_FILE_FOR_SECTION) from exc


#: view protection -> the handle rights NtMapViewOfSection demands for it (Wine's
#: test_mapping ``is_compatible_access``: the rights CreateFileMapping grants that protection,
#: PAGE_EXECUTE like PAGE_EXECUTE_READ, and a PAGE_NOACCESS view still needs SECTION_MAP_READ)
ACCESS_NEEDED: dict[int, int] = {
    **HANDLE_ACCESS,
    C.PAGE_EXECUTE: C.SECTION_MAP_READ | C.SECTION_MAP_EXECUTE,
    C.PAGE_NOACCESS: C.SECTION_MAP_READ,
}


def access_needed(view_protect: int) -> int:
    """The handle rights NtMapViewOfSection demands for a view protection."""
    return ACCESS_NEEDED.get(view_protect & 0xFF, C.SECTION_MAP_READ)


@dataclass(eq=False)
class Section:
    """A section object: size, protection and the physical pages all views share."""

    size: int
    protect: int
    attributes: int
    chunk: Chunk | None
    name: str | None = None
    file_path: str | None = None
    handles: int = 0
    views: set[int] = field(default_factory=set)
    image: object = None  # ImageLayout for SEC_IMAGE sections
    #: SEC_RESERVE: section pages committed so far (the commit belongs to the section)
    committed: set[int] = field(default_factory=set)

    @property
    def writable_file(self) -> bool:
        return self.file_path is not None and self.protect & 0xFF in (
            C.PAGE_READWRITE, C.PAGE_EXECUTE_READWRITE)


def compatible(maximum: int, protect: int) -> bool:
    """May pages under ``maximum`` (a section's or a view's protection) take ``protect``?"""
    base = protect & 0xFF
    return base & COMPATIBLE.get(maximum & 0xFF, 0) == base


@dataclass(eq=False)
class View:
    """The owner of a view's allocation: which section, at which offset, mapped how."""

    section: Section
    offset: int
    protect: int  # the protection the view was mapped with
    unmap_only = True  # VirtualFree cannot release it; UnmapViewOfFile can

    def allows_protect(self, protect: int) -> bool:
        """VirtualProtect / VirtualAlloc(MEM_COMMIT) inside a view: only what the view's own
        protection grants (:func:`emulator_mem.windows.protection.within`)."""
        return protection.within(protect, self.protect)


class AliasView(View):
    """A ``map_alias`` view whose source was released: a view of the section that took the
    source's pages over, still released with ``mm.release`` like any alias (or unmapped).
    A snapshot brings it back as a plain view (unmap it then)."""

    unmap_only = False


class SectionTable:
    """Handles, names and sections of one process (``mm.sections``)."""

    def __init__(self, mm: RegionHost,
                 map_image: Callable[[Section, int | None], tuple[int, int]]) -> None:
        self.mm = mm
        #: maps a view of a SEC_IMAGE section (images live a layer beside; the manager wires it)
        self.map_image = map_image
        self.handles: dict[int, tuple[Section, int]] = {}  # handle -> (section, access)
        self.names: dict[str, Section] = {}
        self._next_handle = 0x40
        mm.on_release.append(self._view_released)

    # -- objects -----------------------------------------------------------------------
    def create(
        self,
        size: int,
        protect: int,
        attributes: int = C.SEC_COMMIT,
        *,
        name: str | None = None,
        file_path: str | os.PathLike[str] | None = None,
        data: bytes | None = None,
        access: int | None = None,
    ) -> tuple[int, bool]:
        """Create (or open, when ``name`` exists) a section; returns (handle, existed).

        ``file_path`` backs the section with a host file; ``data`` gives the bytes of a
        SEC_IMAGE section directly (a PE file already in memory).
        """
        if name is not None and name in self.names:
            section = self.names[name]
            return self._new_handle(section, HANDLE_ACCESS.get(section.protect & 0xFF, 0)), True
        base_protect = protect & 0xFF
        if base_protect not in HANDLE_ACCESS or protect & ~0xFF:
            raise EmulatorMemError(f"invalid section protection {protect:#x}",
                                   status=C.STATUS_INVALID_PAGE_PROTECTION)
        kind = attributes & (C.SEC_COMMIT | C.SEC_RESERVE | C.SEC_IMAGE)
        if kind not in (C.SEC_COMMIT, C.SEC_RESERVE, C.SEC_IMAGE) or attributes & ~(kind | C.SEC_NOCACHE):
            raise InvalidParameterError(f"unsupported section attributes {attributes:#x}")
        if kind == C.SEC_IMAGE:
            return self._create_image(protect, name, file_path, data, access)
        data = b""
        path = None
        if file_path is not None:
            path = os.fspath(file_path)
            data = _read_file(path)
            if size == 0:
                if not data:
                    raise SectionError("empty file", status=C.STATUS_MAPPED_FILE_SIZE_ZERO)
                size = len(data)
        if size <= 0:
            raise InvalidParameterError("a pagefile-backed section needs a size")
        if size > self.mm.highest_address:
            raise SectionError(f"section of {size:#x} bytes is too big", status=C.STATUS_SECTION_TOO_BIG)
        chunk = self.mm.phys.alias_chunk(page_round_up(size))
        section = Section(size, protect, attributes, chunk, name, path)
        if data:
            self.mm.phys.write(chunk.phys, data[:size])
        if name is not None:
            self.names[name] = section
        granted = HANDLE_ACCESS[base_protect] if access is None else access
        return self._new_handle(section, granted), False

    def _create_image(
        self, protect: int, name: str | None, file_path: str | os.PathLike[str] | None,
        data: bytes | None, access: int | None,
    ) -> tuple[int, bool]:
        from ..pe.image import parse_image

        path = None if file_path is None else os.fspath(file_path)
        if data is None:
            if path is None:
                raise SectionError("a SEC_IMAGE section needs a file",
                                   status=C.STATUS_INVALID_FILE_FOR_SECTION)
            data = _read_file(path)
        layout = parse_image(data)  # ImageFormatError (STATUS_INVALID_IMAGE_FORMAT)
        label = name if name is not None else (None if path is None else os.path.basename(path))
        section = Section(layout.size_of_image, protect, C.SEC_IMAGE, None, label, path, image=layout)
        if name is not None:
            self.names[name] = section
        granted = C.SECTION_MAP_READ | C.SECTION_MAP_EXECUTE if access is None else access
        return self._new_handle(section, granted), False

    def open(self, name: str, access: int = C.SECTION_ALL_ACCESS) -> int:
        section = self.names.get(name)
        if section is None:
            raise SectionError(f"no section named {name!r}", status=C.STATUS_OBJECT_NAME_NOT_FOUND)
        return self._new_handle(section, access)

    def _new_handle(self, section: Section, access: int, *, exact: bool = False) -> int:
        handle = self._next_handle
        self._next_handle += 4
        self.handles[handle] = (section, access if exact else access | ACCESS_BASE)
        section.handles += 1
        return handle

    def duplicate(self, handle: int, access: int | None = None) -> int:
        """NtDuplicateObject: a new handle to the same section with exactly ``access``
        (None: the same access). Wine's test_mapping duplicates with access 0 to get a
        handle no view can be mapped through."""
        section, granted = self.lookup(handle)
        return self._new_handle(section, granted if access is None else access, exact=True)

    def lookup(self, handle: int) -> tuple[Section, int]:
        try:
            return self.handles[handle]
        except (KeyError, TypeError):
            raise InvalidHandleError(f"invalid handle {handle!r}") from None

    def close(self, handle: int) -> None:
        """NtClose: the name goes with the last handle; the memory with the last view too."""
        section, _ = self.lookup(handle)
        del self.handles[handle]
        section.handles -= 1
        if not section.handles and section.name is not None and self.names.get(section.name) is section:
            del self.names[section.name]
        self._maybe_destroy(section)

    def _maybe_destroy(self, section: Section) -> None:
        if section.handles or section.views:
            return
        if section.name is not None and self.names.get(section.name) is section:
            del self.names[section.name]
        if section.chunk is not None:
            self.flush(section)
            self.mm.phys.release_chunk(section.chunk)
            section.chunk = None

    def flush(self, section: Section) -> None:
        """Write a writable file-backed section's bytes back to its file (FlushViewOfFile)."""
        if section.writable_file and section.chunk is not None and section.file_path is not None:
            data = self.mm.phys.read(section.chunk.phys, section.size)
            with open(section.file_path, "r+b") as f:  # bytes past the section stay
                f.write(data)

    # -- views -------------------------------------------------------------------------
    def map_view(
        self,
        handle: int,
        protect: int,
        *,
        address: int | None = None,
        offset: int = 0,
        size: int = 0,
        top_down: bool = False,
        max_address: int | None = None,
    ) -> tuple[int, int]:
        """Map a view of the section behind ``handle``; returns (base, view size)."""
        section, access = self.lookup(handle)
        protection.check(protect, allow_writecopy=True)
        if protect & ~0xFF:
            raise EmulatorMemError("views take no protection modifiers",
                                   status=C.STATUS_INVALID_PAGE_PROTECTION)
        need = access_needed(protect)
        if need & ~access:
            raise SectionError("the handle does not grant that access", status=C.STATUS_ACCESS_DENIED)
        if section.image is not None:  # the view protection picks the rights, nothing else
            return self.map_image(section, address)
        if section.chunk is None:
            raise InvalidHandleError("the section has been destroyed")
        view = View(section, offset, protect)
        if not compatible(section.protect, protect):
            raise SectionError(f"view protection {protect:#x} is incompatible with the section",
                               status=C.STATUS_SECTION_PROTECTION)
        if offset < 0 or offset % C.ALLOCATION_GRANULARITY:
            raise SectionError(f"view offset {offset:#x} is not 64 KiB aligned",
                               status=C.STATUS_MAPPED_ALIGNMENT)
        if offset >= section.size and not (offset == 0 == section.size):
            raise InvalidParameterError("view offset beyond the end of the section")
        if size == 0:
            size = section.size - offset
        if offset + size > section.size:
            raise SectionError("view extends past the section", status=C.STATUS_INVALID_VIEW_SIZE)
        size = page_round_up(size)
        mm = self.mm
        if address is None:
            base = mm.find_free(size, top_down=top_down, max_address=max_address)
        else:
            if address % C.ALLOCATION_GRANULARITY:
                raise SectionError(f"view base {address:#x} is not 64 KiB aligned",
                                   status=C.STATUS_MAPPED_ALIGNMENT)
            mm.check_range(address, size)
            if not mm.space.free.is_free(address, address + size):
                raise ConflictingAddressesError(f"{address:#x}+{size:#x} overlaps a reservation")
            base = address
        if section.chunk is None:
            raise InvalidHandleError("the section has been destroyed")
        alloc = Allocation(base, size, protect, RegionKind.MAPPED,
                           phys_base=section.chunk.phys + offset, name=section.name, owner=view)
        reserve = bool(section.attributes & C.SEC_RESERVE)
        mm.insert_allocation(alloc, reserve_only=reserve)
        if reserve and section.committed:
            first_page = offset >> 12
            for index in sorted(p - first_page for p in section.committed
                                if first_page <= p < first_page + (size >> 12)):
                alloc.set_pages(index, index + 1, protect)
            mm.space.committed_pages += alloc.committed_pages
        section.views.add(base)
        return base, size

    def unmap_view(self, address: int) -> None:
        """UnmapViewOfFile/NtUnmapViewOfSection: any address inside the view will do."""
        alloc = self.mm.space.find(address)
        if alloc is None or not (getattr(alloc.owner, "unmap_only", False) or isinstance(alloc.owner, View)):
            raise NotAllocatedError(f"{address:#x} is not a mapped view",
                                    status=C.STATUS_NOT_MAPPED_VIEW)
        self.mm.release_allocation(alloc)

    def commit_shared(self, alloc: Allocation, first: int, last: int) -> None:
        """Mirror a commit inside one view of a SEC_RESERVE section to every other view.

        The section's pages are what gets committed, so other views see them committed too,
        each with its own view protection (Wine's test_MapViewOfFile).
        """
        view = alloc.owner
        if not isinstance(view, View):
            return
        section = view.section
        lo = view.offset + (first << 12)
        hi = view.offset + (last << 12)
        if section.attributes & C.SEC_RESERVE:
            section.committed.update(range(lo >> 12, hi >> 12))
        for base in section.views:
            other = self.mm.space.find(base)
            if other is None or other is alloc or not isinstance(other.owner, View):
                continue
            o_lo = max(lo, other.owner.offset)
            o_hi = min(hi, other.owner.offset + other.size)
            if o_lo >= o_hi:
                continue
            o_first = (o_lo - other.owner.offset) >> 12
            o_last = (o_hi - other.owner.offset) >> 12
            for s, e, p in list(other.runs(o_first, o_last)):
                if not p:
                    self.mm.space.set_pages(other, s, e, other.owner.protect)

    def adopt_aliases(self, source: Allocation, aliases: list[Allocation]) -> None:
        """``source`` (identity-backed) is being released while ``aliases`` map its pages.

        Windows keeps a page alive until its last mapping goes. So the source's committed
        pages move into an anonymous section (alias area, no handles) and every alias
        becomes a view of it at the same offset: the aliases keep their bytes and still
        share them with each other. The section dies with the last of them.
        """
        phys = self.mm.phys
        chunk = phys.alias_chunk(source.size)
        for s, e, p in source.runs():
            if p:
                phys.copy(chunk.phys + (s << 12), source.phys_base + (s << 12), (e - s) << 12)
        section = Section(source.size, C.PAGE_EXECUTE_READWRITE, C.SEC_COMMIT, chunk)
        for alias in aliases:
            offset = alias.phys_base - source.phys_base
            alias.owner = AliasView(section, offset, alias.allocation_protect)
            alias.phys_base = chunk.phys + offset
            section.views.add(alias.base)

    def _view_released(self, alloc: Allocation) -> None:
        view = alloc.owner
        if isinstance(view, View):
            self.flush(view.section)
            view.section.views.discard(alloc.base)
            self._maybe_destroy(view.section)
            return
        section = getattr(view, "section", None)  # an image mapped from a SEC_IMAGE section
        if isinstance(section, Section):
            section.views.discard(alloc.base)
            self._maybe_destroy(section)
