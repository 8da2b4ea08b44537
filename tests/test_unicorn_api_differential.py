"""Unicorn's own API with the manager attached behaves as plain Unicorn: differential tests.

Each scenario runs on a plain ``Uc`` and on a ``Uc`` + ``MemoryManager`` (tests/uc_diff.py)
and everything observable must match: call results and ``UcError`` codes, hook calls and
their arguments, registers, ``mem_regions()`` and memory contents. 32- and 64-bit.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest
from uc_diff import MODES, Probe, assert_same
from unicorn import (
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_NONE,
    UC_PROT_READ,
    UC_PROT_WRITE,
)

CODE = 0x400000
DATA = 0x600000
STACK = 0x7F0000
LOW = 0x1000  # below the 64 KiB Windows never hands out
RW = UC_PROT_READ | UC_PROT_WRITE
RX = UC_PROT_READ | UC_PROT_EXEC

mode = pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))


def setup_code(p: Probe, source: str, size: int = 0x2000, at: int = CODE) -> int:
    p.call("mem_map", at, size, UC_PROT_ALL)
    p.call("mem_map", STACK, 0x10000, RW)
    p.set_reg(p.sp(), STACK + 0x8000)
    return p.place(at, source)


def run(p: Probe, begin: int, until: int, **kwargs: Any) -> None:
    p.call("emu_start", begin, until, **kwargs)


# -- mapping calls --------------------------------------------------------------------------------
@mode
def test_map_arguments_and_overlaps(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", CODE, 0x3000, UC_PROT_ALL)
        p.call("mem_map", CODE + 0x1000, 0x1000)          # overlap: UC_ERR_MAP
        p.call("mem_map", CODE - 0x1000, 0x2000)          # overlaps the start
        p.call("mem_map", DATA + 0x10, 0x1000)            # misaligned address: UC_ERR_ARG
        p.call("mem_map", DATA, 0x1800)                   # misaligned size
        p.call("mem_map", DATA, 0)                        # empty
        p.call("mem_map", LOW, 0x1000, UC_PROT_READ)      # below 64 KiB is fine for Unicorn
        p.call("mem_map", CODE + 0x3000, 0x1000, RW)      # adjacent: a region of its own
        p.call("mem_map", 0xFFFF0000, 0x10000, RW)        # the top of the 32-bit space
        p.call("mem_write", 0xFFFFFFF0, b"top of memory!!!")
        p.call("mem_read", 0xFFFFFFF8, 8)
        p.call("mem_regions")
    assert_same(scenario, mode)


@mode
def test_partial_unmap_and_protect_split_regions(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", DATA, 0x8000, RW)
        p.call("mem_write", DATA, bytes(range(256)) * 128)
        p.call("mem_protect", DATA + 0x2000, 0x2000, UC_PROT_READ)
        p.call("mem_regions")
        p.call("mem_unmap", DATA + 0x5000, 0x1000)
        p.call("mem_regions")
        p.call("mem_protect", DATA + 0x2000, 0x2000, RW)  # back to RW: Unicorn keeps the split
        p.call("mem_regions")
        p.call("mem_read", DATA + 0x4ff0, 0x20)           # runs into the hole: READ_UNMAPPED
        p.call("mem_write", DATA + 0x5ff0, b"x" * 0x20)   # WRITE_UNMAPPED
        p.call("mem_protect", DATA + 0x4000, 0x2000, RW)  # across the hole: NOMEM
        p.call("mem_unmap", DATA + 0x4000, 0x2000)        # NOMEM
        p.call("mem_protect", DATA + 0x800, 0x1000, RW)   # misaligned: ARG
        p.call("mem_protect", DATA + 0x123, 0, 1)         # size 0: nothing, not even checks
        p.call("mem_unmap", DATA + 0x123, 0)
        p.call("mem_read", DATA + 0x1ffc, 8)
    assert_same(scenario, mode)


@mode
def test_unmap_and_protect_across_several_mappings(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", DATA, 0x2000, RW)
        p.call("mem_map", DATA + 0x2000, 0x3000, UC_PROT_ALL)
        p.call("mem_map", DATA + 0x5000, 0x1000, UC_PROT_READ)
        p.call("mem_protect", DATA + 0x1000, 0x4000, UC_PROT_READ)
        p.call("mem_regions")
        p.call("mem_unmap", DATA + 0x1000, 0x3000)
        p.call("mem_regions")
        p.call("mem_map", DATA + 0x1000, 0x3000, UC_PROT_EXEC | UC_PROT_READ)  # the hole again
        p.call("mem_regions")
        p.call("mem_read", DATA + 0x1000, 0x10)  # a fresh mapping reads zeros
    assert_same(scenario, mode)


# -- guest faults ---------------------------------------------------------------------------------
@mode
@pytest.mark.parametrize("source", [
    "inc ecx; mov eax, dword ptr [{data}]; inc ecx",          # read unmapped
    "inc ecx; mov dword ptr [{data}], eax; inc ecx",          # write unmapped
    "inc ecx; push eax; inc ecx",                              # stack write unmapped (sp moved)
    "inc ecx; mov eax, {data}; jmp eax",                      # fetch unmapped
], ids=["read", "write", "push", "fetch"])
def test_unmapped_access_without_hooks(mode: int, source: str) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, source.format(data=DATA + 0x10))
        p.set_reg(p.sp(), DATA + 0x100)
        run(p, CODE, end)
    assert_same(scenario, mode)


@mode
def test_protection_faults_without_hooks(mode: int) -> None:
    def scenario(p: Probe) -> None:
        setup_code(p, "nop")
        p.call("mem_map", DATA, 0x1000, UC_PROT_READ)
        p.call("mem_map", DATA + 0x1000, 0x1000, UC_PROT_NONE)
        p.call("mem_map", DATA + 0x2000, 0x1000, RW)
        p.call("mem_write", DATA + 0x2000, b"\x90\xc3")
        for source in (f"inc ecx; mov dword ptr [{DATA + 8:#x}], eax",      # WRITE_PROT
                       f"inc ecx; mov eax, dword ptr [{DATA + 0x1008:#x}]",  # READ_PROT
                       f"inc ecx; mov eax, {DATA + 0x2000:#x}; jmp eax",     # FETCH_PROT
                       f"mov eax, dword ptr [{DATA + 8:#x}]"):               # fine
            end = p.place(CODE + 0x100, source)
            run(p, CODE + 0x100, end)
            p.note("ecx", p.reg("ECX"))
    assert_same(scenario, mode)


@mode
def test_lazy_mapping_hook_retries_the_access(mode: int) -> None:
    def on_demand(uc: Any, access: int, address: int, size: int, value: int) -> bool:
        uc.mem_map(address & ~0xFFF, 0x1000, UC_PROT_ALL)
        uc.mem_write(address & ~0xFFF, b"\xcc" * 0x10)  # fetched code must be the new bytes
        return True

    def scenario(p: Probe) -> None:
        end = setup_code(p, f"""
            mov eax, dword ptr [{DATA + 4:#x}]
            mov dword ptr [{DATA + 0x10008:#x}], 0x12345678
            add eax, dword ptr [{DATA + 0x10008:#x}]
            mov ebx, {DATA + 0x20000:#x}
            call ebx
        """)
        p.hook(UC_HOOK_MEM_UNMAPPED, on_demand)
        p.hook(UC_HOOK_MEM_READ, label="read")
        p.hook(UC_HOOK_MEM_WRITE, label="write")
        run(p, CODE, end)  # stops at the int3 the fetch hook mapped
    assert_same(scenario, mode)


@mode
def test_hooks_that_decline_and_that_do_not_map(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"mov eax, dword ptr [{DATA + 4:#x}]")
        p.hook(UC_HOOK_MEM_READ_UNMAPPED, lambda *a: False, label="declines")
        run(p, CODE, end)  # READ_UNMAPPED after the hook
        p.hook(UC_HOOK_MEM_READ_UNMAPPED, lambda *a: True, label="lies")
        run(p, CODE, end)  # the first hook declines, the second says handled: UC_ERR_MAP
        p.hook(UC_HOOK_MEM_WRITE_UNMAPPED, lambda *a: False, begin=DATA + 0x10000, end=DATA + 0x10fff,
               label="elsewhere")
        end = p.place(CODE + 0x100, f"mov dword ptr [{DATA + 8:#x}], 7")
        run(p, CODE + 0x100, end)  # out of that hook's range: not called
    assert_same(scenario, mode)


@mode
def test_prot_hooks(mode: int) -> None:
    def reprotect(uc: Any, access: int, address: int, size: int, value: int) -> bool:
        uc.mem_protect(address & ~0xFFF, 0x1000, UC_PROT_ALL)
        return True

    def scenario(p: Probe) -> None:
        setup_code(p, "nop")
        p.call("mem_map", DATA, 0x1000, UC_PROT_READ)
        p.call("mem_map", DATA + 0x1000, 0x1000, UC_PROT_NONE)
        p.call("mem_map", DATA + 0x2000, 0x1000, RW)
        p.call("mem_write", DATA + 0x1000, b"\x11\x22\x33\x44")
        p.call("mem_write", DATA + 0x2000, b"\x40\xc3")  # inc eax / rex; ret
        p.hook(UC_HOOK_MEM_WRITE_PROT, lambda *a: True, label="write lets through")
        # (re-protecting from a READ_PROT hook crashes plain Unicorn 2.1.4: not compared here,
        # see test_unicorn_api_managed.py)
        p.hook(UC_HOOK_MEM_READ_PROT, lambda *a: True, label="read lets through")
        p.hook(UC_HOOK_MEM_FETCH_PROT, reprotect, label="fetch reprotects")
        p.hook(UC_HOOK_MEM_READ, label="read")
        p.hook(UC_HOOK_MEM_WRITE, label="write")
        end = p.place(CODE + 0x100, f"""
            mov dword ptr [{DATA + 0x10:#x}], 0xabcdef
            mov eax, dword ptr [{DATA + 0x1000:#x}]
            mov ebx, {DATA + 0x2000:#x}
            call ebx
        """)
        run(p, CODE + 0x100, end)
        p.call("mem_regions")
    assert_same(scenario, mode)


@mode
def test_write_hook_sees_writes_that_fault(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"mov dword ptr [{DATA + 0x20:#x}], 0x55667788")
        p.call("mem_map", DATA + 0x1000, 0x1000, UC_PROT_READ)
        p.hook(UC_HOOK_MEM_WRITE, label="write")
        run(p, CODE, end)  # unmapped: the write hook runs first, then WRITE_UNMAPPED
        end = p.place(CODE + 0x100, f"mov dword ptr [{DATA + 0x1020:#x}], 0x55667788")
        run(p, CODE + 0x100, end)  # read-only: write hook, then WRITE_PROT
    assert_same(scenario, mode)


@mode
def test_fetch_unmapped_hook_maps_code(mode: int) -> None:
    def scenario(p: Probe) -> None:
        body = p.asm("mov eax, 0x77; ret", DATA)

        def load(uc: Any, access: int, address: int, size: int, value: int) -> bool:
            uc.mem_map(address & ~0xFFF, 0x1000, RX)
            uc.mem_write(address & ~0xFFF, body)
            return True

        end = setup_code(p, f"mov ebx, {DATA:#x}; call ebx; inc eax")
        p.hook(UC_HOOK_MEM_FETCH_UNMAPPED, load)
        run(p, CODE, end)
    assert_same(scenario, mode)


# -- memory hooks -----------------------------------------------------------------------------------
@mode
def test_memory_hook_ranges(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"""
            mov eax, dword ptr [{DATA:#x}]
            mov dword ptr [{DATA + 0x800:#x}], eax
            mov dword ptr [{DATA + 0x1004:#x}], 9
            mov ax, word ptr [{DATA + 0x1004:#x}]
            push eax
            pop ebx
        """)
        p.call("mem_map", DATA, 0x2000, RW)
        p.call("mem_write", DATA, b"\x01\x02\x03\x04")
        p.hook(UC_HOOK_MEM_READ, begin=DATA + 0x1000, end=DATA + 0x1fff, label="read second page")
        p.hook(UC_HOOK_MEM_WRITE, begin=DATA, end=DATA + 0x7ff, label="write first half")
        p.hook(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, label="everything")
        run(p, CODE, end)
    assert_same(scenario, mode)


@mode
def test_hook_del(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"mov eax, dword ptr [{DATA:#x}]")
        p.call("mem_map", DATA, 0x1000, RW)
        handle = p.hook(UC_HOOK_MEM_READ, label="read")
        run(p, CODE, end)
        p.uc.hook_del(handle)
        run(p, CODE, end)
        handle = p.hook(UC_HOOK_MEM_READ_UNMAPPED, lambda *a: True, label="gone")
        p.uc.hook_del(handle)
        p.call("mem_unmap", DATA, 0x1000)
        run(p, CODE, end)
    assert_same(scenario, mode)


# -- shared buffers and devices ---------------------------------------------------------------------
@mode
def test_mem_map_ptr_shares_the_host_buffer(mode: int) -> None:
    buffers: list[Any] = []

    def scenario(p: Probe) -> None:
        buf = ctypes.create_string_buffer(0x2000)
        buffers.append(buf)
        buf[0:4] = b"\x10\x20\x30\x40"
        end = setup_code(p, f"""
            mov eax, dword ptr [{DATA:#x}]
            mov dword ptr [{DATA + 0x1800:#x}], 0xdeadbeef
        """)
        p.call("mem_map_ptr", DATA, 0x2000, RW, ctypes.addressof(buf))
        p.hook(UC_HOOK_MEM_WRITE, label="write")
        run(p, CODE, end)
        p.note("host sees", bytes(buf[0x1800:0x1804]))
        buf[0x10:0x14] = b"host"
        p.call("mem_read", DATA + 0x10, 4)
        p.call("mem_map_ptr", DATA + 0x2000, 0x1000, RW, 0)  # NULL pointer: ARG
    assert_same(scenario, mode)


@mode
def test_mmio(mode: int) -> None:
    def scenario(p: Probe) -> None:
        regs: dict[int, int] = {}

        def read(uc: Any, offset: int, size: int, ud: Any) -> int:
            p.note("mmio read", offset, size, ud)
            return regs.get(offset, 0x1000 + offset)

        def write(uc: Any, offset: int, size: int, value: int, ud: Any) -> None:
            p.note("mmio write", offset, size, value, ud)
            regs[offset] = value

        end = setup_code(p, f"""
            mov eax, dword ptr [{DATA + 0x10:#x}]
            mov dword ptr [{DATA + 0x20:#x}], 0x1234
            mov ebx, dword ptr [{DATA + 0x20:#x}]
            mov byte ptr [{DATA + 0x1003:#x}], 7
        """)
        p.call("mmio_map", DATA, 0x1000, read, "r", write, "w")
        p.call("mmio_map", DATA + 0x1000, 0x1000, read, "ro", None, None)  # no write callback
        p.hook(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, begin=DATA, end=DATA + 0x1fff, label="mmio access")
        run(p, CODE, end)
        p.note("ebx", p.reg("EBX"))
        p.call("mem_unmap", DATA, 0x1000)
    assert_same(scenario, mode)


# -- code ---------------------------------------------------------------------------------------------
@mode
def test_code_in_several_mappings(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"mov ebx, {LOW:#x}; call ebx; mov ebx, {DATA:#x}; call ebx; inc eax")
        p.call("mem_map", LOW, 0x1000, RX)
        p.call("mem_map", DATA, 0x1000, RX)
        p.place(LOW, "add eax, 2; ret")
        p.place(DATA, "add eax, 0x30; ret")
        p.code_hook(begin=LOW, end=LOW + 0xFFF)
        run(p, CODE, end)
    assert_same(scenario, mode)


@mode
def test_self_modifying_code(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"""
            mov byte ptr [{CODE + 0x40:#x}], 0x41
            jmp {CODE + 0x40:#x}
        """)
        p.place(CODE + 0x40, "inc ecx; inc ecx; nop")  # first byte patched to `inc ecx`/rex
        run(p, CODE, CODE + 0x42)
        p.place(CODE + 0x80, "mov eax, 1")
        run(p, CODE + 0x80, CODE + 0x85)
        p.place(CODE + 0x80, "mov eax, 2")  # the host patches code that already ran
        run(p, CODE + 0x80, CODE + 0x85)
        del end
    assert_same(scenario, mode)


@mode
def test_emu_start_until_timeout_count(mode: int) -> None:
    def scenario(p: Probe) -> None:
        setup_code(p, "top: inc eax; inc ebx; inc ecx; inc edx; jmp top")
        run(p, CODE, 0, count=7)
        p.note("eax", p.reg("EAX"), "ebx", p.reg("EBX"))
        run(p, CODE, CODE + (8 if p.is_64bit else 4), count=100)  # until comes first
        run(p, CODE, 0xDEAD0000, timeout=1000, count=50)  # count stops first; until unmapped
        p.place(CODE + 0x100, "mov eax, 5; ret")
        p.set_reg(p.sp(), STACK + 0x8000)
        p.call("mem_write", STACK + 0x8000, (0xDEAD0000).to_bytes(8, "little"))
        run(p, CODE + 0x100, 0xDEAD0000)  # return to an unmapped sentinel
    assert_same(scenario, mode)


@mode
def test_emu_stop_from_a_hook(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"""
            inc eax
            mov dword ptr [{DATA + 0x10:#x}], eax
            inc eax
            inc eax
        """)
        p.call("mem_map", DATA, 0x1000, RW)

        def stop(uc: Any, access: int, address: int, size: int, value: int) -> None:
            uc.emu_stop()

        p.hook(UC_HOOK_MEM_WRITE, stop, label="stop")
        run(p, CODE, end)
    assert_same(scenario, mode)


@mode
def test_context_save_restore(mode: int) -> None:
    def scenario(p: Probe) -> None:
        end = setup_code(p, f"add eax, 3; mov dword ptr [{DATA:#x}], eax")
        p.call("mem_map", DATA, 0x1000, RW)
        context = p.uc.context_save()
        run(p, CODE, end)
        p.note("eax", p.reg("EAX"))
        p.uc.context_restore(context)
        run(p, CODE, end)
        run(p, CODE, end)
    assert_same(scenario, mode)


@mode
@pytest.mark.parametrize("perms", [None, UC_PROT_READ | UC_PROT_WRITE], ids=["unmapped", "no-exec"])
def test_running_off_the_end_of_code_the_documented_difference(mode: int, perms: int | None) -> None:
    """Straight-line code that runs into a page it may not execute: the same UcError code as
    plain Unicorn, but the instructions before the boundary retire and the PC stops on the
    boundary (Windows' view; plain Unicorn reports the fault at the block's start)."""
    results = {}
    for managed in (False, True):
        p = Probe(mode, managed)
        p.call("mem_map", CODE, 0x1000, UC_PROT_ALL)
        if perms is not None:
            p.call("mem_map", CODE + 0x1000, 0x1000, perms)
        p.call("mem_write", CODE + 0xFF0, b"\x90" * 15 + b"\x90")  # nops up to the boundary
        p.call("emu_start", CODE + 0xFF0, CODE + 0x1010)
        results[managed] = (p.log[-1], p.reg("RIP" if p.is_64bit else "EIP"))
    (plain_call, plain_pc), (managed_call, managed_pc) = results[False], results[True]
    assert managed_call == plain_call  # ('emu_start', ..., 'UcError', FETCH_UNMAPPED/PROT)
    assert plain_call[2] == "UcError"
    assert plain_pc == CODE + 0xFF0
    assert managed_pc == CODE + 0x1000
