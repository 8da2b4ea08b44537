"""Map PE images like the Windows loader: one MEM_IMAGE allocation, per-section protections.

:mod:`emulator_mem.image` (pure) parses and relocates; this module places the result in the
address space. The allocation is SizeOfImage bytes at ImageBase — or at the caller's base,
or at a free address when ImageBase is taken and the image is relocatable — with
AllocationProtect PAGE_EXECUTE_WRITECOPY, headers PAGE_READONLY and each section the
protection its characteristics give (writable sections are copy-on-write: the first write
turns a page PAGE_READWRITE). Everything is validated and built before anything is mapped,
so a bad image maps nothing. ``NtCreateSection(SEC_IMAGE)`` + ``NtMapViewOfSection`` reach
:func:`map_image_section`, which ends in the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ConflictingAddressesError, InvalidParameterError, NoMemoryError
from ..mmu.physmem import Chunk
from ..pe.image import ImageExport, ImageImport, ImageLayout, ImageSection, parse_image
from ..space.address_space import PAGE_SHIFT, Allocation, RegionKind
from ..windows import constants as C
from ..windows import protection
from .host import RegionHost
from .sections import Section


@dataclass(eq=False)
class MappedImage:
    """A mapped image: where it is and what a loader needs to link it."""

    base: int
    layout: ImageLayout
    name: str | None
    section: Section | None = None  # the SEC_IMAGE section it was mapped from, if any
    #: the key of its IMAGE_SCN_MEM_SHARED pages in ``ImageHost.shared_images``, if any
    shared_key: Hashable | None = None
    unmap_only = True  # VirtualFree cannot release it; NtUnmapViewOfSection can

    @property
    def size(self) -> int:
        return self.layout.size_of_image

    @property
    def entry_point(self) -> int:
        return self.base + self.layout.entry_point_rva

    @property
    def sections(self) -> list[ImageSection]:
        return self.layout.sections

    @property
    def imports(self) -> list[ImageImport]:
        """Imports; ``base + iat_rva`` is the IAT slot a loader writes the target into."""
        return self.layout.imports

    @property
    def exports(self) -> list[ImageExport]:
        return self.layout.exports

    def export_address(self, name: str) -> int | None:
        for export in self.layout.exports:
            if export.name == name and export.forwarder is None:
                return self.base + export.rva
        return None

    def allows_protect(self, protect: int) -> bool:
        """Image pages take what PAGE_EXECUTE_WRITECOPY (the allocation's protection) grants;
        the manager has already turned writable requests into copy-on-write ones."""
        return protection.within(protect, C.PAGE_EXECUTE_WRITECOPY)


@dataclass(eq=False)
class SharedImagePages:
    """The IMAGE_SCN_MEM_SHARED pages of one image, shared by all its mappings."""

    chunk: Chunk
    #: image page index -> physical page
    pages: dict[int, int] = field(default_factory=dict)
    mappings: int = 0


class ImageHost(RegionHost, Protocol):
    """A :class:`RegionHost` that also keeps the table of mapped images."""

    #: mapped PE images by base
    images: dict[int, MappedImage]
    #: shared-section pages by image identity (the file's bytes, or the SEC_IMAGE section)
    shared_images: dict[Hashable, SharedImagePages]


def map_image(mm: ImageHost, data: bytes, base: int | None = None, name: str | None = None) -> int:
    """Map ``data`` (a PE32/PE32+ file); returns the base. See :attr:`ImageHost.images`.

    Mappings of the same bytes are the same image: they share its IMAGE_SCN_MEM_SHARED
    sections, as Windows shares them between mappings of one file.
    """
    data = bytes(data)
    return map_layout(mm, parse_image(data), base, name, share_key=hashlib.sha256(data).digest())


def map_layout(mm: ImageHost, layout: ImageLayout, base: int | None, name: str | None,
               share_key: Hashable | None = None) -> int:
    """Map a parsed image. Mappings with the same ``share_key`` share the pages of the
    IMAGE_SCN_MEM_SHARED sections (the first mapping's bytes); without a key those pages
    are the mapping's own, still PAGE_READWRITE rather than copy-on-write."""
    size = layout.size_of_image
    if layout.is_64bit != mm.is_64bit:
        raise InvalidParameterError("image bitness does not match the CPU mode")
    if base is None:
        base = _choose_base(mm, layout)
    elif base % C.ALLOCATION_GRANULARITY:
        raise InvalidParameterError(f"image base {base:#x} is not 64 KiB aligned")
    else:
        mm.check_range(base, size)
        if not mm.space.free.is_free(base, base + size):
            raise ConflictingAddressesError(f"{base:#x}+{size:#x} overlaps a reservation")
    content = layout.build(base)  # may raise ImageFormatError: nothing is mapped yet
    image = MappedImage(base, layout, name)
    alloc = Allocation(base, size, C.PAGE_EXECUTE_WRITECOPY, RegionKind.IMAGE, phys_base=base,
                       name=name, owner=image)
    mm.phys.ensure_identity(base, base + size)
    mm.phys.write(base, content)
    for rva, length, protect in layout.page_protections():
        alloc.set_pages(rva >> PAGE_SHIFT, (rva + length) >> PAGE_SHIFT, protect)
    ranges = layout.shared_ranges()
    if ranges and share_key is not None:
        shared = _shared_pages(mm, share_key, ranges, content)
        shared.mappings += 1
        alloc.private_pages = dict(shared.pages)  # these pages translate to the shared copy
        image.shared_key = share_key
    mm.insert_allocation(alloc, reserve_only=True)
    mm.images[base] = image
    return base


def _shared_pages(mm: ImageHost, key: Hashable, ranges: list[tuple[int, int]],
                  content: bytearray) -> SharedImagePages:
    """The shared pages of image ``key``, made from ``content`` by its first mapping."""
    shared = mm.shared_images.get(key)
    if shared is not None and mm.phys.chunks.get(shared.chunk.phys) is shared.chunk:
        return shared
    chunk = mm.phys.alias_chunk(sum(size for _, size in ranges))
    shared = SharedImagePages(chunk)
    offset = 0
    for rva, size in ranges:
        mm.phys.write(chunk.phys + offset, bytes(content[rva : rva + size]))
        for page in range(0, size, C.PAGE_SIZE):
            shared.pages[(rva + page) >> PAGE_SHIFT] = chunk.phys + offset + page
        offset += size
    mm.shared_images[key] = shared
    return shared


def _choose_base(mm: ImageHost, layout: ImageLayout) -> int:
    preferred = layout.image_base
    size = layout.size_of_image
    if (
        preferred % C.ALLOCATION_GRANULARITY == 0
        and mm.lowest_address <= preferred
        and preferred + size <= mm.highest_address
        and mm.space.free.is_free(preferred, preferred + size)
    ):
        return preferred
    if not layout.relocatable:
        raise ConflictingAddressesError(
            f"ImageBase {preferred:#x} is taken and the image has no relocations")
    try:
        return mm.find_free(size)
    except NoMemoryError:
        raise ConflictingAddressesError("no room for the image") from None


def map_image_section(mm: ImageHost, section: Section, address: int | None) -> tuple[int, int]:
    """NtMapViewOfSection on a SEC_IMAGE section: a fresh image mapping per view."""
    layout = section.image
    if not isinstance(layout, ImageLayout):
        raise InvalidParameterError("not an image section")
    base = map_layout(mm, layout, address, section.name or section.file_path,
                      share_key=("section", id(section)))
    mm.images[base].section = section
    section.views.add(base)
    return base, layout.size_of_image


def forget_image(mm: ImageHost, alloc: Allocation) -> None:
    """on_release hook: drop the image record when its allocation goes away."""
    if isinstance(alloc.owner, MappedImage):
        mm.images.pop(alloc.base, None)
        key = alloc.owner.shared_key
        shared = None if key is None else mm.shared_images.get(key)
        if shared is not None:
            alloc.private_pages = None  # the shared pages are not this mapping's to free
            shared.mappings -= 1
            if shared.mappings <= 0:
                del mm.shared_images[key]
                if mm.phys.chunks.get(shared.chunk.phys) is shared.chunk:
                    mm.phys.release_chunk(shared.chunk)
