"""Unhandled guest exceptions, reported the way Windows reports them.

An exception nobody handles ends the process with the exception code as its exit code
(0xC0000005 for an access violation). The report carries what Windows Error Reporting and a
debugger show first: the code and its name, the faulting instruction's address (module +
offset) and disassembly, for access violations the classic "The instruction at … referenced
memory at …. The memory could not be read/written/executed." line, and the registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs
from unicorn import Uc
from unicorn import x86_const as X

from ..manager import MemoryManager
from ..mmu.faults import ACCESS_EXECUTE, ACCESS_READ, ACCESS_WRITE
from ..windows import constants as C

EXCEPTION_NAMES = {
    C.STATUS_ACCESS_VIOLATION: "EXCEPTION_ACCESS_VIOLATION",
    C.STATUS_GUARD_PAGE_VIOLATION: "EXCEPTION_GUARD_PAGE",
    C.STATUS_STACK_OVERFLOW: "EXCEPTION_STACK_OVERFLOW",
    C.STATUS_ILLEGAL_INSTRUCTION: "EXCEPTION_ILLEGAL_INSTRUCTION",
    C.STATUS_PRIVILEGED_INSTRUCTION: "EXCEPTION_PRIV_INSTRUCTION",
    C.STATUS_INTEGER_DIVIDE_BY_ZERO: "EXCEPTION_INT_DIVIDE_BY_ZERO",
    C.STATUS_INTEGER_OVERFLOW: "EXCEPTION_INT_OVERFLOW",
    C.STATUS_ARRAY_BOUNDS_EXCEEDED: "EXCEPTION_ARRAY_BOUNDS_EXCEEDED",
    C.STATUS_BREAKPOINT: "EXCEPTION_BREAKPOINT",
    C.STATUS_SINGLE_STEP: "EXCEPTION_SINGLE_STEP",
    0xC0000025: "EXCEPTION_NONCONTINUABLE_EXCEPTION",
    0xC0000026: "EXCEPTION_INVALID_DISPOSITION",
}

#: x86 exception vectors delivered through UC_HOOK_INTR -> the NTSTATUS Windows raises
VECTOR_STATUS = {
    0: C.STATUS_INTEGER_DIVIDE_BY_ZERO,
    1: C.STATUS_SINGLE_STEP,
    3: C.STATUS_BREAKPOINT,
    4: C.STATUS_INTEGER_OVERFLOW,
    5: C.STATUS_ARRAY_BOUNDS_EXCEEDED,
    6: C.STATUS_ILLEGAL_INSTRUCTION,
}

_VERBS = {ACCESS_READ: "read", ACCESS_WRITE: "written", ACCESS_EXECUTE: "executed"}
_REGS_32 = ("EAX", "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "ESP", "EIP", "EFLAGS")
_REGS_64 = ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "R8", "R9", "R10", "R11",
            "R12", "R13", "R14", "R15", "RIP", "EFLAGS")


@dataclass(slots=True)
class GuestException:
    """An exception the guest did not handle (EXCEPTION_RECORD plus context)."""

    code: int
    address: int  # ExceptionAddress: the faulting instruction
    information: list[int] = field(default_factory=list)  # ExceptionInformation[]
    instruction: str = ""
    location: str = ""
    registers: dict[str, int] = field(default_factory=dict)
    is_64bit: bool = False

    @property
    def name(self) -> str:
        return EXCEPTION_NAMES.get(self.code, "unknown exception")

    def describe(self) -> str:
        """The multi-line report printed when the process dies of this exception."""
        width = 16 if self.is_64bit else 8
        where = f" in {self.location}" if self.location else ""
        lines = [f"Unhandled exception {self.code:#010x} ({self.name}) "
                 f"at {self.address:#0{width + 2}x}{where}"]
        if self.instruction:
            lines.append(f"  faulting instruction: {self.instruction}")
        if self.code == C.STATUS_ACCESS_VIOLATION and len(self.information) >= 2:
            access, target = self.information[:2]
            lines.append(
                f"  The instruction at {self.address:#0{width + 2}x} referenced memory at "
                f"{target:#0{width + 2}x}. The memory could not be {_VERBS.get(access, 'accessed')}."
            )
        regs = list(self.registers.items())
        per_line = 4 if self.is_64bit else 5
        for i in range(0, len(regs), per_line):
            lines.append("  " + "  ".join(f"{k.lower()}={v:0{width}x}" for k, v in regs[i : i + per_line]))
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code, "name": self.name, "address": self.address,
            "information": list(self.information), "instruction": self.instruction,
            "location": self.location, "registers": dict(self.registers),
        }


def capture(
    uc: Uc, mm: MemoryManager, code: int, information: list[int] | None = None,
    *, address: int | None = None, location: str = "",
) -> GuestException:
    """Build the report for an exception at the current PC (or ``address``)."""
    is_64bit = mm.is_64bit
    names = _REGS_64 if is_64bit else _REGS_32
    registers = {n: int(uc.reg_read(getattr(X, f"UC_X86_REG_{n}"))) for n in names}
    pc = registers["RIP" if is_64bit else "EIP"] if address is None else address
    return GuestException(code, pc, list(information or []), disassemble(mm, pc), location,
                          registers, is_64bit)


@lru_cache(maxsize=2)
def _decoder(is_64bit: bool) -> Cs:
    """One decoder per mode: a new ``Cs`` costs ~0.3 ms, paid per crash in a batch."""
    return Cs(CS_ARCH_X86, CS_MODE_64 if is_64bit else CS_MODE_32)


def disassemble(mm: MemoryManager, address: int) -> str:
    """``mnemonic operands`` of the instruction at ``address``, or "" when unreadable."""
    raw = b""
    for size in (16, 0x1000 - (address & 0xFFF)):
        data = mm.try_read(address, size)
        if data is not None:
            raw = data
            break
    if not raw:
        return ""
    for insn in _decoder(mm.is_64bit).disasm(raw, address, 1):
        return f"{insn.mnemonic} {insn.op_str}".strip()
    return "(undecodable: " + raw[:8].hex(" ") + ")"
