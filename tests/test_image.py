"""Tests for the loader view of PE images: parse_image, ImageLayout.build, page_protections.

Every image is generated with pe_writer. Malformed images are made by editing generated ones
(through pefile's field write-back or the writer's escape hatches), and hypothesis mutates
them further: whatever the bytes, parse_image and build either succeed or raise
ImageFormatError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pefile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_ECX, UC_X86_REG_ESP, UC_X86_REG_RCX, UC_X86_REG_RSP

from emulator_mem import constants as C
from emulator_mem.errors import ImageFormatError, InvalidParameterError
from emulator_mem.pe.constants import (
    IMAGE_REL_BASED_HIGH,
    IMAGE_REL_BASED_HIGHADJ,
    IMAGE_REL_BASED_LOW,
    IMAGE_SCN_MEM_EXECUTE,
    IMAGE_SCN_MEM_READ,
    IMAGE_SCN_MEM_SHARED,
    IMAGE_SCN_MEM_WRITE,
)
from emulator_mem.pe.image import (
    ImageExport,
    ImageFixup,
    ImageImport,
    _apply_fixups,
    parse_image,
    section_protect,
)
from emulator_mem.pe.writer import (
    IMAGE_SCN_CNT_CODE,
    SCN_BSS,
    SCN_CODE,
    SCN_DATA,
    SCN_RDATA,
    ExportSpec,
    PEWriter,
    SectionSpec,
)

X, R, W = IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE


def program(is_64bit: bool) -> tuple[PEWriter, dict[str, SectionSpec]]:
    """Code loads a relocated pointer into ecx/rcx and calls ExitProcess through the IAT."""
    w = PEWriter(is_64bit=is_64bit)
    text = w.add_section(".text", SCN_CODE, size=0x100)
    rdata = w.add_section(".rdata", SCN_RDATA, size=0x40)
    data = w.add_section(".data", SCN_DATA, size=0x2100)  # raw 0x200, then a zero tail
    bss = w.add_section(".bss", SCN_BSS, size=0x1800)
    w.add_imports({"kernel32.dll": ["ExitProcess", "GetStdHandle"], "ntdll.dll": [42]})
    rdata.data = b"hello\0"
    data.data = w.pointer_bytes(rdata.rva) + b"\xaa" * 0x40
    w.add_reloc(data.rva)
    exit_slot = w.iat_va("kernel32.dll", "ExitProcess")
    if is_64bit:
        # keystone mis-encodes "mov reg, [abs64]" as RIP-relative with the absolute
        # displacement; "lea" and "call [abs]" are encoded correctly
        asm = (f"lea rax, [{w.va(data.rva)}]; mov rcx, qword ptr [rax]; "
               f"call qword ptr [{exit_slot}]")
        text.data = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(asm, w.va(text.rva))[0])
    else:
        asm = f"mov ecx, dword ptr [{w.va(data.rva)}]; call dword ptr [{exit_slot}]"
        text.data = bytes(Ks(KS_ARCH_X86, KS_MODE_32).asm(asm, w.va(text.rva))[0])
        w.add_reloc(text.rva + 2)  # 8B 0D <abs32>
        w.add_reloc(text.rva + 8)  # FF 15 <abs32>
    w.add_exports("prog.exe", [ExportSpec("Start", text.rva), ExportSpec(None, text.rva, 5),
                               ExportSpec("Heap", forwarder="NTDLL.RtlAllocateHeap")])
    w.entry_point = text.rva
    return w, {".text": text, ".rdata": rdata, ".data": data, ".bss": bss}


SAMPLES = {is_64bit: program(is_64bit)[0].build() for is_64bit in (False, True)}


def edited(is_64bit: bool, edit: Callable[[pefile.PE], None]) -> bytes:
    """A generated image with header fields changed through pefile."""
    pe = pefile.PE(data=SAMPLES[is_64bit], fast_load=True)
    edit(pe)
    return bytes(pe.write())


def section(pe: pefile.PE, name: bytes) -> pefile.SectionStructure:
    return next(s for s in pe.sections if s.Name.rstrip(b"\0") == name)


# --- protections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chars", "protect"),
    [
        (0, C.PAGE_NOACCESS),
        (X, C.PAGE_EXECUTE),
        (R, C.PAGE_READONLY),
        (X | R, C.PAGE_EXECUTE_READ),
        (W, C.PAGE_WRITECOPY),
        (R | W, C.PAGE_WRITECOPY),
        (X | W, C.PAGE_EXECUTE_WRITECOPY),
        (X | R | W, C.PAGE_EXECUTE_WRITECOPY),
        (IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_SHARED | R, C.PAGE_READONLY),
    ],
)
def test_section_protect(chars: int, protect: int) -> None:
    assert section_protect(chars) == protect


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("is_64bit", [False, True])
def test_parse_round_trip(is_64bit: bool) -> None:
    w, secs = program(is_64bit)
    layout = parse_image(w.build())
    assert layout.is_64bit is is_64bit
    assert layout.machine == (0x8664 if is_64bit else 0x14C)
    assert layout.image_base == w.base and layout.entry_point_rva == secs[".text"].rva
    assert layout.relocatable and layout.subsystem == 3
    assert (layout.stack_reserve, layout.stack_commit) == (0x100000, 0x1000)
    assert (layout.heap_reserve, layout.heap_commit) == (0x100000, 0x1000)
    assert layout.size_of_image == 0xB000 and layout.size_of_headers == w.header_size
    names = [(s.name, s.virtual_address, s.virtual_size, s.raw_size) for s in layout.sections]
    assert names[:4] == [
        (".text", 0x1000, 0x100, 0x200),
        (".rdata", 0x2000, 0x40, 0x200),
        (".data", 0x3000, 0x2100, 0x200),
        (".bss", 0x6000, 0x1800, 0),
    ]
    assert [s.name for s in layout.sections[4:]] == [".idata", ".edata", ".reloc"]
    ptr = 8 if is_64bit else 4
    assert layout.imports == [
        ImageImport("kernel32.dll", "ExitProcess", None, w.iat_rva("kernel32.dll", "ExitProcess")),
        ImageImport("kernel32.dll", "GetStdHandle", None, w.iat_rva("kernel32.dll", "ExitProcess")
                    + ptr),
        ImageImport("ntdll.dll", None, 42, w.iat_rva("ntdll.dll", 42)),
    ]
    text = secs[".text"].rva
    forwarder = next(e.rva for e in layout.exports if e.forwarder)
    assert layout.exports == [
        ImageExport("Start", 1, text, None),
        ImageExport("Heap", 2, forwarder, "NTDLL.RtlAllocateHeap"),
        ImageExport(None, 5, text, None),
    ]


@pytest.mark.parametrize("is_64bit", [False, True])
def test_build_at_preferred_base(is_64bit: bool) -> None:
    w, secs = program(is_64bit)
    data = w.build()
    layout = parse_image(data)
    image = layout.build(layout.image_base)
    assert len(image) == layout.size_of_image
    assert image[: layout.size_of_headers] == data[: layout.size_of_headers]
    assert not any(image[layout.size_of_headers : 0x1000])
    for spec in secs.values():
        assert image[spec.rva : spec.rva + len(spec.data)] == spec.data
    dsec = secs[".data"]
    # raw data is 0x200 bytes; the rest up to VirtualSize (and the page) is zero
    assert not any(image[dsec.rva + len(dsec.data) : dsec.rva + 0x3000])
    assert not any(image[secs[".bss"].rva : secs[".bss"].rva + 0x2000])
    pointer = int.from_bytes(image[dsec.rva : dsec.rva + 8 if is_64bit else dsec.rva + 4], "little")
    assert pointer == w.va(secs[".rdata"].rva)
    # the IAT still holds the lookup thunks until the loader binds it
    slot = w.iat_rva("ntdll.dll", 42)
    flag = 1 << (63 if is_64bit else 31)
    assert int.from_bytes(image[slot : slot + (8 if is_64bit else 4)], "little") == flag | 42


@pytest.mark.parametrize("is_64bit", [False, True])
def test_build_relocated(is_64bit: bool) -> None:
    w, secs = program(is_64bit)
    layout = parse_image(w.build())
    at_base = layout.build(layout.image_base)
    new_base = layout.image_base + 0x7FFF0000 if is_64bit else 0x10000000
    image = layout.build(new_base)
    size = 8 if is_64bit else 4
    d = secs[".data"].rva
    assert int.from_bytes(image[d : d + size], "little") == new_base + secs[".rdata"].rva
    changed = {i for i in range(len(image)) if image[i] != at_base[i]}
    fixed = {d + i for i in range(size)}
    if not is_64bit:
        t = secs[".text"].rva
        fixed |= {t + 2 + i for i in range(4)} | {t + 8 + i for i in range(4)}
        slot = new_base + w.iat_rva("kernel32.dll", "ExitProcess")
        assert image[t + 8 : t + 12] == slot.to_bytes(4, "little")
    assert changed <= fixed and changed


@pytest.mark.parametrize("is_64bit", [False, True])
def test_relocated_image_runs(is_64bit: bool) -> None:
    """End to end: map the relocated image, bind one IAT slot, run to the import."""
    w, secs = program(is_64bit)
    layout = parse_image(w.build())
    base, stub, stack = 0x10000000, 0x20000000, 0x30000000
    image = layout.build(base)
    size = 8 if is_64bit else 4
    slot = w.iat_rva("kernel32.dll", "ExitProcess")
    image[slot : slot + size] = stub.to_bytes(size, "little")
    uc = Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32)
    uc.mem_map(base, layout.size_of_image)
    uc.mem_write(base, bytes(image))
    uc.mem_map(stub, 0x1000)
    uc.mem_map(stack, 0x10000)
    uc.reg_write(UC_X86_REG_RSP if is_64bit else UC_X86_REG_ESP, stack + 0x8000)
    uc.emu_start(base + layout.entry_point_rva, stub)
    pointer = uc.reg_read(UC_X86_REG_RCX if is_64bit else UC_X86_REG_ECX)
    assert pointer == base + secs[".rdata"].rva
    assert bytes(uc.mem_read(pointer, 6)) == b"hello\0"


def test_build_base_checks() -> None:
    layout = parse_image(SAMPLES[False])
    with pytest.raises(InvalidParameterError):
        layout.build(layout.image_base + 0x10)
    with pytest.raises(ImageFormatError):
        layout.build(0xFFFFF000)  # a PE32 image cannot straddle 4 GiB


def test_relocs_stripped_cannot_move() -> None:
    for configure in (PEWriter.strip_relocs, lambda w: setattr(w, "omit_relocs", True),
                      lambda w: setattr(w, "relocs_stripped", True)):
        w, _ = program(False)
        configure(w)
        layout = parse_image(w.build())
        assert not layout.relocatable
        layout.build(layout.image_base)
        with pytest.raises(ImageFormatError):
            layout.build(0x10000000)


def test_relocation_arithmetic() -> None:
    """HIGH/LOW/HIGHADJ as ntdll applies them: HIGHADJ rounds with the signed low half."""
    image = bytearray(struct.pack("<HHHI", 0x1234, 0x5678, 0x1234, 0xFFFFFFF0))
    fixups = [ImageFixup(0, IMAGE_REL_BASED_HIGH), ImageFixup(2, IMAGE_REL_BASED_LOW),
              ImageFixup(4, IMAGE_REL_BASED_HIGHADJ, 0x5678), ImageFixup(6, 3)]
    _apply_fixups(image, fixups, 0x18000)
    assert struct.unpack("<HHHI", image) == (0x1235, 0xD678, 0x1236, 0x17FF0)
    _apply_fixups(image, [ImageFixup(0, IMAGE_REL_BASED_LOW)], -0x1236)
    assert struct.unpack_from("<H", image) == (0xFFFF,)


# --- layout decisions ---------------------------------------------------------------------


def test_page_protections_standard() -> None:
    layout = parse_image(SAMPLES[True])
    assert layout.page_protections() == [
        (0x0000, 0x1000, C.PAGE_READONLY),
        (0x1000, 0x1000, C.PAGE_EXECUTE_READ),
        (0x2000, 0x1000, C.PAGE_READONLY),
        (0x3000, 0x6000, C.PAGE_WRITECOPY),  # .data, .bss and .idata merge
        (0x9000, 0x2000, C.PAGE_READONLY),  # .edata, .reloc
    ]


def test_uncovered_pages_are_noaccess() -> None:
    w = PEWriter(is_64bit=False, section_alignment=0x10000)
    w.add_section(".text", SCN_CODE, data=b"\xc3", size=0x1100)
    w.size_of_image = 0x40000  # a tail no section covers
    layout = parse_image(w.build())
    assert layout.page_protections() == [
        (0x0, 0x1000, C.PAGE_READONLY),
        (0x1000, 0xF000, C.PAGE_NOACCESS),
        (0x10000, 0x2000, C.PAGE_EXECUTE_READ),
        (0x12000, 0xE000, C.PAGE_NOACCESS),
        (0x20000, 0x1000, C.PAGE_READONLY),
        (0x21000, 0x1F000, C.PAGE_NOACCESS),
    ]
    image = layout.build(layout.image_base)
    assert not any(image[0x12000:0x20000]) and not any(image[0x21000:])


def test_overlapping_sections_later_wins() -> None:
    w = PEWriter(is_64bit=True)
    late = w.add_section(".late", SCN_DATA, data=b"L" * 0x10, size=0x800, rva=0x2000)
    early = w.add_section(".early", SCN_CODE, data=b"E" * 0x1800, rva=0x1000)
    last = w.add_section(".last", SCN_RDATA, data=b"Z" * 0x10, rva=0x2000)
    del late, early, last
    layout = parse_image(w.build())
    image = layout.build(layout.image_base)
    # table order decides: .early paints over .late, then .last paints over .early
    assert image[0x1000:0x2000] == b"E" * 0x1000
    assert image[0x2000:0x2010] == b"Z" * 0x10 and not any(image[0x2010:0x3000])
    assert layout.page_protections() == [
        (0x0, 0x1000, C.PAGE_READONLY),
        (0x1000, 0x1000, C.PAGE_EXECUTE_READ),
        (0x2000, 0x2000, C.PAGE_READONLY),  # .last, then .reloc
    ]


def test_low_alignment_image() -> None:
    w = PEWriter(is_64bit=False, section_alignment=0x200, file_alignment=0x200)
    text = w.add_section(".text", SCN_CODE, data=b"\xc3" * 0x30)
    data = w.add_section(".data", SCN_DATA, data=b"abc", size=0x500)
    w.add_reloc(data.rva)
    layout = parse_image(w.build())
    assert layout.low_alignment and layout.size_of_image == 0x1000
    assert layout.page_protections() == [(0, 0x1000, C.PAGE_EXECUTE_WRITECOPY)]
    image = layout.build(layout.image_base)
    assert image[text.rva : text.rva + 0x30] == b"\xc3" * 0x30
    assert image[data.rva : data.rva + 4] == b"abc\0"


def test_low_alignment_rules() -> None:
    w = PEWriter(is_64bit=False, section_alignment=0x200, file_alignment=0x100)
    w.add_section(".text", SCN_CODE, data=b"\xc3")
    with pytest.raises(ImageFormatError, match="FileAlignment"):
        parse_image(w.build())
    w = PEWriter(is_64bit=False, section_alignment=0x200, file_alignment=0x200)
    w.add_section(".text", SCN_CODE, data=b"\xc3").raw_pointer = 0x600
    with pytest.raises(ImageFormatError, match="file offset"):
        parse_image(w.build())


def test_misaligned_section_rva_is_refused() -> None:
    w = PEWriter(is_64bit=False)
    w.add_section(".text", SCN_CODE, data=b"\xc3", rva=0x1800)
    with pytest.raises(ImageFormatError, match="not SectionAlignment-aligned"):
        parse_image(w.build())


def test_misaligned_raw_pointer_is_rounded_down() -> None:
    """The loader (and pefile) read raw data from PointerToRawData & ~0x1FF."""
    w = PEWriter(is_64bit=False)
    w.add_section(".text", SCN_CODE, data=b"T" * 0x200)
    data = w.add_section(".data", SCN_DATA, data=b"D" * 0x200)
    data.raw_pointer = 0x610
    file = w.build()
    layout = parse_image(file)
    image = layout.build(layout.image_base)
    assert image[data.rva : data.rva + 0x200] == bytes(0x10) + b"D" * 0x1F0
    assert section(pefile.PE(data=file), b".data").get_data()[:0x200] == image[0x2000:0x2200]


# --- validation ---------------------------------------------------------------------------


def _set(obj_name: str, field: str, value: int) -> Callable[[pefile.PE], None]:
    def edit(pe: pefile.PE) -> None:
        setattr(getattr(pe, obj_name), field, value)

    return edit


def _set_section(name: bytes, field: str, value: int) -> Callable[[pefile.PE], None]:
    return lambda pe: setattr(section(pe, name), field, value)


def _set_dir(index: int, va: int | None = None, size: int | None = None) -> Callable[
    [pefile.PE], None
]:
    def edit(pe: pefile.PE) -> None:
        entry = pe.OPTIONAL_HEADER.DATA_DIRECTORY[index]
        entry.VirtualAddress = entry.VirtualAddress if va is None else va
        entry.Size = entry.Size if size is None else size

    return edit


BAD_EDITS: dict[str, Callable[[pefile.PE], None]] = {
    "machine mismatch": _set("FILE_HEADER", "Machine", 0x8664),
    "foreign machine": _set("FILE_HEADER", "Machine", 0xAA64),
    "bad magic": _set("OPTIONAL_HEADER", "Magic", 0x107),
    "SizeOfImage 0": _set("OPTIONAL_HEADER", "SizeOfImage", 0),
    "SizeOfImage huge": _set("OPTIONAL_HEADER", "SizeOfImage", 0x80001000),
    "SizeOfImage short": _set("OPTIONAL_HEADER", "SizeOfImage", 0x8000),
    "SizeOfHeaders beyond file": _set("OPTIONAL_HEADER", "SizeOfHeaders", 0x100000),
    "SizeOfHeaders below table": _set("OPTIONAL_HEADER", "SizeOfHeaders", 0x100),
    "optional header short": _set("FILE_HEADER", "SizeOfOptionalHeader", 0x60),
    "ImageBase unaligned": _set("OPTIONAL_HEADER", "ImageBase", 0x401000),
    "entry outside": _set("OPTIONAL_HEADER", "AddressOfEntryPoint", 0x20000),
    "bad alignment": _set("OPTIONAL_HEADER", "SectionAlignment", 0x1800),
    "section beyond image": _set_section(b".reloc", "Misc_VirtualSize", 0x2000),
    "raw data beyond file": _set_section(b".reloc", "SizeOfRawData", 0x400),
    "raw pointer beyond file": _set_section(b".text", "PointerToRawData", 0x100000),
    "export dir outside": _set_dir(0, size=0x100000),
    "export dir tiny": _set_dir(0, size=8),
    "import dir outside": _set_dir(1, va=0x7FFFFFF0),
    "reloc dir outside": _set_dir(5, va=0xAFF0),
    "reloc size not blockwise": _set_dir(5, size=6),
}


@pytest.mark.parametrize("name", list(BAD_EDITS))
def test_malformed_headers(name: str) -> None:
    with pytest.raises(ImageFormatError):
        parse_image(edited(False, BAD_EDITS[name]))


def test_image_base_overflow_64() -> None:
    def edit(pe: pefile.PE) -> None:
        pe.OPTIONAL_HEADER.ImageBase = 0xFFFFFFFFFFFF0000
        pe.OPTIONAL_HEADER.SizeOfImage = 0x20000

    with pytest.raises(ImageFormatError, match="overflows"):
        parse_image(edited(True, edit))


@pytest.mark.parametrize(
    "data", [b"", b"MZ", b"ZM" + SAMPLES[False][2:], SAMPLES[False][:0x80] + b"PX\0\0"
             + SAMPLES[False][0x84:], bytes(4096)],
)
def test_not_pe(data: bytes) -> None:
    with pytest.raises(ImageFormatError):
        parse_image(data)


def _descriptor(**changes: int) -> Callable[[bytes], bytes]:
    """Rewrite fields of the first IMAGE_IMPORT_DESCRIPTOR, keeping the others."""
    fields = ("OriginalFirstThunk", "TimeDateStamp", "ForwarderChain", "Name", "FirstThunk")

    def rewrite(old: bytes) -> bytes:
        values = dict(zip(fields, struct.unpack_from("<5I", old), strict=True))
        values.update(changes)
        return struct.pack("<5I", *values.values())

    return rewrite


def _const(value: bytes) -> Callable[[bytes], bytes]:
    return lambda old: value


@pytest.mark.parametrize(
    ("index", "rewrite"),
    [
        (5, _const(struct.pack("<II", 0x3000, 7))),  # block smaller than its header
        (5, _const(struct.pack("<II", 0x3000, 11))),  # odd block size
        (5, _const(struct.pack("<II", 0x3000, 0x100000))),  # block beyond the directory
        (5, _const(struct.pack("<IIH", 0x3000, 10, 0x5000))),  # type 5 is not x86/x64
        (5, _const(struct.pack("<IIH", 0x7FFF0000, 10, 0x3000))),  # fixup outside the image
        (5, _const(struct.pack("<IIH", 0x3000, 10, 0x4000))),  # HIGHADJ without its slot
        (1, _descriptor(Name=0x7FFFFF00)),  # DLL name outside the image
        (1, _descriptor(OriginalFirstThunk=0x7FFFFF00)),  # lookup table outside
        (1, _descriptor(FirstThunk=0xAFFE)),  # IAT runs off the end of the image
        (0, _const(struct.pack("<IIHHIIII", 0, 0, 0, 0, 0, 1, 0x20000, 0))),  # too many
        (0, _const(struct.pack("<IIHHIIIII", 0, 0, 0, 0, 0, 1, 1, 0, 0x7FFFFFF0))),  # EAT
    ],
)
def test_malformed_directories(index: int, rewrite: Callable[[bytes], bytes]) -> None:
    data = SAMPLES[False]
    pe = pefile.PE(data=data, fast_load=True)
    offset = pe.get_offset_from_rva(pe.OPTIONAL_HEADER.DATA_DIRECTORY[index].VirtualAddress)
    new = rewrite(data[offset : offset + 20])
    with pytest.raises(ImageFormatError):
        parse_image(data[:offset] + new + data[offset + len(new) :])


def test_truncation_raises_where_pefile_does_not() -> None:
    data = SAMPLES[True]
    cut = data[: len(data) - 0x100]
    pefile.PE(data=cut)  # pefile accepts it, with a warning at most
    with pytest.raises(ImageFormatError, match="beyond the end of the file"):
        parse_image(cut)


# --- fuzzing ------------------------------------------------------------------------------


def check_robust(data: bytes) -> None:
    """parse/build/page_protections succeed or raise ImageFormatError, and nothing else."""
    try:
        layout = parse_image(data)
    except ImageFormatError:
        return
    runs = layout.page_protections()
    assert runs[0][0] == 0 and sum(size for _, size, _ in runs) == layout.size_of_image
    assert all(rva % C.PAGE_SIZE == 0 and size % C.PAGE_SIZE == 0 for rva, size, _ in runs)
    if layout.size_of_image > 1 << 24:
        return  # a flipped SizeOfImage can be 2 GiB; parsing it is the interesting part
    for base in (layout.image_base, 0x10000000 if layout.image_base != 0x10000000 else 0x20000000):
        try:
            assert len(layout.build(base)) == layout.size_of_image
        except ImageFormatError:
            pass


@pytest.mark.parametrize("is_64bit", [False, True])
def test_every_truncation_raises(is_64bit: bool) -> None:
    """The last section's raw data ends the file, so every shorter prefix is truncated."""
    data = SAMPLES[is_64bit]
    for cut in range(len(data)):
        with pytest.raises(ImageFormatError):
            parse_image(data[:cut])


FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(is_64bit=st.booleans(), data=st.data())
def test_fuzz_bit_flips(is_64bit: bool, data: st.DataObject) -> None:
    blob = bytearray(SAMPLES[is_64bit])
    header_end = 0x400
    offsets = st.one_of(st.integers(0, header_end - 1), st.integers(0, len(blob) - 1))
    for offset, bit in data.draw(st.lists(st.tuples(offsets, st.integers(0, 7)), max_size=12)):
        blob[offset] ^= 1 << bit
    check_robust(bytes(blob))


INTERESTING = [0, 1, 2, 7, 8, 0x1FF, 0x200, 0xFFF, 0x1000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@FUZZ
@given(is_64bit=st.booleans(), data=st.data())
def test_fuzz_bogus_lengths(is_64bit: bool, data: st.DataObject) -> None:
    """Overwrite dwords in the headers and directories with boundary values."""
    blob = bytearray(SAMPLES[is_64bit])
    layout = parse_image(bytes(blob))
    regions = [(0x3C, layout.size_of_headers)]
    pe = pefile.PE(data=bytes(blob), fast_load=True)
    for s in pe.sections:
        if s.Name.rstrip(b"\0") in (b".idata", b".edata", b".reloc"):
            regions.append((s.PointerToRawData, s.PointerToRawData + s.Misc_VirtualSize))
    spots = st.sampled_from(regions).flatmap(lambda r: st.integers(r[0], r[1] - 4))
    values = st.one_of(st.sampled_from(INTERESTING), st.integers(0, 0xFFFFFFFF))
    for offset, value in data.draw(st.lists(st.tuples(spots, values), min_size=1, max_size=4)):
        struct.pack_into("<I", blob, offset, value)
    check_robust(bytes(blob))


@FUZZ
@given(is_64bit=st.booleans(), cut=st.integers(0, 0x1000), tail=st.binary(max_size=64))
def test_fuzz_truncate_and_append(is_64bit: bool, cut: int, tail: bytes) -> None:
    check_robust(SAMPLES[is_64bit][:cut] + tail)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_garbage(blob: bytes) -> None:
    check_robust(b"MZ" + blob)


def test_layout_keeps_only_mapped_bytes() -> None:
    data = SAMPLES[False]
    layout = parse_image(data)
    assert layout.headers == data[: layout.size_of_headers]
    for sec in layout.sections:
        assert len(sec.data) <= sec.raw_size
    assert " headers=" not in repr(layout) and " data=" not in repr(layout.sections[0])
