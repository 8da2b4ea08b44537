"""One address space: Unicorn's own API and the Windows API see the same memory.

Expected values are Windows/Unicorn literals: PAGE_* and MEM_* from winnt.h, UC_ERR_* from
unicorn.h, ERROR_* from winerror.h.
"""

from __future__ import annotations

import io

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import (
    UC_ARCH_X86,
    UC_ERR_MAP,
    UC_ERR_READ_PROT,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_PROT,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_WRITE,
    UC_MODE_32,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_NONE,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_RAX

from emulator_mem import MemoryManager
from emulator_mem.errors import SnapshotError
from emulator_mem.snapshot import load_snapshot, save_snapshot
from emulator_mem.win32 import Kernel32

MEM_COMMIT, MEM_RESERVE, MEM_RELEASE, MEM_DECOMMIT = 0x1000, 0x2000, 0x8000, 0x4000
MEM_PRIVATE, MEM_MAPPED = 0x20000, 0x40000
PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE = 0x01, 0x02, 0x04
PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_GUARD = 0x20, 0x40, 0x100
ERROR_INVALID_ADDRESS = 487
STATUS_ACCESS_VIOLATION, STATUS_GUARD_PAGE_VIOLATION = 0xC0000005, 0x80000001


def asm(uc_mode: int, source: str, address: int) -> bytes:
    return bytes(Ks(KS_ARCH_X86, KS_MODE_64 if uc_mode == UC_MODE_64 else KS_MODE_32).asm(source, address)[0])


@pytest.fixture(params=[UC_MODE_32, UC_MODE_64], ids=["x86", "x64"])
def uc_mode(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_readme_example_plain_mem_map_after_the_manager() -> None:
    """The README's "Use it under an existing emulator" example, as written there."""
    code = asm(UC_MODE_64, "mov rax, 0x1234; mov rbx, 0x401000; mov [rbx], rax; add rax, [rbx]", 0x400000)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mm = MemoryManager(uc)
    uc.mem_map(0x400000, 0x2000, UC_PROT_ALL)
    uc.mem_write(0x400000, code)
    uc.emu_start(0x400000, 0x400000 + len(code))
    assert uc.reg_read(UC_X86_REG_RAX) == 0x2468
    assert list(uc.mem_regions()) == [(0x400000, 0x401FFF, UC_PROT_ALL)]  # no physical windows
    mbi = Kernel32(mm).VirtualQuery(0x401000)
    assert mbi is not None
    assert (mbi.BaseAddress, mbi.AllocationBase, mbi.RegionSize, mbi.State, mbi.Protect, mbi.Type) == (
        0x401000, 0x400000, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READWRITE, MEM_PRIVATE)


@pytest.mark.parametrize(("perms", "protect", "shown"), [
    (UC_PROT_NONE, PAGE_NOACCESS, 0),
    (UC_PROT_READ, PAGE_READONLY, 1),
    (UC_PROT_READ | UC_PROT_WRITE, PAGE_READWRITE, 3),
    (UC_PROT_READ | UC_PROT_EXEC, PAGE_EXECUTE_READ, 5),
    (UC_PROT_ALL, PAGE_EXECUTE_READWRITE, 7),
    (UC_PROT_WRITE, PAGE_READWRITE, 3),  # x86 cannot express write-only: readable too
    (UC_PROT_EXEC, PAGE_EXECUTE_READ, 5),  # nor execute-only
    (UC_PROT_WRITE | UC_PROT_EXEC, PAGE_EXECUTE_READWRITE, 7),
])
def test_mem_map_perms_as_virtualquery_sees_them(uc_mode: int, perms: int, protect: int, shown: int) -> None:
    uc = Uc(UC_ARCH_X86, uc_mode)
    k32 = Kernel32(MemoryManager(uc))
    uc.mem_map(0x200000, 0x3000, perms)
    mbi = k32.VirtualQuery(0x201000)
    assert mbi is not None
    assert (mbi.AllocationBase, mbi.AllocationProtect, mbi.Protect, mbi.State, mbi.RegionSize) == (
        0x200000, protect, protect, MEM_COMMIT, 0x2000)  # from the queried page on
    assert list(uc.mem_regions()) == [(0x200000, 0x202FFF, shown)]


def test_virtualalloc_memory_is_in_mem_regions(uc_mode: int) -> None:
    uc = Uc(UC_ARCH_X86, uc_mode)
    k32 = Kernel32(MemoryManager(uc))
    base = k32.VirtualAlloc(0x500000, 0x10000, MEM_RESERVE, PAGE_READWRITE)
    k32.VirtualAlloc(base + 0x2000, 0x3000, MEM_COMMIT, PAGE_READWRITE)
    k32.VirtualProtect(base + 0x3000, 0x1000, PAGE_EXECUTE_READ)
    # reserved pages are not mapped for Unicorn; committed runs are, split by protection
    assert list(uc.mem_regions()) == [(base + 0x2000, base + 0x2FFF, 3), (base + 0x3000, base + 0x3FFF, 5),
                                      (base + 0x4000, base + 0x4FFF, 3)]
    uc.mem_write(base + 0x2ffe, b"ab\xc3")  # Unicorn's mem_write across Windows regions
    assert uc.mem_read(base + 0x2ffe, 3) == b"ab\xc3"
    with pytest.raises(UcError) as err:
        uc.mem_read(base + 0x4ffe, 4)  # runs into reserved memory
    assert err.value.errno == UC_ERR_READ_UNMAPPED
    with pytest.raises(UcError) as err:
        uc.mem_map(base + 0x8000, 0x1000)  # reserved by VirtualAlloc: taken
    assert err.value.errno == UC_ERR_MAP
    uc.mem_protect(base + 0x2000, 0x3000, UC_PROT_READ)
    mbi = k32.VirtualQuery(base + 0x2000)
    assert mbi is not None and (mbi.RegionSize, mbi.Protect) == (0x3000, PAGE_READONLY)
    assert list(uc.mem_regions()) == [(base + 0x2000, base + 0x4FFF, 1)]  # one mem_protect, one region


def test_virtualfree_of_a_mem_map_follows_windows_rules(uc_mode: int) -> None:
    uc = Uc(UC_ARCH_X86, uc_mode)
    k32 = Kernel32(MemoryManager(uc))
    uc.mem_map(0x300000, 0x4000, UC_PROT_READ | UC_PROT_WRITE)
    assert k32.VirtualAlloc(0x300000, 0x1000, MEM_RESERVE, PAGE_READWRITE) == 0
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS
    assert not k32.VirtualFree(0x301000, 0, MEM_RELEASE)  # not the allocation base
    assert k32.GetLastError() == ERROR_INVALID_ADDRESS
    assert k32.VirtualFree(0x302000, 0x1000, MEM_DECOMMIT)
    assert list(uc.mem_regions()) == [(0x300000, 0x301FFF, 3), (0x303000, 0x303FFF, 3)]
    assert k32.VirtualFree(0x300000, 0, MEM_RELEASE)  # one allocation: all of it goes
    assert list(uc.mem_regions()) == []
    uc.mem_map(0x300000, 0x1000)  # and the range is free again
    assert uc.mem_read(0x300000, 4) == b"\0\0\0\0"


def test_faults_give_unicorn_codes_and_the_windows_view(uc_mode: int) -> None:
    uc = Uc(UC_ARCH_X86, uc_mode)
    mm = MemoryManager(uc)
    k32 = Kernel32(mm)
    uc.mem_map(0x400000, 0x1000, UC_PROT_ALL)
    uc.mem_map(0x600000, 0x2000, UC_PROT_READ)
    reg = "rbx" if uc_mode == UC_MODE_64 else "ebx"
    code = asm(uc_mode, f"mov {reg}, 0x600010; mov dword ptr [{reg} + 4], 1", 0x400000)
    uc.mem_write(0x400000, code)
    with pytest.raises(UcError) as err:
        uc.emu_start(0x400000, 0x400000 + len(code))
    assert err.value.errno == UC_ERR_WRITE_PROT
    fault = mm.take_fault()
    assert fault is not None and (fault.status, fault.address, fault.access) == (
        STATUS_ACCESS_VIOLATION, 0x600014, 1)
    ok, _ = k32.VirtualProtect(0x601000, 0x1000, PAGE_READONLY | PAGE_GUARD)
    assert ok
    code = asm(uc_mode, f"mov {reg}, 0x601008; mov eax, dword ptr [{reg}]", 0x400100)
    uc.mem_write(0x400100, code)
    with pytest.raises(UcError) as err:
        uc.emu_start(0x400100, 0x400100 + len(code))
    assert err.value.errno == UC_ERR_READ_PROT  # a guard page is mapped, just not accessible
    fault = mm.take_fault()
    assert fault is not None and (fault.status, fault.address) == (STATUS_GUARD_PAGE_VIOLATION, 0x601008)
    uc.emu_start(0x400100, 0x400100 + len(code))  # one-shot, as on Windows


def test_read_prot_hook_may_reprotect(uc_mode: int) -> None:
    """Plain Unicorn 2.1.4 crashes when a READ_PROT hook re-protects the page (its retry uses
    a flushed TLB entry); with the manager the retry refills from the page table."""
    uc = Uc(UC_ARCH_X86, uc_mode)
    MemoryManager(uc)
    uc.mem_map(0x400000, 0x1000, UC_PROT_ALL)
    uc.mem_map(0x600000, 0x1000, UC_PROT_NONE)
    uc.mem_write(0x600000, b"\x78\x56\x34\x12")
    calls = []

    def reprotect(uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        calls.append((access, address, size))
        uc.mem_protect(0x600000, 0x1000, UC_PROT_READ)
        return True

    uc.hook_add(UC_HOOK_MEM_READ_PROT, reprotect)
    reg = "rbx" if uc_mode == UC_MODE_64 else "ebx"
    code = asm(uc_mode, f"mov {reg}, 0x600000; mov eax, dword ptr [{reg}]", 0x400000)
    uc.mem_write(0x400000, code)
    uc.emu_start(0x400000, 0x400000 + len(code))
    assert uc.reg_read(UC_X86_REG_EAX) == 0x12345678
    assert calls == [(23, 0x600000, 4)]  # UC_MEM_READ_PROT


def test_write_hooks_see_section_views_by_virtual_address(uc_mode: int) -> None:
    uc = Uc(UC_ARCH_X86, uc_mode)
    k32 = Kernel32(MemoryManager(uc))
    section = k32.CreateFileMapping(0xFFFFFFFF, PAGE_READWRITE, 0, 0x10000)
    view = k32.MapViewOfFile(section, 0x2, 0, 0, 0)  # FILE_MAP_WRITE
    assert k32.VirtualQuery(view).Type == MEM_MAPPED
    seen = []
    uc.hook_add(UC_HOOK_MEM_WRITE, lambda uc, a, addr, size, value, ud: seen.append((addr, size, value)),
                None, view, view + 0xFFF)
    uc.mem_map(0x400000, 0x1000, UC_PROT_ALL)
    reg = "rbx" if uc_mode == UC_MODE_64 else "ebx"
    code = asm(uc_mode, f"mov {reg}, {view + 0x10:#x}; mov dword ptr [{reg}], 0xabcd", 0x400000)
    uc.mem_write(0x400000, code)
    uc.emu_start(0x400000, 0x400000 + len(code))
    assert seen == [(view + 0x10, 4, 0xABCD)]
    assert uc.mem_read(view + 0x10, 2) == b"\xcd\xab"


def test_rollback_and_snapshots_cover_unicorn_mappings(uc_mode: int) -> None:
    uc = Uc(UC_ARCH_X86, uc_mode)
    mm = MemoryManager(uc)
    uc.mem_map(0x400000, 0x3000, UC_PROT_READ | UC_PROT_WRITE)
    uc.mem_write(0x400000, b"before")
    uc.mem_protect(0x401000, 0x1000, UC_PROT_READ)
    regions = list(uc.mem_regions())
    cp = mm.checkpoint()
    uc.mem_write(0x400000, b"after!")
    uc.mem_unmap(0x402000, 0x1000)
    uc.mem_map(0x800000, 0x1000)
    mm.rollback(cp)
    assert uc.mem_read(0x400000, 6) == b"before"
    assert list(uc.mem_regions()) == regions
    blob = io.BytesIO()
    save_snapshot(mm, blob)
    uc2 = Uc(UC_ARCH_X86, uc_mode)
    mm2 = MemoryManager(uc2)
    blob.seek(0)
    load_snapshot(mm2, blob)
    assert uc2.mem_read(0x400000, 6) == b"before"
    assert [r[:2] for r in uc2.mem_regions()] == [
        (0x400000, 0x400FFF), (0x401000, 0x401FFF), (0x402000, 0x402FFF)]


def test_rollback_covers_mappings_outside_the_user_range() -> None:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mm = MemoryManager(uc)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"low")
    uc.mem_map(0xFFFFF78000000000, 0x1000)  # above the identity area: a buffer of its own
    uc.mem_write(0xFFFFF78000000000, b"high")
    regions = list(uc.mem_regions())
    cp = mm.checkpoint()
    uc.mem_write(0x1000, b"LOW")
    uc.mem_write(0xFFFFF78000000000, b"HIGH")
    uc.mem_unmap(0x1000, 0x1000)
    uc.mem_map(0x5000, 0x1000)
    mm.rollback(cp)
    assert list(uc.mem_regions()) == regions
    assert uc.mem_read(0x1000, 3) == b"low"
    assert uc.mem_read(0xFFFFF78000000000, 4) == b"high"


@pytest.mark.parametrize("address", [0x1000, 0xFFFFF78000000000])
def test_snapshot_files_refuse_mappings_outside_the_user_range(address: int) -> None:
    """The file format describes the Windows user range; such a layout is refused whole
    before anything is written."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mm = MemoryManager(uc)
    uc.mem_map(address, 0x1000)
    blob = io.BytesIO()
    with pytest.raises(SnapshotError):
        save_snapshot(mm, blob)
    assert blob.getvalue() == b""
