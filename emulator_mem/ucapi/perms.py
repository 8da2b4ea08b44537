"""UC_PROT_* permissions <-> Windows PAGE_* protections, for Unicorn's own memory API.

Unicorn lets a page be write-only or execute-only; neither Windows nor an x86 page table
can say that (a writable or executable x86 page is always readable). Those two map to the
nearest protection that keeps every right asked for, and the page then also allows reads:

=========================  ==========================  =========================
``uc.mem_map`` perms       PAGE_* (VirtualQuery)       rights, as mem_regions()
=========================  ==========================  =========================
UC_PROT_NONE               PAGE_NOACCESS               0
READ                       PAGE_READONLY               READ
READ|WRITE, WRITE          PAGE_READWRITE              READ|WRITE
READ|EXEC, EXEC            PAGE_EXECUTE_READ           READ|EXEC
ALL, WRITE|EXEC            PAGE_EXECUTE_READWRITE      ALL
=========================  ==========================  =========================
"""

from __future__ import annotations

from ..windows import constants as C
from ..windows import protection

UC_PROT_ALL = 7

#: UC_PROT_* bits -> the PAGE_* protection ``uc.mem_map``/``mem_protect`` commit
PAGE_FROM_UC: dict[int, int] = {
    0: C.PAGE_NOACCESS,
    1: C.PAGE_READONLY,
    2: C.PAGE_READWRITE,
    3: C.PAGE_READWRITE,
    4: C.PAGE_EXECUTE_READ,
    5: C.PAGE_EXECUTE_READ,
    6: C.PAGE_EXECUTE_READWRITE,
    7: C.PAGE_EXECUTE_READWRITE,
}


def uc_perms(protect: int) -> int:
    """What a committed page of ``protect`` lets the guest do, as UC_PROT_* bits.

    A guard page allows nothing until its first touch (which faults), so it shows 0.
    """
    if protect & C.PAGE_GUARD:
        return 0
    return protection.cpu_perms(protect)
