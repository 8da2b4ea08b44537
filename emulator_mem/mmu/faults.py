"""Guest faults as Windows exception records.

When the MMU refuses a translation, emulation stops with ``UcError`` and the refused access
is kept here as the exception Windows would raise: STATUS_ACCESS_VIOLATION or
STATUS_GUARD_PAGE_VIOLATION, with ExceptionInformation[0] (0 read, 1 write, 8 execute — the
DEP code) and ExceptionInformation[1] (the address).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..windows import constants as C

ACCESS_READ = 0
ACCESS_WRITE = 1
ACCESS_EXECUTE = 8

#: unicorn's TLB-fill access codes (UC_MEM_READ/WRITE/FETCH) -> Windows access codes
UC_ACCESS_TO_WINDOWS = {16: ACCESS_READ, 17: ACCESS_WRITE, 18: ACCESS_EXECUTE}


@dataclass(slots=True, frozen=True)
class Fault:
    """A refused guest access: what ``mm.take_fault()`` returns."""

    status: int
    address: int
    access: int

    @property
    def is_guard_page(self) -> bool:
        return self.status == C.STATUS_GUARD_PAGE_VIOLATION

    def describe(self) -> str:
        verb = {ACCESS_READ: "read", ACCESS_WRITE: "write", ACCESS_EXECUTE: "execute"}
        kind = "guard page violation" if self.is_guard_page else "access violation"
        return f"{kind} ({self.status:#010x}): {verb.get(self.access, '?')} at {self.address:#x}"


# -- the exact fault address -----------------------------------------------------------------
# Unicorn hands the TLB-fill hook only the page of a refused access. Windows reports the exact
# byte (ExceptionInformation[1]), so after emulation stops — the PC is then precise, on the
# faulting instruction — the instruction is decoded and its memory operands recomputed.

_STACK_WRITES = frozenset({"push", "call", "pushf", "pushfd", "pushfq", "enter"})
_STACK_READS = frozenset({"pop", "ret", "retf", "popf", "popfd", "popfq", "leave", "iret", "iretd", "iretq"})


@lru_cache(maxsize=2)
def _decoder(is_64bit: bool) -> Any:
    """One capstone decoder per mode, with details: a new ``Cs`` costs ~0.3 ms (it retries
    importing capstone's optional Cython module every time), which a batch of crashing
    inputs pays per crash."""
    from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

    md = Cs(CS_ARCH_X86, CS_MODE_64 if is_64bit else CS_MODE_32)
    md.detail = True
    return md


def precise_address(
    fault: Fault, uc: Any, read: Callable[[int, int], bytes | None], is_64bit: bool
) -> int:
    """The byte address the faulting access touched (the page address if undecidable)."""
    from capstone.x86 import X86_OP_MEM
    from unicorn import x86_const

    page = fault.address & ~0xFFF
    pc = uc.reg_read(x86_const.UC_X86_REG_RIP if is_64bit else x86_const.UC_X86_REG_EIP)
    if fault.access == ACCESS_EXECUTE:
        return pc if pc & ~0xFFF == page else page
    code = read(pc, 15) or read(pc, (pc | 0xFFF) + 1 - pc)
    if not code:
        return page
    insn = next(_decoder(is_64bit).disasm(code, pc, 1), None)
    if insn is None:
        return page
    mask = (1 << (64 if is_64bit else 32)) - 1
    width = 8 if is_64bit else 4

    def reg(reg_id: int) -> int:
        if not reg_id:
            return 0
        name = insn.reg_name(reg_id)
        if name in ("rip", "eip"):
            return int(pc + insn.size)
        uc_id = getattr(x86_const, f"UC_X86_REG_{name.upper()}", None)
        return 0 if uc_id is None else int(uc.reg_read(uc_id))

    candidates: list[tuple[int, int]] = []
    for op in insn.operands:
        if op.type == X86_OP_MEM:
            mem = op.mem
            ea = reg(mem.base) + reg(mem.index) * mem.scale + mem.disp
            seg = insn.reg_name(mem.segment) if mem.segment else None
            if seg in ("fs", "gs"):
                base_id = getattr(x86_const, f"UC_X86_REG_{seg.upper()}_BASE", None)
                if base_id is not None:
                    try:
                        ea += int(uc.reg_read(base_id))
                    except Exception:  # noqa: BLE001 - a mode without that register
                        pass
            candidates.append((ea & mask, max(op.size, 1)))
    sp = int(uc.reg_read(x86_const.UC_X86_REG_RSP if is_64bit else x86_const.UC_X86_REG_ESP))
    if insn.mnemonic in ("xlat", "xlatb"):  # implicit [ebx + al]
        bx = x86_const.UC_X86_REG_RBX if is_64bit else x86_const.UC_X86_REG_EBX
        al = int(uc.reg_read(x86_const.UC_X86_REG_AL))
        candidates.append(((int(uc.reg_read(bx)) + al) & mask, 1))
    if insn.mnemonic in _STACK_WRITES:
        candidates.append(((sp - width) & mask, width))
    elif insn.mnemonic in _STACK_READS:
        candidates.append((sp & mask, width))
    for ea, size in candidates:
        if ea <= page + 0xFFF and ea + size > page:
            return max(ea, page)
    return page
