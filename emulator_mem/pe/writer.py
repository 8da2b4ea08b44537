"""A small deterministic PE32/PE32+ writer for samples and tests.

We never commit hand-written byte blobs: sample programs are assembled with keystone and
linked here, and tests generate every PE they parse. Output is byte-for-byte reproducible
(TimeDateStamp 0, no Rich header, sections in declaration order).

Code needs addresses before it exists, so layout is two-phase: :meth:`PEWriter.add_section`
fixes a section's RVA from its declared (maximum) size straight away, and the bytes are
supplied later by assigning :attr:`SectionSpec.data`. :meth:`PEWriter.add_imports` lays out
the import directory immediately, so IAT slot addresses are known before any code is
assembled; ``.edata`` is sized when declared and filled at :meth:`PEWriter.build`; ``.reloc``
is appended as the last section at build time, from the fixups registered with
:meth:`PEWriter.add_reloc`.

For tests the writer is deliberately permissive: a section may be given an explicit RVA
(overlaps and misalignment included), a raw pointer/size, and the header fields that are
normally derived (SizeOfImage, SizeOfHeaders, Characteristics, DllCharacteristics) can be
overridden. Nothing is validated beyond what is needed to produce bytes at all.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from ..errors import PEWriterError, UndeclaredImportError
from .constants import (
    IMAGE_DIRECTORY_ENTRY_BASERELOC,
    IMAGE_DIRECTORY_ENTRY_EXPORT,
    IMAGE_DIRECTORY_ENTRY_IMPORT,
    IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE,
    IMAGE_FILE_DLL,
    IMAGE_FILE_MACHINE_AMD64,
    IMAGE_FILE_MACHINE_I386,
    IMAGE_FILE_RELOCS_STRIPPED,
    IMAGE_NT_OPTIONAL_HDR32_MAGIC,
    IMAGE_NT_OPTIONAL_HDR64_MAGIC,
    IMAGE_NUMBEROF_DIRECTORY_ENTRIES,
    IMAGE_ORDINAL_FLAG32,
    IMAGE_ORDINAL_FLAG64,
    IMAGE_REL_BASED_ABSOLUTE,
    IMAGE_REL_BASED_DIR64,
    IMAGE_REL_BASED_HIGHLOW,
    IMAGE_SCN_MEM_EXECUTE,
    IMAGE_SCN_MEM_READ,
    IMAGE_SCN_MEM_WRITE,
    IMAGE_SIZEOF_SECTION_HEADER,
    IMAGE_SUBSYSTEM_WINDOWS_CUI,
)

# --- PE format constants only a writer needs (winnt.h); the loader's live in image.py ---
IMAGE_FILE_EXECUTABLE_IMAGE = 0x0002
IMAGE_FILE_LARGE_ADDRESS_AWARE = 0x0020
IMAGE_FILE_32BIT_MACHINE = 0x0100
IMAGE_DLLCHARACTERISTICS_NX_COMPAT = 0x0100
IMAGE_DIRECTORY_ENTRY_IAT = 12
IMAGE_SCN_CNT_CODE = 0x00000020
IMAGE_SCN_CNT_INITIALIZED_DATA = 0x00000040
IMAGE_SCN_CNT_UNINITIALIZED_DATA = 0x00000080
IMAGE_SCN_MEM_DISCARDABLE = 0x02000000

#: the usual characteristics of the usual sections
SCN_CODE = IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_MEM_READ
SCN_RDATA = IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
SCN_DATA = IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_WRITE
SCN_BSS = IMAGE_SCN_CNT_UNINITIALIZED_DATA | IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_WRITE
SCN_RELOC = IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_DISCARDABLE

DEFAULT_IMAGE_BASE_32 = 0x00400000
DEFAULT_IMAGE_BASE_64 = 0x140000000

#: the classic "This program cannot be run in DOS mode." stub, so e_lfanew is the usual 0x80
_DOS_STUB = (
    bytes.fromhex("0e1fba0e00b409cd21b8014ccd21")
    + b"This program cannot be run in DOS mode.\r\r\n$"
).ljust(64, b"\0")
_E_LFANEW = 0x80

Import: TypeAlias = "str | int"  # a function name, or an ordinal


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


@dataclass(slots=True)
class SectionSpec:
    """A section being built. ``rva`` and ``virtual_size`` are fixed when it is declared;
    ``data`` may be assigned any time before :meth:`PEWriter.build` (it must fit in
    ``virtual_size``; the rest is a zero-filled, bss-like tail).

    ``raw_pointer``/``raw_size`` override PointerToRawData/SizeOfRawData (the bytes are still
    written at ``raw_pointer``); ``rva`` and ``virtual_size`` may be reassigned freely. These
    are test hooks for malformed layouts.
    """

    name: str
    characteristics: int
    rva: int
    virtual_size: int
    data: bytes = b""
    raw_pointer: int | None = None
    raw_size: int | None = None


@dataclass(slots=True)
class ExportSpec:
    """One export. ``ordinal`` None means "next free"; a ``forwarder`` ("NTDLL.RtlFoo")
    replaces ``rva``. ``rva`` may be changed until :meth:`PEWriter.build`."""

    name: str | None
    rva: int = 0
    ordinal: int | None = None
    forwarder: str | None = None


@dataclass(slots=True)
class _Exports:
    section: SectionSpec
    dll_name: str
    entries: list[ExportSpec]
    size: int


@dataclass(slots=True, kw_only=True)
class PEWriter:
    """Lays out and serialises one PE image; see the module docstring for the two phases.

    ``max_sections`` reserves room in the headers for that many section-table entries (the
    header size must be known before the first section gets its RVA).
    """

    is_64bit: bool
    image_base: int | None = None
    section_alignment: int = 0x1000
    file_alignment: int = 0x200
    dll: bool = False
    subsystem: int = IMAGE_SUBSYSTEM_WINDOWS_CUI
    stack_reserve: int = 0x100000
    stack_commit: int = 0x1000
    heap_reserve: int = 0x100000
    heap_commit: int = 0x1000
    max_sections: int = 16
    entry_point: int | None = None  # RVA; None means the first code section
    #: no .reloc and no relocation directory (the image is then tied to its ImageBase)
    omit_relocs: bool = False
    #: set IMAGE_FILE_RELOCS_STRIPPED (normally together with ``omit_relocs``)
    relocs_stripped: bool = False
    # --- header overrides for malformed-image tests ---
    size_of_image: int | None = None
    size_of_headers: int | None = None
    characteristics: int | None = None
    dll_characteristics: int | None = None
    sections: list[SectionSpec] = field(default_factory=list, init=False)
    relocs: dict[int, int] = field(default_factory=dict, init=False)  # RVA -> IMAGE_REL_BASED_*
    _iat: dict[tuple[str, Import], int] = field(default_factory=dict, init=False, repr=False)
    _import_section: SectionSpec | None = field(default=None, init=False, repr=False)
    _iat_range: tuple[int, int] = field(default=(0, 0), init=False, repr=False)
    _import_dir: tuple[int, int] = field(default=(0, 0), init=False, repr=False)
    _exports: _Exports | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.image_base is None:
            self.image_base = DEFAULT_IMAGE_BASE_64 if self.is_64bit else DEFAULT_IMAGE_BASE_32

    # -- geometry ----------------------------------------------------------------------
    @property
    def ptr_size(self) -> int:
        return 8 if self.is_64bit else 4

    @property
    def base(self) -> int:
        if self.image_base is None:  # set by __post_init__; only a caller can unset it
            raise PEWriterError("image_base is not set")
        return self.image_base

    @property
    def header_size(self) -> int:
        """SizeOfHeaders: DOS header+stub, NT headers and ``max_sections`` table entries."""
        if self.size_of_headers is not None:
            return self.size_of_headers
        optional = 240 if self.is_64bit else 224
        end = _E_LFANEW + 4 + 20 + optional + IMAGE_SIZEOF_SECTION_HEADER * self.max_sections
        return _align_up(end, self.file_alignment)

    def va(self, rva: int) -> int:
        """The virtual address of ``rva`` when loaded at ImageBase."""
        return self.base + rva

    def pointer_bytes(self, rva: int) -> bytes:
        """An absolute pointer to ``rva`` as stored in data (register it with add_reloc)."""
        return self.va(rva).to_bytes(self.ptr_size, "little")

    def _next_rva(self) -> int:
        end = _align_up(self.header_size, self.section_alignment)
        for sec in self.sections:
            end = max(end, _align_up(sec.rva + max(sec.virtual_size, 1), self.section_alignment))
        return end

    # -- sections ----------------------------------------------------------------------
    def add_section(
        self,
        name: str,
        characteristics: int,
        *,
        size: int = 0,
        data: bytes = b"",
        rva: int | None = None,
    ) -> SectionSpec:
        """Declare a section of ``max(size, len(data))`` bytes; its RVA is final on return.

        Without ``rva`` the section goes after everything declared so far, aligned to
        SectionAlignment; with it, wherever the caller says (tests of overlaps/misalignment).
        """
        if len(name.encode()) > 8:
            raise PEWriterError(f"section name {name!r} is longer than 8 bytes")
        spec = SectionSpec(
            name=name,
            characteristics=characteristics,
            rva=self._next_rva() if rva is None else rva,
            virtual_size=max(size, len(data)),
            data=data,
        )
        self.sections.append(spec)
        return spec

    # -- imports -----------------------------------------------------------------------
    def add_imports(
        self, imports: Mapping[str, Sequence[Import]], *, name: str = ".idata"
    ) -> SectionSpec:
        """Lay out the import directory now, so :meth:`iat_rva` answers before any code.

        Layout: the IATs of all DLLs (one contiguous IMAGE_DIRECTORY_ENTRY_IAT), the
        descriptors, the lookup tables, then hint/name entries and DLL names.
        """
        if self._import_section is not None:
            raise PEWriterError("add_imports may be called once")
        ptr = self.ptr_size
        dlls = list(imports.items())
        iat_size = sum((len(funcs) + 1) * ptr for _, funcs in dlls)
        desc_off = iat_size
        ilt_off = desc_off + 20 * (len(dlls) + 1)
        names_off = ilt_off + iat_size
        # First pass: sizes of the string area, to know the section size and RVA.
        strings = bytearray()
        name_at: dict[tuple[str, Import], int] = {}
        dll_at: dict[str, int] = {}
        for dll, funcs in dlls:
            for func in funcs:
                if isinstance(func, str):
                    name_at[(dll, func)] = len(strings)
                    strings += b"\0\0" + func.encode() + b"\0"
                    strings += b"\0" * (len(strings) % 2)
            dll_at[dll] = len(strings)
            strings += dll.encode() + b"\0"
        section = self.add_section(name, SCN_DATA, size=names_off + len(strings))
        base = section.rva
        body = bytearray(names_off) + strings
        thunk_fmt = "<Q" if self.is_64bit else "<I"
        ordinal_flag = IMAGE_ORDINAL_FLAG64 if self.is_64bit else IMAGE_ORDINAL_FLAG32
        slot = 0
        for index, (dll, funcs) in enumerate(dlls):
            first = slot
            for func in funcs:
                if isinstance(func, str):
                    thunk = base + names_off + name_at[(dll, func)]
                else:
                    thunk = ordinal_flag | func
                struct.pack_into(thunk_fmt, body, slot * ptr, thunk)
                struct.pack_into(thunk_fmt, body, ilt_off + slot * ptr, thunk)
                self._iat[(dll.lower(), func)] = base + slot * ptr
                slot += 1
            slot += 1  # the null terminator of this DLL's IAT/ILT
            struct.pack_into(
                "<5I", body, desc_off + 20 * index,
                base + ilt_off + first * ptr, 0, 0, base + names_off + dll_at[dll],
                base + first * ptr,
            )
        section.data = bytes(body)
        self._import_section = section
        self._iat_range = (base, iat_size)
        self._import_dir = (base + desc_off, 20 * (len(dlls) + 1))
        return section

    def iat_rva(self, dll: str, func: Import) -> int:
        """RVA of the IAT slot the loader fills with ``dll!func`` (``func`` int = ordinal)."""
        try:
            return self._iat[(dll.lower(), func)]
        except KeyError:
            raise UndeclaredImportError(f"{dll}!{func} was not declared with add_imports") from None

    def iat_va(self, dll: str, func: Import) -> int:
        return self.va(self.iat_rva(dll, func))

    # -- exports -----------------------------------------------------------------------
    def add_exports(
        self, dll_name: str, entries: Sequence[ExportSpec], *, name: str = ".edata"
    ) -> SectionSpec:
        """Declare the export directory; the section is sized now and filled at build()."""
        if self._exports is not None:
            raise PEWriterError("add_exports may be called once")
        items = list(entries)
        ordinals = _assign_ordinals(items)
        n_functions = max(ordinals) - min(ordinals) + 1 if ordinals else 0
        n_names = sum(1 for e in items if e.name is not None)
        strings = len(dll_name.encode()) + 1 + sum(
            len(e.name.encode()) + 1 for e in items if e.name is not None
        ) + sum(len(e.forwarder.encode()) + 1 for e in items if e.forwarder is not None)
        size = 40 + 4 * n_functions + 4 * n_names + 2 * n_names + strings
        section = self.add_section(name, SCN_RDATA, size=size)
        self._exports = _Exports(section, dll_name, items, size)
        return section

    def _export_bytes(self, exports: _Exports) -> bytes:
        rva = exports.section.rva
        items = exports.entries
        ordinals = _assign_ordinals(items)
        base = min(ordinals) if ordinals else 1
        n_functions = max(ordinals) - base + 1 if ordinals else 0
        named = sorted(
            (e.name.encode(), o - base)
            for e, o in zip(items, ordinals, strict=True)
            if e.name is not None
        )
        eat_off = 40
        names_off = eat_off + 4 * n_functions
        ords_off = names_off + 4 * len(named)
        str_off = ords_off + 2 * len(named)
        body = bytearray(str_off)
        strings = bytearray(exports.dll_name.encode() + b"\0")
        for i, (name, index) in enumerate(named):
            struct.pack_into("<I", body, names_off + 4 * i, rva + str_off + len(strings))
            struct.pack_into("<H", body, ords_off + 2 * i, index)
            strings += name + b"\0"
        for entry, ordinal in zip(items, ordinals, strict=True):
            target = entry.rva
            if entry.forwarder is not None:
                target = rva + str_off + len(strings)
                strings += entry.forwarder.encode() + b"\0"
            struct.pack_into("<I", body, eat_off + 4 * (ordinal - base), target)
        struct.pack_into(
            "<IIHHIIIIIII", body, 0, 0, 0, 0, 0, rva + str_off, base, n_functions, len(named),
            rva + eat_off, rva + names_off, rva + ords_off,
        )
        return bytes(body + strings)

    # -- relocations -------------------------------------------------------------------
    def add_reloc(self, rva: int, kind: int | None = None) -> None:
        """Register an absolute address stored at ``rva`` (HIGHLOW on PE32, DIR64 on PE32+)."""
        default = IMAGE_REL_BASED_DIR64 if self.is_64bit else IMAGE_REL_BASED_HIGHLOW
        self.relocs[rva] = default if kind is None else kind

    def strip_relocs(self) -> None:
        """Build an image that can only load at its ImageBase (IMAGE_FILE_RELOCS_STRIPPED)."""
        self.omit_relocs = True
        self.relocs_stripped = True

    def _reloc_bytes(self) -> bytes:
        """IMAGE_BASE_RELOCATION blocks, one per 4 KiB page, each padded to 4 bytes. With no
        fixups at all, one empty 8-byte block keeps a (relocatable) directory present."""
        pages: dict[int, list[int]] = {}
        for rva, kind in sorted(self.relocs.items()):
            pages.setdefault(rva & ~0xFFF, []).append(kind << 12 | (rva & 0xFFF))
        if not pages:
            pages[0] = []
        out = bytearray()
        for page, entries in sorted(pages.items()):
            if len(entries) % 2:
                entries.append(IMAGE_REL_BASED_ABSOLUTE)
            out += struct.pack(f"<II{len(entries)}H", page, 8 + 2 * len(entries), *entries)
        return bytes(out)

    # -- output ------------------------------------------------------------------------
    def build(self) -> bytes:
        """Serialise the image. Deterministic: the same calls give the same bytes."""
        if self._exports is not None:
            body = self._export_bytes(self._exports)
            if len(body) != self._exports.size:
                raise PEWriterError("export entries changed size after add_exports")
            self._exports.section.data = body
        sections = list(self.sections)
        reloc_dir = (0, 0)
        if not self.omit_relocs:
            blob = self._reloc_bytes()
            reloc = SectionSpec(".reloc", SCN_RELOC, self._next_rva(), len(blob), blob)
            sections.append(reloc)
            reloc_dir = (reloc.rva, len(blob))
        if len(sections) > self.max_sections:
            raise PEWriterError(f"{len(sections)} sections exceed max_sections={self.max_sections}")
        for sec in sections:
            if len(sec.data) > sec.virtual_size:
                raise PEWriterError(f"section {sec.name!r}: {len(sec.data):#x} bytes of data "
                                 f"exceed its declared size {sec.virtual_size:#x}")

        headers_size = self.header_size
        low_alignment = self.section_alignment < 0x1000
        file_end = headers_size
        placed: list[tuple[SectionSpec, int, int]] = []  # (section, pointer, raw size)
        for sec in sections:
            raw_size = _align_up(len(sec.data), self.file_alignment) if sec.data else 0
            if sec.raw_pointer is not None:
                pointer = sec.raw_pointer
            elif not raw_size:
                pointer = 0
            elif low_alignment:
                pointer = sec.rva  # flat-mapped images keep file offset == RVA
            else:
                pointer = _align_up(file_end, self.file_alignment)
            if sec.data:
                file_end = max(file_end, pointer + raw_size)
            placed.append((sec, pointer, raw_size if sec.raw_size is None else sec.raw_size))

        out = bytearray(file_end)
        for sec, pointer, _ in placed:
            out[pointer : pointer + len(sec.data)] = sec.data
        directories = [(0, 0)] * IMAGE_NUMBEROF_DIRECTORY_ENTRIES
        directories[IMAGE_DIRECTORY_ENTRY_IMPORT] = self._import_dir
        directories[IMAGE_DIRECTORY_ENTRY_IAT] = self._iat_range
        if self._exports is not None:
            directories[IMAGE_DIRECTORY_ENTRY_EXPORT] = (
                self._exports.section.rva, self._exports.size,
            )
        directories[IMAGE_DIRECTORY_ENTRY_BASERELOC] = reloc_dir
        header = self._headers(placed, directories, reloc_dir != (0, 0))
        if len(out) < len(header):  # only with a SizeOfHeaders override that lies
            out += bytes(len(header) - len(out))
        out[: len(header)] = header
        struct.pack_into("<I", out, _E_LFANEW + 24 + 64, pe_checksum(out))
        return bytes(out)

    def _headers(
        self,
        placed: list[tuple[SectionSpec, int, int]],
        directories: list[tuple[int, int]],
        has_relocs: bool,
    ) -> bytes:
        sections = [sec for sec, _, _ in placed]
        image_end = _align_up(self.header_size, self.section_alignment)
        for sec in sections:
            image_end = max(image_end, _align_up(sec.rva + sec.virtual_size, self.section_alignment))
        code = [s for s in sections if s.characteristics & IMAGE_SCN_CNT_CODE]
        idata = [s for s in sections if s.characteristics & IMAGE_SCN_CNT_INITIALIZED_DATA]
        udata = [s for s in sections if s.characteristics & IMAGE_SCN_CNT_UNINITIALIZED_DATA]

        def total(group: list[SectionSpec]) -> int:
            return sum(_align_up(s.virtual_size, self.file_alignment) for s in group)

        entry = self.entry_point if self.entry_point is not None else (code[0].rva if code else 0)
        characteristics = IMAGE_FILE_EXECUTABLE_IMAGE
        characteristics |= IMAGE_FILE_LARGE_ADDRESS_AWARE if self.is_64bit else IMAGE_FILE_32BIT_MACHINE
        characteristics |= IMAGE_FILE_DLL if self.dll else 0
        characteristics |= IMAGE_FILE_RELOCS_STRIPPED if self.relocs_stripped else 0
        if self.characteristics is not None:
            characteristics = self.characteristics
        dll_chars = IMAGE_DLLCHARACTERISTICS_NX_COMPAT
        dll_chars |= IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE if has_relocs else 0
        if self.dll_characteristics is not None:
            dll_chars = self.dll_characteristics

        out = bytearray()
        out += struct.pack("<2s58xI", b"MZ", _E_LFANEW)
        struct.pack_into("<HHHHHHHHH", out, 2, 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8, 0)
        struct.pack_into("<H", out, 0x18, 0x40)
        out += _DOS_STUB
        machine = IMAGE_FILE_MACHINE_AMD64 if self.is_64bit else IMAGE_FILE_MACHINE_I386
        optional_size = 240 if self.is_64bit else 224
        out += b"PE\0\0" + struct.pack(
            "<HHIIIHH", machine, len(sections), 0, 0, 0, optional_size, characteristics
        )
        common = (
            14, 0, total(code), total(idata), total(udata), entry, code[0].rva if code else 0,
        )
        size_of_image = image_end if self.size_of_image is None else self.size_of_image
        tail = (
            self.section_alignment, self.file_alignment, 6, 0, 0, 0, 6, 0, 0, size_of_image,
            self.header_size, 0, self.subsystem, dll_chars,
        )
        sizes = (self.stack_reserve, self.stack_commit, self.heap_reserve, self.heap_commit)
        if self.is_64bit:
            out += struct.pack("<HBBIIIII", IMAGE_NT_OPTIONAL_HDR64_MAGIC, *common)
            out += struct.pack("<Q", self.base) + struct.pack("<IIHHHHHHIIIIHH", *tail)
            out += struct.pack("<QQQQII", *sizes, 0, IMAGE_NUMBEROF_DIRECTORY_ENTRIES)
        else:
            base_of_data = idata[0].rva if idata else 0
            out += struct.pack("<HBBIIIIII", IMAGE_NT_OPTIONAL_HDR32_MAGIC, *common, base_of_data)
            out += struct.pack("<I", self.base) + struct.pack("<IIHHHHHHIIIIHH", *tail)
            out += struct.pack("<IIIIII", *sizes, 0, IMAGE_NUMBEROF_DIRECTORY_ENTRIES)
        for va, size in directories:
            out += struct.pack("<II", va, size)
        for sec, pointer, raw_size in placed:
            out += struct.pack(
                "<8sIIIIIIHHI", sec.name.encode(), sec.virtual_size, sec.rva, raw_size,
                pointer, 0, 0, 0, 0, sec.characteristics,
            )
        return bytes(out)


def _assign_ordinals(entries: list[ExportSpec]) -> list[int]:
    """Explicit ordinals stay; the others take the lowest free ordinals from 1 up."""
    taken = {e.ordinal for e in entries if e.ordinal is not None}
    result: list[int] = []
    candidate = 1
    for entry in entries:
        if entry.ordinal is not None:
            result.append(entry.ordinal)
            continue
        while candidate in taken:
            candidate += 1
        taken.add(candidate)
        result.append(candidate)
    return result


def pe_checksum(image: bytes | bytearray) -> int:
    """``imagehlp!CheckSumMappedFile``: 16-bit one's-complement sum plus the file length,
    with the CheckSum field itself counted as zero."""
    checksum_at = int.from_bytes(image[0x3C:0x40], "little") + 24 + 64
    padded = bytes(image) + b"\0" * (len(image) % 2)
    words = struct.unpack(f"<{len(padded) // 2}H", padded)
    total: int = sum(words) - sum(words[checksum_at // 2 : checksum_at // 2 + 2])
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total + len(image)
