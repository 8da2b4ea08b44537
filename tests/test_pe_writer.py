"""Tests for the PE writer, checked against pefile (an independent parser), not against our
own loader: layout, imports/exports/relocations, the escape hatches, determinism.

pefile is run with ``fast_load=True`` then ``full_load()``: that parses every directory but
skips the byte-histogram heuristic ("Byte 0x00 makes up 60% of the file") which any small,
mostly zero-padded image trips and which says nothing about its structure.
"""

from __future__ import annotations

import pefile
import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks

from emulator_mem.pe.constants import (
    IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE,
    IMAGE_FILE_DLL,
    IMAGE_FILE_MACHINE_AMD64,
    IMAGE_FILE_MACHINE_I386,
    IMAGE_FILE_RELOCS_STRIPPED,
    IMAGE_REL_BASED_DIR64,
    IMAGE_REL_BASED_HIGHLOW,
    IMAGE_SUBSYSTEM_WINDOWS_CUI,
)
from emulator_mem.pe.writer import (
    SCN_BSS,
    SCN_CODE,
    SCN_DATA,
    SCN_RDATA,
    ExportSpec,
    PEWriter,
    SectionSpec,
    pe_checksum,
)

IMPORTS: dict[str, list[str | int]] = {
    "kernel32.dll": ["GetStdHandle", "WriteFile", "ExitProcess"],
    "ntdll.dll": ["RtlAllocateHeap", 17],
}


def load(data: bytes) -> pefile.PE:
    pe = pefile.PE(data=data, fast_load=True)
    pe.full_load()
    assert pe.get_warnings() == []
    return pe


def program(is_64bit: bool) -> tuple[PEWriter, dict[str, SectionSpec]]:
    """A small console program: code calls through the IAT and loads a relocated pointer."""
    w = PEWriter(is_64bit=is_64bit)
    text = w.add_section(".text", SCN_CODE, size=0x100)
    rdata = w.add_section(".rdata", SCN_RDATA, size=0x80)
    data = w.add_section(".data", SCN_DATA, size=0x2100)  # a page and more of bss tail
    bss = w.add_section(".bss", SCN_BSS, size=0x1800)
    w.add_imports(IMPORTS)
    # IAT addresses are known now, before any code exists.
    exit_slot = w.iat_va("kernel32.dll", "ExitProcess")
    rdata.data = b"hello, world\0"
    data.data = w.pointer_bytes(rdata.rva)
    w.add_reloc(data.rva)
    if is_64bit:
        # keystone mis-encodes "mov reg, [abs64]" (RIP-relative with the absolute
        # displacement); "lea reg, [abs]" and "call [abs]" come out right
        asm = (f"sub rsp, 0x28; lea rax, [{w.va(data.rva)}]; mov rcx, qword ptr [rax]; "
               f"call qword ptr [{exit_slot}]")
        code = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(asm, w.va(text.rva))[0])
    else:
        asm = f"mov ecx, dword ptr [{w.va(data.rva)}]; push 0; call dword ptr [{exit_slot}]"
        code = bytes(Ks(KS_ARCH_X86, KS_MODE_32).asm(asm, w.va(text.rva))[0])
        w.add_reloc(text.rva + 2)  # mov ecx, [abs32]: 8B 0D <abs32>
        w.add_reloc(text.rva + 6 + 2 + 2)  # call [abs32]: FF 15 <abs32> after push 0 (6A 00)
    text.data = code
    w.entry_point = text.rva
    return w, {".text": text, ".rdata": rdata, ".data": data, ".bss": bss}


@pytest.mark.parametrize("is_64bit", [False, True])
def test_headers_and_layout(is_64bit: bool) -> None:
    w, secs = program(is_64bit)
    data = w.build()
    pe = load(data)
    fh, oh = pe.FILE_HEADER, pe.OPTIONAL_HEADER
    assert fh.Machine == (IMAGE_FILE_MACHINE_AMD64 if is_64bit else IMAGE_FILE_MACHINE_I386)
    assert oh.Magic == (0x20B if is_64bit else 0x10B)
    assert fh.TimeDateStamp == 0 and not fh.Characteristics & IMAGE_FILE_DLL
    assert oh.ImageBase == (0x140000000 if is_64bit else 0x400000)
    assert (oh.SectionAlignment, oh.FileAlignment) == (0x1000, 0x200)
    assert oh.Subsystem == IMAGE_SUBSYSTEM_WINDOWS_CUI
    assert oh.DllCharacteristics & IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE
    assert (oh.SizeOfStackReserve, oh.SizeOfStackCommit) == (0x100000, 0x1000)
    assert (oh.SizeOfHeapReserve, oh.SizeOfHeapCommit) == (0x100000, 0x1000)
    assert oh.AddressOfEntryPoint == secs[".text"].rva
    assert pe.verify_checksum() and oh.CheckSum == pe_checksum(data)
    names = [s.Name.rstrip(b"\0").decode() for s in pe.sections]
    assert names == [".text", ".rdata", ".data", ".bss", ".idata", ".reloc"]
    rvas = [s.VirtualAddress for s in pe.sections]
    assert rvas == sorted(rvas) and all(rva % 0x1000 == 0 for rva in rvas)
    last = pe.sections[-1]
    assert oh.SizeOfImage == -(-(last.VirtualAddress + last.Misc_VirtualSize) // 0x1000) * 0x1000
    assert oh.SizeOfHeaders % 0x200 == 0 and oh.SizeOfHeaders <= pe.sections[0].PointerToRawData
    for s in pe.sections:
        assert s.PointerToRawData % 0x200 == 0 and s.SizeOfRawData % 0x200 == 0
        assert s.PointerToRawData + s.SizeOfRawData <= len(data)
    bss = pe.sections[3]
    assert (bss.SizeOfRawData, bss.PointerToRawData, bss.Misc_VirtualSize) == (0, 0, 0x1800)
    data_sec = pe.sections[2]
    assert data_sec.Misc_VirtualSize == 0x2100 and data_sec.SizeOfRawData == 0x200


def test_deterministic() -> None:
    for is_64bit in (False, True):
        first = program(is_64bit)[0].build()
        writer, _ = program(is_64bit)
        assert writer.build() == first and writer.build() == first


@pytest.mark.parametrize("is_64bit", [False, True])
def test_imports(is_64bit: bool) -> None:
    w, _ = program(is_64bit)
    pe = load(w.build())
    seen = {}
    for entry in pe.DIRECTORY_ENTRY_IMPORT:
        for imp in entry.imports:
            func = imp.name.decode() if imp.name else imp.ordinal
            seen[(entry.dll.decode(), func)] = imp.address
    expected = {
        (dll, func): w.iat_va(dll, func) for dll, funcs in IMPORTS.items() for func in funcs
    }
    assert seen == expected
    slot = 8 if is_64bit else 4
    assert w.iat_rva("kernel32.dll", "WriteFile") == w.iat_rva("KERNEL32.DLL", "GetStdHandle") + slot
    iat_dir = pe.OPTIONAL_HEADER.DATA_DIRECTORY[12]
    assert iat_dir.VirtualAddress == w.iat_rva("kernel32.dll", "GetStdHandle")
    with pytest.raises(KeyError):
        w.iat_rva("kernel32.dll", "VirtualAlloc")


@pytest.mark.parametrize("is_64bit", [False, True])
def test_code_references_iat_and_relocated_data(is_64bit: bool) -> None:
    w, secs = program(is_64bit)
    pe = load(w.build())
    code = secs[".text"].data
    exit_slot = w.iat_va("kernel32.dll", "ExitProcess")
    if is_64bit:
        call = code.index(b"\xff\x15")  # call [rip+disp32]
        disp = int.from_bytes(code[call + 2 : call + 6], "little", signed=True)
        assert w.va(secs[".text"].rva) + call + 6 + disp == exit_slot
        kind = IMAGE_REL_BASED_DIR64
    else:
        assert code[10:14] == exit_slot.to_bytes(4, "little")
        kind = IMAGE_REL_BASED_HIGHLOW
    fixups = sorted(
        (e.rva, e.type) for block in pe.DIRECTORY_ENTRY_BASERELOC for e in block.entries if e.type
    )
    assert fixups == sorted((rva, kind) for rva in w.relocs)
    assert secs[".data"].data == (w.va(secs[".rdata"].rva)).to_bytes(w.ptr_size, "little")


def test_exports_dll() -> None:
    w = PEWriter(is_64bit=True, dll=True)
    text = w.add_section(".text", SCN_CODE, data=b"\xc3" * 0x20)
    entries = [
        ExportSpec("Zeta", text.rva + 0x10),
        ExportSpec("Alpha", text.rva),
        ExportSpec(None, text.rva + 4, ordinal=9),
        ExportSpec("Forward", forwarder="NTDLL.RtlAllocateHeap"),
    ]
    w.add_exports("sample.dll", entries)
    entries[1].rva = text.rva + 1  # RVAs may change until build()
    pe = load(w.build())
    assert pe.FILE_HEADER.Characteristics & IMAGE_FILE_DLL
    exp = pe.DIRECTORY_ENTRY_EXPORT
    assert exp.name == b"sample.dll"
    got = {(s.name, s.ordinal, s.address, s.forwarder) for s in exp.symbols}
    fwd_rva = next(s.address for s in exp.symbols if s.forwarder)
    assert got == {
        (b"Zeta", 1, text.rva + 0x10, None),
        (b"Alpha", 2, text.rva + 1, None),
        (None, 9, text.rva + 4, None),
        (b"Forward", 3, fwd_rva, b"NTDLL.RtlAllocateHeap"),
    }
    export_dir = pe.OPTIONAL_HEADER.DATA_DIRECTORY[0]
    assert export_dir.VirtualAddress <= fwd_rva < export_dir.VirtualAddress + export_dir.Size


def test_strip_and_omit_relocs() -> None:
    w, _ = program(False)
    w.strip_relocs()
    pe = load(w.build())
    assert pe.FILE_HEADER.Characteristics & IMAGE_FILE_RELOCS_STRIPPED
    assert not pe.OPTIONAL_HEADER.DllCharacteristics & IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE
    assert pe.OPTIONAL_HEADER.DATA_DIRECTORY[5].Size == 0
    assert [s.Name.rstrip(b"\0") for s in pe.sections][-1] == b".idata"


def test_no_fixups_still_relocatable() -> None:
    """Position-independent code has no fixups; a (dummy) .reloc keeps it movable."""
    w = PEWriter(is_64bit=True)
    w.add_section(".text", SCN_CODE, data=b"\xc3")
    pe = load(w.build())
    reloc = pe.OPTIONAL_HEADER.DATA_DIRECTORY[5]
    assert reloc.Size == 8
    assert pe.OPTIONAL_HEADER.DllCharacteristics & IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE


def test_low_alignment_layout() -> None:
    w = PEWriter(is_64bit=False, section_alignment=0x200, file_alignment=0x200)
    text = w.add_section(".text", SCN_CODE, data=b"\xc3" * 0x30)
    data = w.add_section(".data", SCN_DATA, data=b"abc", size=0x500)
    pe = load(w.build())
    for s in pe.sections:
        assert s.PointerToRawData == s.VirtualAddress and s.VirtualAddress % 0x200 == 0
    assert (text.rva, data.rva) == (0x400, 0x600)
    assert pe.OPTIONAL_HEADER.SizeOfImage % 0x200 == 0


def test_escape_hatches() -> None:
    w = PEWriter(is_64bit=False)
    a = w.add_section(".a", SCN_CODE, data=b"A" * 0x1800)
    b = w.add_section(".b", SCN_DATA, data=b"B" * 0x10, rva=a.rva + 0x1000)  # overlaps .a
    c = w.add_section(".c", SCN_DATA, data=b"C" * 0x10, rva=0x5800)  # misaligned RVA
    c.raw_pointer = 0x3010  # misaligned raw pointer
    w.size_of_image = 0x20000
    w.omit_relocs = True
    data = w.build()
    pe = pefile.PE(data=data, fast_load=True)  # pefile rightly warns; we only inspect
    by_name = {s.Name.rstrip(b"\0"): s for s in pe.sections}
    assert by_name[b".b"].VirtualAddress == b.rva == 0x2000
    assert by_name[b".c"].VirtualAddress == 0x5800
    assert by_name[b".c"].PointerToRawData == 0x3010 and data[0x3010:0x3020] == b"C" * 0x10
    assert pe.OPTIONAL_HEADER.SizeOfImage == 0x20000
    assert pe.OPTIONAL_HEADER.DATA_DIRECTORY[5].Size == 0
    assert not pe.FILE_HEADER.Characteristics & IMAGE_FILE_RELOCS_STRIPPED


def test_misuse_is_refused() -> None:
    w = PEWriter(is_64bit=False, max_sections=2)
    sec = w.add_section(".text", SCN_CODE, size=0x10)
    sec.data = b"\x90" * 0x11
    with pytest.raises(ValueError, match="exceed its declared size"):
        w.build()
    sec.data = b"\x90"
    with pytest.raises(ValueError, match="max_sections"):
        w.add_section(".data", SCN_DATA, size=1)
        w.build()  # .text, .data and .reloc
    with pytest.raises(ValueError):
        w.add_section(".waytoolongname", SCN_DATA)
    w.add_imports({"kernel32.dll": ["ExitProcess"]})
    with pytest.raises(ValueError):
        w.add_imports({"user32.dll": ["MessageBoxA"]})
