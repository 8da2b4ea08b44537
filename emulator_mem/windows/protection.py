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


#: the rights a protection grants when Windows compares a page's protection with its view's
#: (Wine's ``page_prot_to_access``, dlls/kernel32/tests/virtual.c test_mapping): copy-on-write
#: counts as read only, PAGE_EXECUTE as read + execute, PAGE_NOACCESS as nothing
ACCESS_READ = 1
ACCESS_WRITE = 2
ACCESS_EXECUTE = 4
PAGE_ACCESS: dict[int, int] = {
    C.PAGE_NOACCESS: 0,
    C.PAGE_READONLY: ACCESS_READ,
    C.PAGE_WRITECOPY: ACCESS_READ,
    C.PAGE_READWRITE: ACCESS_READ | ACCESS_WRITE,
    C.PAGE_EXECUTE: ACCESS_READ | ACCESS_EXECUTE,
    C.PAGE_EXECUTE_READ: ACCESS_READ | ACCESS_EXECUTE,
    C.PAGE_EXECUTE_WRITECOPY: ACCESS_READ | ACCESS_EXECUTE,
    C.PAGE_EXECUTE_READWRITE: ACCESS_READ | ACCESS_WRITE | ACCESS_EXECUTE,
}

#: writable protection -> its copy-on-write twin (Wine's ``map_prot_no_write``)
WRITE_TO_WRITECOPY: dict[int, int] = {
    C.PAGE_READWRITE: C.PAGE_WRITECOPY,
    C.PAGE_EXECUTE_READWRITE: C.PAGE_EXECUTE_WRITECOPY,
}


def within(requested: int, maximum: int) -> bool:
    """May a page of a view take ``requested`` when the view was mapped ``maximum``?

    Windows' rule for VirtualProtect and VirtualAlloc(MEM_COMMIT) inside views and images
    (Wine's ``is_compatible_protection``): ``(view_access & prot_access) == prot_access``.
    So PAGE_NOACCESS fits every view and PAGE_EXECUTE_WRITECOPY fits a PAGE_EXECUTE_READ one.
    """
    want = PAGE_ACCESS.get(requested & BASE_MASK, 0)
    return PAGE_ACCESS.get(maximum & BASE_MASK, 0) & want == want


def without_write(protect: int) -> int:
    """An image page asked to become writable becomes copy-on-write instead (Windows: image
    pages are shared with every mapping of the image until written)."""
    base = protect & BASE_MASK
    return WRITE_TO_WRITECOPY.get(base, base) | (protect & ~BASE_MASK)


def file_map_protect(access: int) -> int:
    """kernelbase's MapViewOfFileEx: the view protection for a FILE_MAP_* access mask.

    ``access &= ~FILE_MAP_EXECUTE``; exactly FILE_MAP_COPY -> WRITECOPY; else FILE_MAP_WRITE
    -> READWRITE; else FILE_MAP_READ -> READONLY; else NOACCESS; FILE_MAP_EXECUTE selects
    the PAGE_EXECUTE_* twin (none for NOACCESS). So FILE_MAP_READ | FILE_MAP_COPY is
    READONLY and FILE_MAP_EXECUTE alone is NOACCESS (Wine's test_mapping table).
    """
    execute = bool(access & C.FILE_MAP_EXECUTE)
    access &= ~C.FILE_MAP_EXECUTE
    if access == C.FILE_MAP_COPY:
        return C.PAGE_EXECUTE_WRITECOPY if execute else C.PAGE_WRITECOPY
    if access & C.FILE_MAP_WRITE:
        return C.PAGE_EXECUTE_READWRITE if execute else C.PAGE_READWRITE
    if access & C.FILE_MAP_READ:
        return C.PAGE_EXECUTE_READ if execute else C.PAGE_READONLY
    return C.PAGE_NOACCESS
