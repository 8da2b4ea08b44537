"""PAGE_* protection values: validation and their meaning for the CPU.

One table, one place: what a Windows protection lets the guest do, which values Windows
accepts, and which ones are copy-on-write. Reproduces the x86 hardware view of Windows
protections: ``PAGE_EXECUTE`` pages are readable too (an x86 PTE cannot express
execute-only; Windows on x86/x64 lets reads through), everything else is exact.
"""

from __future__ import annotations

from ..errors import InvalidProtectionError
from . import constants as C

#: unicorn's UC_PROT_* bits (kept local so bookkeeping modules need not import unicorn)
UC_READ = 1
UC_WRITE = 2
UC_EXEC = 4

BASE_MASK = 0xFF
MODIFIER_MASK = C.PAGE_GUARD | C.PAGE_NOCACHE | C.PAGE_WRITECOMBINE

#: base protection -> what the CPU may do on a committed page of that protection
CPU_PERMS: dict[int, int] = {
    C.PAGE_NOACCESS: 0,
    C.PAGE_READONLY: UC_READ,
    C.PAGE_READWRITE: UC_READ | UC_WRITE,
    C.PAGE_WRITECOPY: UC_READ | UC_WRITE,
    C.PAGE_EXECUTE: UC_READ | UC_EXEC,
    C.PAGE_EXECUTE_READ: UC_READ | UC_EXEC,
    C.PAGE_EXECUTE_READWRITE: UC_READ | UC_WRITE | UC_EXEC,
    C.PAGE_EXECUTE_WRITECOPY: UC_READ | UC_WRITE | UC_EXEC,
}

#: copy-on-write protection -> what a page becomes after its first write
WRITECOPY_RESOLVED: dict[int, int] = {
    C.PAGE_WRITECOPY: C.PAGE_READWRITE,
    C.PAGE_EXECUTE_WRITECOPY: C.PAGE_EXECUTE_READWRITE,
}

WRITABLE = frozenset(
    {C.PAGE_READWRITE, C.PAGE_WRITECOPY, C.PAGE_EXECUTE_READWRITE, C.PAGE_EXECUTE_WRITECOPY}
)
EXECUTABLE = frozenset(
    {C.PAGE_EXECUTE, C.PAGE_EXECUTE_READ, C.PAGE_EXECUTE_READWRITE, C.PAGE_EXECUTE_WRITECOPY}
)


def is_valid(protect: int, *, allow_writecopy: bool) -> bool:
    """True when Windows accepts ``protect`` for a page.

    Exactly one base value; modifiers only GUARD/NOCACHE/WRITECOMBINE, never NOCACHE together
    with WRITECOMBINE or GUARD, never on PAGE_NOACCESS. Copy-on-write values exist only for
    mapped views and images (``allow_writecopy``); private memory refuses them.
    """
    base = protect & BASE_MASK
    mods = protect & ~BASE_MASK
    if base not in CPU_PERMS or mods & ~MODIFIER_MASK:
        return False
    if base in WRITECOPY_RESOLVED and not allow_writecopy:
        return False
    if mods and base == C.PAGE_NOACCESS:
        return False
    if mods & C.PAGE_NOCACHE and mods & (C.PAGE_WRITECOMBINE | C.PAGE_GUARD):
        return False
    return not (mods & C.PAGE_WRITECOMBINE and mods & C.PAGE_GUARD)


def check(protect: int, *, allow_writecopy: bool = False) -> int:
    """Return ``protect`` or raise :class:`InvalidProtectionError` (STATUS_INVALID_PAGE_PROTECTION)."""
    if not is_valid(protect, allow_writecopy=allow_writecopy):
        raise InvalidProtectionError(f"invalid page protection {protect:#x}")
    return protect


def cpu_perms(protect: int) -> int:
    """UC_PROT_* bits the guest gets on a committed page (0 for NOACCESS/GUARD handled by caller)."""
    return CPU_PERMS.get(protect & BASE_MASK, 0)


def is_writecopy(protect: int) -> bool:
    return (protect & BASE_MASK) in WRITECOPY_RESOLVED


def resolve_writecopy(protect: int) -> int:
    """The protection a copy-on-write page has after its private copy was made."""
    base = protect & BASE_MASK
    return WRITECOPY_RESOLVED.get(base, base) | (protect & ~BASE_MASK)


def within(requested: int, maximum: int) -> bool:
    """May a view/page ask for ``requested`` when the object allows at most ``maximum``?

    The rule behind NtMapViewOfSection and VirtualProtect on views: every CPU right asked for
    must be granted by the maximum; copy-on-write counts as write-capable only where the
    maximum is writable or copy-on-write.
    """
    want = cpu_perms(requested)
    have = cpu_perms(maximum)
    return want & have == want
