"""Exception structures as the guest sees them: offsets, sizes and flag values.

Values and layouts are winnt.h's (Windows SDK 10.0.19041; the same in Wine's
``include/winnt.h`` and ReactOS' ``sdk/include/xdk/winnt_old.h``): EXCEPTION_RECORD,
EXCEPTION_POINTERS, the x86 and x64 CONTEXT (with FLOATING_SAVE_AREA and the FXSAVE-format
XMM_SAVE_AREA32), EXCEPTION_REGISTRATION_RECORD (x86 SEH), DISPATCHER_CONTEXT (x64) and
the ExceptionFlags / dispositions / filter results. Only tables here, no logic.
"""

from __future__ import annotations

import struct

# -- NTSTATUS codes the dispatcher itself raises (ntstatus.h) -------------------------------
STATUS_NONCONTINUABLE_EXCEPTION = 0xC0000025
STATUS_INVALID_DISPOSITION = 0xC0000026
STATUS_UNWIND = 0xC0000027
STATUS_INVALID_UNWIND_TARGET = 0xC0000029

# -- ExceptionFlags ---------------------------------------------------------------------------
EXCEPTION_NONCONTINUABLE = 0x01
EXCEPTION_UNWINDING = 0x02
EXCEPTION_EXIT_UNWIND = 0x04
EXCEPTION_STACK_INVALID = 0x08
EXCEPTION_NESTED_CALL = 0x10
EXCEPTION_TARGET_UNWIND = 0x20
EXCEPTION_COLLIDED_UNWIND = 0x40
EXCEPTION_MAXIMUM_PARAMETERS = 15

# -- what handlers return -----------------------------------------------------------------------
#: vectored handlers and filters (LONG)
EXCEPTION_EXECUTE_HANDLER = 1
EXCEPTION_CONTINUE_SEARCH = 0
EXCEPTION_CONTINUE_EXECUTION = -1
#: frame-based handlers (EXCEPTION_DISPOSITION)
ExceptionContinueExecution = 0
ExceptionContinueSearch = 1
ExceptionNestedException = 2
ExceptionCollidedUnwind = 3

# -- EXCEPTION_RECORD: Code, Flags, ExceptionRecord*, ExceptionAddress, NumberParameters,
#    ExceptionInformation[15] (x86 0x50 bytes, x64 0x98 with 4 bytes of padding) --------------
RECORD_32 = struct.Struct("<IIIII15I")
RECORD_64 = struct.Struct("<IIQQI4x15Q")
RECORD_FLAGS_OFFSET = 4

# -- x86 CONTEXT (0x2CC bytes) ------------------------------------------------------------------
CONTEXT_i386 = 0x00010000
CONTEXT_AMD64 = 0x00100000
CONTEXT_CONTROL = 0x1
CONTEXT_INTEGER = 0x2
CONTEXT_SEGMENTS = 0x4
CONTEXT_FLOATING_POINT = 0x8
CONTEXT_DEBUG_REGISTERS = 0x10
CONTEXT_EXTENDED_REGISTERS = 0x20  # x86 only: the FXSAVE image in ExtendedRegisters
#: what an exception CONTEXT carries (CONTEXT_ALL of each architecture)
CONTEXT_ALL_32 = CONTEXT_i386 | 0x3F
CONTEXT_ALL_64 = CONTEXT_AMD64 | 0x1F

CONTEXT_32_SIZE = 0x2CC
CTX32 = {
    "ContextFlags": 0x00, "Dr0": 0x04, "Dr1": 0x08, "Dr2": 0x0C, "Dr3": 0x10, "Dr6": 0x14,
    "Dr7": 0x18, "FloatSave": 0x1C, "SegGs": 0x8C, "SegFs": 0x90, "SegEs": 0x94, "SegDs": 0x98,
    "Edi": 0x9C, "Esi": 0xA0, "Ebx": 0xA4, "Edx": 0xA8, "Ecx": 0xAC, "Eax": 0xB0, "Ebp": 0xB4,
    "Eip": 0xB8, "SegCs": 0xBC, "EFlags": 0xC0, "Esp": 0xC4, "SegSs": 0xC8,
    "ExtendedRegisters": 0xCC,
}
#: FLOATING_SAVE_AREA (112 bytes): the FNSAVE image; DWORD fields, ST(0..7) packed 10 bytes each
FLOAT_SAVE = struct.Struct("<7I80sI")

# -- x64 CONTEXT (0x4D0 bytes, 16-byte aligned) ------------------------------------------------
CONTEXT_64_SIZE = 0x4D0
CTX64 = {
    "P1Home": 0x00, "ContextFlags": 0x30, "MxCsr": 0x34, "SegCs": 0x38, "SegDs": 0x3A,
    "SegEs": 0x3C, "SegFs": 0x3E, "SegGs": 0x40, "SegSs": 0x42, "EFlags": 0x44, "Dr0": 0x48,
    "Dr1": 0x50, "Dr2": 0x58, "Dr3": 0x60, "Dr6": 0x68, "Dr7": 0x70, "Rax": 0x78, "Rcx": 0x80,
    "Rdx": 0x88, "Rbx": 0x90, "Rsp": 0x98, "Rbp": 0xA0, "Rsi": 0xA8, "Rdi": 0xB0, "R8": 0xB8,
    "R9": 0xC0, "R10": 0xC8, "R11": 0xD0, "R12": 0xD8, "R13": 0xE0, "R14": 0xE8, "R15": 0xF0,
    "Rip": 0xF8, "FltSave": 0x100, "VectorRegister": 0x300, "VectorControl": 0x4A0,
    "DebugControl": 0x4A8,
}
#: x64 integer registers in CONTEXT order (Rax..R15), the order of UNWIND_CODE register numbers
GPR_64 = ("Rax", "Rcx", "Rdx", "Rbx", "Rsp", "Rbp", "Rsi", "Rdi",
          "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15")
GPR_32 = ("Edi", "Esi", "Ebx", "Edx", "Ecx", "Eax", "Ebp", "Eip", "EFlags", "Esp")

# -- XMM_SAVE_AREA32 / FXSAVE image (512 bytes) -------------------------------------------------
#: ControlWord, StatusWord, TagWord (abridged), Reserved1, ErrorOpcode, ErrorOffset,
#: ErrorSelector, Reserved2, DataOffset, DataSelector, Reserved3, MxCsr, MxCsr_Mask
FXSAVE_HEADER = struct.Struct("<HHBBHIHHIHHII")
FXSAVE_ST0 = 32  # 8 x 16 bytes, ST(i) in the low 10
FXSAVE_XMM0 = 160  # 16 x 16 bytes (x86 uses the first 8)
FXSAVE_SIZE = 512
MXCSR_MASK = 0xFFFF

# -- x86 SEH --------------------------------------------------------------------------------------
#: EXCEPTION_REGISTRATION_RECORD: Next, Handler
REGISTRATION = struct.Struct("<II")
SEH_CHAIN_END = 0xFFFFFFFF

# -- x64 DISPATCHER_CONTEXT (0x50 bytes) ----------------------------------------------------------
#: ControlPc, ImageBase, FunctionEntry, EstablisherFrame, TargetIp, ContextRecord,
#: LanguageHandler, HandlerData, HistoryTable, ScopeIndex, Fill0
DISPATCHER_CONTEXT_64 = struct.Struct("<9QII")
