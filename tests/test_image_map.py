"""PE images mapped like the Windows loader (``mm.map_image``, NtCreateSection(SEC_IMAGE)).

Independent tests of the spec. Every image is generated with :class:`PEWriter` (PE32 for
32-bit guests, PE32+ for 64-bit ones); malformed ones are generated ones cut or edited.
One MEM_IMAGE allocation of SizeOfImage at ImageBase (or the given base, or a free address
when ImageBase is taken and the image is relocatable), AllocationProtect
PAGE_EXECUTE_WRITECOPY, headers PAGE_READONLY, sections by their characteristics, zero tails,
base relocations, copy-on-write data, guest code at its mapped address, typed errors that
map nothing, the SEC_IMAGE section path, unmapping, imports and exports. Expected values
are Windows literals.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from snippets import Guest as SnippetGuest
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_ESP, UC_X86_REG_RSP

from emulator_mem import ImageFormatError, MemoryManager, RegionKind
from emulator_mem.api.nt_sections import NtClose, NtCreateSection, NtMapViewOfSection, NtUnmapViewOfSection
from emulator_mem.errors import EmulatorMemError, SnapshotError
from emulator_mem.mmu.faults import Fault
from emulator_mem.pe.writer import SCN_BSS, SCN_CODE, SCN_DATA, SCN_RDATA, ExportSpec, PEWriter
from emulator_mem.snapshot import save_snapshot

# winnt.h / ntstatus.h values, written out
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_EXECUTE_WRITECOPY = 0x80
MEM_COMMIT = 0x1000
MEM_FREE = 0x10000
MEM_IMAGE = 0x1000000
SEC_IMAGE = 0x1000000
SECTION_ALL_ACCESS = 0x000F001F
ViewShare = 1
STATUS_SUCCESS = 0
STATUS_IMAGE_NOT_AT_BASE = 0x40000003
STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_CONFLICTING_ADDRESSES = 0xC0000018
STATUS_UNABLE_TO_DELETE_SECTION = 0xC000001B
STATUS_INVALID_IMAGE_FORMAT = 0xC000007B
MAGIC = 0x5EC7E75E


@dataclass
class Sample:
    """A generated image and where its parts are (RVAs relative to ImageBase)."""

    data: bytes
    writer: PEWriter
    text: int
    rdata: int
    data_rva: int
    data_raw: int  # bytes of .data in the file; the rest of .data is a zero tail
    data_size: int
    bss: int
    get_magic: int  # RVA of a function returning the dword at .data+8 via an absolute pointer
    get_const: int  # RVA of a function returning 0x1234 (position independent)

    @property
    def image_base(self) -> int:
        return self.writer.base


def make_sample(is_64bit: bool, *, relocatable: bool = True, const: int = 0x1234,
                image_base: int | None = None) -> Sample:
    w = PEWriter(is_64bit=is_64bit, image_base=image_base)
    text = w.add_section(".text", SCN_CODE, size=0x200)
    rdata = w.add_section(".rdata", SCN_RDATA, size=0x100)
    data = w.add_section(".data", SCN_DATA, size=0x2400)  # raw 0x200: a 0x2200-byte zero tail
    bss = w.add_section(".bss", SCN_BSS, size=0x1000)
    w.add_imports({"KERNEL32.dll": ["ExitProcess", "VirtualAlloc"], "ntdll.dll": [7]})
    rdata.data = b"read-only string\0"
    data.data = w.pointer_bytes(rdata.rva).ljust(8, b"\0") + MAGIC.to_bytes(4, "little") + b"\xdd" * 0x1F4
    w.add_reloc(data.rva)
    ks = Ks(KS_ARCH_X86, KS_MODE_64 if is_64bit else KS_MODE_32)
    target = w.va(data.rva + 8)
    if is_64bit:
        magic_code = bytes(ks.asm(f"movabs rcx, {target}; mov eax, dword ptr [rcx]; ret", 0)[0])
        assert magic_code[:2] == b"\x48\xb9"
        w.add_reloc(text.rva + 2)  # the imm64 of movabs rcx
    else:
        magic_code = bytes(ks.asm(f"mov ecx, {target}; mov eax, dword ptr [ecx]; ret", 0)[0])
        assert magic_code[:1] == b"\xb9"
        w.add_reloc(text.rva + 1)  # the imm32 of mov ecx
    const_rva = text.rva + 0x40
    const_code = bytes(ks.asm(f"mov eax, {const}; ret", 0)[0])
    text.data = magic_code.ljust(0x40, b"\xcc") + const_code
    w.add_exports("sample.dll", [ExportSpec("GetMagic", text.rva), ExportSpec("GetConst", const_rva),
                                 ExportSpec(None, const_rva, 9),
                                 ExportSpec("Alloc", forwarder="KERNEL32.VirtualAlloc")])
    w.entry_point = const_rva
    if not relocatable:
        w.strip_relocs()
    return Sample(w.build(), w, text.rva, rdata.rva, data.rva, 0x200, 0x2400, bss.rva,
                  text.rva, const_rva)


@pytest.fixture(params=[False, True], ids=["pe32", "pe32plus"])
def is_64bit(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def mm(is_64bit: bool) -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32))


@pytest.fixture
def sample(is_64bit: bool) -> Sample:
    return make_sample(is_64bit)


def unicorn_regions(mm: MemoryManager) -> int:
    return sum(1 for _ in mm.uc.mem_regions())


def snapshot(mm: MemoryManager) -> tuple[object, ...]:
    return (list(mm.regions()), mm.stats(), unicorn_regions(mm), dict(mm.images), mm.layout_version)


def walk(mm: MemoryManager, base: int) -> list[tuple[int, int, int, int, int, int, int]]:
    """(offset, size, State, Protect, AllocationBase - base, AllocationProtect, Type) of the
    regions of the allocation at ``base``."""
    out = []
    address = base
    size = mm.allocation_at(base).size  # type: ignore[union-attr]
    while address < base + size:
        m = mm.query(address)
        out.append((m.BaseAddress - base, m.RegionSize, m.State, m.Protect, m.AllocationBase - base,
                    m.AllocationProtect, m.Type))
        address = m.BaseAddress + m.RegionSize
    return out


class Guest:
    """Calls functions in guest memory; stub and stack live in fresh allocations."""

    def __init__(self, mm: MemoryManager) -> None:
        self.mm = mm
        self.ks = Ks(KS_ARCH_X86, KS_MODE_64 if mm.is_64bit else KS_MODE_32)
        self.stack = mm.allocate(0x10000, PAGE_READWRITE)
        self.code = mm.allocate(0x10000, PAGE_EXECUTE_READWRITE)
        self.next = self.code + 0x100
        # the return address sits inside a nop sled, never at a page start (see the report)
        mm.write(self.code, b"\x90" * 0x10)
        self.back = self.code + 8

    def call(self, function: int) -> int:
        sp = self.stack + 0x8000
        self.mm.write(sp, self.back.to_bytes(8, "little"))
        self.mm.uc.reg_write(UC_X86_REG_RSP if self.mm.is_64bit else UC_X86_REG_ESP, sp)
        self.mm.uc.emu_start(function, self.back)
        return int(self.mm.uc.reg_read(UC_X86_REG_EAX)) & 0xFFFFFFFF

    def fault(self, asm: str) -> Fault:
        start = self.next
        insn = bytes(self.ks.asm(asm, start)[0])
        self.mm.write(start, insn)
        self.next = (start + len(insn) + 0x3F) & ~0x3F
        with pytest.raises(UcError):
            self.mm.uc.emu_start(start, start + len(insn))
        fault = self.mm.take_fault()
        assert fault is not None
        return fault

    def run(self, asm: str) -> None:
        start = self.next
        insn = bytes(self.ks.asm(asm, start)[0])
        self.mm.write(start, insn)
        self.next = (start + len(insn) + 0x3F) & ~0x3F
        self.mm.uc.emu_start(start, start + len(insn))


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------
def test_mapped_at_image_base_as_one_image_allocation(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data, name="sample.dll")
    assert base == sample.image_base
    size = 0xA000  # headers, .text, .rdata, .data (3 pages), .bss, .idata, .edata, .reloc
    image = mm.images[base]
    assert image.base == base and image.size == size and image.name == "sample.dll"
    allocations = [a for a in mm.reserved_regions() if a.base <= base < a.base + a.size]
    assert len(allocations) == 1
    assert (allocations[0].base, allocations[0].size, allocations[0].kind) == (base, size, RegionKind.IMAGE)
    assert mm.region_kind(base + size - 1) is RegionKind.IMAGE
    assert mm.query(base + size).State == MEM_FREE
    regions = walk(mm, base)
    assert sum(r[1] for r in regions) == size
    for _, _, state, _, allocation_base, allocation_protect, kind in regions:
        assert (state, allocation_base, allocation_protect, kind) == \
            (MEM_COMMIT, 0, PAGE_EXECUTE_WRITECOPY, MEM_IMAGE)
    protect_at = {rva: mm.query(base + rva).Protect for rva in range(0, size, 0x1000)}
    assert protect_at[0] == PAGE_READONLY  # headers
    assert protect_at[sample.text] == PAGE_EXECUTE_READ
    assert protect_at[sample.rdata] == PAGE_READONLY
    for page in range(sample.data_rva, sample.data_rva + sample.data_size, 0x1000):
        assert protect_at[page] == PAGE_WRITECOPY
    assert protect_at[sample.bss] == PAGE_WRITECOPY
    # neighbouring equal pages form one region, as VirtualQuery reports them
    data_region = mm.query(base + sample.data_rva)
    assert data_region.BaseAddress == base + sample.data_rva
    assert data_region.RegionSize >= 0x3000
    # inside the region, Windows reports the page holding the address and the rest of the run
    inner = mm.query(base + sample.data_rva + 0x1010)
    assert (inner.BaseAddress, inner.RegionSize) == (base + sample.data_rva + 0x1000,
                                                     data_region.RegionSize - 0x1000)
    assert (inner.AllocationBase, inner.Protect, inner.Type) == (base, PAGE_WRITECOPY, MEM_IMAGE)


def test_contents_headers_sections_and_zero_tails(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data)
    headers = sample.writer.header_size
    assert mm.read(base, headers) == sample.data[:headers]
    assert mm.read(base + sample.rdata, 17) == b"read-only string\0"
    raw = mm.read(base + sample.data_rva, sample.data_raw)
    assert raw[8:12] == MAGIC.to_bytes(4, "little") and raw[12:] == b"\xdd" * (sample.data_raw - 12)
    # bytes beyond SizeOfRawData are zero: the .data tail and all of .bss
    assert mm.read(base + sample.data_rva + sample.data_raw, sample.data_size - sample.data_raw) == \
        bytes(sample.data_size - sample.data_raw)
    assert mm.read(base + sample.bss, 0x1000) == bytes(0x1000)
    # at ImageBase nothing is relocated
    ptr = int.from_bytes(mm.read(base + sample.data_rva, sample.writer.ptr_size), "little")
    assert ptr == sample.image_base + sample.rdata


def test_relocated_when_image_base_is_taken(mm: MemoryManager, sample: Sample) -> None:
    blocker = mm.allocate(0x10000, PAGE_READWRITE, address=sample.image_base)
    base = mm.map_image(sample.data)
    assert base != sample.image_base and base % 0x10000 == 0
    assert mm.query(blocker).Type != MEM_IMAGE
    ptr = int.from_bytes(mm.read(base + sample.data_rva, sample.writer.ptr_size), "little")
    assert ptr == base + sample.rdata  # the absolute pointer in .data moved with the image
    assert mm.read(ptr, 16) == b"read-only string"
    assert mm.images[base].entry_point == base + sample.get_const
    assert Guest(mm).call(mm.images[base].export_address("GetMagic") or 0) == MAGIC  # code fixups too


def test_mapped_at_the_requested_base(mm: MemoryManager, sample: Sample) -> None:
    wanted = 0x10000000
    base = mm.map_image(sample.data, base=wanted)
    assert base == wanted
    assert mm.query(wanted).AllocationBase == wanted and mm.query(wanted).Type == MEM_IMAGE
    ptr = int.from_bytes(mm.read(base + sample.data_rva, sample.writer.ptr_size), "little")
    assert ptr == wanted + sample.rdata
    assert mm.query(sample.image_base).State == MEM_FREE
    # a taken base is refused and maps nothing
    before = snapshot(mm)
    with pytest.raises(EmulatorMemError) as info:
        mm.map_image(sample.data, base=wanted)
    assert info.value.status == STATUS_CONFLICTING_ADDRESSES
    assert snapshot(mm) == before


# --------------------------------------------------------------------------------------
# copy-on-write and guest code
# --------------------------------------------------------------------------------------
def test_guest_write_to_writecopy_page_makes_it_readwrite(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data)
    g = Guest(mm)
    target = base + sample.data_rva + 0x1010
    ptr = "rdi" if mm.is_64bit else "edi"
    g.run(f"mov {ptr}, {target}; mov dword ptr [{ptr}], 0x600df00d")
    assert mm.read(target, 4) == (0x600DF00D).to_bytes(4, "little")
    page = mm.query(target)
    assert (page.BaseAddress, page.RegionSize, page.Protect) == \
        (base + sample.data_rva + 0x1000, 0x1000, PAGE_READWRITE)
    assert (page.AllocationProtect, page.Type, page.State) == (PAGE_EXECUTE_WRITECOPY, MEM_IMAGE, MEM_COMMIT)
    assert mm.query(base + sample.data_rva).Protect == PAGE_WRITECOPY
    assert mm.query(base + sample.data_rva + 0x2000).Protect == PAGE_WRITECOPY
    # a second write to the same page needs no further change
    g.run(f"mov {ptr}, {target}; mov dword ptr [{ptr}+4], 0x11111111")
    assert mm.query(target).Protect == PAGE_READWRITE


def test_host_write_to_writecopy_page_makes_it_readwrite(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data)
    mm.write(base + sample.bss + 0x10, b"host")
    assert mm.query(base + sample.bss).Protect == PAGE_READWRITE
    assert mm.read(base + sample.bss + 0x10, 4) == b"host"
    assert mm.query(base + sample.data_rva).Protect == PAGE_WRITECOPY


def test_read_only_parts_refuse_guest_writes(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data)
    g = Guest(mm)
    ptr = "rdi" if mm.is_64bit else "edi"
    for rva in (0x10, sample.rdata + 4, sample.text):
        fault = g.fault(f"mov {ptr}, {base + rva}; mov dword ptr [{ptr}], 1")
        assert (fault.status, fault.address, fault.access) == (STATUS_ACCESS_VIOLATION, base + rva, 1)
    assert mm.read(base, sample.writer.header_size) == sample.data[: sample.writer.header_size]


def test_guest_code_runs_at_its_mapped_address(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data)
    image = mm.images[base]
    g = Guest(mm)
    assert image.entry_point == base + sample.get_const
    assert g.call(image.entry_point) == 0x1234
    assert g.call(image.export_address("GetMagic") or 0) == MAGIC
    mm.write(base + sample.data_rva + 8, (0xFEEDFACE).to_bytes(4, "little"))
    assert g.call(image.export_address("GetMagic") or 0) == 0xFEEDFACE
    # .data is not executable
    fault = g.fault(f"{'mov rax' if mm.is_64bit else 'mov eax'}, {base + sample.data_rva}; "
                    f"call {'rax' if mm.is_64bit else 'eax'}")
    assert (fault.status, fault.address, fault.access) == (STATUS_ACCESS_VIOLATION, base + sample.data_rva, 8)


# --------------------------------------------------------------------------------------
# refusals map nothing
# --------------------------------------------------------------------------------------
def test_non_relocatable_image_whose_base_is_taken(mm: MemoryManager, is_64bit: bool) -> None:
    fixed = make_sample(is_64bit, relocatable=False)
    mm.allocate(0x1000, PAGE_READWRITE, address=fixed.image_base)
    before = snapshot(mm)
    with pytest.raises(EmulatorMemError) as info:
        mm.map_image(fixed.data)
    assert info.value.status == STATUS_CONFLICTING_ADDRESSES
    assert snapshot(mm) == before
    assert mm.images == {}
    # elsewhere it cannot go either: it has no relocations
    with pytest.raises(EmulatorMemError):
        mm.map_image(fixed.data, base=0x20000000)
    assert snapshot(mm) == before
    # but the base free again, it maps there
    mm.release(fixed.image_base)
    assert mm.map_image(fixed.data) == fixed.image_base


def _malformed(sample: Sample, is_64bit: bool) -> list[bytes]:
    data = sample.data
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    bad = [
        b"",
        data[:0x40],                      # DOS header only
        data[: e_lfanew + 0x30],          # NT headers cut
        data[: sample.writer.header_size - 0x10],  # section table cut
        data[: len(data) - 0x100],        # last section's raw data cut
        b"ZM" + data[2:],                 # no MZ
        data[:0x3C] + struct.pack("<I", len(data) + 0x1000) + data[0x40:],  # e_lfanew past the end
        data[:e_lfanew] + b"PX\0\0" + data[e_lfanew + 4:],  # no PE signature
    ]
    for kw in ({"size_of_image": 0}, {"size_of_headers": 0x10}):
        w = make_sample(is_64bit).writer
        for key, value in kw.items():
            setattr(w, key, value)
        bad.append(w.build())
    return bad


def test_malformed_or_truncated_images_map_nothing(mm: MemoryManager, sample: Sample, is_64bit: bool) -> None:
    mm.allocate(0x1000, PAGE_READWRITE)
    before = snapshot(mm)
    for index, data in enumerate(_malformed(sample, is_64bit)):
        with pytest.raises(ImageFormatError) as info:
            mm.map_image(data)
        assert info.value.status == STATUS_INVALID_IMAGE_FORMAT, index
        assert snapshot(mm) == before, index
        status, handle = NtCreateSection(mm, SECTION_ALL_ACCESS, 0, PAGE_READONLY, SEC_IMAGE, data)
        assert (status, handle) == (STATUS_INVALID_IMAGE_FORMAT, 0), index
        assert snapshot(mm) == before, index
    assert mm.map_image(sample.data) == sample.image_base  # and a good one still maps


# --------------------------------------------------------------------------------------
# the SEC_IMAGE section path
# --------------------------------------------------------------------------------------
def test_nt_section_image_reaches_the_same_mapping(
    mm: MemoryManager, sample: Sample, is_64bit: bool, tmp_path: Path
) -> None:
    reference = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32))
    ref_base = reference.map_image(sample.data)
    path = tmp_path / "sample.dll"
    path.write_bytes(sample.data)
    for source in (sample.data, path, str(path)):
        status, handle = NtCreateSection(mm, SECTION_ALL_ACCESS, 0, PAGE_READONLY, SEC_IMAGE, source)
        assert status == STATUS_SUCCESS and handle
        status, base, size = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READONLY)
        assert (status, base, size) == (STATUS_SUCCESS, sample.image_base, 0xA000)
        assert walk(mm, base) == walk(reference, ref_base)
        assert mm.read(base, 0xA000) == reference.read(ref_base, 0xA000)
        assert mm.images[base].export_address("GetConst") == base + sample.get_const
        # a second view has to move: STATUS_IMAGE_NOT_AT_BASE, and it is relocated
        status, moved, size = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READONLY)
        assert status == STATUS_IMAGE_NOT_AT_BASE and size == 0xA000 and moved != base
        assert walk(mm, moved) == walk(reference, ref_base)
        ptr = int.from_bytes(mm.read(moved + sample.data_rva, sample.writer.ptr_size), "little")
        assert ptr == moved + sample.rdata
        assert Guest(mm).call(mm.images[moved].export_address("GetMagic") or 0) == MAGIC
        assert NtClose(mm, handle) == (STATUS_SUCCESS,)  # the views outlive the handle
        assert mm.read(moved + sample.rdata, 4) == b"read"
        assert NtUnmapViewOfSection(mm, moved) == (STATUS_SUCCESS,)
        assert NtUnmapViewOfSection(mm, base) == (STATUS_SUCCESS,)
        assert mm.query(base).State == MEM_FREE and mm.query(moved).State == MEM_FREE
        assert mm.images == {}
    assert mm.sections.handles == {} and mm.sections.names == {}


def test_create_file_mapping_sec_image(mm: MemoryManager, sample: Sample, tmp_path: Path) -> None:
    """kernel32's way (CreateFileMapping(file, PAGE_READONLY | SEC_IMAGE) + MapViewOfFile):
    a relocated second view still returns its address (STATUS_IMAGE_NOT_AT_BASE is a success)."""
    from emulator_mem.win32 import Kernel32

    k32 = Kernel32(mm)
    path = tmp_path / "sample.dll"
    path.write_bytes(sample.data)
    mapping = k32.CreateFileMapping(str(path), PAGE_READONLY | SEC_IMAGE, 0, 0, None)
    assert mapping
    first = k32.MapViewOfFile(mapping, 0x0004, 0, 0, 0)  # FILE_MAP_READ
    second = k32.MapViewOfFile(mapping, 0x0004, 0, 0, 0)
    assert first == sample.image_base and second and second != first
    for base in (first, second):
        m = mm.query(base)
        assert (m.AllocationBase, m.AllocationProtect, m.Protect, m.Type) == \
            (base, PAGE_EXECUTE_WRITECOPY, PAGE_READONLY, MEM_IMAGE)
    ptr = int.from_bytes(mm.read(second + sample.data_rva, sample.writer.ptr_size), "little")
    assert ptr == second + sample.rdata
    assert k32.UnmapViewOfFile(second) and k32.UnmapViewOfFile(first) and k32.CloseHandle(mapping)
    assert mm.images == {}


def test_nt_map_image_section_at_a_chosen_base(mm: MemoryManager, sample: Sample) -> None:
    status, handle = NtCreateSection(mm, SECTION_ALL_ACCESS, 0, PAGE_READONLY, SEC_IMAGE, sample.data)
    assert status == STATUS_SUCCESS
    status, base, _ = NtMapViewOfSection(mm, handle, 0x30000000, 0, 0, 0, 0, ViewShare, 0, PAGE_READONLY)
    assert (status, base) == (STATUS_IMAGE_NOT_AT_BASE, 0x30000000)
    assert mm.query(base).Type == MEM_IMAGE
    status, base2, _ = NtMapViewOfSection(mm, handle, sample.image_base, 0, 0, 0, 0, ViewShare, 0,
                                          PAGE_READONLY)
    assert (status, base2) == (STATUS_SUCCESS, sample.image_base)


# --------------------------------------------------------------------------------------
# unmapping
# --------------------------------------------------------------------------------------
def test_unmap_view_removes_the_image(mm: MemoryManager, sample: Sample) -> None:
    Guest(mm)  # allocate the guest's own memory before taking the snapshot
    before = snapshot(mm)
    base = mm.map_image(sample.data)
    with pytest.raises(EmulatorMemError) as info:  # VirtualFree cannot release an image
        mm.release(base)
    assert info.value.status == STATUS_UNABLE_TO_DELETE_SECTION
    assert mm.query(base).Type == MEM_IMAGE
    mm.unmap_view(base + sample.rdata)  # any address inside will do
    assert base not in mm.images
    m = mm.query(base)
    assert (m.State, m.AllocationBase, m.Type) == (MEM_FREE, 0, 0)
    assert all(a.base != base for a in mm.reserved_regions())
    after = snapshot(mm)
    assert after[0] == before[0] and after[3] == before[3]  # same walk, no images
    with pytest.raises(EmulatorMemError):
        mm.unmap_view(base)
    # the address space can be reused, and fresh memory there is zero
    assert mm.allocate(0x10000, PAGE_READWRITE, address=base) == base
    assert mm.read(base, 0x1000) == bytes(0x1000)


def test_remapped_image_runs_its_own_code(mm: MemoryManager, is_64bit: bool) -> None:
    """Unmap an image after running it and map another one at the same base: the guest must
    run the new code (translated code of the old image may not survive the unmap)."""
    g = Guest(mm)
    first = make_sample(is_64bit, const=0x1111)
    base = mm.map_image(first.data)
    assert g.call(base + first.get_const) == 0x1111
    mm.unmap_view(base)
    second = make_sample(is_64bit, const=0x2222)
    assert mm.map_image(second.data) == base
    assert mm.read(base + second.get_const, 5)[1:5] == (0x2222).to_bytes(4, "little")
    assert g.call(base + second.get_const) == 0x2222


# --------------------------------------------------------------------------------------
# imports and exports
# --------------------------------------------------------------------------------------
def test_imports_list_their_iat_slots(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data)
    w = sample.writer
    imports = mm.images[base].imports
    assert [(i.dll.lower(), i.name, i.ordinal) for i in imports] == [
        ("kernel32.dll", "ExitProcess", None),
        ("kernel32.dll", "VirtualAlloc", None),
        ("ntdll.dll", None, 7),
    ]
    expected = [w.iat_rva("KERNEL32.dll", "ExitProcess"), w.iat_rva("KERNEL32.dll", "VirtualAlloc"),
                w.iat_rva("ntdll.dll", 7)]
    assert [i.iat_rva for i in imports] == expected
    # the slots are in the mapped image, writable (copy-on-write), and a loader may fill them
    for imp in imports:
        slot = base + imp.iat_rva
        assert mm.query(slot).Protect in (PAGE_WRITECOPY, PAGE_READWRITE)
        mm.write(slot, (0xABCD0000 + imp.iat_rva).to_bytes(w.ptr_size, "little"))
    assert [int.from_bytes(mm.read(base + i.iat_rva, w.ptr_size), "little") for i in imports] == \
        [0xABCD0000 + rva for rva in expected]


def test_exports_resolve_with_export_address(mm: MemoryManager, sample: Sample) -> None:
    base = mm.map_image(sample.data, base=0x20000000)
    image = mm.images[base]
    assert image.export_address("GetMagic") == base + sample.get_magic
    assert image.export_address("GetConst") == base + sample.get_const
    assert image.export_address("Alloc") is None  # a forwarder has no address here
    assert image.export_address("Missing") is None
    by_name = {e.name: e for e in image.exports}
    assert by_name["Alloc"].forwarder == "KERNEL32.VirtualAlloc"
    assert any(e.name is None and e.ordinal == 9 and e.rva == sample.get_const for e in image.exports)
    assert Guest(mm).call(image.export_address("GetConst") or 0) == 0x1234


IMAGE_SCN_MEM_SHARED = 0x10000000


def shared_sample(is_64bit: bool) -> tuple[bytes, int, int]:
    """An image with a shared writable section and an ordinary one: (file, shared rva, data rva)."""
    w = PEWriter(is_64bit=is_64bit)
    text = w.add_section(".text", SCN_CODE, size=0x200)
    text.data = b"\xc3"
    shared = w.add_section(".shared", SCN_DATA | IMAGE_SCN_MEM_SHARED, size=0x1800)
    shared.data = b"initial shared"
    data = w.add_section(".data", SCN_DATA, size=0x200)
    data.data = b"initial data"
    return w.build(), shared.rva, data.rva


def test_shared_sections_are_shared_between_mappings(mm: MemoryManager, is_64bit: bool) -> None:
    """IMAGE_SCN_MEM_SHARED: PAGE_READWRITE (not copy-on-write) and one set of pages for
    every mapping of the image; ordinary writable sections stay private copy-on-write."""
    data, shared_rva, data_rva = shared_sample(is_64bit)
    first = mm.map_image(data)
    second = mm.map_image(data)  # relocated elsewhere: the same image, mapped twice
    assert first != second
    for base in (first, second):
        info = mm.query(base + shared_rva)
        assert (info.Protect, info.RegionSize, info.Type) == (PAGE_READWRITE, 0x2000, MEM_IMAGE)
        assert mm.query(base + data_rva).Protect == PAGE_WRITECOPY
    g = SnippetGuest(mm)  # a guest store goes through the MMU's translation
    g.run(f"mov {g.ptr}, {first + shared_rva + 0x1000}; mov dword ptr [{g.ptr}], 0x6e656573")
    assert mm.read(second + shared_rva + 0x1000, 4) == b"seen"
    mm.write(first + shared_rva + 0x1000, b"seen by both")
    assert mm.read(second + shared_rva + 0x1000, 12) == b"seen by both"
    assert mm.query(first + shared_rva).Protect == PAGE_READWRITE
    mm.write(first + data_rva, b"private")
    assert mm.read(second + data_rva, 12) == b"initial data"
    # the shared pages outlive the first mapping and go with the last
    mm.unmap_view(first)
    assert mm.read(second + shared_rva, 14) == b"initial shared"
    assert mm.read(second + shared_rva + 0x1000, 12) == b"seen by both"
    third = mm.map_image(data)
    assert mm.read(third + shared_rva + 0x1000, 12) == b"seen by both"
    mm.unmap_view(second)
    mm.unmap_view(third)
    assert mm.shared_images == {}
    fresh = mm.map_image(data)
    assert mm.read(fresh + shared_rva + 0x1000, 12) == bytes(12)  # a new image instance


def test_rollback_brings_back_shared_image_pages_and_their_mapping_count(
        mm: MemoryManager, is_64bit: bool) -> None:
    """A rollback returns the shared pages as they were at the checkpoint: their bytes even
    if the last mapping went away meanwhile, still shared with later mappings, and released
    with the last mapping again (no storage left behind)."""
    data, shared_rva, _ = shared_sample(is_64bit)
    first = mm.map_image(data)
    mm.write(first + shared_rva, b"at checkpoint")
    with_image = len(mm.phys.chunks)  # + its identity window (kept) and its shared pages
    cp = mm.checkpoint()
    mm.unmap_view(first)  # the last mapping: the shared pages are destroyed
    mm.rollback(cp)
    assert mm.read(first + shared_rva, 13) == b"at checkpoint"
    second = mm.map_image(data)
    mm.write(first + shared_rva, b"both see this")
    assert mm.read(second + shared_rva, 13) == b"both see this"
    mm.unmap_view(first)
    mm.unmap_view(second)
    assert mm.shared_images == {} and len(mm.phys.chunks) == with_image - 1
    # a mapping made after the checkpoint must not keep the pages alive after a rollback
    first = mm.map_image(data)
    cp = mm.checkpoint()
    mm.map_image(data)
    mm.rollback(cp)
    mm.unmap_view(first)
    assert mm.shared_images == {} and len(mm.phys.chunks) == with_image - 1


def test_shared_sections_through_sec_image_views(mm: MemoryManager, is_64bit: bool) -> None:
    data, shared_rva, _ = shared_sample(is_64bit)
    status, handle = NtCreateSection(mm, SECTION_ALL_ACCESS, 0, PAGE_READONLY, SEC_IMAGE, data)
    assert status == STATUS_SUCCESS
    status, v1, _ = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READONLY)
    assert status in (STATUS_SUCCESS, STATUS_IMAGE_NOT_AT_BASE)
    status, v2, _ = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READONLY)
    assert status == STATUS_IMAGE_NOT_AT_BASE
    mm.write(v2 + shared_rva, b"through v2")
    assert mm.read(v1 + shared_rva, 10) == b"through v2"
    # not yet in the snapshot format: refused with a clear error, nothing written
    out = io.BytesIO()
    with pytest.raises(SnapshotError, match="shared"):
        save_snapshot(mm, out)
    assert out.getvalue() == b""
