"""The Windows process environment a payload expects: TEB, PEB, FS/GS, a growing stack.

Offsets are those of Windows 10's ``_TEB``/``_PEB`` (ntpebteb.h in the WDK, the same in
ReactOS' ``ndk/peb_teb.h``); only the fields user code commonly reads are filled in:
NtTib (ExceptionList, StackBase, StackLimit, Self), ClientId, ProcessEnvironmentBlock,
LastErrorValue and DeallocationStack; PEB.ImageBaseAddress, ProcessHeap,
NumberOfProcessors and the OS version (10.0.19045).

**FS/GS.** 64-bit code reaches the TEB through GS, whose base is an MSR
(``UC_X86_REG_GS_BASE``). 32-bit code uses FS = 0x3B, a GDT selector, so the CPU reads the
segment descriptor from the GDT *in guest memory*: in virtual-TLB mode that memory must be
an allocation of the manager like any other (a small private one named "GDT"), or the
descriptor load faults. The GDT also holds flat 32-bit data segments for SS/DS/ES: once a
selector is loaded Unicorn recomputes the stack width from SS, and its default SS is a 16-bit
one. Everything stays at CPL 0 (Unicorn's), with DPL 3 descriptors like Windows'.

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

from unicorn import Uc
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

# GDT: Windows' selectors (index << 3 | RPL 3); SS must match CPL, which stays 0 in Unicorn
GDT_ENTRIES = 16
GDT_FLAT_DATA_RING0 = 2  # SS = 0x10
GDT_FLAT_DATA = 4  # DS/ES = 0x23
GDT_TEB = 7  # FS = 0x3B
SELECTOR_SS = GDT_FLAT_DATA_RING0 << 3
SELECTOR_DS = GDT_FLAT_DATA << 3 | 3
SELECTOR_FS = GDT_TEB << 3 | 3


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
    gdt: int | None
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
        gdt = None if is_64bit else mm.allocate(PAGE_SIZE, C.PAGE_READWRITE, top_down=True, name="GDT")
        reserve = max(page_round_up(stack_reserve), 16 * PAGE_SIZE)
        commit = min(max(page_round_up(stack_commit), PAGE_SIZE), reserve - 2 * PAGE_SIZE)
        bottom = mm.allocate(reserve, C.PAGE_READWRITE, reserve_only=True, name="stack (thread 0)")
        top = bottom + reserve
        mm.commit(top - commit, commit, C.PAGE_READWRITE)
        mm.commit(top - commit - PAGE_SIZE, PAGE_SIZE, C.PAGE_READWRITE | C.PAGE_GUARD)
        env = cls(is_64bit, teb, peb, gdt, top, top - commit, bottom)
        env._write_blocks(mm, image_base, heap)
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
        if self.gdt is not None:
            flat = gdt_descriptor(0, 0xFFFFF, 0x93, 0xC)  # present, ring 0, data RW, 4 KiB granular
            user = gdt_descriptor(0, 0xFFFFF, 0xF3, 0xC)  # the same at DPL 3
            tebseg = gdt_descriptor(teb, 0xFFF, 0xF3, 0x4)  # the TEB page, byte granular
            table = bytearray(8 * GDT_ENTRIES)
            for index, desc in ((GDT_FLAT_DATA_RING0, flat), (GDT_FLAT_DATA, user), (GDT_TEB, tebseg)):
                struct.pack_into("<Q", table, 8 * index, desc)
            mm.write(self.gdt, bytes(table))

    def attach(self, uc: Uc) -> None:
        """Point the CPU at the TEB: GS base (64-bit) or GDTR + segment selectors (32-bit).

        Idempotent; a snapshot restores the same registers, and calling this again after a
        restore does no harm.
        """
        if self.is_64bit:
            uc.reg_write(X.UC_X86_REG_GS_BASE, self.teb)
            return
        if self.gdt is None:
            raise RunnerError("a 32-bit thread environment needs a GDT")
        uc.reg_write(X.UC_X86_REG_GDTR, (0, self.gdt, 8 * GDT_ENTRIES - 1, 0))
        uc.reg_write(X.UC_X86_REG_DS, SELECTOR_DS)
        uc.reg_write(X.UC_X86_REG_ES, SELECTOR_DS)
        uc.reg_write(X.UC_X86_REG_FS, SELECTOR_FS)
        uc.reg_write(X.UC_X86_REG_SS, SELECTOR_SS)

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
