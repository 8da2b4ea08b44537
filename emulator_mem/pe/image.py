"""The Windows loader's view of a PE file: what gets mapped where, with which protection.

Pure bookkeeping, no Unicorn: :func:`parse_image` validates a PE32/PE32+ file the way the
kernel's image-section code does (``NtCreateSection(SEC_IMAGE)``) and returns an
:class:`ImageLayout`; :meth:`ImageLayout.build` produces the bytes of the mapped view at a
chosen base, and :meth:`ImageLayout.page_protections` the PAGE_* value of every page.

pefile parses the headers; the import, export and relocation directories are read here from
the *mapped* image, not from file offsets, because that is what ``ntdll!Ldr*`` reads and
because pefile skips or truncates malformed directories with a warning where Windows (and
we) must refuse the image. Every failure, whatever the input bytes, is an
:class:`~emulator_mem.errors.ImageFormatError`.

Decisions where Windows is stricter or vaguer than we need:

* Pages of the image that no section covers (the gap between the headers and a section at
  64 KiB alignment, the tail between a section's last page and the next section, the rest of
  SizeOfImage) are reserved but not committed in a real image view (VirtualQuery reports
  MEM_RESERVE/MEM_IMAGE). We report them as PAGE_NOACCESS, which faults the same way.
* Overlapping sections, and sections out of RVA order, are accepted (ReactOS refuses any gap
  or overlap; packed malware is less tidy): the section later in the section table wins, for
  the bytes (its zero-filled tail included) and for the protection.
* Images whose SectionAlignment is below the page size ("low alignment") are mapped flat by
  Windows: FileAlignment must equal SectionAlignment, every section's raw data must sit at
  the file offset equal to its RVA, and every page is PAGE_EXECUTE_WRITECOPY.
* Like the Windows loader (and pefile), PointerToRawData is rounded down to a multiple of
  0x200 in normally aligned images.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pefile

from ..errors import ImageFormatError, InvalidParameterError
from ..windows import constants as C
from .constants import (
    IMAGE_DIRECTORY_ENTRY_BASERELOC,
    IMAGE_DIRECTORY_ENTRY_EXPORT,
    IMAGE_DIRECTORY_ENTRY_IMPORT,
    IMAGE_DIRECTORY_ENTRY_SECURITY,
    IMAGE_DOS_SIGNATURE,
    IMAGE_FILE_MACHINE_AMD64,
    IMAGE_FILE_MACHINE_I386,
    IMAGE_FILE_RELOCS_STRIPPED,
    IMAGE_NT_OPTIONAL_HDR32_MAGIC,
    IMAGE_NT_OPTIONAL_HDR64_MAGIC,
    IMAGE_NT_SIGNATURE,
    IMAGE_NUMBEROF_DIRECTORY_ENTRIES,
    IMAGE_ORDINAL_FLAG32,
    IMAGE_ORDINAL_FLAG64,
    IMAGE_REL_BASED_ABSOLUTE,
    IMAGE_REL_BASED_DIR64,
    IMAGE_REL_BASED_HIGH,
    IMAGE_REL_BASED_HIGHADJ,
    IMAGE_REL_BASED_HIGHLOW,
    IMAGE_REL_BASED_LOW,
    IMAGE_SCN_MEM_EXECUTE,
    IMAGE_SCN_MEM_READ,
    IMAGE_SCN_MEM_SHARED,
    IMAGE_SCN_MEM_WRITE,
    IMAGE_SIZEOF_FILE_HEADER,
    IMAGE_SIZEOF_SECTION_HEADER,
)

# --- limits ---------------------------------------------------------------------------
#: the largest SizeOfImage the kernel maps for a PE32 image
MAX_IMAGE_SIZE_32 = 0x80000000
#: our cap for PE32+: RVAs are 32-bit, so nothing beyond 4 GiB is addressable anyway
MAX_IMAGE_SIZE_64 = 0x100000000
#: PointerToRawData is rounded down to this in normally aligned images (loader quirk)
RAW_POINTER_GRANULARITY = 0x200
#: a relocation block covers one 4 KiB page; more entries than this are a forged length
MAX_RELOC_BLOCK_SIZE = 8 + 2 * 2 * C.PAGE_SIZE
#: ordinals are 16-bit; a larger export table is a forged count
MAX_EXPORTS = 0x10000
#: DLL, import and export names longer than this are treated as unterminated
MAX_NAME_LENGTH = 0x1000

_PROTECT_BY_XRW: dict[tuple[bool, bool, bool], int] = {
    (False, False, False): C.PAGE_NOACCESS,
    (True, False, False): C.PAGE_EXECUTE,
    (False, True, False): C.PAGE_READONLY,
    (True, True, False): C.PAGE_EXECUTE_READ,
    (False, False, True): C.PAGE_WRITECOPY,
    (False, True, True): C.PAGE_WRITECOPY,
    (True, False, True): C.PAGE_EXECUTE_WRITECOPY,
    (True, True, True): C.PAGE_EXECUTE_WRITECOPY,
}
#: writable IMAGE_SCN_MEM_SHARED sections are shared, not copy-on-write
_SHARED_WRITE: dict[int, int] = {
    C.PAGE_WRITECOPY: C.PAGE_READWRITE,
    C.PAGE_EXECUTE_WRITECOPY: C.PAGE_EXECUTE_READWRITE,
}


def section_protect(characteristics: int) -> int:
    """The PAGE_* value Windows gives the pages of a section with these characteristics.

    Writable image sections are copy-on-write: a write gives the process a private copy of the
    page instead of changing the file, so W maps to PAGE_WRITECOPY — except sections marked
    IMAGE_SCN_MEM_SHARED, whose pages every mapping of the image shares: PAGE_READWRITE
    (Wine's get_section_protection: ``VPROT_WRITE`` for shared, ``VPROT_WRITECOPY`` else).
    x86 cannot express write-only, so W alone is writable too.
    """
    key = (
        bool(characteristics & IMAGE_SCN_MEM_EXECUTE),
        bool(characteristics & IMAGE_SCN_MEM_READ),
        bool(characteristics & IMAGE_SCN_MEM_WRITE),
    )
    protect = _PROTECT_BY_XRW[key]
    if characteristics & IMAGE_SCN_MEM_SHARED:
        return _SHARED_WRITE.get(protect, protect)
    return protect


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(slots=True)
class ImageSection:
    """One section-table entry as the loader maps it.

    ``virtual_size`` is the effective size in memory (VirtualSize, or SizeOfRawData when
    VirtualSize is 0); ``data`` holds only the file bytes the loader copies, so a layout does
    not keep the whole file alive.
    """

    name: str
    virtual_address: int
    virtual_size: int
    raw_size: int
    characteristics: int
    protect: int
    data: bytes = field(default=b"", repr=False)


@dataclass(slots=True)
class ImageImport:
    """One IAT slot: the loader writes the address of ``dll!name`` (or ``#ordinal``) there."""

    dll: str
    name: str | None
    ordinal: int | None
    iat_rva: int


@dataclass(slots=True)
class ImageExport:
    """One export; a ``forwarder`` ("NTDLL.RtlAllocateHeap") replaces the code address."""

    name: str | None
    ordinal: int
    rva: int
    forwarder: str | None


@dataclass(slots=True)
class ImageFixup:
    """One base-relocation entry: ``kind`` is IMAGE_REL_BASED_*; ``extra`` is the second
    slot of IMAGE_REL_BASED_HIGHADJ (the low 16 bits the rounding needs)."""

    rva: int
    kind: int
    extra: int = 0


#: the relocation types ntdll applies on x86/x64, and how many bytes each one patches
_FIXUP_WIDTH = {IMAGE_REL_BASED_HIGH: 2, IMAGE_REL_BASED_LOW: 2, IMAGE_REL_BASED_HIGHLOW: 4,
                IMAGE_REL_BASED_HIGHADJ: 2, IMAGE_REL_BASED_DIR64: 8}


@dataclass(slots=True)
class _Segment:
    """A run of the mapped image: ``span`` bytes at ``rva``, ``data`` first, zeros after."""

    rva: int
    span: int
    data: bytes


def _overlay(segments: list[_Segment], rva: int, out: bytearray) -> None:
    """Paint ``segments`` (later ones win) into ``out``, which mirrors [rva, rva+len)."""
    end = rva + len(out)
    for seg in segments:
        lo, hi = max(rva, seg.rva), min(end, seg.rva + seg.span)
        if lo >= hi:
            continue
        out[lo - rva : hi - rva] = bytes(hi - lo)
        dhi = min(hi, seg.rva + len(seg.data))
        if lo < dhi:
            out[lo - rva : dhi - rva] = seg.data[lo - seg.rva : dhi - seg.rva]


class _ImageView:
    """Bounded reads from the mapped image without materialising SizeOfImage bytes."""

    __slots__ = ("_segments", "size")

    def __init__(self, segments: list[_Segment], size: int) -> None:
        self._segments = segments
        self.size = size

    def read(self, rva: int, length: int, what: str) -> bytes:
        if rva < 0 or length < 0 or rva + length > self.size:
            raise ImageFormatError(f"{what} at RVA {rva:#x}+{length:#x} is outside the image")
        out = bytearray(length)
        _overlay(self._segments, rva, out)
        return bytes(out)

    def cstring(self, rva: int, what: str) -> str:
        """A NUL-terminated name; unterminated within MAX_NAME_LENGTH or the image is bad."""
        chunk = 64
        collected = b""
        while len(collected) < MAX_NAME_LENGTH:
            take = min(chunk, self.size - rva - len(collected), MAX_NAME_LENGTH - len(collected))
            if take <= 0:
                break
            piece = self.read(rva + len(collected), take, what)
            nul = piece.find(b"\0")
            if nul >= 0:
                return (collected + piece[:nul]).decode("latin-1")
            collected += piece
            chunk *= 2
        raise ImageFormatError(f"{what} at RVA {rva:#x} is not NUL-terminated")


@dataclass(slots=True)
class ImageLayout:
    """Everything the loader needs from a PE file, validated; see :func:`parse_image`."""

    is_64bit: bool
    machine: int
    image_base: int
    size_of_image: int  # SizeOfImage rounded up to the page size
    size_of_headers: int
    entry_point_rva: int
    subsystem: int
    dll_characteristics: int
    characteristics: int
    stack_reserve: int
    stack_commit: int
    heap_reserve: int
    heap_commit: int
    relocatable: bool
    section_alignment: int
    file_alignment: int
    sections: list[ImageSection] = field(default_factory=list)
    imports: list[ImageImport] = field(default_factory=list)
    exports: list[ImageExport] = field(default_factory=list)
    headers: bytes = field(default=b"", repr=False)
    fixups: list[ImageFixup] = field(default_factory=list, repr=False)

    @property
    def low_alignment(self) -> bool:
        """SectionAlignment below the page size: Windows maps the file flat, all RWX-COW."""
        return self.section_alignment < C.PAGE_SIZE

    def _segments(self) -> list[_Segment]:
        segments = [_Segment(0, min(self.size_of_headers, self.size_of_image), self.headers)]
        for sec in self.sections:
            span = _section_span(sec.virtual_address, sec.virtual_size, self)
            if span:
                segments.append(_Segment(sec.virtual_address, span, sec.data))
        return segments

    def build(self, base: int) -> bytearray:
        """The mapped image at ``base``: ``size_of_image`` bytes, relocated if needed.

        Relocation is applied exactly when ``base`` differs from ImageBase, as the loader
        does; an image without relocations (or flagged IMAGE_FILE_RELOCS_STRIPPED) can only
        live at its ImageBase.
        """
        if base < 0 or base % C.PAGE_SIZE:
            raise InvalidParameterError(f"image base {base:#x} is not a page-aligned address")
        limit = 1 << (64 if self.is_64bit else 32)
        if base + self.size_of_image > limit:
            raise ImageFormatError(f"image of {self.size_of_image:#x} bytes cannot live at {base:#x}")
        image = bytearray(self.size_of_image)
        _overlay(self._segments(), 0, image)
        if base != self.image_base:
            if not self.relocatable:
                raise ImageFormatError(
                    f"image cannot move from {self.image_base:#x} to {base:#x}: no relocations"
                )
            _apply_fixups(image, self.fixups, base - self.image_base)
        return image

    def shared_ranges(self) -> list[tuple[int, int]]:
        """``(rva, size)`` page runs of the IMAGE_SCN_MEM_SHARED sections, in address order:
        the pages every mapping of this image shares instead of copying."""
        if self.low_alignment:
            return []
        ranges: list[tuple[int, int]] = []
        for sec in sorted(self.sections, key=lambda s: s.virtual_address):
            span = _section_span(sec.virtual_address, sec.virtual_size, self)
            if span and sec.characteristics & IMAGE_SCN_MEM_SHARED:
                ranges.append((sec.virtual_address, span))
        return ranges

    def page_protections(self) -> list[tuple[int, int, int]]:
        """``(rva, size, protect)`` runs, page-aligned, covering ``[0, size_of_image)``.

        Headers are PAGE_READONLY, sections get :func:`section_protect` (later sections win
        where they overlap), pages no section covers are PAGE_NOACCESS (reserved, not
        committed, in a real image view). Adjacent runs with equal protection are merged.
        """
        if self.low_alignment:
            return [(0, self.size_of_image, C.PAGE_EXECUTE_WRITECOPY)]
        runs: list[tuple[int, int, int]] = [(0, self.size_of_image, C.PAGE_NOACCESS)]
        header_end = min(_align_up(self.size_of_headers, C.PAGE_SIZE), self.size_of_image)
        runs = _paint(runs, 0, header_end, C.PAGE_READONLY)
        for sec in self.sections:
            span = _section_span(sec.virtual_address, sec.virtual_size, self)
            if span:
                runs = _paint(runs, sec.virtual_address, sec.virtual_address + span, sec.protect)
        merged: list[tuple[int, int, int]] = []
        for start, end, protect in runs:
            if merged and merged[-1][2] == protect and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end - merged[-1][0], protect)
            else:
                merged.append((start, end - start, protect))
        return merged


def _section_span(rva: int, virtual_size: int, layout: ImageLayout) -> int:
    """Bytes of the image a section occupies: its size rounded to a page (or to the low
    SectionAlignment), clipped to the image."""
    unit = layout.section_alignment if layout.low_alignment else C.PAGE_SIZE
    return max(0, min(_align_up(virtual_size, unit), layout.size_of_image - rva))


def _paint(
    runs: list[tuple[int, int, int]], start: int, end: int, protect: int
) -> list[tuple[int, int, int]]:
    """Replace ``[start, end)`` in a sorted list of ``(start, end, protect)`` runs."""
    if start >= end:
        return runs
    out: list[tuple[int, int, int]] = []
    for lo, hi, prot in runs:
        if hi <= start or lo >= end:
            out.append((lo, hi, prot))
            continue
        if lo < start:
            out.append((lo, start, prot))
        if hi > end:
            out.append((end, hi, prot))
    out.append((start, end, protect))
    out.sort()
    return out


def _apply_fixups(image: bytearray, fixups: list[ImageFixup], delta: int) -> None:
    """``ntdll!LdrProcessRelocationBlockLongLong`` for the x86/x64 relocation types."""
    for fx in fixups:
        width = _FIXUP_WIDTH.get(fx.kind, 0)
        if not width or fx.rva + width > len(image):
            raise ImageFormatError(f"bad relocation {fx.kind} at RVA {fx.rva:#x}")
        old = int.from_bytes(image[fx.rva : fx.rva + width], "little")
        if fx.kind == IMAGE_REL_BASED_HIGHLOW:
            new = (old + delta) & 0xFFFFFFFF
        elif fx.kind == IMAGE_REL_BASED_DIR64:
            new = (old + delta) & 0xFFFFFFFFFFFFFFFF
        elif fx.kind == IMAGE_REL_BASED_LOW:
            new = (old + delta) & 0xFFFF
        elif fx.kind == IMAGE_REL_BASED_HIGH:
            new = (((old << 16) + delta) >> 16) & 0xFFFF
        else:  # HIGHADJ: rebuild the full 32-bit value from both halves, round, take the top
            low = fx.extra - 0x10000 if fx.extra & 0x8000 else fx.extra
            new = (((old << 16) + low + delta + 0x8000) >> 16) & 0xFFFF
        image[fx.rva : fx.rva + width] = new.to_bytes(width, "little")


# --- parsing ------------------------------------------------------------------------------


def parse_image(data: bytes) -> ImageLayout:
    """Validate a PE32/PE32+ file for x86/x64 and describe how Windows would map it.

    Raises :class:`ImageFormatError` for anything malformed or truncated, and for nothing
    else: pefile's own exceptions and any struct/index error on hostile input are converted.
    """
    try:
        return _parse(bytes(data))
    except ImageFormatError:
        raise
    except (struct.error, IndexError, KeyError, ValueError, TypeError, OverflowError) as exc:
        raise ImageFormatError(f"malformed PE image: {exc}") from exc


def _load_pefile(data: bytes) -> pefile.PE:
    try:
        return pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as exc:
        raise ImageFormatError(f"not a PE image: {exc}") from exc
    except Exception as exc:  # pefile raises bare Exception and worse on hostile input
        raise ImageFormatError(f"not a PE image: {exc}") from exc


def _check_extent(data: bytes) -> None:
    """Refuse a truncated file before pefile sees it.

    pefile pads a short optional header with zeros and only warns about section data beyond
    the end of the file; and when it does raise, it runs a full ``gc.collect()``, which makes
    rejecting many broken files slow. Signatures, headers, the section table and every
    section's raw data must be inside the file.
    """
    if len(data) < 64 or int.from_bytes(data[:2], "little") != IMAGE_DOS_SIGNATURE:
        raise ImageFormatError("missing MZ signature")
    nt_offset = int.from_bytes(data[0x3C:0x40], "little")
    opt_offset = nt_offset + 4 + IMAGE_SIZEOF_FILE_HEADER
    if opt_offset + 36 > len(data):  # up to and including SectionAlignment
        raise ImageFormatError("NT headers are truncated")
    if int.from_bytes(data[nt_offset : nt_offset + 4], "little") != IMAGE_NT_SIGNATURE:
        raise ImageFormatError("missing PE signature")
    n_sections, optional_size = struct.unpack_from("<H12xH", data, nt_offset + 6)
    table_offset = opt_offset + optional_size
    if table_offset + IMAGE_SIZEOF_SECTION_HEADER * n_sections > len(data):
        raise ImageFormatError("section table is truncated")
    low_alignment = int.from_bytes(data[opt_offset + 32 : opt_offset + 36], "little") < 0x1000
    for index in range(n_sections):
        raw_size, pointer = struct.unpack_from(
            "<II", data, table_offset + IMAGE_SIZEOF_SECTION_HEADER * index + 16
        )
        if not low_alignment:
            pointer &= ~(RAW_POINTER_GRANULARITY - 1)
        if raw_size and pointer + raw_size > len(data):
            raise ImageFormatError(f"section {index} raw data is beyond the end of the file")


def _parse(data: bytes) -> ImageLayout:
    _check_extent(data)
    pe = _load_pefile(data)
    fh, oh = pe.FILE_HEADER, pe.OPTIONAL_HEADER
    nt_offset = pe.DOS_HEADER.e_lfanew

    magic, machine = oh.Magic, fh.Machine
    if (machine, magic) == (IMAGE_FILE_MACHINE_I386, IMAGE_NT_OPTIONAL_HDR32_MAGIC):
        is_64bit, fixed_size, max_image = False, 96, MAX_IMAGE_SIZE_32
    elif (machine, magic) == (IMAGE_FILE_MACHINE_AMD64, IMAGE_NT_OPTIONAL_HDR64_MAGIC):
        is_64bit, fixed_size, max_image = True, 112, MAX_IMAGE_SIZE_64
    else:
        raise ImageFormatError(f"machine {machine:#x} with optional header magic {magic:#x}")

    # The optional header (with its data directories) and the section table must really be
    # in the file; pefile pads a short file with zeros instead of failing.
    opt_offset = nt_offset + 4 + IMAGE_SIZEOF_FILE_HEADER
    n_dirs = min(oh.NumberOfRvaAndSizes, IMAGE_NUMBEROF_DIRECTORY_ENTRIES)
    if fh.SizeOfOptionalHeader < fixed_size + 8 * n_dirs:
        raise ImageFormatError("SizeOfOptionalHeader too small for its data directories")
    table_offset = opt_offset + fh.SizeOfOptionalHeader
    table_end = table_offset + IMAGE_SIZEOF_SECTION_HEADER * fh.NumberOfSections

    sa, fa = oh.SectionAlignment, oh.FileAlignment
    if not (_is_power_of_two(sa) and _is_power_of_two(fa) and fa <= sa):
        raise ImageFormatError(f"bad alignment: SectionAlignment {sa:#x}, FileAlignment {fa:#x}")
    low_alignment = sa < C.PAGE_SIZE
    if low_alignment and fa != sa:
        raise ImageFormatError("low-alignment image needs FileAlignment == SectionAlignment")

    if not 0 < oh.SizeOfImage <= max_image:
        raise ImageFormatError(f"SizeOfImage {oh.SizeOfImage:#x} out of range")
    size_of_image = _align_up(oh.SizeOfImage, C.PAGE_SIZE)
    image_base = oh.ImageBase
    if image_base % C.ALLOCATION_GRANULARITY:
        raise ImageFormatError(f"ImageBase {image_base:#x} is not 64 KiB aligned")
    if image_base + size_of_image > 1 << (64 if is_64bit else 32):
        raise ImageFormatError(f"ImageBase {image_base:#x} + SizeOfImage overflows")
    size_of_headers = oh.SizeOfHeaders
    if not table_end <= size_of_headers <= min(len(data), size_of_image):
        raise ImageFormatError(f"SizeOfHeaders {size_of_headers:#x} is inconsistent")
    if oh.AddressOfEntryPoint >= size_of_image:
        raise ImageFormatError(f"entry point {oh.AddressOfEntryPoint:#x} is outside the image")

    layout = ImageLayout(
        is_64bit=is_64bit,
        machine=machine,
        image_base=image_base,
        size_of_image=size_of_image,
        size_of_headers=size_of_headers,
        entry_point_rva=oh.AddressOfEntryPoint,
        subsystem=oh.Subsystem,
        dll_characteristics=oh.DllCharacteristics,
        characteristics=fh.Characteristics,
        stack_reserve=oh.SizeOfStackReserve,
        stack_commit=oh.SizeOfStackCommit,
        heap_reserve=oh.SizeOfHeapReserve,
        heap_commit=oh.SizeOfHeapCommit,
        relocatable=False,
        section_alignment=sa,
        file_alignment=fa,
        headers=data[:size_of_headers],
    )
    # The section table is read here, not from pefile: pefile sorts it by RVA (the table
    # order decides who wins an overlap) and gives up on headers it finds suspicious.
    for index in range(fh.NumberOfSections):
        offset = table_offset + IMAGE_SIZEOF_SECTION_HEADER * index
        layout.sections.append(_parse_section(data, offset, layout))

    words = struct.unpack_from(f"<{2 * n_dirs}I", data, opt_offset + fixed_size)
    dirs = [(words[2 * i], words[2 * i + 1]) for i in range(n_dirs)]
    dirs += [(0, 0)] * (IMAGE_NUMBEROF_DIRECTORY_ENTRIES - n_dirs)
    for index, (va, size) in enumerate(dirs):
        # the security directory holds a file offset, not an RVA, and is never mapped
        if index != IMAGE_DIRECTORY_ENTRY_SECURITY and va and va + size > size_of_image:
            raise ImageFormatError(f"data directory {index} lies outside the image")

    view = _ImageView(layout._segments(), size_of_image)
    layout.imports = _parse_imports(view, dirs[IMAGE_DIRECTORY_ENTRY_IMPORT][0], is_64bit)
    layout.exports = _parse_exports(view, *dirs[IMAGE_DIRECTORY_ENTRY_EXPORT])
    reloc_va, reloc_size = dirs[IMAGE_DIRECTORY_ENTRY_BASERELOC]
    has_relocs = bool(reloc_va and reloc_size)
    layout.relocatable = has_relocs and not fh.Characteristics & IMAGE_FILE_RELOCS_STRIPPED
    if has_relocs:
        layout.fixups = _parse_relocations(view, reloc_va, reloc_size)
    return layout


def _parse_section(data: bytes, offset: int, layout: ImageLayout) -> ImageSection:
    """One IMAGE_SECTION_HEADER, checked against the image and the file."""
    raw_name, virtual_size, rva, raw_size, pointer, _, _, _, _, characteristics = (
        struct.unpack_from("<8sIIIIIIHHI", data, offset)
    )
    name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
    if rva % layout.section_alignment:
        raise ImageFormatError(f"section {name!r} RVA {rva:#x} is not SectionAlignment-aligned")
    extent = virtual_size or raw_size
    if rva + extent > layout.size_of_image:
        raise ImageFormatError(f"section {name!r} extends beyond SizeOfImage")
    if layout.low_alignment:
        if raw_size and pointer != rva:
            raise ImageFormatError(f"low-alignment section {name!r} not at file offset == RVA")
    else:
        pointer &= ~(RAW_POINTER_GRANULARITY - 1)  # in the file: _check_extent made sure
    span = _section_span(rva, extent, layout)
    copied = data[pointer : pointer + min(raw_size, span)] if raw_size else b""
    return ImageSection(
        name=name,
        virtual_address=rva,
        virtual_size=extent,
        raw_size=raw_size,
        characteristics=characteristics,
        protect=section_protect(characteristics),
        data=copied,
    )


def _parse_imports(view: _ImageView, va: int, is_64bit: bool) -> list[ImageImport]:
    """Walk the import descriptors as ``ntdll!LdrpSnapIAT`` does: until Name or FirstThunk
    is zero; names come from OriginalFirstThunk when present, else from the IAT itself."""
    imports: list[ImageImport] = []
    if not va:
        return imports
    ptr = 8 if is_64bit else 4
    flag = IMAGE_ORDINAL_FLAG64 if is_64bit else IMAGE_ORDINAL_FLAG32
    desc = va
    while True:
        original_first_thunk, _, _, name_rva, first_thunk = struct.unpack(
            "<5I", view.read(desc, 20, "import descriptor")
        )
        if not name_rva or not first_thunk:
            return imports
        dll = view.cstring(name_rva, "import DLL name")
        if not dll:
            raise ImageFormatError(f"empty DLL name in import descriptor at {desc:#x}")
        lookup = original_first_thunk or first_thunk
        index = 0
        while True:
            thunk = int.from_bytes(view.read(lookup + index * ptr, ptr, "import thunk"), "little")
            if not thunk:
                break
            iat_rva = first_thunk + index * ptr
            view.read(iat_rva, ptr, "IAT slot")
            if thunk & flag:
                imports.append(ImageImport(dll, None, thunk & 0xFFFF, iat_rva))
            else:
                if thunk > 0x7FFFFFFF:
                    raise ImageFormatError(f"import thunk {thunk:#x} is neither name nor ordinal")
                name = view.cstring(thunk + 2, "import name")
                imports.append(ImageImport(dll, name, None, iat_rva))
            index += 1
        desc += 20


def _parse_exports(view: _ImageView, va: int, size: int) -> list[ImageExport]:
    """The export directory: one entry per name, plus one per ordinal that has no name."""
    if not va:
        return []
    if size < 40:
        raise ImageFormatError("export directory is smaller than IMAGE_EXPORT_DIRECTORY")
    (_, _, _, _, _, base, n_functions, n_names, functions, names, ordinals) = struct.unpack(
        "<IIHHIIIIIII", view.read(va, 40, "export directory")
    )
    if n_functions > MAX_EXPORTS or n_names > MAX_EXPORTS or base + n_functions > 0x10000:
        raise ImageFormatError("export directory counts are out of range")
    eat = struct.unpack(f"<{n_functions}I", view.read(functions, 4 * n_functions, "EAT"))
    name_rvas = struct.unpack(f"<{n_names}I", view.read(names, 4 * n_names, "export names"))
    name_ords = struct.unpack(f"<{n_names}H", view.read(ordinals, 2 * n_names, "ordinals"))
    named: dict[int, list[str]] = {}
    for name_rva, index in zip(name_rvas, name_ords, strict=True):
        if index >= n_functions:
            raise ImageFormatError(f"export name ordinal {index} beyond NumberOfFunctions")
        named.setdefault(index, []).append(view.cstring(name_rva, "export name"))
    exports: list[ImageExport] = []
    for index, rva in enumerate(eat):
        if not rva:
            continue
        if rva >= view.size:
            raise ImageFormatError(f"export RVA {rva:#x} is outside the image")
        forwarder = view.cstring(rva, "export forwarder") if va <= rva < va + size else None
        names_of: list[str | None] = [*sorted(named.get(index, []))] or [None]
        for name in names_of:
            exports.append(ImageExport(name, base + index, rva, forwarder))
    return exports


def _parse_relocations(view: _ImageView, va: int, size: int) -> list[ImageFixup]:
    """IMAGE_BASE_RELOCATION blocks; every block and every fixup must be well-formed."""
    fixups: list[ImageFixup] = []
    offset = 0
    while offset < size:
        if size - offset < 8:
            raise ImageFormatError("truncated relocation block header")
        page, block_size = struct.unpack("<II", view.read(va + offset, 8, "relocation block"))
        if block_size < 8 or block_size % 2 or block_size > min(size - offset, MAX_RELOC_BLOCK_SIZE):
            raise ImageFormatError(f"relocation block size {block_size:#x} is malformed")
        count = (block_size - 8) // 2
        entries = struct.unpack(f"<{count}H", view.read(va + offset + 8, 2 * count, "relocs"))
        i = 0
        while i < count:
            kind, rva = entries[i] >> 12, page + (entries[i] & 0xFFF)
            i += 1
            if kind == IMAGE_REL_BASED_ABSOLUTE:
                continue
            if kind not in _FIXUP_WIDTH:
                raise ImageFormatError(f"relocation type {kind} is not valid for x86/x64")
            if rva + _FIXUP_WIDTH[kind] > view.size:
                raise ImageFormatError(f"relocation at RVA {rva:#x} is outside the image")
            extra = 0
            if kind == IMAGE_REL_BASED_HIGHADJ:
                if i >= count:
                    raise ImageFormatError("IMAGE_REL_BASED_HIGHADJ without its second slot")
                extra = entries[i]
                i += 1
            fixups.append(ImageFixup(rva, kind, extra))
        offset += block_size
    return fixups
