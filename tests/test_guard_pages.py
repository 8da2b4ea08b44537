"""PAGE_GUARD and PAGE_NOACCESS as the guest sees them.

Windows: the first access of any kind to a PAGE_GUARD page raises STATUS_GUARD_PAGE_VIOLATION
(0x80000001) and clears the guard (one-shot); the faulting instruction can then be resumed and
succeeds if the underlying protection allows it. PAGE_NOACCESS raises
STATUS_ACCESS_VIOLATION (0xC0000005) on every access. ExceptionInformation[0] is 0 for a read,
1 for a write and 8 for an execute (DEP) fault; ExceptionInformation[1] is the address.
Expected values are Windows literals.
"""

from __future__ import annotations

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn.x86_const import (
    UC_X86_REG_EAX,
    UC_X86_REG_EBX,
    UC_X86_REG_ECX,
    UC_X86_REG_EDI,
    UC_X86_REG_EIP,
    UC_X86_REG_ESI,
    UC_X86_REG_ESP,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RDI,
    UC_X86_REG_RIP,
    UC_X86_REG_RSI,
    UC_X86_REG_RSP,
)

from emulator_mem import MemoryManager

PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_EXECUTE_READ = 0x20
PAGE_GUARD = 0x100
MEM_COMMIT = 0x1000
MEM_PRIVATE = 0x20000
STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
READ, WRITE, EXECUTE = 0, 1, 8

CODE = 0x0100_0000
DATA = 0x0200_0000


class Guest:
    """A MemoryManager plus a code page and keystone, for one bitness."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64 if bits == 64 else UC_MODE_32)
        self.mm = MemoryManager(self.uc)
        self.ks = Ks(KS_ARCH_X86, KS_MODE_64 if bits == 64 else KS_MODE_32)
        if bits == 64:
            self.ax, self.bx, self.cx, self.sp, self.pc = (
                UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RSP, UC_X86_REG_RIP)
        else:
            self.ax, self.bx, self.cx, self.sp, self.pc = (
                UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_ESP, UC_X86_REG_EIP)
        self.code = self.mm.allocate(0x10000, PAGE_EXECUTE_READ, address=CODE)

    def asm(self, source: str, address: int) -> bytes:
        """Assemble (``{bx}``-style register names are filled in) and store at ``address``."""
        regs = {"ax": "rax", "bx": "rbx", "cx": "rcx", "sp": "rsp"} if self.bits == 64 else {
            "ax": "eax", "bx": "ebx", "cx": "ecx", "sp": "esp"}
        encoding, _ = self.ks.asm(source.format(**regs), address)
        data = bytes(encoding)
        self.mm.write(address, data)
        return data

    def run(self, begin: int, until: int) -> tuple[int, int, int] | None:
        """Run; on a refused access return (status, address, access) of the fault."""
        assert self.mm.take_fault() is None
        try:
            self.uc.emu_start(begin, until)
        except UcError:
            fault = self.mm.take_fault()
            assert fault is not None, "emulation stopped without a recorded fault"
            return fault.status, fault.address, fault.access
        assert self.mm.take_fault() is None, "a fault was recorded but emulation went on"
        return None

    def region(self, address: int) -> tuple[int, ...]:
        m = self.mm.query(address)
        return (m.BaseAddress, m.AllocationBase, m.AllocationProtect, m.RegionSize, m.State,
                m.Protect, m.Type)


@pytest.fixture(params=[32, 64], ids=["x86", "x64"])
def guest(request: pytest.FixtureRequest) -> Guest:
    return Guest(int(request.param))


def page_of(fault: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """The fault with its address rounded to the page (exact addresses: see the last tests)."""
    if fault is None:
        return None
    return fault[0], fault[1] & ~0xFFF, fault[2]


# --- one-shot guard -------------------------------------------------------------------------------
def test_guard_read_is_one_shot_and_resumable(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x3000, PAGE_READWRITE, address=DATA)
    mm.write(data + 0x1123, b"\x5a")
    assert mm.protect(data + 0x1000, 0x1000, PAGE_READWRITE | PAGE_GUARD) == 0x04
    code = guest.asm("mov al, byte ptr [{bx}]; nop", guest.code)
    uc.reg_write(guest.bx, data + 0x1123)
    uc.reg_write(guest.ax, 0)
    version = mm.layout_version

    fault = guest.run(guest.code, guest.code + len(code))
    assert page_of(fault) == (STATUS_GUARD_PAGE_VIOLATION, data + 0x1000, READ)
    assert uc.reg_read(guest.pc) == guest.code  # the faulting instruction did not retire
    assert uc.reg_read(guest.ax) & 0xFF == 0
    # the guard is gone: the page merges back into one READWRITE region (queried from its
    # second page, Windows reports that page and the rest of the region)
    assert guest.region(data) == (data, data, 0x04, 0x3000, MEM_COMMIT, 0x04, MEM_PRIVATE)
    assert guest.region(data + 0x1000) == (data + 0x1000, data, 0x04, 0x2000, MEM_COMMIT, 0x04,
                                           MEM_PRIVATE)
    assert mm.layout_version > version

    assert guest.run(uc.reg_read(guest.pc), guest.code + len(code)) is None  # resume
    assert uc.reg_read(guest.ax) & 0xFF == 0x5A
    assert guest.run(guest.code, guest.code + len(code)) is None  # and again: one-shot


def test_guard_write_is_one_shot_and_resumable(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x2000, PAGE_READWRITE | PAGE_GUARD, address=DATA)
    code = guest.asm("mov byte ptr [{bx}], cl; nop", guest.code)
    uc.reg_write(guest.bx, data + 0x1FFF)
    uc.reg_write(guest.cx, 0xC3)

    fault = guest.run(guest.code, guest.code + len(code))
    assert page_of(fault) == (STATUS_GUARD_PAGE_VIOLATION, data + 0x1000, WRITE)
    assert mm.read(data + 0x1FFF, 1) == b"\x00"  # the store did not happen
    assert guest.region(data) == (data, data, 0x104, 0x1000, MEM_COMMIT, 0x104, MEM_PRIVATE)
    assert guest.region(data + 0x1000) == (data + 0x1000, data, 0x104, 0x1000, MEM_COMMIT, 0x04,
                                           MEM_PRIVATE)
    assert guest.run(uc.reg_read(guest.pc), guest.code + len(code)) is None
    assert mm.read(data + 0x1FFF, 1) == b"\xc3"


def test_guard_execute_is_one_shot_and_resumable(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    target = mm.allocate(0x1000, PAGE_EXECUTE_READ | PAGE_GUARD, address=DATA)
    back = guest.code + 0x100  # the run ends when the guard-page code jumps back here
    jump = guest.asm("jmp {bx}", guest.code)
    guest.asm("mov eax, 42; jmp {cx}", target)
    uc.reg_write(guest.bx, target)
    uc.reg_write(guest.cx, back)
    uc.reg_write(guest.ax, 0)

    fault = guest.run(guest.code, back)
    assert page_of(fault) == (STATUS_GUARD_PAGE_VIOLATION, target, EXECUTE)
    assert uc.reg_read(guest.pc) == target
    assert uc.reg_read(guest.ax) == 0
    assert guest.region(target) == (target, target, 0x120, 0x1000, MEM_COMMIT, 0x20, MEM_PRIVATE)

    assert guest.run(target, back) is None  # resume at the faulting fetch
    assert uc.reg_read(guest.ax) == 42
    uc.reg_write(guest.ax, 0)
    assert guest.run(guest.code, back) is None  # the whole path, no guard any more
    assert uc.reg_read(guest.ax) == 42
    assert len(jump) > 0


def test_guard_comes_before_the_protection_check(guest: Guest) -> None:
    """A write to READONLY|GUARD raises the guard violation first, then access violations."""
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x1000, PAGE_READONLY | PAGE_GUARD, address=DATA)
    code = guest.asm("mov byte ptr [{bx}], cl", guest.code)
    uc.reg_write(guest.bx, data + 8)
    fault = guest.run(guest.code, guest.code + len(code))
    assert page_of(fault) == (STATUS_GUARD_PAGE_VIOLATION, data, WRITE)
    assert mm.query(data).Protect == 0x02
    for _ in range(2):
        fault = guest.run(guest.code, guest.code + len(code))
        assert page_of(fault) == (STATUS_ACCESS_VIOLATION, data, WRITE)
    assert mm.query(data).Protect == 0x02


def test_only_the_touched_page_loses_its_guard(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x4000, PAGE_READWRITE | PAGE_GUARD, address=DATA)
    code = guest.asm("mov al, byte ptr [{bx}]", guest.code)
    uc.reg_write(guest.bx, data + 0x2000)
    assert page_of(guest.run(guest.code, guest.code + len(code))) == (
        STATUS_GUARD_PAGE_VIOLATION, data + 0x2000, READ)
    assert [guest.region(data + off)[3:6] for off in (0, 0x2000, 0x3000)] == [
        (0x2000, MEM_COMMIT, 0x104), (0x1000, MEM_COMMIT, 0x04), (0x1000, MEM_COMMIT, 0x104)]
    uc.reg_write(guest.bx, data + 0x3000)  # its neighbour still guards
    assert page_of(guest.run(guest.code, guest.code + len(code))) == (
        STATUS_GUARD_PAGE_VIOLATION, data + 0x3000, READ)


def test_guard_set_after_the_page_was_cached(guest: Guest) -> None:
    """protect()/commit() adding a guard must drop the cached translation (TLB flush)."""
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x2000, PAGE_READWRITE, address=DATA)
    code = guest.asm("mov al, byte ptr [{bx}]; mov byte ptr [{bx}], cl", guest.code)
    end = guest.code + len(code)
    uc.reg_write(guest.bx, data)
    assert guest.run(guest.code, end) is None  # the page is in the TLB, read and write
    mm.protect(data, 0x1000, PAGE_READWRITE | PAGE_GUARD)
    assert page_of(guest.run(guest.code, end)) == (STATUS_GUARD_PAGE_VIOLATION, data, READ)
    assert guest.run(guest.code, end) is None
    mm.commit(data, 0x1000, PAGE_READWRITE | PAGE_GUARD)  # commit over committed pages
    assert page_of(guest.run(guest.code, end)) == (STATUS_GUARD_PAGE_VIOLATION, data, READ)


def test_stack_guard_page(guest: Guest) -> None:
    """The classic use: a push into the guard page below the committed stack."""
    mm, uc = guest.mm, guest.uc
    stack = mm.allocate(0x10000, PAGE_READWRITE, address=DATA, reserve_only=True)
    mm.commit(stack + 0xE000, 0x2000, PAGE_READWRITE)
    mm.commit(stack + 0xD000, 0x1000, PAGE_READWRITE | PAGE_GUARD)
    code = guest.asm("push {bx}; nop", guest.code)
    uc.reg_write(guest.sp, stack + 0xE000)
    uc.reg_write(guest.bx, 0x11223344)
    fault = guest.run(guest.code, guest.code + len(code))
    assert page_of(fault) == (STATUS_GUARD_PAGE_VIOLATION, stack + 0xD000, WRITE)
    assert uc.reg_read(guest.sp) == stack + 0xE000
    # the runner would now commit the next guard page below; the push resumes
    mm.commit(stack + 0xC000, 0x1000, PAGE_READWRITE | PAGE_GUARD)
    assert guest.run(uc.reg_read(guest.pc), guest.code + len(code)) is None
    word = 8 if guest.bits == 64 else 4
    assert uc.reg_read(guest.sp) == stack + 0xE000 - word
    assert mm.read(stack + 0xE000 - word, 4) == bytes.fromhex("44332211")
    assert mm.query(stack + 0xC000).Protect == 0x104


def test_host_access_does_not_trip_the_guard(guest: Guest) -> None:
    mm = guest.mm
    data = mm.allocate(0x1000, PAGE_READWRITE | PAGE_GUARD, address=DATA)
    version = mm.layout_version
    mm.write(data, b"host")
    assert mm.read(data, 4) == b"host"
    assert mm.query(data).Protect == 0x104
    assert mm.layout_version == version
    assert mm.take_fault() is None


def test_guard_survives_decommit_recommit_as_requested(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x1000, PAGE_READWRITE | PAGE_GUARD, address=DATA)
    code = guest.asm("mov al, byte ptr [{bx}]", guest.code)
    uc.reg_write(guest.bx, data)
    assert page_of(guest.run(guest.code, guest.code + 2)) == (STATUS_GUARD_PAGE_VIOLATION, data,
                                                              READ)
    mm.decommit(data, 0x1000)
    mm.commit(data, 0x1000, PAGE_READWRITE | PAGE_GUARD)
    assert page_of(guest.run(guest.code, guest.code + len(code))) == (
        STATUS_GUARD_PAGE_VIOLATION, data, READ)


# --- PAGE_NOACCESS --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [READ, WRITE, EXECUTE], ids=["read", "write", "execute"])
def test_noaccess_faults_every_time(guest: Guest, kind: int) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x2000, PAGE_NOACCESS, address=DATA)
    target = data + 0x1000
    if kind == EXECUTE:
        code = guest.asm("jmp {bx}", guest.code)
        until = guest.code + 0x100
    else:
        source = "mov al, byte ptr [{bx}]" if kind == READ else "mov byte ptr [{bx}], cl"
        code = guest.asm(source, guest.code)
        until = guest.code + len(code)
    uc.reg_write(guest.bx, target)
    version = mm.layout_version
    for _ in range(3):
        assert page_of(guest.run(guest.code, until)) == (STATUS_ACCESS_VIOLATION, target, kind)
        assert guest.region(data) == (data, data, 0x01, 0x2000, MEM_COMMIT, 0x01, MEM_PRIVATE)
    assert mm.layout_version == version
    # made accessible, the same access succeeds (the refusals were never cached)
    mm.protect(data, 0x2000, 0x40)
    if kind == EXECUTE:
        guest.asm("jmp {cx}", target)
        uc.reg_write(guest.cx, until)
    assert guest.run(guest.code, until) is None


def test_noaccess_after_cached_translation(guest: Guest) -> None:
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x1000, PAGE_READWRITE, address=DATA)
    code = guest.asm("mov al, byte ptr [{bx}]", guest.code)
    uc.reg_write(guest.bx, data)
    assert guest.run(guest.code, guest.code + len(code)) is None
    mm.protect(data, 0x1000, PAGE_NOACCESS)
    for _ in range(2):
        assert page_of(guest.run(guest.code, guest.code + len(code))) == (
            STATUS_ACCESS_VIOLATION, data, READ)


# --- the address in the exception record ----------------------------------------------------------
@pytest.mark.parametrize("protect,status", [
    (PAGE_READWRITE | PAGE_GUARD, STATUS_GUARD_PAGE_VIOLATION),
    (PAGE_NOACCESS, STATUS_ACCESS_VIOLATION),
], ids=["guard", "noaccess"])
def test_fault_address_is_the_exact_byte(guest: Guest, protect: int, status: int) -> None:
    """ExceptionInformation[1] is the inaccessible data address itself, not its page."""
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x1000, protect, address=DATA)
    code = guest.asm("mov al, byte ptr [{bx}]", guest.code)
    uc.reg_write(guest.bx, data + 0x123)
    assert guest.run(guest.code, guest.code + len(code)) == (status, data + 0x123, READ)


# --- Unicorn's own translations are not guest accesses --------------------------------------------
def test_until_inside_a_guard_page_does_not_consume_the_guard(guest: Guest) -> None:
    """emu_start(begin, until) with ``until`` in a guard page the guest never touches.

    Unicorn translates the exit address again after the run (to drop its translation block);
    that lookup goes through the TLB-fill hook, but it is no guest access: the guard must
    stay, no fault may be recorded and the run (ended by ``hlt``) must succeed.
    """
    mm, uc = guest.mm, guest.uc
    guard = mm.allocate(0x1000, PAGE_READWRITE | PAGE_GUARD, address=DATA)
    code = guest.asm("mov eax, 7; hlt", guest.code)
    assert len(code) > 0
    assert guest.run(guest.code, guard + 0x800) is None
    assert uc.reg_read(guest.ax) == 7
    assert mm.query(guard).Protect == 0x104


def test_execute_fault_on_a_data_guard_page_stays_a_guard_violation(guest: Guest) -> None:
    """Executing a READWRITE|GUARD page: the first fault is the guard violation (access 8).

    With ``until`` inside that page Unicorn translates the page again after the fault, now
    without the guard: the manager records a second, access-violation fault over the first.
    """
    mm = guest.mm
    page = mm.allocate(0x1000, PAGE_READWRITE | PAGE_GUARD, address=DATA)
    mm.write(page, b"\x90\x90")
    assert page_of(guest.run(page, page + 2)) == (STATUS_GUARD_PAGE_VIOLATION, page, EXECUTE)
    assert mm.query(page).Protect == 0x04
    assert page_of(guest.run(page, page + 2)) == (STATUS_ACCESS_VIOLATION, page, EXECUTE)


# --- execution reaching a page it may not execute -------------------------------------------------
@pytest.mark.parametrize("protect,status", [
    (PAGE_READWRITE, STATUS_ACCESS_VIOLATION),
    (PAGE_READWRITE | PAGE_GUARD, STATUS_GUARD_PAGE_VIOLATION),
    (PAGE_NOACCESS, STATUS_ACCESS_VIOLATION),
    (None, STATUS_ACCESS_VIOLATION),
], ids=["readwrite", "guard", "noaccess", "free"])
def test_jump_into_the_page_of_until(guest: Guest, protect: int | None, status: int) -> None:
    """``until`` lies in a page the guest may not execute and the guest jumps there anyway."""
    mm, uc = guest.mm, guest.uc
    target = DATA + 0x20
    if protect is not None:
        mm.allocate(0x1000, protect, address=DATA)
        mm.write(target, guest.asm("mov eax, 9; hlt", target))
    guest.asm("jmp {bx}", guest.code)
    uc.reg_write(guest.bx, target)
    uc.reg_write(guest.ax, 0)
    assert guest.run(guest.code, DATA + 0x800) == (status, target, EXECUTE)
    assert uc.reg_read(guest.pc) == target
    assert uc.reg_read(guest.ax) == 0
    if protect is not None:
        assert mm.query(DATA).Protect == protect & ~PAGE_GUARD


@pytest.mark.parametrize("protect,status", [
    (PAGE_READWRITE, STATUS_ACCESS_VIOLATION),
    (PAGE_READWRITE | PAGE_GUARD, STATUS_GUARD_PAGE_VIOLATION),
    (PAGE_NOACCESS, STATUS_ACCESS_VIOLATION),
], ids=["readwrite", "guard", "noaccess"])
def test_falling_through_into_a_page_that_may_not_execute(guest: Guest, protect: int,
                                                           status: int) -> None:
    """Straight-line code runs off the end of its page into one it may not execute.

    Windows: every instruction before the boundary retires, then the fetch at the boundary
    faults with EIP/RIP on the boundary. (qemu translates the whole block up front, so a
    refusal at translation time would fault before the first instruction ran, with the PC
    at the block start.)
    """
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READ, address=DATA)
    boundary = code + 0x1000
    mm.protect(boundary, 0x1000, protect)
    tail_len = 16  # mov eax, 1 (5) + mov ecx, 2 (5) + 6 nops
    tail = guest.asm("mov eax, 1; mov ecx, 2; nop; nop; nop; nop; nop; nop", boundary - tail_len)
    assert len(tail) == tail_len
    uc.reg_write(guest.ax, 0)
    uc.reg_write(guest.cx, 0)
    fault = guest.run(boundary - len(tail), code + 0x800)
    assert (uc.reg_read(guest.ax), uc.reg_read(guest.cx)) == (1, 2), "the block did not run"
    assert uc.reg_read(guest.pc) == boundary
    assert fault == (status, boundary, EXECUTE)


def test_instruction_straddling_into_a_page_that_may_not_execute(guest: Guest) -> None:
    """An instruction whose last bytes lie in a non-executable page: it faults (address: the
    first byte of that page), the instructions before it retired, EIP/RIP on its start."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READ, address=DATA)
    boundary = code + 0x1000
    mm.protect(boundary, 0x1000, PAGE_READWRITE)
    start = boundary - 3 - 5
    # mov eax, 1 (5 bytes), then mov ecx, imm32 (5 bytes): 3 here, 2 in the next page
    program = guest.asm("mov eax, 1; mov ecx, 0x12345678", start)
    assert len(program) == 10 and mm.read(boundary, 2) == program[8:]
    uc.reg_write(guest.ax, 0)
    fault = guest.run(start, code + 0x800)
    assert uc.reg_read(guest.ax) == 1, "the instruction before the straddler did not run"
    assert uc.reg_read(guest.pc) == boundary - 3
    assert fault == (STATUS_ACCESS_VIOLATION, boundary, EXECUTE)


#: (bits, source, registers as offsets from the faulting page, bad-page protect,
#:  expected address offset, access) — the EA Windows reports in ExceptionInformation[1]
FORMS = [
    (32, "mov eax, dword ptr [ebx + ecx*4 + 0x10]", {"bx": 0, "cx": 3}, 0x01, 0x1C, READ),
    (64, "mov rax, qword ptr [rbx + rcx*8]", {"bx": 0, "cx": 5}, 0x01, 0x28, READ),
    (32, "mov eax, dword ptr [ebx]", {"bx": -2}, 0x01, 0, READ),  # split: first bad byte
    (32, "push dword ptr [ebx]", {"bx": 8, "sp": -0x800}, 0x01, 8, READ),
    (32, "push eax", {"sp": 0x10}, 0x01, 0xC, WRITE),
    (64, "push rax", {"sp": 8}, 0x01, 0, WRITE),
    (32, "ret", {"sp": 0x10}, 0x01, 0x10, READ),
    (32, "rep movsb", {"si": -0x800, "di": -0x10, "cx": 0x40}, 0x01, 0, WRITE),
    (64, "rep stosq", {"di": -0x10, "cx": 8}, 0x01, 0, WRITE),
    (32, "lodsd", {"si": 0x18}, 0x01, 0x18, READ),
    (32, "cmpxchg dword ptr [ebx], ecx", {"bx": 0x40}, PAGE_READONLY, 0x40, WRITE),
    (64, "add dword ptr [rbx], 1", {"bx": 0x18}, PAGE_READONLY, 0x18, WRITE),
    (32, "movdqu xmm0, xmmword ptr [ebx]", {"bx": 0x50}, 0x01, 0x50, READ),
    (32, "fld qword ptr [ebx]", {"bx": 0x48}, 0x01, 0x48, READ),
    (32, "xlatb", {"bx": 0, "ax": 0x33}, 0x01, 0x33, READ),  # implicit [ebx + al]
]


@pytest.mark.parametrize("bits,source,regs,protect,offset,access", FORMS,
                         ids=[f"{f[0]}-{f[1].split()[0]}-{i}" for i, f in enumerate(FORMS)])
def test_exact_fault_address_for_instruction_forms(bits: int, source: str, regs: dict[str, int],
                                                   protect: int, offset: int, access: int) -> None:
    guest = Guest(bits)
    mm, uc = guest.mm, guest.uc
    data = mm.allocate(0x2000, PAGE_READWRITE, address=DATA)
    bad = data + 0x1000
    mm.protect(bad, 0x1000, protect)
    code = guest.asm(source, guest.code)
    names = {"bx": guest.bx, "cx": guest.cx, "sp": guest.sp, "ax": guest.ax}
    si, di = (UC_X86_REG_RSI, UC_X86_REG_RDI) if bits == 64 else (UC_X86_REG_ESI, UC_X86_REG_EDI)
    names.update(si=si, di=di)
    for name, value in regs.items():
        uc.reg_write(names[name], value if name in ("cx", "ax") else bad + value)
    assert guest.run(guest.code, guest.code + len(code)) == (
        STATUS_ACCESS_VIOLATION, bad + offset, access)
    assert uc.reg_read(guest.pc) == guest.code


NX_CASES = [(near, protect) for near in (False, True)
            for protect in (PAGE_READWRITE, PAGE_READONLY, PAGE_NOACCESS, 0, None)
            if not (near and protect is None)]  # (the code allocation covers the next page)


NX_NAMES = {PAGE_READWRITE: "readwrite", PAGE_READONLY: "readonly", PAGE_NOACCESS: "noaccess",
            0: "reserved", None: "free"}


@pytest.mark.parametrize("near,protect", NX_CASES, ids=[
    ("next-page-" if near else "far-") + NX_NAMES[protect] for near, protect in NX_CASES])
def test_executing_a_non_executable_page_faults_every_time(guest: Guest, protect: int | None,
                                                           near: bool) -> None:
    """Jump to a page without execute rights three times: three execute faults at the target,
    and nothing at the target ever runs (its zero bytes would be ``add [eax], al``)."""
    mm, uc = guest.mm, guest.uc
    scratch = mm.allocate(0x1000, PAGE_READWRITE, address=DATA + 0x100000)
    target = guest.code + 0x1000 if near else DATA
    if protect is not None:
        if near:
            mm.protect(target, 0x1000, protect) if protect else mm.decommit(target, 0x1000)
        else:
            mm.allocate(0x1000, protect or PAGE_READWRITE, address=DATA, reserve_only=not protect)
    guest.asm("jmp {bx}", guest.code)
    for _ in range(3):
        uc.reg_write(guest.bx, target)
        uc.reg_write(guest.ax, scratch)
        assert guest.run(guest.code, guest.code + 0x800) == (STATUS_ACCESS_VIOLATION, target,
                                                             EXECUTE)
        assert uc.reg_read(guest.pc) == target
        assert mm.read(scratch, 1) == b"\x00", "code of a non-executable page ran"


def test_fall_through_fault_then_the_page_is_made_executable(guest: Guest) -> None:
    """The handler makes the page executable: resuming at the boundary and running the whole
    path again both execute the page's code."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READ, address=DATA)
    boundary = code + 0x1000
    mm.protect(boundary, 0x1000, PAGE_READWRITE)
    start = boundary - 16
    guest.asm("mov eax, 1; mov ecx, 2; nop; nop; nop; nop; nop; nop", start)
    after = boundary + len(guest.asm("mov ecx, 5", boundary))
    assert guest.run(start, after) == (STATUS_ACCESS_VIOLATION, boundary, EXECUTE)
    mm.protect(boundary, 0x1000, PAGE_EXECUTE_READ)
    assert guest.run(uc.reg_read(guest.pc), after) is None
    assert uc.reg_read(guest.cx) == 5
    uc.reg_write(guest.cx, 0)
    assert guest.run(start, after) is None
    assert uc.reg_read(guest.cx) == 5


def test_falling_through_into_an_executable_guard_page(guest: Guest) -> None:
    """EXECUTE_READ|GUARD: the first fall-through raises the guard violation at the boundary;
    the guard is gone then, so resuming — and running the same path again — executes it."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READ, address=DATA)
    boundary = code + 0x1000
    mm.protect(boundary, 0x1000, PAGE_EXECUTE_READ | PAGE_GUARD)
    start = boundary - 16
    guest.asm("mov eax, 1; mov ecx, 2; nop; nop; nop; nop; nop; nop", start)
    after = boundary + len(guest.asm("mov ecx, 5", boundary))
    assert guest.run(start, after) == (STATUS_GUARD_PAGE_VIOLATION, boundary, EXECUTE)
    assert mm.query(boundary).Protect == 0x20
    assert guest.run(uc.reg_read(guest.pc), after) is None  # resume on the boundary
    assert uc.reg_read(guest.cx) == 5
    uc.reg_write(guest.cx, 0)
    assert guest.run(start, after) is None, "the path into the former guard page still faults"
    assert uc.reg_read(guest.cx) == 5


@pytest.mark.parametrize("protect", [PAGE_EXECUTE_READ | PAGE_GUARD, PAGE_READWRITE | PAGE_GUARD],
                         ids=["exec-guard", "data-guard"])
def test_straddled_guard_page_survives_an_earlier_fault(guest: Guest, protect: int) -> None:
    """The instruction before a straddler faults first: the straddler was never fetched, so the
    page it would straddle into keeps its guard."""
    mm, uc = guest.mm, guest.uc
    code = mm.allocate(0x2000, PAGE_EXECUTE_READ, address=DATA)
    boundary = code + 0x1000
    mm.protect(boundary, 0x1000, protect)
    hole = mm.allocate(0x1000, PAGE_NOACCESS, address=DATA + 0x10000)
    start = boundary - 3 - 2
    program = guest.asm("mov eax, dword ptr [{bx}]; mov ecx, 0x12345678", start)
    assert len(program) == 7  # 2 + 5: the mov ecx straddles by 2 bytes
    uc.reg_write(guest.bx, hole)
    assert guest.run(start, code + 0x800) == (STATUS_ACCESS_VIOLATION, hole, READ)
    assert uc.reg_read(guest.pc) == start
    assert mm.query(boundary).Protect == protect, "the guard was consumed by a fetch never made"


@pytest.mark.parametrize("kind", [READ, WRITE], ids=["read", "write"])
def test_data_access_to_the_top_page_is_a_data_fault(guest: Guest, kind: int) -> None:
    """``[reg - 4]`` with reg = 0 (the classic null-pointer-minus-offset) reads the last page
    of the address space: a data access violation at that address, not an execute fault."""
    mm, uc = guest.mm, guest.uc
    source = "mov eax, dword ptr [{cx} - 4]" if kind == READ else "mov dword ptr [{cx} - 4], eax"
    code = guest.asm(source, guest.code)
    uc.reg_write(guest.cx, 0)
    top = (1 << guest.bits) - 4
    assert guest.run(guest.code, guest.code + len(code)) == (STATUS_ACCESS_VIOLATION, top, kind)
    assert uc.reg_read(guest.pc) == guest.code
    assert mm.take_fault() is None
