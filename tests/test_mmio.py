"""MMIO regions: guest and host accesses reach Python callbacks (``mm.allocate_mmio``).

Independent tests of the spec: offsets are relative to the region base; 1/2/4-byte guest
accesses arrive as one callback of that size; an 8-byte guest access arrives as two 4-byte
callbacks, low half first (Unicorn registers MMIO ops without a maximum access size — a
documented limitation, asserted exactly); host ``mm.read``/``mm.write`` use the callbacks in
naturally aligned pieces; VirtualQuery reports MMIO as committed MEM_MAPPED PAGE_READWRITE;
``mm.release`` unmaps it from Unicorn; an exception raised by a callback stops emulation,
surfaces from ``uc.emu_start`` and leaves the manager consistent. Expected values are the
Windows literals. 32- and 64-bit guests both run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from snippets import Guest
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_RDX

from emulator_mem import MemoryManager, RegionKind
from emulator_mem.errors import ConflictingAddressesError, EmulatorMemError, InvalidParameterError

# winnt.h / ntstatus.h values, written out
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_EXECUTE_READWRITE = 0x40
MEM_COMMIT = 0x1000
MEM_FREE = 0x10000
MEM_MAPPED = 0x40000
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_CONFLICTING_ADDRESSES = 0xC0000018




class Device:
    """A byte-addressed register file that logs every callback."""

    def __init__(self, size: int = 0x2000) -> None:
        self.mem = bytearray(size)
        self.log: list[tuple[object, ...]] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return int.from_bytes(self.mem[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))
        self.mem[offset : offset + size] = value.to_bytes(size, "little")


def unicorn_regions(mm: MemoryManager) -> int:
    return sum(1 for _ in mm.uc.mem_regions())


# --------------------------------------------------------------------------------------
# allocation and VirtualQuery
# --------------------------------------------------------------------------------------
def test_query_reports_committed_mapped_readwrite(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(None, 0x2000, dev.read, dev.write)
    assert base % 0x10000 == 0 and mm.lowest_address <= base
    for address in (base, base + 0x1FFF):
        mbi = mm.query(address)
        page = address & ~0xFFF  # Windows reports the page holding the address
        assert mbi.BaseAddress == page
        assert mbi.AllocationBase == base
        assert mbi.AllocationProtect == PAGE_READWRITE
        assert mbi.RegionSize == base + 0x2000 - page
        assert mbi.State == MEM_COMMIT
        assert mbi.Protect == PAGE_READWRITE
        assert mbi.Type == MEM_MAPPED
    assert mm.region_kind(base) is RegionKind.MMIO
    assert mm.query(base + 0x2000).State == MEM_FREE
    assert dev.log == []  # querying touches no register


def test_explicit_address_and_page_rounding(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(0x200000, 0x1801, dev.read, dev.write)
    assert base == 0x200000
    mbi = mm.query(base)
    assert (mbi.BaseAddress, mbi.RegionSize, mbi.State, mbi.Type) == (base, 0x2000, MEM_COMMIT, MEM_MAPPED)
    assert mm.region_kind(base + 0x1FFF) is RegionKind.MMIO


def test_bad_requests_change_nothing(mm: MemoryManager) -> None:
    dev = Device()
    taken = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    before = (list(mm.regions()), unicorn_regions(mm), mm.stats())
    cases: list[tuple[Callable[[], int], type[EmulatorMemError], int]] = [
        (lambda: mm.allocate_mmio(0x201000, 0x1000, dev.read, dev.write),
         InvalidParameterError, STATUS_INVALID_PARAMETER),  # not 64 KiB aligned
        (lambda: mm.allocate_mmio(taken, 0x1000, dev.read, dev.write),
         ConflictingAddressesError, STATUS_CONFLICTING_ADDRESSES),
        (lambda: mm.allocate_mmio(None, 0, dev.read, dev.write),
         InvalidParameterError, STATUS_INVALID_PARAMETER),
        (lambda: mm.allocate_mmio(None, 0x1000, 42, dev.write),  # type: ignore[arg-type]
         InvalidParameterError, STATUS_INVALID_PARAMETER),
    ]
    for call, error, status in cases:
        with pytest.raises(error) as info:
            call()
        assert info.value.status == status
    assert (list(mm.regions()), unicorn_regions(mm), mm.stats()) == before
    assert dev.log == []


# --------------------------------------------------------------------------------------
# guest accesses
# --------------------------------------------------------------------------------------
def test_guest_stores_reach_write_callback_with_size_and_value(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(None, 0x2000, dev.read, dev.write)
    g = Guest(mm)
    p = g.ptr
    g.run(f"mov {p}, {base}; mov byte ptr [{p}+1], 0x5a; mov word ptr [{p}+2], 0x1234; "
          f"mov dword ptr [{p}+4], 0xdeadbeef; mov dword ptr [{p}+0x1ffc], 0x01020304")
    assert dev.log == [
        ("w", 1, 1, 0x5A),
        ("w", 2, 2, 0x1234),
        ("w", 4, 4, 0xDEADBEEF),
        ("w", 0x1FFC, 4, 0x01020304),
    ]


def test_guest_loads_reach_read_callback_with_size(mm: MemoryManager) -> None:
    dev = Device()
    dev.mem[0:8] = bytes.fromhex("8899aabbccddeeff")
    dev.mem[0x1800:0x1804] = (0x13572468).to_bytes(4, "little")
    base = mm.allocate_mmio(None, 0x2000, dev.read, dev.write)
    g = Guest(mm)
    p = g.ptr
    g.run(f"mov {p}, {base}; xor eax, eax; xor ebx, ebx; mov al, byte ptr [{p}+1]; "
          f"mov bx, word ptr [{p}+2]; mov ecx, dword ptr [{p}+4]; mov edx, dword ptr [{p}+0x1800]")
    assert dev.log == [("r", 1, 1), ("r", 2, 2), ("r", 4, 4), ("r", 0x1800, 4)]
    uc = mm.uc
    assert uc.reg_read(UC_X86_REG_EAX) == 0x99
    assert uc.reg_read(UC_X86_REG_EBX) == 0xBBAA
    assert uc.reg_read(UC_X86_REG_ECX) == 0xFFEEDDCC
    assert uc.reg_read(UC_X86_REG_EDX) & 0xFFFFFFFF == 0x13572468


def test_offsets_stay_relative_to_the_base_in_a_large_region(mm: MemoryManager) -> None:
    dev = Device(0x30000)
    base = mm.allocate_mmio(None, 0x30000, dev.read, dev.write)
    assert mm.query(base).RegionSize == 0x30000
    g = Guest(mm)
    p = g.ptr
    g.run(f"mov {p}, {base}; mov dword ptr [{p}+0x2fffc], 0x0badcafe; mov eax, dword ptr [{p}+0x10000]")
    assert dev.log == [("w", 0x2FFFC, 4, 0x0BADCAFE), ("r", 0x10000, 4)]
    assert mm.read(base + 0x2FFFC, 4) == (0x0BADCAFE).to_bytes(4, "little")


def test_read_callback_value_is_truncated_to_the_access_size(mm: MemoryManager) -> None:
    base = mm.allocate_mmio(None, 0x1000, lambda offset, size: 0x1122334455667788, lambda *a: None)
    g = Guest(mm)
    g.run(f"mov {g.ptr}, {base}; mov eax, 0xffffffff; mov ax, word ptr [{g.ptr}]")
    assert mm.uc.reg_read(UC_X86_REG_EAX) == 0xFFFF7788
    assert mm.read(base, 1) == b"\x88"


def test_guest_8_byte_store_arrives_as_two_4_byte_writes_low_first(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    value = 0x0102030405060708
    src = mm.allocate(0x1000, PAGE_READWRITE)
    mm.write(src, value.to_bytes(8, "little"))
    g = Guest(mm)
    p = g.ptr
    g.run(f"mov {p}, {src}; movq xmm0, qword ptr [{p}]; mov {p}, {base}; movq qword ptr [{p}+8], xmm0")
    assert dev.log == [("w", 8, 4, 0x05060708), ("w", 12, 4, 0x01020304)]
    low, high = dev.log[0][3], dev.log[1][3]
    assert isinstance(low, int) and isinstance(high, int)
    assert low | high << 32 == value
    if mm.is_64bit:
        dev.log.clear()
        g.run(f"mov {p}, {base}; mov rax, 0x1122334455667788; mov qword ptr [{p}+0x10], rax")
        assert dev.log == [("w", 0x10, 4, 0x55667788), ("w", 0x14, 4, 0x11223344)]


def test_guest_8_byte_load_arrives_as_two_4_byte_reads_low_first(mm: MemoryManager) -> None:
    dev = Device()
    value = 0xCAFEBABE_0BADF00D
    dev.mem[0x20:0x28] = value.to_bytes(8, "little")
    base = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    dst = mm.allocate(0x1000, PAGE_READWRITE)
    g = Guest(mm)
    p = g.ptr
    g.run(f"mov {p}, {base}; movq xmm1, qword ptr [{p}+0x20]; mov {p}, {dst}; movq qword ptr [{p}], xmm1")
    assert dev.log == [("r", 0x20, 4), ("r", 0x24, 4)]
    assert int.from_bytes(mm.read(dst, 8), "little") == value  # recombined correctly
    if mm.is_64bit:
        dev.log.clear()
        g.run(f"mov {p}, {base}; mov rdx, qword ptr [{p}+0x20]")
        assert dev.log == [("r", 0x20, 4), ("r", 0x24, 4)]
        assert mm.uc.reg_read(UC_X86_REG_RDX) == value


# --------------------------------------------------------------------------------------
# host accesses
# --------------------------------------------------------------------------------------
def _assert_natural_pieces(log: list[tuple[object, ...]], kind: str, start: int, size: int) -> None:
    pos = start
    for entry in log:
        assert entry[0] == kind
        offset, n = entry[1], entry[2]
        assert isinstance(offset, int) and isinstance(n, int)
        assert offset == pos, "pieces must be contiguous and in order"
        assert n in (1, 2, 4, 8) and offset % n == 0, f"piece {offset:#x}/{n} is not naturally aligned"
        pos += n
    assert pos == start + size


def test_host_write_goes_through_callbacks_in_natural_pieces(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    data = bytes(range(1, 14))
    mm.write(base + 3, data)
    _assert_natural_pieces(dev.log, "w", 3, len(data))
    assert bytes(dev.mem[3 : 3 + len(data)]) == data
    for entry in dev.log:  # every piece carries its own bytes
        offset, n, value = entry[1], entry[2], entry[3]
        assert isinstance(offset, int) and isinstance(n, int)
        assert value == int.from_bytes(data[offset - 3 : offset - 3 + n], "little")
    dev.log.clear()
    mm.write(base + 0x10, (0xAABBCCDD).to_bytes(4, "little"))
    assert dev.log == [("w", 0x10, 4, 0xAABBCCDD)]  # an aligned dword is one access


def test_host_read_goes_through_callbacks_in_natural_pieces(mm: MemoryManager) -> None:
    dev = Device()
    dev.mem[:0x40] = bytes(range(0x40))
    base = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    assert mm.read(base + 5, 0x17) == bytes(range(5, 5 + 0x17))
    _assert_natural_pieces(dev.log, "r", 5, 0x17)
    dev.log.clear()
    assert mm.read(base + 0x20, 2) == bytes([0x20, 0x21])
    assert dev.log == [("r", 0x20, 2)]


def test_host_access_spanning_memory_and_mmio(mm: MemoryManager) -> None:
    ram = mm.allocate(0x10000, PAGE_READWRITE, address=0x300000)
    dev = Device()
    base = mm.allocate_mmio(0x310000, 0x1000, dev.read, dev.write)
    mm.write(ram + 0xFFFE, b"\xaa\xbb\xcc\xdd")
    assert mm.read(ram + 0xFFFE, 2) == b"\xaa\xbb"
    assert dev.log == [("w", 0, 2, 0xDDCC)]
    dev.log.clear()
    assert mm.read(ram + 0xFFFC, 8) == b"\x00\x00\xaa\xbb\xcc\xdd\x00\x00"
    _assert_natural_pieces(dev.log, "r", 0, 4)
    assert base == 0x310000


# --------------------------------------------------------------------------------------
# release
# --------------------------------------------------------------------------------------
def test_release_unmaps_from_unicorn_and_frees_the_address(mm: MemoryManager) -> None:
    Guest(mm)._place("nop")  # map the identity window used below before counting
    before_regions = unicorn_regions(mm)
    before_walk = list(mm.regions())
    old = Device()
    base = mm.allocate_mmio(None, 0x3000, old.read, old.write)
    assert unicorn_regions(mm) == before_regions + 1
    assert mm.release(base) == 0x3000
    assert unicorn_regions(mm) == before_regions
    assert list(mm.regions()) == before_walk
    mbi = mm.query(base)
    assert (mbi.State, mbi.Protect, mbi.AllocationBase, mbi.Type) == (MEM_FREE, 0x01, 0, 0)
    assert mm.region_kind(base) is None
    # the address is reusable, and the new callbacks (not the old ones) are called
    new = Device()
    assert mm.allocate_mmio(base, 0x1000, new.read, new.write) == base
    g = Guest(mm)
    g.run(f"mov {g.ptr}, {base}; mov dword ptr [{g.ptr}+0x40], 0x600d")
    assert new.log == [("w", 0x40, 4, 0x600D)] and old.log == []
    # and ordinary memory can take the place too
    mm.release(base)
    assert mm.allocate(0x1000, PAGE_READWRITE, address=base) == base
    mm.write(base, b"ram")
    assert mm.read(base, 3) == b"ram" and new.log == [("w", 0x40, 4, 0x600D)]


def test_guest_access_after_release_faults(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    g = Guest(mm)
    g.run(f"mov {g.ptr}, {base}; mov eax, dword ptr [{g.ptr}]")  # the TLB now knows the page
    mm.release(base)
    fault = g.fault(f"mov {g.ptr}, {base}; mov eax, dword ptr [{g.ptr}]")
    assert (fault.status, fault.address, fault.access) == (0xC0000005, base, 0)
    assert dev.log == [("r", 0, 4)]


def test_region_cannot_be_decommitted_or_reprotected(mm: MemoryManager) -> None:
    dev = Device()
    base = mm.allocate_mmio(None, 0x1000, dev.read, dev.write)
    for call in (lambda: mm.decommit(base, 0x1000), lambda: mm.protect(base, 0x1000, PAGE_READONLY),
                 lambda: mm.unmap_view(base)):
        with pytest.raises(EmulatorMemError):
            call()
    mbi = mm.query(base)
    assert (mbi.State, mbi.Protect, mbi.Type) == (MEM_COMMIT, PAGE_READWRITE, MEM_MAPPED)
    mm.write(base, b"\x01")
    assert dev.log == [("w", 0, 1, 1)]


# --------------------------------------------------------------------------------------
# exceptions in callbacks
# --------------------------------------------------------------------------------------
class DeviceError(Exception):
    pass


@pytest.mark.parametrize("failing", ["read", "write"])
def test_callback_exception_stops_emulation_and_surfaces(mm: MemoryManager, failing: str) -> None:
    raised = DeviceError(failing)
    calls: list[str] = []

    def read(offset: int, size: int) -> int:
        calls.append("r")
        if failing == "read":
            raise raised
        return 0

    def write(offset: int, size: int, value: int) -> None:
        calls.append("w")
        if failing == "write":
            raise raised

    base = mm.allocate_mmio(None, 0x2000, read, write)
    ram = mm.allocate(0x1000, PAGE_READWRITE)
    g = Guest(mm)
    g.run("nop")  # code pages exist before the snapshot of the walk
    walk = list(mm.regions())
    stats = mm.stats()
    p = g.ptr
    access = (f"mov eax, dword ptr [{p}+0x1004]" if failing == "read"
              else f"mov dword ptr [{p}+0x1004], 7")
    mm.uc.reg_write(UC_X86_REG_EBX, 0)
    start, end = g._place(
        f"mov {p}, {base}; {access}; mov ebx, 0x77; mov {p}, {ram}; mov dword ptr [{p}], ebx")
    with pytest.raises(DeviceError) as info:
        mm.uc.emu_start(start, end)
    assert info.value is raised
    assert calls == [failing[0]]
    # emulation stopped at the access: nothing after it ran
    assert mm.uc.reg_read(UC_X86_REG_EBX) == 0
    assert mm.read(ram, 4) == b"\0\0\0\0"
    # the manager is consistent: same walk, same stats, no pending fault
    assert list(mm.regions()) == walk
    assert mm.stats() == stats
    assert mm.take_fault() is None
    # further guest code runs, ordinary memory and the device both still work
    g.run(f"mov {p}, {ram}; mov dword ptr [{p}], 0x1234; mov eax, dword ptr [{p}]")
    assert mm.uc.reg_read(UC_X86_REG_EAX) == 0x1234
    other = "w" if failing == "read" else "r"
    op = "mov dword ptr [{0}+8], 1" if other == "w" else "mov eax, dword ptr [{0}+8]"
    g.run(f"mov {p}, {base}; " + op.format(p))
    assert calls == [failing[0], other]


def test_exception_does_not_leak_into_the_next_run(mm: MemoryManager) -> None:
    state = {"fail": True}

    def read(offset: int, size: int) -> int:
        if state["fail"]:
            state["fail"] = False
            raise DeviceError("once")
        return 0x42

    base = mm.allocate_mmio(None, 0x1000, read, lambda *a: None)
    g = Guest(mm)
    with pytest.raises(DeviceError):
        g.run(f"mov {g.ptr}, {base}; mov eax, dword ptr [{g.ptr}]")
    g.run(f"mov {g.ptr}, {base}; mov eax, dword ptr [{g.ptr}]")
    assert mm.uc.reg_read(UC_X86_REG_EAX) == 0x42
