"""Unicorn's own API stays truthful with the manager attached.

In virtual-TLB mode ``uc.mem_read`` and ``UC_HOOK_MEM_*`` see physical addresses; the manager
keeps ordinary private memory identity mapped so that users of the plain Unicorn API (address
range hooks, ``uc.mem_read``) keep seeing the guest's virtual addresses and bytes. Host writes
through ``mm.write`` must invalidate translated code. And Unicorn's ``emu_start`` contract
(stop at ``until``, ``count``, hook removal) must not turn into guest faults: Unicorn looks
addresses up through the TLB-fill hook for its own bookkeeping, which are no guest accesses.
"""

from __future__ import annotations

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    UC_MODE_32,
    UC_MODE_64,
    UC_PROT_ALL,
    Uc,
    UcError,
)
from unicorn.x86_const import (
    UC_X86_REG_EAX,
    UC_X86_REG_EBX,
    UC_X86_REG_ECX,
    UC_X86_REG_EIP,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RIP,
)

from emulator_mem import MemoryManager

PAGE_READWRITE = 0x04
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_GUARD = 0x100

CODE = 0x0100_0000
DATA = 0x0200_0000
SENTINEL = 0x0DEA_0000  # never allocated


class Guest:
    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.mode = UC_MODE_64 if bits == 64 else UC_MODE_32
        self.uc = Uc(UC_ARCH_X86, self.mode)
        self.mm = MemoryManager(self.uc)
        self.ks = Ks(KS_ARCH_X86, KS_MODE_64 if bits == 64 else KS_MODE_32)
        self.ax, self.bx, self.cx = (
            (UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX) if bits == 64
            else (UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX))

    def asm(self, source: str, address: int = 0) -> bytes:
        regs = {"ax": "rax", "bx": "rbx", "cx": "rcx"} if self.bits == 64 else {
            "ax": "eax", "bx": "ebx", "cx": "ecx"}
        encoding, _ = self.ks.asm(source.format(**regs), address)
        return bytes(encoding)

    def run(self, begin: int, until: int, count: int = 0) -> None:
        """emu_start that must succeed and leave no fault behind."""
        try:
            self.uc.emu_start(begin, until, count=count)
        except UcError as e:
            raise AssertionError(f"{e}; fault recorded: {self.mm.take_fault()}") from None
        assert self.mm.take_fault() is None, "a fault was recorded though the run succeeded"


@pytest.fixture(params=[32, 64], ids=["x86", "x64"])
def guest(request: pytest.FixtureRequest) -> Guest:
    return Guest(int(request.param))


# --- hooks and uc.mem_read see virtual addresses --------------------------------------------------
def test_mem_write_hook_sees_virtual_addresses(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    data = mm.allocate(0x2000, PAGE_READWRITE, address=DATA)
    other = mm.allocate(0x1000, PAGE_READWRITE, address=DATA + 0x10000)
    seen: list[tuple[int, int, int]] = []
    uc.hook_add(UC_HOOK_MEM_WRITE, lambda uc, access, address, size, value, _: seen.append(
        (address, size, value)), begin=data, end=data + 0x1FFF)
    program = guest.asm(
        "mov dword ptr [{bx}], 0x11223344; mov dword ptr [{bx} + 0x1000], 0x55667788;"
        "mov word ptr [{cx}], 0x99aa", code)
    mm.write(code, program)
    uc.reg_write(guest.bx, data + 0x10)
    uc.reg_write(guest.cx, other + 0x20)
    guest.run(code, code + len(program))
    assert seen == [(data + 0x10, 4, 0x11223344), (data + 0x1010, 4, 0x55667788)]
    assert bytes(uc.mem_read(data + 0x10, 4)) == bytes.fromhex("44332211")
    assert bytes(uc.mem_read(data + 0x1010, 4)) == bytes.fromhex("88776655")
    assert bytes(uc.mem_read(other + 0x20, 2)) == bytes.fromhex("aa99")
    assert mm.read(data + 0x10, 4) == bytes.fromhex("44332211")


def test_mem_read_hook_sees_virtual_addresses(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    data = mm.allocate(0x1000, PAGE_READWRITE, address=DATA)
    mm.write(data + 0x40, b"\x01\x02\x03\x04")
    seen: list[tuple[int, int]] = []
    uc.hook_add(UC_HOOK_MEM_READ, lambda uc, access, address, size, value, _: seen.append(
        (address, size)), begin=data, end=data + 0xFFF)
    program = guest.asm("mov eax, dword ptr [{bx}]", code)
    mm.write(code, program)
    uc.reg_write(guest.bx, data + 0x40)
    guest.run(code, code + len(program))
    assert seen == [(data + 0x40, 4)]
    assert uc.reg_read(guest.ax) == 0x04030201


def test_uc_mem_read_and_write_agree_with_the_manager(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x3000, PAGE_READWRITE, address=DATA)
    mm.write(data + 0xFFE, b"span")
    assert bytes(uc.mem_read(data + 0xFFE, 4)) == b"span"
    uc.mem_write(data + 0x2000, b"from unicorn")
    assert mm.read(data + 0x2000, 12) == b"from unicorn"


# --- translated code is invalidated by host writes ------------------------------------------------
@pytest.mark.parametrize("protect", [PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE])
def test_host_rewrite_of_executed_code(guest: Guest, protect: int) -> None:
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, protect, address=CODE)
    first = guest.asm("mov eax, 1; add eax, 2")
    second = guest.asm("mov eax, 5; add eax, 7")
    assert len(first) == len(second)
    mm.write(code, first)
    for _ in range(3):  # warm: the block is translated (and cached)
        guest.run(code, code + len(first))
        assert uc.reg_read(guest.ax) == 3
    mm.write(code, second)
    guest.run(code, code + len(second))
    assert uc.reg_read(guest.ax) == 12
    mm.write(code + len(second) - 1, b"\x10")  # patch one immediate in the middle of a block
    guest.run(code, code + len(second))
    assert uc.reg_read(guest.ax) == 21


def test_host_rewrite_of_a_hot_loop(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    first = guest.asm("xor eax, eax; mov ecx, 100; l: add eax, 1; dec ecx; jnz l", code)
    second = guest.asm("xor eax, eax; mov ecx, 100; l: add eax, 3; dec ecx; jnz l", code)
    assert len(first) == len(second)
    mm.write(code, first)
    guest.run(code, code + len(first))
    assert uc.reg_read(guest.ax) == 100
    mm.write(code, second)
    guest.run(code, code + len(second))
    assert uc.reg_read(guest.ax) == 300


def test_code_after_decommit_and_recommit(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READWRITE, address=CODE)
    program = guest.asm("mov eax, 0x1111")
    mm.write(code, program)
    guest.run(code, code + len(program))
    mm.decommit(code, 0x1000)
    mm.commit(code, 0x1000, PAGE_EXECUTE_READWRITE)
    assert mm.read(code, len(program)) == bytes(len(program))
    program = guest.asm("mov eax, 0x2222")
    mm.write(code, program)
    guest.run(code, code + len(program))
    assert uc.reg_read(guest.ax) == 0x2222


def test_guest_self_modifying_code(guest: Guest) -> None:
    """The guest patches code it already ran (RWX page); the patched code runs."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READWRITE, address=CODE)
    target = code + 0x800
    body = guest.asm("mov eax, 1")
    mm.write(target, body)
    patch = guest.asm("mov dword ptr [{bx} + 1], 77", code)
    mm.write(code, patch)
    guest.run(target, target + len(body))
    assert uc.reg_read(guest.ax) == 1
    uc.reg_write(guest.bx, target)
    guest.run(code, code + len(patch))
    guest.run(target, target + len(body))
    assert uc.reg_read(guest.ax) == 77


# --- emu_start's own lookups are not guest accesses -----------------------------------------------
def test_return_to_an_unmapped_until_sentinel(guest: Guest) -> None:
    """The common harness idiom: run a function until it jumps/returns to a sentinel.

    Bare Unicorn stops cleanly when the guest reaches ``until`` (checked here as the control).
    With the manager the stop at an address without an executable translation becomes
    UC_ERR_EXCEPTION plus an access-violation fault.
    """
    program = guest.asm("mov eax, 42; jmp {bx}")
    bare = Uc(UC_ARCH_X86, guest.mode)
    bare.mem_map(CODE, 0x1000, UC_PROT_ALL)
    bare.mem_write(CODE, program)
    bare.reg_write(guest.bx, SENTINEL)
    bare.emu_start(CODE, SENTINEL)
    assert bare.reg_read(guest.ax) == 42

    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    mm.write(code, program)
    uc.reg_write(guest.bx, SENTINEL)
    guest.run(code, SENTINEL)
    assert uc.reg_read(guest.ax) == 42


def test_until_in_data_memory_never_reached(guest: Guest) -> None:
    """The run ends with ``hlt``; ``until`` points into a READWRITE page nobody executes."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    data = mm.allocate(0x1000, PAGE_READWRITE, address=DATA)
    program = guest.asm("mov eax, 5; hlt")
    mm.write(code, program)
    guest.run(code, data + 0x10)
    assert uc.reg_read(guest.ax) == 5


def test_run_after_a_count_limited_run_over_freed_code(guest: Guest) -> None:
    """Time-sliced execution (``count=N``), then the sliced code is freed (an unpacker stub).

    When the count hook goes away Unicorn drops the blocks it instrumented, looking their
    pages up through the TLB-fill hook; the manager refuses the freed page and the next,
    unrelated ``emu_start`` fails.
    """
    mm, uc = guest.mm, guest.uc
    stub = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    main = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE + 0x10000)
    program = guest.asm("mov eax, 9; mov eax, 10")
    mm.write(stub, program)
    mm.write(main, program)
    guest.run(stub, stub + len(program), count=1)
    assert uc.reg_read(guest.ax) == 9
    mm.release(stub)
    guest.run(main, main + len(program))
    assert uc.reg_read(guest.ax) == 10


def test_deleting_a_code_hook_does_not_touch_a_guard_page(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    program = guest.asm("mov eax, 3")
    mm.write(code, program)
    hook = uc.hook_add(UC_HOOK_CODE, lambda *args: None, begin=code, end=code + 0xFFF)
    guest.run(code, code + len(program))
    mm.protect(code, 0x1000, PAGE_EXECUTE_READ | PAGE_GUARD)
    uc.hook_del(hook)
    other = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE + 0x10000)
    mm.write(other, program)
    guest.run(other, other + len(program))
    assert mm.query(code).Protect == 0x120, "the guard was consumed without a guest access"


def test_uc_mem_write_of_executed_code_is_seen(guest: Guest) -> None:
    """Users patching code with Unicorn's own ``mem_write`` get fresh translations too."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    first, second = guest.asm("mov eax, 0x31"), guest.asm("mov eax, 0x32")
    uc.mem_write(code, first)
    guest.run(code, code + len(first))
    assert uc.reg_read(guest.ax) == 0x31
    uc.mem_write(code, second)
    guest.run(code, code + len(second))
    assert uc.reg_read(guest.ax) == 0x32
    assert mm.read(code, len(second)) == second


def test_jit_dual_mapping(guest: Guest) -> None:
    """Code written through a READWRITE view runs through its EXECUTE_READ alias."""
    mm, uc = guest.mm, guest.uc
    rw = mm.allocate(0x1000, PAGE_READWRITE, address=DATA)
    rx = mm.map_alias(rw, 0x1000, PAGE_EXECUTE_READ, address=DATA + 0x10000)
    writer = mm.allocate(0x1000, PAGE_EXECUTE_READ, address=CODE)
    mm.write(rw, guest.asm("mov eax, 1"))
    guest.run(rx, rx + 5)
    assert uc.reg_read(guest.ax) == 1
    mm.write(rw, guest.asm("mov eax, 2"))  # host, through the RW view
    guest.run(rx, rx + 5)
    assert uc.reg_read(guest.ax) == 2
    patch = guest.asm("mov dword ptr [{bx} + 1], 3", writer)  # the guest, through the RW view
    mm.write(writer, patch)
    uc.reg_write(guest.bx, rw)
    guest.run(writer, writer + len(patch))
    guest.run(rx, rx + 5)
    assert uc.reg_read(guest.ax) == 3
    uc.mem_write(rw, guest.asm("mov eax, 4"))  # Unicorn's API (identity: rw is physical too)
    guest.run(rx, rx + 5)
    assert uc.reg_read(guest.ax) == 4


def test_code_at_a_reused_address(guest: Guest) -> None:
    """Translations die with the memory: release (whole or partial) then reallocate."""
    mm, uc = guest.mm, guest.uc
    a = mm.allocate(0x1000, PAGE_EXECUTE_READWRITE, address=CODE)
    mm.write(a, guest.asm("mov eax, 1"))
    guest.run(a, a + 5)
    mm.release(a)
    a = mm.allocate(0x1000, PAGE_EXECUTE_READWRITE, address=CODE)
    assert mm.read(a, 5) == bytes(5)
    mm.write(a, guest.asm("mov eax, 2"))
    guest.run(a, a + 5)
    assert uc.reg_read(guest.ax) == 2
    b = mm.allocate(0x20000, PAGE_EXECUTE_READWRITE, address=DATA)
    mm.write(b + 0x10000, guest.asm("mov eax, 4"))
    guest.run(b + 0x10000, b + 0x10005)
    mm.release(b + 0x10000, 0x10000)
    c = mm.allocate(0x10000, PAGE_EXECUTE_READWRITE, address=b + 0x10000)
    mm.write(c, guest.asm("mov eax, 5"))
    guest.run(c, c + 5)
    assert uc.reg_read(guest.ax) == 5


def test_code_hook_sees_the_instructions_then_one_phantom_at_the_boundary(guest: Guest) -> None:
    """Straight-line code runs up to a READWRITE page: a UC_HOOK_CODE tracer sees the four
    ``nop``s, then — the documented cost of the fetch trap (emulator_mem/fetchtrap.py) — the
    marker load at the boundary (5 bytes on x86, 9 on x64), which faults before it changes
    anything; the run ends with the execute fault at the boundary."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READ, address=CODE)
    boundary = code + 0x1000
    mm.protect(boundary, 0x1000, PAGE_READWRITE)
    mm.write(boundary - 4, b"\x90" * 4)
    seen: list[tuple[int, int]] = []
    uc.hook_add(UC_HOOK_CODE, lambda uc, address, size, _: seen.append((address, size)))
    with pytest.raises(UcError):
        uc.emu_start(boundary - 4, code + 0x800)
    fault = mm.take_fault()
    assert fault is not None and (fault.status, fault.address, fault.access) == (
        0xC0000005, boundary, 8)
    marker_size = 9 if guest.bits == 64 else 5
    assert seen == [(boundary - 4 + i, 1) for i in range(4)] + [(boundary, marker_size)]
    assert uc.reg_read(UC_X86_REG_RIP if guest.bits == 64 else UC_X86_REG_EIP) == boundary
