"""Register access for CONTEXT records, straight through Unicorn's C API.

A CONTEXT holds some 60 (x86) to 80 (x64) registers, and every exception reads them all
once and writes them back once. The bindings' ``uc.reg_read`` spends ~4 µs per integer
register and ~12 µs per XMM register in Python (picking a ctypes class per call); calling
``uc_reg_read``/``uc_reg_write`` with one reusable buffer costs about 1 µs, which took an
exception round trip from ~2 ms to well under one. Like :mod:`emulator_mem.mmu.fillhook`
this relies on the bindings' internals (``uc._uch``, ``uclib``; pinned unicorn >=2.1.4,<2.2)
and falls back to the public API where they are missing.
"""

from __future__ import annotations

import ctypes
from typing import Any

from unicorn import UcError

try:  # the bindings' internals: the C library and the engine handle
    from unicorn.unicorn_py3 import unicorn as _bindings

    _uclib: Any = _bindings.uclib
except (ImportError, AttributeError):  # pragma: no cover - other bindings layouts
    _uclib = None

_U64 = ctypes.c_uint64()
_U64_REF = ctypes.byref(_U64)
_WIDE = (ctypes.c_uint64 * 2)()
_WIDE_REF = ctypes.byref(_WIDE)


def _check(status: int) -> None:
    if status:
        raise UcError(status)


def _direct(uc: Any) -> bool:
    return _uclib is not None and getattr(uc, "_uch", None) is not None


def read_int(uc: Any, reg: int) -> int:
    if not _direct(uc):
        return int(uc.reg_read(reg))
    _U64.value = 0
    _check(_uclib.uc_reg_read(uc._uch, reg, _U64_REF))
    return int(_U64.value)


def read_vector(uc: Any, reg: int) -> int:
    """An XMM register as a 128-bit integer."""
    if not _direct(uc):
        return int(uc.reg_read(reg))
    _WIDE[0] = _WIDE[1] = 0
    _check(_uclib.uc_reg_read(uc._uch, reg, _WIDE_REF))
    return int(_WIDE[0]) | int(_WIDE[1]) << 64


def read_float80(uc: Any, reg: int) -> tuple[int, int]:
    """An x87 register as (mantissa, exponent)."""
    if not _direct(uc):
        mantissa, exponent = uc.reg_read(reg)
        return int(mantissa), int(exponent)
    _WIDE[0] = _WIDE[1] = 0
    _check(_uclib.uc_reg_read(uc._uch, reg, _WIDE_REF))
    return int(_WIDE[0]), int(_WIDE[1]) & 0xFFFF


def write_int(uc: Any, reg: int, value: int) -> None:
    if not _direct(uc):
        uc.reg_write(reg, value)
        return
    _U64.value = value & (1 << 64) - 1
    _check(_uclib.uc_reg_write(uc._uch, reg, _U64_REF))


def write_vector(uc: Any, reg: int, value: int) -> None:
    if not _direct(uc):
        uc.reg_write(reg, value)
        return
    _WIDE[0], _WIDE[1] = value & (1 << 64) - 1, value >> 64 & (1 << 64) - 1
    _check(_uclib.uc_reg_write(uc._uch, reg, _WIDE_REF))


def write_float80(uc: Any, reg: int, mantissa: int, exponent: int) -> None:
    if not _direct(uc):
        uc.reg_write(reg, (mantissa, exponent))
        return
    _WIDE[0], _WIDE[1] = mantissa & (1 << 64) - 1, exponent & 0xFFFF
    _check(_uclib.uc_reg_write(uc._uch, reg, _WIDE_REF))
