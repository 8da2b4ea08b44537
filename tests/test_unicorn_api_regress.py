"""What Unicorn's own regression tests guard for x86 memory, checked in our words — and
differentially: each behaviour runs on plain Unicorn and on Unicorn + MemoryManager and must
come out the same (tests/uc_diff.py). Topics follow unicorn-engine/unicorn tests/regress
(memmap, memmap_segfault, write_before_map, invalid_write, emu_clear_errors,
hook_readonly_write_local, rep_hook, nr_mem_test, high_mem, x86_self_modifying).
"""

from __future__ import annotations

from typing import Any

import pytest
from uc_diff import MODES, Probe, assert_same
from unicorn import (
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_VIRTUAL,
)

mode = pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))


@mode
def test_mapping_more_memory_keeps_what_was_written(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0x8048000, 0x2000)
        p.call("mem_write", 0x8048000, b"test")
        p.call("mem_map", 0x804A000, 0x8000)
        p.call("mem_read", 0x8048000, 4)
        p.call("mem_map", 0, 0x2000)          # page 0 is an ordinary address for Unicorn
        p.call("mem_map", 0x2000, 0x4000)
        p.call("mem_write", 0x1000, b" " * 0x1004)  # one write across two mappings
        p.call("mem_read", 0x1ffe, 4)
    assert_same(scenario, mode)


@mode
def test_odd_sizes_are_refused_and_leave_nothing_mapped(mode: int) -> None:
    def scenario(p: Probe) -> None:
        for i in range(6):
            p.call("mem_map", i * 0x1000, 5)
            p.call("mem_read", i * 0x1000 + 6, 1)
        p.call("mem_map", 0x2000, 0)
        p.call("mem_map", 0x4000, 1)
        p.call("mem_write", 0x1000000, b"\x90")  # before anything is mapped: WRITE_UNMAPPED
    assert_same(scenario, mode)


@mode
def test_declining_invalid_hook_gives_write_unmapped(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0x1000000, 0x200000)
        end = p.place(0x1000000, "mov dword ptr [0xaaaaa000], ecx; inc ecx; dec edx")
        p.set_reg("ECX", 0x1234)
        p.set_reg("EDX", 0x7890)
        p.hook(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED, lambda *a: False)
        p.call("emu_start", 0x1000000, end)
    assert_same(scenario, mode)


@mode
def test_an_error_does_not_stick_to_the_next_run(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0x1000, 0x1000)
        p.call("mem_map", 0x4000, 0x1000)
        end = p.place(0x1000, "mov esi, dword ptr [ecx + eax + 0x28]; add esi, eax; "
                              "lea eax, [ebp - 4]; push eax; push 0x40; push 0x10; push esi")
        p.set_reg(p.sp(), 0x4ff8)
        p.set_reg("EBP", 0x4ff8)
        p.call("emu_start", 0x1000, end, count=1)  # READ_UNMAPPED at 0x28
        length = len(p.asm("mov esi, dword ptr [ecx + eax + 0x28]", 0x1000))
        p.call("emu_start", 0x1000 + length, end)   # the rest runs fine
    assert_same(scenario, mode)


@mode
def test_read_hook_patching_a_read_only_page(mode: int) -> None:
    def scenario(p: Probe) -> None:
        code = p.asm("mov eax, dword ptr [0x1000]; mov eax, dword ptr [0x1000]", 0)
        p.call("mem_map", 0, 0x1000)
        p.call("mem_write", 0, code)
        p.call("mem_map", 0x1000, 0x1000, UC_PROT_READ)

        def patch(uc: Any, access: int, address: int, size: int, value: int) -> None:
            uc.mem_write(address, code)  # host writes ignore the page's protection

        p.hook(UC_HOOK_MEM_READ, patch, begin=0x1000, end=0x1fff)
        p.call("emu_start", 0, len(code))
    assert_same(scenario, mode)


@mode
def test_rep_stos_with_a_code_hook(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0, 0x1000)
        p.call("mem_write", 0, b"\xf3\xaa")  # rep stosb
        p.set_reg("ECX", 8)
        p.set_reg("EDI", 0x20)
        p.set_reg("EAX", 0x5A)
        p.code_hook()
        p.hook(UC_HOOK_MEM_WRITE, label="write")
        p.call("emu_start", 0, 2)
    assert_same(scenario, mode)


@mode
def test_rep_movs_running_into_an_unmapped_page(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0, 0x1000)
        p.call("mem_map", 0x10000, 0x1000, UC_PROT_READ | UC_PROT_WRITE)
        p.call("mem_write", 0, b"\xf3\xa4")  # rep movsb
        p.call("mem_write", 0x10ff0, bytes(range(16)))
        p.set_reg("ECX", 0x40)
        p.set_reg("ESI", 0x10ff0)
        p.set_reg("EDI", 0x10100)
        p.call("emu_start", 0, 2)  # the source runs off the mapping: READ_UNMAPPED mid-string
        p.note("ecx", p.reg("ECX"), "esi", p.reg("ESI"))
    assert_same(scenario, mode)


@mode
def test_non_readable_and_write_only_pages(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0x100000, 0x1000, UC_PROT_READ | 4)
        p.call("mem_map", 0x300000, 0x1000, UC_PROT_READ | UC_PROT_WRITE)
        p.call("mem_map", 0x400000, 0x1000, 0)  # no rights at all
        p.call("mem_write", 0x300000, b"AAAA")
        p.call("mem_write", 0x400000, b"BBBB")
        end = p.place(0x100000, "mov ebx, dword ptr [0x300000]; mov eax, dword ptr [0x400000]")
        p.hook(UC_HOOK_MEM_READ_PROT, lambda *a: False, label="read prot")
        p.call("emu_start", 0x100000, end)
        p.note("ebx", p.reg("EBX"))
    assert_same(scenario, mode)


def test_very_high_mappings_run_code() -> None:
    def scenario(p: Probe) -> None:
        p.call("ctl_set_tlb_mode", UC_TLB_VIRTUAL)  # plain Unicorn needs it this high
        for i in range(12):
            base = 0x0010000000000000 << i
            p.call("mem_map", base, 0x1000)
            p.call("mem_write", base, b"\xf4")  # hlt
            p.call("emu_start", base, base + 15, count=1)
        p.call("mem_map", 0xFFFFF78000000000, 0x1000, UC_PROT_READ)  # a kernel-style page
        p.call("mem_write", 0xFFFFF78000000000, b"kuser")
        p.call("mem_read", 0xFFFFF78000000000, 5)
    assert_same(scenario, UC_MODE_64)


@mode
def test_self_modifying_code_in_one_block(mode: int) -> None:
    def scenario(p: Probe) -> None:
        p.call("mem_map", 0x1000, 0x1000, UC_PROT_ALL)
        end = p.place(0x1000, """
            call here
            here: pop ebx
            mov byte ptr [ebx + 9], 0x90
            mov byte ptr [ebx + 10], 0x90
            inc ecx
            inc ecx
            inc ecx
        """)  # the stores hit the incs right behind them, in the block being run
        p.call("mem_map", 0x7000, 0x1000, UC_PROT_READ | UC_PROT_WRITE)
        p.set_reg(p.sp(), 0x7800)
        p.code_hook()
        p.call("emu_start", 0x1000, end)
        p.note("ecx", p.reg("ECX"))
    assert_same(scenario, mode)
