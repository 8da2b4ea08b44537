"""Guest faults as Windows exception records.

When the MMU refuses a translation, emulation stops with ``UcError`` and the refused access
is kept here as the exception Windows would raise: STATUS_ACCESS_VIOLATION or
STATUS_GUARD_PAGE_VIOLATION, with ExceptionInformation[0] (0 read, 1 write, 8 execute — the
DEP code) and ExceptionInformation[1] (the address).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import constants as C

ACCESS_READ = 0
ACCESS_WRITE = 1
ACCESS_EXECUTE = 8

#: unicorn's TLB-fill access codes (UC_MEM_READ/WRITE/FETCH) -> Windows access codes
UC_ACCESS_TO_WINDOWS = {16: ACCESS_READ, 17: ACCESS_WRITE, 18: ACCESS_EXECUTE}


@dataclass(slots=True, frozen=True)
class Fault:
    """A refused guest access: what ``mm.take_fault()`` returns."""

    status: int
    address: int
    access: int

    @property
    def is_guard_page(self) -> bool:
        return self.status == C.STATUS_GUARD_PAGE_VIOLATION

    def describe(self) -> str:
        verb = {ACCESS_READ: "read", ACCESS_WRITE: "write", ACCESS_EXECUTE: "execute"}
        kind = "guard page violation" if self.is_guard_page else "access violation"
        return f"{kind} ({self.status:#010x}): {verb.get(self.access, '?')} at {self.address:#x}"
