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

from unicorn import Uc, UcError
from unicorn import x86_const as X

from . import layouts as L

EFLAGS_USER_SANITIZE = 0x3F4DD7  # ke.h: what user mode may set through NtContinue
EFLAGS_INTERRUPT_MASK = 0x200
_DEBUG = ("Dr0", "Dr1", "Dr2", "Dr3", "Dr6", "Dr7")
_SEGMENTS = ("SegGs", "SegFs", "SegEs", "SegDs", "SegCs", "SegSs")


def _reg(name: str) -> int:
    return int(getattr(X, f"UC_X86_REG_{name.upper()}"))


def context_size(is_64bit: bool) -> int:
    return L.CONTEXT_64_SIZE if is_64bit else L.CONTEXT_32_SIZE


# -- the FPU ----------------------------------------------------------------------------------
def _st_registers(uc: Uc) -> list[bytes]:
    """ST(0)..ST(7) as 10-byte extended reals, from Unicorn's physical FP0-7."""
    top = (int(uc.reg_read(X.UC_X86_REG_FPSW)) >> 11) & 7
    out = []
    for i in range(8):
        mantissa, exponent = uc.reg_read(_reg(f"FP{(top + i) & 7}"))
        out.append(struct.pack("<QH", mantissa & (1 << 64) - 1, exponent & 0xFFFF))
    return out


def _abridged_tag(full: int) -> int:
    return sum(1 << i for i in range(8) if (full >> (2 * i)) & 3 != 3)


def _fxsave(uc: Uc, is_64bit: bool) -> bytes:
    """The 512-byte FXSAVE image (the 64-bit form stores 64-bit FIP/FDP)."""
    fcw, fsw = int(uc.reg_read(X.UC_X86_REG_FPCW)), int(uc.reg_read(X.UC_X86_REG_FPSW))
    tag = _abridged_tag(int(uc.reg_read(X.UC_X86_REG_FPTAG)))
    fop = int(uc.reg_read(X.UC_X86_REG_FOP)) & 0x7FF
    fip, fdp = int(uc.reg_read(X.UC_X86_REG_FIP)), int(uc.reg_read(X.UC_X86_REG_FDP))
    fcs, fds = int(uc.reg_read(X.UC_X86_REG_FCS)), int(uc.reg_read(X.UC_X86_REG_FDS))
    mxcsr = int(uc.reg_read(X.UC_X86_REG_MXCSR))
    image = bytearray(L.FXSAVE_SIZE)
    if is_64bit:
        struct.pack_into("<HHBBHQQII", image, 0, fcw, fsw, tag, 0, fop, fip, fdp, mxcsr, L.MXCSR_MASK)
    else:
        L.FXSAVE_HEADER.pack_into(image, 0, fcw, fsw, tag, 0, fop, fip & 0xFFFFFFFF, fcs, 0,
                                  fdp & 0xFFFFFFFF, fds, 0, mxcsr, L.MXCSR_MASK)
    for i, st in enumerate(_st_registers(uc)):
        image[L.FXSAVE_ST0 + 16 * i : L.FXSAVE_ST0 + 16 * i + 10] = st
    for i in range(16 if is_64bit else 8):
        value = int(uc.reg_read(_reg(f"XMM{i}")))
        image[L.FXSAVE_XMM0 + 16 * i : L.FXSAVE_XMM0 + 16 * (i + 1)] = value.to_bytes(16, "little")
    return bytes(image)


def _float_save(uc: Uc) -> bytes:
    """x86 FLOATING_SAVE_AREA: the FNSAVE image as Windows stores it."""
    high = 0xFFFF0000
    fop = int(uc.reg_read(X.UC_X86_REG_FOP)) & 0x7FF
    return L.FLOAT_SAVE.pack(
        high | int(uc.reg_read(X.UC_X86_REG_FPCW)), high | int(uc.reg_read(X.UC_X86_REG_FPSW)),
        high | int(uc.reg_read(X.UC_X86_REG_FPTAG)), int(uc.reg_read(X.UC_X86_REG_FIP)) & 0xFFFFFFFF,
        int(uc.reg_read(X.UC_X86_REG_FCS)) & 0xFFFF | fop << 16,
        int(uc.reg_read(X.UC_X86_REG_FDP)) & 0xFFFFFFFF, high | int(uc.reg_read(X.UC_X86_REG_FDS)),
        b"".join(_st_registers(uc)), 0,
    )


def _restore_fpu(uc: Uc, fcw: int, fsw: int, full_tag: int, st: list[bytes]) -> None:
    uc.reg_write(X.UC_X86_REG_FPCW, fcw & 0xFFFF)
    uc.reg_write(X.UC_X86_REG_FPSW, fsw & 0xFFFF)
    uc.reg_write(X.UC_X86_REG_FPTAG, full_tag & 0xFFFF)
    top = (fsw >> 11) & 7
    for i, raw in enumerate(st):
        mantissa, exponent = struct.unpack("<QH", raw[:10])
        uc.reg_write(_reg(f"FP{(top + i) & 7}"), (mantissa, exponent))


def _restore_fxsave(uc: Uc, image: bytes, is_64bit: bool, *, x87: bool) -> None:
    fcw, fsw, tag = struct.unpack_from("<HHB", image, 0)
    mxcsr = struct.unpack_from("<I", image, 24)[0]
    uc.reg_write(X.UC_X86_REG_MXCSR, mxcsr)
    for i in range(16 if is_64bit else 8):
        chunk = image[L.FXSAVE_XMM0 + 16 * i : L.FXSAVE_XMM0 + 16 * (i + 1)]
        uc.reg_write(_reg(f"XMM{i}"), int.from_bytes(chunk, "little"))
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
    values = {name: int(uc.reg_read(_reg(name))) for name in L.GPR_32}
    values.update({seg: int(uc.reg_read(_reg(seg[3:]))) & 0xFFFF for seg in _SEGMENTS})
    values.update({dr: int(uc.reg_read(_reg(dr))) for dr in _DEBUG})
    values["ContextFlags"] = L.CONTEXT_ALL_32
    values.update(overrides)
    for name, value in values.items():
        struct.pack_into("<I", ctx, L.CTX32[name], value & 0xFFFFFFFF)
    start = L.CTX32["FloatSave"]
    ctx[start : start + L.FLOAT_SAVE.size] = _float_save(uc)
    start = L.CTX32["ExtendedRegisters"]
    ctx[start : start + L.FXSAVE_SIZE] = _fxsave(uc, False)
    return bytes(ctx)


def _capture_64(uc: Uc, overrides: dict[str, int]) -> bytes:
    ctx = bytearray(L.CONTEXT_64_SIZE)
    for name in (*L.GPR_64, "Rip", *_DEBUG):
        value = overrides.get(name, int(uc.reg_read(_reg(name))))
        struct.pack_into("<Q", ctx, L.CTX64[name], value & (1 << 64) - 1)
    for seg in _SEGMENTS:
        value = overrides.get(seg, int(uc.reg_read(_reg(seg[3:]))))
        struct.pack_into("<H", ctx, L.CTX64[seg], value & 0xFFFF)
    flags = overrides.get("EFlags", int(uc.reg_read(X.UC_X86_REG_EFLAGS)))
    struct.pack_into("<I", ctx, L.CTX64["EFlags"], flags & 0xFFFFFFFF)
    struct.pack_into("<I", ctx, L.CTX64["ContextFlags"], overrides.get("ContextFlags", L.CONTEXT_ALL_64))
    struct.pack_into("<I", ctx, L.CTX64["MxCsr"], int(uc.reg_read(X.UC_X86_REG_MXCSR)))
    start = L.CTX64["FltSave"]
    ctx[start : start + L.FXSAVE_SIZE] = _fxsave(uc, True)
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
            uc.reg_write(_reg(dr), struct.unpack_from(fmt, data, layout[dr])[0])
    if is_64bit:
        if flags & L.CONTEXT_FLOATING_POINT:
            start = L.CTX64["FltSave"]
            _restore_fxsave(uc, data[start : start + L.FXSAVE_SIZE], True, x87=True)
            uc.reg_write(X.UC_X86_REG_MXCSR, struct.unpack_from("<I", data, L.CTX64["MxCsr"])[0])
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
            if value != int(uc.reg_read(reg)) & 0xFFFF:
                try:
                    uc.reg_write(reg, value)
                except UcError:  # a selector the GDT refuses: keep the current one
                    pass
    regs = read_registers(data, is_64bit)
    eflags = regs.pop("EFlags") & EFLAGS_USER_SANITIZE | EFLAGS_INTERRUPT_MASK
    pc = regs.pop("Rip" if is_64bit else "Eip")
    for name, value in regs.items():
        uc.reg_write(_reg(name), value)
    uc.reg_write(X.UC_X86_REG_EFLAGS, eflags)
    uc.reg_write(X.UC_X86_REG_RIP if is_64bit else X.UC_X86_REG_EIP, pc)
