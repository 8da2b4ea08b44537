"""Instruction fetches from pages the guest may not execute, done the Windows way.

Unicorn asks the TLB-fill hook for pages it never executes: the ``until`` address of
``emu_start`` (plain Unicorn lets it be an unmapped sentinel), ``until - 1`` after every run,
pages of blocks it drops when a hook is deleted — and, because qemu translates a whole block
before running it, the *next* page when straight-line code runs up to a page boundary.
Refusing those lookups would fault too early: the instructions before the boundary must
retire first, as on Windows, where EIP/RIP then sits on the boundary.

So such a page is mapped execute-only onto this module's MMIO **trap page**. qemu treats it
as "not RAM", so the exit check at ``until`` still works, and when code bytes are really
read from it :meth:`FetchTrap.read` decides:

* code ran into the page from the page before (the block is being translated from the PC's
  page): the bytes at the boundary become ``mov al, [MARKER]``. The block runs, the
  instructions before the boundary retire, and the marker load misses to the fill hook with
  a precise PC — the boundary — where :meth:`FetchTrap.marker_fault` raises the fetch fault
  (guard page one-shot or access violation, access 8, address = PC);
* an instruction *straddles* the boundary (decoded with capstone): it cannot be
  half-translated, so this translation is abandoned with the fault noted as ``straddle``;
  the MMU's ``emu_start`` wrapper then drops the half-built block, runs the block's
  instructions up to the straddler (``until`` = its address) and raises the fault with the
  PC on the straddler — the instructions before it retired, as on Windows;
* the block starts in the page itself: the fault is raised right away.

Blocks translated with marker bytes stay cached; when a marked page later becomes
executable, :meth:`FetchTrap.untrap` flushes Unicorn's translation cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from unicorn import UC_ERR_EXCEPTION, UC_PROT_EXEC, UC_PROT_READ, UcError

from ..space.address_space import AddressSpace
from ..windows import constants as C
from ..windows.protection import CPU_PERMS, UC_EXEC
from . import raw
from .physmem import PhysicalMemory

UC_MEM_FETCH = 18


class TrapHost(Protocol):
    """What the trap needs of the MMU that owns it (:class:`~emulator_mem.mmu.tlb.MMU`).

    A protocol rather than the class, so the trap sits below the MMU in the import graph.
    """

    uc: Any
    space: AddressSpace
    phys: PhysicalMemory
    pc_reg: int
    until: int | None

    def record_fetch_fault(self, address: int) -> None: ...

    def flush(self) -> None: ...


class FetchTrap:
    """The trap page, the marker instruction and the decisions around them."""

    def __init__(self, mmu: TrapHost, is_64bit: bool) -> None:
        self.mmu = mmu
        self.is_64bit = is_64bit
        #: pages whose trap entry is in the TLB now (cleared with every TLB flush)
        self.pages: set[int] = set()
        #: pages whose marker bytes may sit in cached translation blocks
        self.marked: set[int] = set()
        self.marker = 0xFFFFFFFFFFFFF000 if is_64bit else 0xFFFFF000
        self.marker_insn = b"\xa0" + self.marker.to_bytes(8 if is_64bit else 4, "little")
        #: reads guest memory ignoring protection (the manager's try_read)
        self.read_memory: Callable[[int, int], bytes | None] = lambda address, size: None
        self._decision: tuple[int, str, int] | None = None  # (pc, "marker"|"straddle", stop)
        #: (block start, straddler address, boundary) of an abandoned translation
        self.straddle: tuple[int, int, int] | None = None
        self.flush_after_run = False
        self.phys = mmu.phys.alias_range(0x10000)
        uc = mmu.uc
        raw.mmio_map(uc, self.phys, 0x1000, self.read, None, None, None)
        raw.mem_protect(uc, self.phys, 0x1000, UC_PROT_READ | UC_PROT_EXEC)

    def wanted(self, vaddr: int) -> bool:
        """Should a fetch of this page that would be refused get the trap instead?"""
        mmu = self.mmu
        until = mmu.until
        if until is None:
            return True  # outside emu_start (uc.hook_del dropping blocks): not the guest
        page = vaddr >> 12
        if page in (until >> 12, (until - 1) >> 12):
            return True
        pc_page: int = mmu.uc.reg_read(mmu.pc_reg) >> 12  # qemu syncs the PC before translating
        return page != pc_page

    def map(self, vaddr: int, entry: Any) -> bool:
        self.pages.add(vaddr >> 12)
        entry.paddr = self.phys
        entry.perms = UC_EXEC
        return True

    # -- code bytes read from the trap page ------------------------------------------------
    def read(self, uc: Any, offset: int, size: int, _data: Any) -> int:
        if getattr(uc, "_hook_exception", None) is not None:
            return 0  # this run is already stopping; later bytes of the same block
        mmu = self.mmu
        pc = uc.reg_read(mmu.pc_reg)
        boundary = ((pc >> 12) + 1) << 12
        if self._executable(pc):
            decision, stop = self._decide(pc, boundary)
            if decision == "marker":
                self.marked.add(boundary >> 12)
                pattern = self.marker_insn
                return int.from_bytes(
                    bytes(pattern[(offset + i) % len(pattern)] for i in range(size)), "little")
            # a straddling instruction: abandon this translation; the emu_start wrapper
            # runs up to it and raises the fault only if it gets there (a guard page must
            # survive an earlier fault)
            self.straddle = (pc, stop, boundary)
        else:
            mmu.record_fetch_fault((pc & ~0xFFF) | offset)  # the block starts in this page
        uc._hook_exception = UcError(UC_ERR_EXCEPTION)
        uc.emu_stop()
        return 0

    def _executable(self, address: int) -> bool:
        alloc = self.mmu.space.find(address)
        if alloc is None:
            return False
        protect = alloc.page_protect((address - alloc.base) >> 12)
        return bool(protect and not protect & C.PAGE_GUARD
                    and CPU_PERMS.get(protect & 0xFF, 0) & UC_EXEC)

    def _decide(self, pc: int, boundary: int) -> tuple[str, int]:
        """Does the block from ``pc`` reach the boundary on an instruction boundary?

        Returns ("marker", boundary) or ("straddle", address of the straddling instruction).
        """
        if self._decision is not None and self._decision[0] == pc:
            return self._decision[1], self._decision[2]
        from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

        code = self.read_memory(pc, boundary - pc) or b""
        md = Cs(CS_ARCH_X86, CS_MODE_64 if self.is_64bit else CS_MODE_32)
        address = pc
        while address < boundary:
            insn = next(md.disasm(code[address - pc:], address, 1), None)
            if insn is None:
                break  # its bytes run past the boundary
            address += insn.size
        decision = "marker" if address == boundary else "straddle"
        self._decision = (pc, decision, address)
        return decision, address

    # -- the marker load -------------------------------------------------------------------
    def is_marker(self, vaddr: int) -> bool:
        """A load from the marker page by code in a page we served marker bytes for?

        (The guest may read that page itself — ``[reg - 4]`` with reg = 0 — which is an
        ordinary data fault.)
        """
        if vaddr >> 12 != self.marker >> 12 or not self.marked:
            return False
        pc: int = self.mmu.uc.reg_read(self.mmu.pc_reg)
        return pc >> 12 in self.marked

    def marker_fault(self) -> bool:
        """The marker load of a block that ran up to a non-executable page: fault there.

        The block with the marker stays cached; once the fault is raised (a guard page is
        now plain executable, say) it must go, but not from inside the running block:
        ``flush_after_run`` asks the ``emu_start`` wrapper to drop the translation cache.
        """
        mmu = self.mmu
        pc = mmu.uc.reg_read(mmu.pc_reg)  # precise: Unicorn restores the CPU state first
        mmu.record_fetch_fault(pc)
        self.flush_after_run = True
        return False

    def after_run(self) -> None:
        """Called by the ``emu_start`` wrapper once a run has ended."""
        if self.flush_after_run:
            self.flush_after_run = False
            self.mmu.uc.ctl_flush_tb()
            self.marked.clear()
        if self.pages:
            self.mmu.flush()  # trap entries die with the run

    def untrap(self, start: int, end: int) -> None:
        """Rights grew on [start, end): drop trap entries and marker blocks covering it."""
        first, last = start >> 12, (end - 1) >> 12
        if any(first <= p <= last for p in self.marked):
            self.mmu.uc.ctl_flush_tb()
            self.marked.difference_update(range(first, last + 1))
        if any(first <= p <= last for p in self.pages):
            self.mmu.flush()
