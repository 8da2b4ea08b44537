"""Where one exception's records live on the guest stack, and how they are written.

Windows' kernel copies EXCEPTION_RECORD and CONTEXT onto the user stack below the faulting
stack pointer and starts ``KiUserExceptionDispatcher`` there; handlers get pointers into that
block. The runner does the same, from high to low addresses::

    fault SP (CONTEXT.Esp/Rsp)
    EXCEPTION_RECORD                     x86 0x50, x64 0x98 bytes
    CONTEXT                              x86 0x2CC, x64 0x4D0 bytes, 16-byte aligned
    EXCEPTION_POINTERS                   {&record, &context}
    scratch                              x86: an EXCEPTION_REGISTRATION_RECORD the dispatcher
                                         pushes around frame handlers (nested-exception
                                         detection) and the DispatcherContext slot;
                                         x64: DISPATCHER_CONTEXT
    walk CONTEXT                         x64 only: the registers of the frame being handled,
                                         virtually unwound (DISPATCHER_CONTEXT.ContextRecord)
    handler call frames                  (argument slots, return address, x64 shadow space)

Stack pages are committed on the way down as the kernel's probes would (each guard page
consumed grows the stack, :meth:`ThreadEnvironment.grow_stack`); a block that does not fit
— the stack is exhausted, or SP points at no memory — means the exception cannot be
delivered and the process ends, as Windows ends it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...errors import EmulatorMemError, RunnerError
from ...manager import MemoryManager
from ...mmu.faults import Fault
from ...space.address_space import PAGE_SIZE
from ...windows import constants as C
from ..environment import ThreadEnvironment
from . import layouts as L

_SCRATCH_32 = 0x20
_SCRATCH_64 = 0x60


class StackExhausted(RunnerError):
    """Internal: the exception frame does not fit on the stack (the process must end)."""

    def __init__(self, message: str = "no stack left for the exception frame") -> None:
        super().__init__(message, C.STATUS_STACK_OVERFLOW)


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """Guest addresses of one exception's records."""

    record: int
    context: int
    pointers: int
    scratch: int
    walk_context: int  # x64: the unwound CONTEXT handed to language handlers; 0 on x86
    base: int  # handler call frames are built below this (16-byte aligned)


def plan(sp: int, is_64bit: bool) -> FrameLayout:
    if is_64bit:
        context = (sp - L.CONTEXT_64_SIZE - 0x10) & ~0xF
        record = (context - L.RECORD_64.size) & ~0xF
        pointers = record - 0x10
        scratch = pointers - _SCRATCH_64
        walk = scratch - L.CONTEXT_64_SIZE
        return FrameLayout(record, context, pointers, scratch, walk, walk)
    record = (sp - L.RECORD_32.size) & ~0x3
    context = (record - L.CONTEXT_32_SIZE) & ~0xF
    pointers = context - 0x10
    scratch = pointers - _SCRATCH_32
    return FrameLayout(record, context, pointers, scratch, 0, scratch & ~0xF)


def pack_record(
    is_64bit: bool, code: int, flags: int, address: int, information: list[int], link: int = 0,
) -> bytes:
    """An EXCEPTION_RECORD (at most EXCEPTION_MAXIMUM_PARAMETERS parameters are kept)."""
    info = list(information[: L.EXCEPTION_MAXIMUM_PARAMETERS])
    mask = (1 << (64 if is_64bit else 32)) - 1
    padded = [v & mask for v in info] + [0] * (L.EXCEPTION_MAXIMUM_PARAMETERS - len(info))
    layout = L.RECORD_64 if is_64bit else L.RECORD_32
    return layout.pack(code & 0xFFFFFFFF, flags, link & mask, address & mask, len(info), *padded)


def unpack_record(data: bytes, is_64bit: bool) -> tuple[int, int, int, int, list[int]]:
    """(code, flags, link, address, information) of a guest EXCEPTION_RECORD."""
    layout = L.RECORD_64 if is_64bit else L.RECORD_32
    code, flags, link, address, count, *info = layout.unpack(data[: layout.size])
    return code, flags, link, address, list(info[: min(count, L.EXCEPTION_MAXIMUM_PARAMETERS)])


def commit_stack(mm: MemoryManager, env: ThreadEnvironment | None, low: int) -> None:
    """Make the thread's stack usable down to ``low`` (guard pages consumed, stack grown).

    Raises StackExhausted when the stack cannot reach that far. Addresses outside the
    thread's stack are left alone (a guest that switched stacks gets what is mapped).
    """
    if env is None or not env.in_stack(low):
        return
    while low < env.stack_limit:
        guard = env.stack_limit - PAGE_SIZE
        if guard <= env.stack_allocation:
            raise StackExhausted
        mm.protect(guard, PAGE_SIZE, C.PAGE_READWRITE)  # the probe consumes the guard page
        if env.grow_stack(mm, Fault(C.STATUS_GUARD_PAGE_VIOLATION, guard, 1)) is not None:
            raise StackExhausted


def write_frame(
    mm: MemoryManager, env: ThreadEnvironment | None, layout: FrameLayout, record: bytes,
    context: bytes, is_64bit: bool, *, call_room: int = 0x80,
) -> None:
    """Write record, context and pointers; raises StackExhausted if they cannot be stored."""
    if layout.base - call_room < 0:  # the stack pointer is near zero: no room at all
        raise StackExhausted
    commit_stack(mm, env, layout.base - call_room)
    fmt = "<QQ" if is_64bit else "<II"
    top = max(layout.record + len(record), layout.context + len(context))
    block = bytearray(top - layout.scratch)  # one host write for the whole frame
    for address, data in ((layout.record, record), (layout.context, context)):
        block[address - layout.scratch : address - layout.scratch + len(data)] = data
    struct.pack_into(fmt, block, layout.pointers - layout.scratch, layout.record, layout.context)
    try:
        mm.write(layout.scratch, bytes(block))
    except EmulatorMemError:  # not memory the records can go to
        raise StackExhausted from None
