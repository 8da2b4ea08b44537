"""Clearing qemu's "exception in flight" after the runner took a CPU exception itself.

qemu tracks nested exceptions in ``CPUX86State.old_exception``: a contributory exception
(#DE, #TS, #NP, #SS, #GP) raised while another is "in flight" becomes a double fault (#DF),
and one more a triple fault, which ends ``emu_start`` silently. The field is cleared only
when qemu delivers an exception through the IDT (``x86_cpu_do_interrupt``). Unicorn hands
exceptions to the ``UC_HOOK_INTR`` hook *instead* of delivering them, so nothing clears it:
the second ``div`` by zero of a process would arrive as #DF, the third would stop the run
without a word. Windows delivers every one of them as its own exception, so after each
exception the runner takes (:meth:`Process._stopped_by_interrupt`) the field is reset.

Unicorn exposes no register for it, but ``uc.context_save()`` copies the CPU state that
holds it, and ``context_restore`` writes that copy back. Its place in the copy is found
once per mode on a scratch CPU, not assumed: the one 32-bit word that reads -1 on a fresh
CPU, 0 after a #DE and 8 after a second one (#DF). Resetting is then save, patch those four
bytes to -1, restore.
"""

from __future__ import annotations

import ctypes
import struct
from functools import cache

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, UC_MODE_64, Uc
from unicorn import x86_const as X

from ...errors import RunnerError

#: vectors qemu counts as in flight: #DE, #DF, #TS, #NP, #SS, #GP, #PF
TRACKED_VECTORS = frozenset({0, 8, 10, 11, 12, 13, 14})
_NONE = struct.pack("<i", -1)


@cache
def _offset(is_64bit: bool) -> int:
    """Where ``old_exception`` sits in this Unicorn's context blob (see the module docstring)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"\x31\xc9\xf7\xf1")  # xor ecx, ecx; div ecx
    uc.hook_add(UC_HOOK_INTR, lambda u, _vector, _data: u.emu_stop())
    blobs = [bytes(uc.context_save())]
    uc.emu_start(0x1000, 0x1004)
    blobs.append(bytes(uc.context_save()))
    uc.reg_write(X.UC_X86_REG_RIP if is_64bit else X.UC_X86_REG_EIP, 0x1002)
    uc.emu_start(0x1002, 0x1004)
    blobs.append(bytes(uc.context_save()))
    size = min(len(b) for b in blobs)
    found = [
        off for off in range(0, size - 3, 4)
        if [struct.unpack_from("<i", b, off)[0] for b in blobs] == [-1, 0, 8]
    ]
    if len(found) != 1:
        raise RunnerError(f"cannot locate qemu's exception-in-flight field in this Unicorn's "
                          f"CPU context ({len(found)} candidates)")
    return found[0]


def clear_exception_in_flight(uc: Uc, is_64bit: bool) -> None:
    """Forget the exception qemu believes is still being delivered (from outside a run)."""
    offset = _offset(is_64bit)
    context = uc.context_save()
    address = ctypes.cast(context.context, ctypes.c_void_p).value
    if address is None or offset + 4 > context.size:
        raise RunnerError("Unicorn returned an empty CPU context")
    if ctypes.string_at(address + offset, 4) != _NONE:
        ctypes.memmove(address + offset, _NONE, 4)
        uc.context_restore(context)
