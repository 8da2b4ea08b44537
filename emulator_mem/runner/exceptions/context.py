"""CONTEXT records: the CPU written into the guest's layout, and read back on continue.

A handler gets the thread's state at the exception as the CONTEXT structure of its
architecture (layouts in :mod:`.layouts`) and may change it; EXCEPTION_CONTINUE_EXECUTION
(or ExceptionContinueExecution, or a filter's -1) resumes from whatever the record holds.
So the record is built from Unicorn's registers and parsed back into them:

* control and integer registers, EFlags, the segment selectors as the CPU holds them;
* debug registers DR0-3/6/7;
* x87: on x86 ``FloatSave`` is the FNSAVE image Windows stores (32-bit fields whose high
  words read 0xFFFF, ST(0)..ST(7) packed ten bytes each, full two-bit tag word); on both
  architectures the FXSAVE image (x86 ``ExtendedRegisters``, x64 ``FltSave``) carries the
  abridged tag byte, ST(i) in 16-byte slots, MXCSR and the XMM registers. Unicorn's FP0-7 are
  *physical* registers, so ST(i) is FP[(TOP + i) mod 8] with TOP from the status word.

On continue the integer, control and flag registers are always restored (EFlags sanitised
as the kernel does: only user-changeable bits, IF set); segments only when the handler
changed a selector (Unicorn reloads a 32-bit selector from the GDT, and CONTEXT reports the
selectors the CPU really holds); x87/SSE/debug state when ContextFlags asks for it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn import x86_const as X

from . import layouts as L
from .regs import read_float80, read_int, read_vector, write_float80, write_int, write_vector

EFLAGS_USER_SANITIZE = 0x3F4DD7  # ke.h: what user mode may set through NtContinue
EFLAGS_INTERRUPT_MASK = 0x200
_DEBUG = ("Dr0", "Dr1", "Dr2", "Dr3", "Dr6", "Dr7")
_SEGMENTS = ("SegGs", "SegFs", "SegEs", "SegDs", "SegCs", "SegSs")


_IDS: dict[str, int] = {}


def _reg(name: str) -> int:
    reg = _IDS.get(name)
    if reg is None:
        reg = _IDS[name] = int(getattr(X, f"UC_X86_REG_{name.upper()}"))
    return reg


_FP = [_reg(f"FP{i}") for i in range(8)]
_XMM = [_reg(f"XMM{i}") for i in range(16)]


def context_size(is_64bit: bool) -> int:
    return L.CONTEXT_64_SIZE if is_64bit else L.CONTEXT_32_SIZE


# -- the FPU ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Fpu:
    """The x87/SSE registers, each read from Unicorn once (a read costs ~10 µs)."""

    fcw: int
    fsw: int
    full_tag: int
    fop: int
    fip: int
    fdp: int
    fcs: int
    fds: int
    mxcsr: int
    st: list[bytes]  # ST(0)..ST(7), 10-byte extended reals
    xmm: list[int]


def _read_fpu(uc: Uc, vectors: int) -> _Fpu:
    """Unicorn's FP0-7 are physical registers: ST(i) is FP[(TOP + i) mod 8]."""
    fsw = read_int(uc, X.UC_X86_REG_FPSW)
    top = (fsw >> 11) & 7
    st = []
    for i in range(8):
        mantissa, exponent = read_float80(uc, _FP[(top + i) & 7])
        st.append(struct.pack("<QH", mantissa & (1 << 64) - 1, exponent & 0xFFFF))
    return _Fpu(
        read_int(uc, X.UC_X86_REG_FPCW), fsw, read_int(uc, X.UC_X86_REG_FPTAG),
        read_int(uc, X.UC_X86_REG_FOP) & 0x7FF, read_int(uc, X.UC_X86_REG_FIP),
        read_int(uc, X.UC_X86_REG_FDP), read_int(uc, X.UC_X86_REG_FCS),
        read_int(uc, X.UC_X86_REG_FDS), read_int(uc, X.UC_X86_REG_MXCSR), st,
        [read_vector(uc, _XMM[i]) for i in range(vectors)],
    )


def _abridged_tag(full: int) -> int:
    return sum(1 << i for i in range(8) if (full >> (2 * i)) & 3 != 3)


def _fxsave(fpu: _Fpu, is_64bit: bool) -> bytes:
    """The 512-byte FXSAVE image (the 64-bit form stores 64-bit FIP/FDP)."""
    image = bytearray(L.FXSAVE_SIZE)
    tag = _abridged_tag(fpu.full_tag)
    if is_64bit:
        struct.pack_into("<HHBBHQQII", image, 0, fpu.fcw, fpu.fsw, tag, 0, fpu.fop, fpu.fip,
                         fpu.fdp, fpu.mxcsr, L.MXCSR_MASK)
    else:
        L.FXSAVE_HEADER.pack_into(image, 0, fpu.fcw, fpu.fsw, tag, 0, fpu.fop, fpu.fip & 0xFFFFFFFF,
                                  fpu.fcs, 0, fpu.fdp & 0xFFFFFFFF, fpu.fds, 0, fpu.mxcsr, L.MXCSR_MASK)
    for i, st in enumerate(fpu.st):
        image[L.FXSAVE_ST0 + 16 * i : L.FXSAVE_ST0 + 16 * i + 10] = st
    for i, value in enumerate(fpu.xmm):
        image[L.FXSAVE_XMM0 + 16 * i : L.FXSAVE_XMM0 + 16 * (i + 1)] = value.to_bytes(16, "little")
    return bytes(image)


def _float_save(fpu: _Fpu) -> bytes:
    """x86 FLOATING_SAVE_AREA: the FNSAVE image as Windows stores it."""
    high = 0xFFFF0000
    return L.FLOAT_SAVE.pack(
        high | fpu.fcw, high | fpu.fsw, high | fpu.full_tag, fpu.fip & 0xFFFFFFFF,
        fpu.fcs & 0xFFFF | fpu.fop << 16, fpu.fdp & 0xFFFFFFFF, high | fpu.fds,
        b"".join(fpu.st), 0,
    )


def _restore_fpu(uc: Uc, fcw: int, fsw: int, full_tag: int, st: list[bytes]) -> None:
    write_int(uc, X.UC_X86_REG_FPCW, fcw & 0xFFFF)
    write_int(uc, X.UC_X86_REG_FPSW, fsw & 0xFFFF)
    write_int(uc, X.UC_X86_REG_FPTAG, full_tag & 0xFFFF)
    top = (fsw >> 11) & 7
    for i, raw in enumerate(st):
        mantissa, exponent = struct.unpack("<QH", raw[:10])
        write_float80(uc, _FP[(top + i) & 7], mantissa, exponent)


def _restore_fxsave(uc: Uc, image: bytes, is_64bit: bool, *, x87: bool) -> None:
    fcw, fsw, tag = struct.unpack_from("<HHB", image, 0)
    mxcsr = struct.unpack_from("<I", image, 24)[0]
    write_int(uc, X.UC_X86_REG_MXCSR, mxcsr)
    for i in range(16 if is_64bit else 8):
        chunk = image[L.FXSAVE_XMM0 + 16 * i : L.FXSAVE_XMM0 + 16 * (i + 1)]
        write_vector(uc, _XMM[i], int.from_bytes(chunk, "little"))
    if x87:
        full = sum((0 if tag >> i & 1 else 3) << (2 * i) for i in range(8))
        st = [image[L.FXSAVE_ST0 + 16 * i : L.FXSAVE_ST0 + 16 * i + 10] for i in range(8)]
        _restore_fpu(uc, fcw, fsw, full, st)


# -- build --------------------------------------------------------------------------------------
def capture_context(uc: Uc, is_64bit: bool, overrides: dict[str, int] | None = None) -> bytes:
    """The CONTEXT of the CPU now (CONTEXT_ALL), with ``overrides`` (e.g. ``{"Eip": …}``)."""
    if is_64bit:
        return _capture_64(uc, overrides or {})
    return _capture_32(uc, overrides or {})


def _capture_32(uc: Uc, overrides: dict[str, int]) -> bytes:
    ctx = bytearray(L.CONTEXT_32_SIZE)
    values = {name: read_int(uc, _reg(name)) for name in L.GPR_32}
    values.update({seg: read_int(uc, _reg(seg[3:])) & 0xFFFF for seg in _SEGMENTS})
    values.update({dr: read_int(uc, _reg(dr)) for dr in _DEBUG})
    values["ContextFlags"] = L.CONTEXT_ALL_32
    values.update(overrides)
    for name, value in values.items():
        struct.pack_into("<I", ctx, L.CTX32[name], value & 0xFFFFFFFF)
    fpu = _read_fpu(uc, 8)
    start = L.CTX32["FloatSave"]
    ctx[start : start + L.FLOAT_SAVE.size] = _float_save(fpu)
    start = L.CTX32["ExtendedRegisters"]
    ctx[start : start + L.FXSAVE_SIZE] = _fxsave(fpu, False)
    return bytes(ctx)


def _capture_64(uc: Uc, overrides: dict[str, int]) -> bytes:
    ctx = bytearray(L.CONTEXT_64_SIZE)
    for name in (*L.GPR_64, "Rip", *_DEBUG):
        value = overrides.get(name, read_int(uc, _reg(name)))
        struct.pack_into("<Q", ctx, L.CTX64[name], value & (1 << 64) - 1)
    for seg in _SEGMENTS:
        value = overrides.get(seg, read_int(uc, _reg(seg[3:])))
        struct.pack_into("<H", ctx, L.CTX64[seg], value & 0xFFFF)
    flags = overrides.get("EFlags", read_int(uc, X.UC_X86_REG_EFLAGS))
    struct.pack_into("<I", ctx, L.CTX64["EFlags"], flags & 0xFFFFFFFF)
    struct.pack_into("<I", ctx, L.CTX64["ContextFlags"], overrides.get("ContextFlags", L.CONTEXT_ALL_64))
    fpu = _read_fpu(uc, 16)
    struct.pack_into("<I", ctx, L.CTX64["MxCsr"], fpu.mxcsr)
    start = L.CTX64["FltSave"]
    ctx[start : start + L.FXSAVE_SIZE] = _fxsave(fpu, True)
    return bytes(ctx)


def context_pc(data: bytes, is_64bit: bool) -> int:
    if is_64bit:
        return int(struct.unpack_from("<Q", data, L.CTX64["Rip"])[0])
    return int(struct.unpack_from("<I", data, L.CTX32["Eip"])[0])


def context_sp(data: bytes, is_64bit: bool) -> int:
    if is_64bit:
        return int(struct.unpack_from("<Q", data, L.CTX64["Rsp"])[0])
    return int(struct.unpack_from("<I", data, L.CTX32["Esp"])[0])


def read_registers(data: bytes, is_64bit: bool) -> dict[str, int]:
    """Integer, control and flag registers of a CONTEXT by their CONTEXT names."""
    if is_64bit:
        out = {n: int(struct.unpack_from("<Q", data, L.CTX64[n])[0]) for n in (*L.GPR_64, "Rip")}
        out["EFlags"] = int(struct.unpack_from("<I", data, L.CTX64["EFlags"])[0])
        return out
    return {n: int(struct.unpack_from("<I", data, L.CTX32[n])[0]) for n in L.GPR_32}


def write_registers(data: bytes, is_64bit: bool, values: dict[str, int]) -> bytes:
    """``data`` with the named integer/control registers replaced."""
    out = bytearray(data)
    for name, value in values.items():
        if is_64bit:
            fmt, size = ("<I", 32) if name == "EFlags" else ("<Q", 64)
            struct.pack_into(fmt, out, L.CTX64[name], value & (1 << size) - 1)
        else:
            struct.pack_into("<I", out, L.CTX32[name], value & 0xFFFFFFFF)
    return bytes(out)


# -- restore ------------------------------------------------------------------------------------
def apply_context(uc: Uc, data: bytes, is_64bit: bool) -> None:
    """Load the CPU from a CONTEXT record (see the module docstring for what is restored)."""
    layout = L.CTX64 if is_64bit else L.CTX32
    flags = struct.unpack_from("<I", data, layout["ContextFlags"])[0]
    if flags & L.CONTEXT_DEBUG_REGISTERS:
        fmt = "<Q" if is_64bit else "<I"
        for dr in _DEBUG:
            write_int(uc, _reg(dr), struct.unpack_from(fmt, data, layout[dr])[0])
    if is_64bit:
        if flags & L.CONTEXT_FLOATING_POINT:
            start = L.CTX64["FltSave"]
            _restore_fxsave(uc, data[start : start + L.FXSAVE_SIZE], True, x87=True)
            write_int(uc, X.UC_X86_REG_MXCSR, struct.unpack_from("<I", data, L.CTX64["MxCsr"])[0])
    else:
        if flags & L.CONTEXT_FLOATING_POINT:
            fcw, fsw, tag, *_rest, regs, _npx = L.FLOAT_SAVE.unpack_from(data, L.CTX32["FloatSave"])
            _restore_fpu(uc, fcw, fsw, tag, [regs[10 * i : 10 * i + 10] for i in range(8)])
        if flags & L.CONTEXT_EXTENDED_REGISTERS:
            start = L.CTX32["ExtendedRegisters"]
            _restore_fxsave(uc, data[start : start + L.FXSAVE_SIZE], False,
                            x87=not flags & L.CONTEXT_FLOATING_POINT)
    if flags & L.CONTEXT_SEGMENTS:
        fmt = "<H" if is_64bit else "<I"
        for seg in _SEGMENTS:
            value = struct.unpack_from(fmt, data, layout[seg])[0] & 0xFFFF
            reg = _reg(seg[3:])
            if value != read_int(uc, reg) & 0xFFFF:
                try:
                    write_int(uc, reg, value)
                except UcError:  # a selector the GDT refuses: keep the current one
                    pass
    regs = read_registers(data, is_64bit)
    eflags = regs.pop("EFlags") & EFLAGS_USER_SANITIZE | EFLAGS_INTERRUPT_MASK
    pc = regs.pop("Rip" if is_64bit else "Eip")
    for name, value in regs.items():
        write_int(uc, _reg(name), value)
    write_int(uc, X.UC_X86_REG_EFLAGS, eflags)
    write_int(uc, X.UC_X86_REG_RIP if is_64bit else X.UC_X86_REG_EIP, pc)
