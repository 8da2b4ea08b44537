"""Registering the TLB-fill callback with Unicorn directly, without the bindings' layers.

Every cold page costs one call of the fill callback, so its fixed overhead is the cold-run
cost. ``uc.hook_add(UC_HOOK_TLB_FILL, f)`` reaches ``f`` through three Python frames (the
ctypes trampoline, the bindings' exception guard, their argument adapter) and builds the
entry struct twice; measured on the 16k-page cold loop, registering one ctypes callback of
our own that keeps the bindings' contract — an exception is stored on the ``Uc`` and
re-raised by ``emu_start``, and emulation stops — removes about a third of the per-miss
cost. This is the one place that uses the bindings' internals (pinned: unicorn >=2.1.4,<2.2).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from unicorn import UC_HOOK_TLB_FILL, UcError
from unicorn.unicorn_const import UC_ERR_OK
from unicorn.unicorn_py3 import unicorn as _bindings

Fill = Callable[[int, int, Any], bool]


def add_fill_hook(uc: Any, fill: Fill) -> int:
    """Call ``fill(vaddr, access, entry)`` on every TLB miss; returns the hook handle
    (``uc.hook_del`` removes it as any other hook)."""

    def trampoline(_handle: int, vaddr: int, access: int, entry: Any, _key: int) -> bool:
        try:
            return fill(vaddr, access, entry.contents)
        except BaseException as err:
            return hand_to_emu_start(uc, err)

    return _register(uc, _bindings.HOOK_TLB_FILL_CFUNC(trampoline))


#: the raw callback's C signature, the entry seen as two uint64 (paddr; perms + padding)
RAW_FILL_CFUNC = ctypes.CFUNCTYPE(
    ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
    ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p,
)  # fmt: skip
RawFill = Callable[[Any, int, int, Any, Any], bool]


def hand_to_emu_start(uc: Any, err: BaseException) -> bool:
    """The bindings' contract for an exception in a hook: keep the first, stop the run."""
    if uc._hook_exception is None:
        uc._hook_exception = err
    uc.emu_stop()
    return False


def add_raw_fill_hook(uc: Any, raw: RawFill) -> int:
    """Like :func:`add_fill_hook` without even the trampoline frame: Unicorn calls ``raw``
    itself as ``raw(handle, vaddr, access, entry, key)``, where ``entry[0] = paddr`` and
    ``entry[1] = perms`` fill the translation (no ctypes struct built per call). ``raw``
    must catch its own exceptions and pass them to :func:`hand_to_emu_start`.

    For the MMU's re-miss answers, which are most of a cold run's misses: the saved frame
    and struct are a measurable share of a ~1 µs call.
    """
    return _register(uc, RAW_FILL_CFUNC(raw))


def _register(uc: Any, fptr: Any) -> int:
    """uc_hook_add for a TLB-fill callback over all addresses; the handle, as hook_add returns."""
    handle = _bindings.uc_hook_h()
    status = _bindings.uclib.uc_hook_add(
        uc._uch, ctypes.byref(handle), UC_HOOK_TLB_FILL,
        ctypes.cast(fptr, ctypes.c_void_p), ctypes.c_void_p(0), ctypes.c_uint64(1), ctypes.c_uint64(0))
    if status != UC_ERR_OK:
        raise UcError(status)
    uc._callbacks[handle.value] = fptr  # keeps the callback alive; hook_del drops it
    return int(handle.value)
