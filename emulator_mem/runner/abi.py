"""Calling conventions of the API stubs: where arguments are and how a call returns.

x86 imports use ``stdcall``: arguments on the stack above the return address, the callee
pops them (``ret 4*n``), result in EAX. x64 uses the Microsoft convention: RCX, RDX, R8, R9,
then the stack *above the 32-byte shadow space* (the fifth argument is at ``[rsp + 0x28]``
on entry), result in RAX, the caller cleans up (plain ``ret``).

Each stub is real guest code — the very ``ret``/``ret n`` a DLL function ends with — so after
the Python handler has set EAX/RAX, the CPU itself returns to the caller and pops stdcall
arguments; no register juggling of PC/SP is needed and single-stepping a stub works.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from unicorn import Uc
from unicorn import x86_const as X

from ..manager import MemoryManager

_ARG_REGS_64 = (X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_R8, X.UC_X86_REG_R9)
SHADOW_SPACE = 0x20
STUB_SLOT = 16  # bytes per stub in the stub region
JMP_SELF = b"\xeb\xfe"  # what a noreturn stub holds: ``jmp $`` (the handler stops the CPU)
INT3 = b"\xcc"


@dataclass(frozen=True, slots=True)
class Abi:
    """Register names and stack layout for one bitness."""

    is_64bit: bool

    @property
    def ptr_size(self) -> int:
        return 8 if self.is_64bit else 4

    @property
    def ptr_mask(self) -> int:
        return (1 << (8 * self.ptr_size)) - 1

    @property
    def pc_reg(self) -> int:
        return int(X.UC_X86_REG_RIP if self.is_64bit else X.UC_X86_REG_EIP)

    @property
    def sp_reg(self) -> int:
        return int(X.UC_X86_REG_RSP if self.is_64bit else X.UC_X86_REG_ESP)

    @property
    def result_reg(self) -> int:
        return int(X.UC_X86_REG_RAX if self.is_64bit else X.UC_X86_REG_EAX)

    def pc(self, uc: Uc) -> int:
        return int(uc.reg_read(self.pc_reg))

    def sp(self, uc: Uc) -> int:
        return int(uc.reg_read(self.sp_reg))

    def unpack_ptr(self, data: bytes, offset: int = 0) -> int:
        return int(struct.unpack_from("<Q" if self.is_64bit else "<I", data, offset)[0])

    def pack_ptr(self, value: int) -> bytes:
        return struct.pack("<Q" if self.is_64bit else "<I", value & self.ptr_mask)

    def read_args(self, uc: Uc, mm: MemoryManager, count: int) -> list[int]:
        """The first ``count`` arguments of a call whose stub is about to run.

        Stack arguments are read through ``mm`` (virtual addresses, guest protection
        ignored, as the kernel reads a caller's stack); a stack that is not committed there
        raises MemoryAccessError, which the dispatcher turns into a failed call.
        """
        if count <= 0:
            return []
        sp = self.sp(uc)
        if not self.is_64bit:
            raw = mm.read(sp + 4, 4 * count)
            return list(struct.unpack(f"<{count}I", raw))
        args = [int(uc.reg_read(r)) for r in _ARG_REGS_64[:count]]
        if count > 4:
            raw = mm.read(sp + 8 + SHADOW_SPACE, 8 * (count - 4))
            args += struct.unpack(f"<{count - 4}Q", raw)
        return args

    def read_frame(self, uc: Uc, mm: MemoryManager, count: int) -> tuple[int, list[int]]:
        """The return address and the first ``count`` arguments, with one stack read.

        For observers that want to know where a call came from: on both conventions the
        return address is at [SP] when the stub is reached, right below the stack arguments.
        """
        sp = self.sp(uc)
        if not self.is_64bit:
            raw = mm.read(sp, 4 + 4 * count)
            values = struct.unpack(f"<{count + 1}I", raw)
            return values[0], list(values[1:])
        args = [int(uc.reg_read(r)) for r in _ARG_REGS_64[:count]]
        if count <= 4:
            return self.unpack_ptr(mm.read(sp, 8)), args
        raw = mm.read(sp, 8 + SHADOW_SPACE + 8 * (count - 4))
        args += struct.unpack_from(f"<{count - 4}Q", raw, 8 + SHADOW_SPACE)
        return self.unpack_ptr(raw), args

    def set_result(self, uc: Uc, value: int) -> None:
        uc.reg_write(self.result_reg, value & self.ptr_mask)

    def stub_code(self, argc: int, *, noreturn: bool = False) -> bytes:
        """The bytes of one stub slot: ``ret n`` (x86 stdcall), ``ret`` (x64) or ``jmp $``."""
        if noreturn:
            code = JMP_SELF
        elif self.is_64bit or argc == 0:
            code = b"\xc3"
        else:
            code = b"\xc2" + struct.pack("<H", 4 * argc)
        return code.ljust(STUB_SLOT, INT3)
