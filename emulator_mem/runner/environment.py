"""The Windows process environment a payload expects: TEB, PEB, FS/GS, a growing stack.

Offsets are those of Windows 10's ``_TEB``/``_PEB`` (ntpebteb.h in the WDK, the same in
ReactOS' ``ndk/peb_teb.h``); only the fields user code commonly reads are filled in:
NtTib (ExceptionList, StackBase, StackLimit, Self), ClientId, ProcessEnvironmentBlock,
LastErrorValue and DeallocationStack; PEB.ImageBaseAddress, ProcessHeap,
NumberOfProcessors and the OS version (10.0.19045).

**Ring 3.** The guest runs at CPL 3 with Windows' selectors, as on Windows: CS = 0x1B and
SS/DS/ES = 0x23 (32-bit), CS = 0x33 and SS = 0x2B (64-bit). Then qemu itself raises #GP
for ``hlt``, ``cli``/``sti`` and the other CPL-0 instructions, which the runner turns into
STATUS_PRIVILEGED_INSTRUCTION (:mod:`.exceptions.traps`); at CPL 0 Unicorn would execute
``hlt`` and end ``emu_start`` as if its count were used up. The CPU takes CS/SS from
descriptors in a GDT *in guest memory*: in virtual-TLB mode that memory must be an
allocation of the manager like any other (a small private one named "GDT", in both modes),
or the descriptor load faults. Unicorn's ``reg_write`` cannot switch to ring 3 (its
CPL follows SS, and it refuses an SS whose DPL is not the current CPL), so
:meth:`ThreadEnvironment.enter_user_mode` does what a kernel does: one ``iret`` to a frame
holding the ring-3 CS:IP and SS:SP. The ``iret`` and its frame live in the GDT page, which
is PAGE_EXECUTE_READ (the descriptors carry their accessed bit, so the CPU never writes
there). The PEB/TEB, stack and every register but CS/SS are untouched by the switch.

**FS/GS.** 64-bit code reaches the TEB through GS, whose base is an MSR
(``UC_X86_REG_GS_BASE``). Its selector and DS/ES/FS stay 0 (Windows: 0x2B, FS 0x53): in
64-bit mode only the FS/GS bases matter, and CONTEXT reports the selectors as they are.
32-bit code uses FS = 0x3B, a GDT selector whose descriptor's base is the TEB.

**The stack** is a reservation (SizeOfStackReserve, 1 MiB by default) whose top pages are
committed with one PAGE_GUARD page below them. The first touch of the guard page faults
(the MMU clears the guard, one-shot); :meth:`ThreadEnvironment.grow_stack` then commits the
page below as the new guard and lowers TEB.StackLimit, exactly as the kernel's
MiCheckForUserStackOverflow does, and the runner resumes the faulting instruction. The
bottom page of the reservation is never committed: reaching it is STATUS_STACK_OVERFLOW.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from typing import Any

from unicorn import Uc, UcError
from unicorn import x86_const as X

from ..errors import RunnerError
from ..manager import MemoryManager
from ..mmu.faults import Fault
from ..space.address_space import PAGE_SIZE, page_round_up
from ..windows import constants as C

# _TEB / _PEB field offsets: (32-bit, 64-bit)
TEB_EXCEPTION_LIST = (0x000, 0x000)
TEB_STACK_BASE = (0x004, 0x008)
TEB_STACK_LIMIT = (0x008, 0x010)
TEB_SELF = (0x018, 0x030)
TEB_CLIENT_ID = (0x020, 0x040)
TEB_PEB = (0x030, 0x060)
TEB_LAST_ERROR = (0x034, 0x068)
TEB_DEALLOCATION_STACK = (0xE0C, 0x1478)
TEB_SIZE = (0x1000, 0x2000)
PEB_BEING_DEBUGGED = (0x002, 0x002)
PEB_IMAGE_BASE = (0x008, 0x010)
PEB_PROCESS_HEAP = (0x018, 0x030)
PEB_NUMBER_OF_PROCESSORS = (0x064, 0x0B8)
PEB_OS_MAJOR = (0x0A4, 0x118)
PEB_OS_MINOR = (0x0A8, 0x11C)
PEB_OS_BUILD = (0x0AC, 0x120)
PEB_SIZE = 0x1000
OS_VERSION = (10, 0, 19045)
PROCESS_ID = 0x1000
THREAD_ID = 0x1004

# GDT: Windows' selectors (index << 3 | RPL 3). 32-bit: KGDT_R0_DATA 0x10 (the stack of the
# switch to ring 3), KGDT_R3_CODE 0x18, KGDT_R3_DATA 0x20, KGDT_R3_TEB 0x38; 64-bit:
# KGDT64_R3_DATA 0x28, KGDT64_R3_CODE 0x30 (ntddk.h / ReactOS ndk/amd64/ketypes.h)
GDT_ENTRIES = 16
GDT_FLAT_DATA_RING0 = 2  # SS = 0x10 while entering ring 3
GDT_CODE32 = 3  # CS = 0x1B
GDT_FLAT_DATA = 4  # SS/DS/ES = 0x23
GDT_TEB = 7  # FS = 0x3B
GDT_DATA64 = 5  # SS = 0x2B
GDT_CODE64 = 6  # CS = 0x33
SELECTOR_RING0_SS = GDT_FLAT_DATA_RING0 << 3
SELECTOR_DS = GDT_FLAT_DATA << 3 | 3
SELECTOR_FS = GDT_TEB << 3 | 3
#: (CS, SS) of user mode: (32-bit, 64-bit)
USER_CS = (GDT_CODE32 << 3 | 3, GDT_CODE64 << 3 | 3)
USER_SS = (GDT_FLAT_DATA << 3 | 3, GDT_DATA64 << 3 | 3)
# where the switch to ring 3 keeps its code and frame inside the GDT page
IRET_OFFSET = 0x100
IRET_CODE = (b"\xcf", b"\x48\xcf")  # iretd, iretq
FRAME_OFFSET = 0x200


def gdt_descriptor(base: int, limit: int, access: int, flags: int) -> int:
    """An 8-byte segment descriptor (Intel SDM vol. 3, 3.4.5)."""
    return (
        (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40
        | ((limit >> 16) & 0xF) << 48 | flags << 52 | (base >> 24) << 56
    )


@dataclass(slots=True)
class ThreadEnvironment:
    """Where the TEB, PEB, GDT and stack of the (single) thread live; JSON-serialisable."""

    is_64bit: bool
    teb: int
    peb: int
    gdt: int  # the GDT page: descriptors, then the ``iret`` into ring 3 and its frame
    stack_base: int  # TEB.StackBase: one past the highest stack byte
    stack_limit: int  # TEB.StackLimit: the lowest committed, unguarded stack page
    stack_allocation: int  # TEB.DeallocationStack: the reservation's base

    def _off(self, pair: tuple[int, int]) -> int:
        return pair[1] if self.is_64bit else pair[0]

    @property
    def ptr_format(self) -> str:
        return "<Q" if self.is_64bit else "<I"

    # -- creation ----------------------------------------------------------------------
    @classmethod
    def create(
        cls, mm: MemoryManager, *, image_base: int, heap: int, stack_reserve: int, stack_commit: int,
    ) -> ThreadEnvironment:
        """Allocate and fill PEB, TEB, GDT (32-bit) and the stack; returns the layout."""
        is_64bit = mm.is_64bit
        pick = 1 if is_64bit else 0
        peb = mm.allocate(PEB_SIZE, C.PAGE_READWRITE, top_down=True, name="PEB")
        teb = mm.allocate(TEB_SIZE[pick], C.PAGE_READWRITE, top_down=True, name="TEB")
        gdt = mm.allocate(PAGE_SIZE, C.PAGE_READWRITE, top_down=True, name="GDT")
        reserve = max(page_round_up(stack_reserve), 16 * PAGE_SIZE)
        commit = min(max(page_round_up(stack_commit), PAGE_SIZE), reserve - 2 * PAGE_SIZE)
        bottom = mm.allocate(reserve, C.PAGE_READWRITE, reserve_only=True, name="stack (thread 0)")
        top = bottom + reserve
        mm.commit(top - commit, commit, C.PAGE_READWRITE)
        mm.commit(top - commit - PAGE_SIZE, PAGE_SIZE, C.PAGE_READWRITE | C.PAGE_GUARD)
        env = cls(is_64bit, teb, peb, gdt, top, top - commit, bottom)
        env._write_blocks(mm, image_base, heap)
        env._write_gdt(mm)
        return env

    def _write_blocks(self, mm: MemoryManager, image_base: int, heap: int) -> None:
        ptr = self.ptr_format
        teb = self.teb
        fields = [
            (TEB_EXCEPTION_LIST, (1 << (64 if self.is_64bit else 32)) - 1),  # end of the SEH chain
            (TEB_STACK_BASE, self.stack_base),
            (TEB_STACK_LIMIT, self.stack_limit),
            (TEB_SELF, teb),
            (TEB_PEB, self.peb),
            (TEB_DEALLOCATION_STACK, self.stack_allocation),
        ]
        for pair, value in fields:
            mm.write(teb + self._off(pair), struct.pack(ptr, value))
        client = self._off(TEB_CLIENT_ID)
        mm.write(teb + client, struct.pack(ptr, PROCESS_ID) + struct.pack(ptr, THREAD_ID))
        peb = self.peb
        mm.write(peb + self._off(PEB_IMAGE_BASE), struct.pack(ptr, image_base))
        mm.write(peb + self._off(PEB_PROCESS_HEAP), struct.pack(ptr, heap))
        mm.write(peb + self._off(PEB_NUMBER_OF_PROCESSORS), struct.pack("<I", 1))
        major, minor, build = OS_VERSION
        mm.write(peb + self._off(PEB_OS_MAJOR), struct.pack("<IIH", major, minor, build))

    def _write_gdt(self, mm: MemoryManager) -> None:
        """Windows' user-mode descriptors and the ``iret`` of :meth:`enter_user_mode`.

        Every descriptor is flat but the TEB's and already has its accessed bit (access
        byte 0x?3 / 0x?B), so loading one never writes to the page, which stays read-only.
        """
        table = bytearray(IRET_OFFSET)
        if self.is_64bit:
            entries = {
                GDT_CODE64: gdt_descriptor(0, 0xFFFFF, 0xFB, 0xA),  # DPL 3 code, L = 1 (long mode)
                GDT_DATA64: gdt_descriptor(0, 0xFFFFF, 0xF3, 0xC),  # DPL 3 data
            }
        else:
            entries = {
                GDT_FLAT_DATA_RING0: gdt_descriptor(0, 0xFFFFF, 0x93, 0xC),  # ring 0 data, 4 KiB granular
                GDT_CODE32: gdt_descriptor(0, 0xFFFFF, 0xFB, 0xC),  # DPL 3 code, 32-bit
                GDT_FLAT_DATA: gdt_descriptor(0, 0xFFFFF, 0xF3, 0xC),  # DPL 3 data
                GDT_TEB: gdt_descriptor(self.teb, 0xFFF, 0xF3, 0x4),  # the TEB page, byte granular
            }
        for index, desc in entries.items():
            struct.pack_into("<Q", table, 8 * index, desc)
        mm.write(self.gdt, bytes(table) + IRET_CODE[self.is_64bit])
        mm.protect(self.gdt, PAGE_SIZE, C.PAGE_EXECUTE_READ)

    def attach(self, uc: Uc) -> None:
        """Point the CPU at the GDT and the TEB: GS base (64-bit), FS and flat DS/ES (32-bit).

        Idempotent; a snapshot restores the same registers, and calling this again after a
        restore does no harm. CS/SS are set by :meth:`enter_user_mode`.
        """
        uc.reg_write(X.UC_X86_REG_GDTR, (0, self.gdt, 8 * GDT_ENTRIES - 1, 0))
        if self.is_64bit:
            uc.reg_write(X.UC_X86_REG_GS_BASE, self.teb)
            return
        uc.reg_write(X.UC_X86_REG_DS, SELECTOR_DS)
        uc.reg_write(X.UC_X86_REG_ES, SELECTOR_DS)
        uc.reg_write(X.UC_X86_REG_FS, SELECTOR_FS)

    def enter_user_mode(self, uc: Uc, mm: MemoryManager) -> None:
        """Switch the CPU to CPL 3 at its current PC, SP and EFLAGS, as a kernel returns to
        user mode: one ``iret`` whose frame holds them with the user CS and SS.

        Called once the registers are in place: after :meth:`attach` and the entry point's
        registers, or after a snapshot restored them (the snapshot module cannot load a
        ring-3 SS into a CPU at CPL 0; see :mod:`emulator_mem.snapshot.cpu_state`). The
        stack the ``iret`` pops from is the frame in the GDT page, so guest memory is not
        touched; 32-bit code needs a 32-bit SS for that, the ring-0 data segment.
        """
        pick = 1 if self.is_64bit else 0
        pc_reg = X.UC_X86_REG_RIP if self.is_64bit else X.UC_X86_REG_EIP
        sp_reg = X.UC_X86_REG_RSP if self.is_64bit else X.UC_X86_REG_ESP
        pc, sp = int(uc.reg_read(pc_reg)), int(uc.reg_read(sp_reg))
        eflags = int(uc.reg_read(X.UC_X86_REG_EFLAGS))
        frame = (pc, USER_CS[pick], eflags, sp, USER_SS[pick])
        mm.write(self.gdt + FRAME_OFFSET, struct.pack("<5Q" if self.is_64bit else "<5I", *frame))
        if not self.is_64bit:
            uc.reg_write(X.UC_X86_REG_SS, SELECTOR_RING0_SS)
        uc.reg_write(sp_reg, self.gdt + FRAME_OFFSET)
        start = self.gdt + IRET_OFFSET
        try:
            uc.emu_start(start, start + len(IRET_CODE[pick]), count=1)
        except UcError as exc:
            uc.reg_write(sp_reg, sp)
            uc.reg_write(pc_reg, pc)
            raise RunnerError(f"the CPU refused the switch to user mode ({exc})") from exc
        cs, ss = int(uc.reg_read(X.UC_X86_REG_CS)), int(uc.reg_read(X.UC_X86_REG_SS))
        now = (cs, ss, int(uc.reg_read(pc_reg)), int(uc.reg_read(sp_reg)))
        if now != (USER_CS[pick], USER_SS[pick], pc, sp):
            raise RunnerError(f"the switch to user mode ended at CS:IP {cs:#x}:{now[2]:#x}")

    # -- the stack ---------------------------------------------------------------------
    def in_stack(self, address: int) -> bool:
        return self.stack_allocation <= address < self.stack_base

    def grow_stack(self, mm: MemoryManager, fault: Fault) -> int | None:
        """Handle a guard-page fault inside the stack; None when resolved, else an NTSTATUS.

        The MMU has already cleared the guard on the faulting page. As Windows does, the page
        below becomes the new guard page and TEB.StackLimit drops to the faulting page; when
        no page is left for a guard (the bottom page stays reserved) the result is
        STATUS_STACK_OVERFLOW.
        """
        page = fault.address & ~(PAGE_SIZE - 1)
        self.stack_limit = min(self.stack_limit, page)
        mm.write(self.teb + self._off(TEB_STACK_LIMIT), struct.pack(self.ptr_format, self.stack_limit))
        new_guard = page - PAGE_SIZE
        if new_guard < self.stack_allocation + PAGE_SIZE:
            return C.STATUS_STACK_OVERFLOW
        mm.commit(new_guard, PAGE_SIZE, C.PAGE_READWRITE | C.PAGE_GUARD)
        return None

    # -- last error --------------------------------------------------------------------
    def store_last_error(self, mm: MemoryManager, code: int) -> None:
        mm.write(self.teb + self._off(TEB_LAST_ERROR), struct.pack("<I", code & 0xFFFFFFFF))

    def load_last_error(self, mm: MemoryManager) -> int:
        return int(struct.unpack("<I", mm.read(self.teb + self._off(TEB_LAST_ERROR), 4))[0])

    def load_stack_limit(self, mm: MemoryManager) -> int:
        raw = mm.read(self.teb + self._off(TEB_STACK_LIMIT), 8 if self.is_64bit else 4)
        return int(struct.unpack(self.ptr_format, raw)[0])

    # -- persistence -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ThreadEnvironment:
        return cls(**{k: data[k] for k in ThreadEnvironment.__dataclass_fields__})
