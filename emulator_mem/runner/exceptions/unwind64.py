"""x64 table-based unwinding: RtlLookupFunctionEntry and RtlVirtualUnwind over guest memory.

x64 code has no frame chain; each non-leaf function is described by a RUNTIME_FUNCTION in
the image's exception directory (``.pdata``: BeginAddress, EndAddress, UnwindData, sorted)
whose UNWIND_INFO (``.xdata``) lists the prolog's effects (pushes, stack allocation, frame
register, saved registers) and names an exception handler (UNW_FLAG_EHANDLER) with its
language-specific data. Undoing those effects on a register set gives the caller's
registers: that is how the dispatcher walks from the faulting function outward.

The formats are the PE/COFF specification's ("x64 exception handling"); the algorithm
follows Wine's ``RtlVirtualUnwind`` (dlls/ntdll/signal_x86_64.c): codes whose prolog offset
lies beyond the PC are skipped (a fault inside the prolog), a handler is reported only
outside the prolog, chained unwind info (UNW_FLAG_CHAININFO) is followed. Not handled: the
epilog special case (an exception *inside* an epilog unwinds as if in the body) and the
XMM registers saved by UWOP_SAVE_XMM128 (the walk tracks integer registers only).
Everything is read from guest memory through the manager, so images mapped by the runner
and by the guest itself both work; the image is found by the allocation that holds the PC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...errors import MemoryAccessError
from ...manager import MemoryManager
from . import layouts as L

UNW_FLAG_EHANDLER = 1
UNW_FLAG_UHANDLER = 2
UNW_FLAG_CHAININFO = 4
UWOP_PUSH_NONVOL, UWOP_ALLOC_LARGE, UWOP_ALLOC_SMALL, UWOP_SET_FPREG = 0, 1, 2, 3
UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR, UWOP_EPILOG = 4, 5, 6
UWOP_SAVE_XMM128, UWOP_SAVE_XMM128_FAR, UWOP_PUSH_MACHFRAME = 8, 9, 10
IMAGE_DIRECTORY_ENTRY_EXCEPTION = 3
RUNTIME_FUNCTION = struct.Struct("<III")


@dataclass(frozen=True, slots=True)
class FunctionEntry:
    """A RUNTIME_FUNCTION found for a PC, with where it lives."""

    image_base: int
    address: int  # guest address of the RUNTIME_FUNCTION
    begin: int  # RVAs
    end: int
    unwind: int


def _image_base_of(mm: MemoryManager, pc: int) -> int | None:
    alloc = mm.allocation_at(pc)
    if alloc is None or alloc.base not in mm.images:
        return None
    return int(alloc.base)


def exception_directory(mm: MemoryManager, base: int) -> tuple[int, int]:
    """(RVA, size) of a mapped PE32+ image's exception directory, (0, 0) if none."""
    try:
        lfanew = struct.unpack("<I", mm.read(base + 0x3C, 4))[0]
        optional = base + lfanew + 24
        magic = struct.unpack("<H", mm.read(optional, 2))[0]
        if magic != 0x20B:
            return 0, 0
        count = struct.unpack("<I", mm.read(optional + 108, 4))[0]
        if count <= IMAGE_DIRECTORY_ENTRY_EXCEPTION:
            return 0, 0
        rva, size = struct.unpack("<II", mm.read(optional + 112 + 8 * IMAGE_DIRECTORY_ENTRY_EXCEPTION, 8))
    except MemoryAccessError:
        return 0, 0
    return int(rva), int(size)


def lookup_function_entry(mm: MemoryManager, pc: int) -> FunctionEntry | None:
    """RtlLookupFunctionEntry: the RUNTIME_FUNCTION covering ``pc`` (binary search)."""
    base = _image_base_of(mm, pc)
    if base is None:
        return None
    rva, size = exception_directory(mm, base)
    count = size // RUNTIME_FUNCTION.size
    if not count:
        return None
    try:
        table = mm.read(base + rva, count * RUNTIME_FUNCTION.size)
    except MemoryAccessError:
        return None
    target = pc - base
    lo, hi = 0, count - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        begin, end, unwind = RUNTIME_FUNCTION.unpack_from(table, mid * RUNTIME_FUNCTION.size)
        if target < begin:
            hi = mid - 1
        elif target >= end:
            lo = mid + 1
        else:
            address = base + rva + mid * RUNTIME_FUNCTION.size
            while unwind & 1:  # an indirect entry: UnwindData is the RVA of another entry
                address = base + (unwind & ~1)
                begin, end, unwind = RUNTIME_FUNCTION.unpack(mm.read(address, RUNTIME_FUNCTION.size))
            return FunctionEntry(base, address, begin, end, unwind)
    return None


def _opcode_slots(code: int, info: int) -> int:
    if code == UWOP_ALLOC_LARGE:
        return 2 + (info != 0)
    if code in (UWOP_SAVE_NONVOL, UWOP_SAVE_XMM128, UWOP_EPILOG):
        return 2
    if code in (UWOP_SAVE_NONVOL_FAR, UWOP_SAVE_XMM128_FAR):
        return 3
    return 1


def virtual_unwind(
    mm: MemoryManager, entry: FunctionEntry, pc: int, regs: dict[str, int], *,
    handler_type: int = UNW_FLAG_EHANDLER,
) -> tuple[int, int, int]:
    """RtlVirtualUnwind: turn ``regs`` (CONTEXT names) into the caller's registers, in place.

    Returns (handler, handler data, establisher frame); handler and data are 0 unless the
    function has a handler of ``handler_type`` and ``pc`` is past its prolog.
    """
    base = entry.image_base
    begin, unwind_rva = entry.begin, entry.unwind

    def read_q(address: int) -> int:
        return int(struct.unpack("<Q", mm.read(address, 8))[0])

    frame = regs["Rsp"]
    in_prolog = False
    mach_frame = False
    while True:
        header = mm.read(base + unwind_rva, 4)
        flags, prolog, count, frame_byte = header[0] >> 3, header[1], header[2], header[3]
        codes = mm.read(base + unwind_rva + 4, 2 * count) if count else b""
        frame_reg, frame_offset = frame_byte & 0xF, frame_byte >> 4
        if frame_reg:
            frame = regs[L.GPR_64[frame_reg]] - frame_offset * 16
        offset = pc - base - begin
        in_prolog = 0 <= offset < prolog
        limit = offset if in_prolog else 1 << 32
        i = 0
        while i < count:
            at, op = codes[2 * i], codes[2 * i + 1]
            code, info = op & 0xF, op >> 4
            slots = _opcode_slots(code, info)
            if limit < at:
                i += slots
                continue
            arg16 = struct.unpack_from("<H", codes, 2 * i + 2)[0] if slots >= 2 else 0
            arg32 = struct.unpack_from("<I", codes, 2 * i + 2)[0] if slots >= 3 else 0
            if code == UWOP_PUSH_NONVOL:
                regs[L.GPR_64[info]] = read_q(regs["Rsp"])
                regs["Rsp"] += 8
            elif code == UWOP_ALLOC_LARGE:
                regs["Rsp"] += arg32 if info else arg16 * 8
            elif code == UWOP_ALLOC_SMALL:
                regs["Rsp"] += info * 8 + 8
            elif code == UWOP_SET_FPREG:
                regs["Rsp"] = frame
            elif code == UWOP_SAVE_NONVOL:
                regs[L.GPR_64[info]] = read_q(frame + arg16 * 8)
            elif code == UWOP_SAVE_NONVOL_FAR:
                regs[L.GPR_64[info]] = read_q(frame + arg32)
            elif code == UWOP_PUSH_MACHFRAME:
                rsp = regs["Rsp"] + (8 if info else 0)
                regs["Rip"] = read_q(rsp)
                regs["Rsp"] = read_q(rsp + 24)
                mach_frame = True
            i += slots
        tail = base + unwind_rva + 4 + 2 * ((count + 1) & ~1)
        if not flags & UNW_FLAG_CHAININFO:
            break
        begin, _end, unwind_rva = RUNTIME_FUNCTION.unpack(mm.read(tail, RUNTIME_FUNCTION.size))
    if not mach_frame:
        regs["Rip"] = read_q(regs["Rsp"])
        regs["Rsp"] += 8
    if not flags & handler_type or in_prolog:
        return 0, 0, frame
    handler = base + struct.unpack("<I", mm.read(tail, 4))[0]
    return handler, tail + 4, frame
