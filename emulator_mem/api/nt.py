"""The NT layer: ``Nt*VirtualMemory`` with ntdll's calling convention and parameter rules.

Every function takes the :class:`~emulator_mem.manager.MemoryManager` first and returns the
NTSTATUS first, followed by what the NT call writes back through its pointer arguments
(``*BaseAddress``, ``*RegionSize``, ``*OldProtect``). On failure those are the caller's input
values, untouched, as on Windows. Guest mistakes never raise: the manager's typed errors carry
their NTSTATUS (:mod:`emulator_mem.errors`) and are returned as such.

What this layer adds on top of the manager is Windows' *parameter* semantics, checked in the
order Windows checks them and before anything changes: rounding of addresses and sizes,
allocation-type and free-type validation, ``ZeroBits``, ``MEM_TOP_DOWN``, ``MEM_RESET``,
``MEM_DECOMMIT`` with size 0, ``MEM_RELEASE`` rules, and the allocation-wide cache attributes
(PAGE_NOCACHE / PAGE_WRITECOMBINE cannot be set per page). The oracle is Wine's conformance
tests (``dlls/ntdll/tests/virtual.c``, ``dlls/kernel32/tests/virtual.c``); where Wine's own
implementation and those tests disagree, the tests (i.e. Windows) win.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import EmulatorMemError
from ..space.address_space import GRANULARITY, PAGE_SIZE, RegionKind, page_round_down, page_round_up
from ..space.records import MemoryBasicInformation
from ..windows import constants as C
from ..windows import protection
from ..windows.status import NTSTATUS_TO_WIN32

if TYPE_CHECKING:
    from ..manager import MemoryManager
    from ..space.address_space import Allocation

__all__ = [
    "NT_SUCCESS",
    "NtClose",
    "NtCreateSection",
    "NtGetWriteWatch",
    "NtMapViewOfSection",
    "NtOpenSection",
    "NtResetWriteWatch",
    "NtUnmapViewOfSection",
    "NtAllocateVirtualMemory",
    "NtFreeVirtualMemory",
    "NtProtectVirtualMemory",
    "NtQueryVirtualMemory",
    "RtlNtStatusToDosError",
]

#: allocation types NtAllocateVirtualMemory knows (MEM_LARGE_PAGES/MEM_PHYSICAL are refused)
ALLOCATION_TYPE_MASK = (
    C.MEM_COMMIT | C.MEM_RESERVE | C.MEM_RESET | C.MEM_RESET_UNDO | C.MEM_TOP_DOWN
    | C.MEM_WRITE_WATCH
)
CACHE_ATTRIBUTES = C.PAGE_NOCACHE | C.PAGE_WRITECOMBINE
#: ZeroBits values from this one up are a mask of allowed address bits (64-bit guests)
ZERO_BITS_MASK_MIN = GRANULARITY - 1


class _NtFailure(EmulatorMemError):
    """A parameter error found by this layer; only ever returned as its status."""


def NT_SUCCESS(status: int) -> bool:
    """The ``NT_SUCCESS`` macro: success and informational statuses (severity bit clear)."""
    return not status & 0x80000000


def RtlNtStatusToDosError(status: int) -> int:
    """The Win32 error code Windows derives from an NTSTATUS (kernel32's SetLastError value).

    Reproduces ntdll's algorithm: 0 and customer statuses (bit 29) map to themselves, the
    0xD... facility is treated as 0xC..., the table in :mod:`emulator_mem.status` is consulted,
    wrapped Win32 codes (0xC001xxxx / 0x8007xxxx) unwrap, anything else is
    ERROR_MR_MID_NOT_FOUND.
    """
    status &= 0xFFFFFFFF
    if not status or status & 0x20000000:
        return status
    if status & 0xF0000000 == 0xD0000000:
        status &= ~0x10000000
    mapped = NTSTATUS_TO_WIN32.get(status)
    if mapped is not None:
        return mapped
    if status >> 16 in (0xC001, 0x8007):
        return status & 0xFFFF
    return C.ERROR_MR_MID_NOT_FOUND


# -- NtAllocateVirtualMemory ---------------------------------------------------------------
def NtAllocateVirtualMemory(
    mm: MemoryManager, base: int, zero_bits: int, size: int, allocation_type: int, protect: int
) -> tuple[int, int, int]:
    """Reserve, commit or reset memory; returns ``(status, base, size)``.

    Windows behaviour reproduced:

    * size 0 -> STATUS_INVALID_PARAMETER; ZeroBits 22..31 (and, on 64-bit guests, 33..0xFFFE;
      on 32-bit guests anything from 32) -> STATUS_INVALID_PARAMETER_3; unknown type bits
      (e.g. AT_ROUND_TO_PAGE), no COMMIT/RESERVE/RESET, MEM_RESET or MEM_RESET_UNDO combined
      with anything, MEM_WRITE_WATCH without MEM_RESERVE (a NULL base with MEM_COMMIT
      reserves, so it counts) -> STATUS_INVALID_PARAMETER.
    * With MEM_RESERVE the base is rounded down to 64 KiB, otherwise to a page; the size then
      covers ``[base, base+size)`` in whole pages. Ranges outside the user address space ->
      STATUS_INVALID_PARAMETER; an occupied range -> STATUS_CONFLICTING_ADDRESSES.
    * Base 0 reserves anywhere (MEM_COMMIT alone reserves and commits); a size larger than
      the user range below its last 64 KiB (MM_HIGHEST_VAD_ADDRESS) can never fit ->
      STATUS_INVALID_PARAMETER (Wine's answer in tests/oracle valloc, ReactOS's too). ZeroBits 1..21 keep
      the result below ``2**(32-ZeroBits)``; on 64-bit guests a ZeroBits >= 32 is a mask and
      the result must fit under its highest set bit. MEM_TOP_DOWN searches from the top.
      No room -> STATUS_NO_MEMORY.
    * MEM_COMMIT without MEM_RESERVE commits inside one reservation (already committed pages
      take the new protection); outside one -> STATUS_CONFLICTING_ADDRESSES; on a view of a
      file or on an image -> STATUS_ALREADY_COMMITTED.
    * MEM_RESET / MEM_RESET_UNDO validate ``protect`` but otherwise ignore it, leave states
      and protections alone (reserved pages too) and return the page-rounded range; the
      range must lie in one allocation, else STATUS_NOT_MAPPED_VIEW. Contents are kept, which
      Windows permits ("may be discarded").
    * Invalid protections -> STATUS_INVALID_PAGE_PROTECTION; copy-on-write values are refused
      for private memory.

    Deliberate difference: MEM_LARGE_PAGES and MEM_PHYSICAL are refused with
    STATUS_INVALID_PARAMETER (Windows checks a privilege or AWE state first).
    """
    try:
        result = _allocate(mm, base, zero_bits, size, allocation_type, protect)
    except EmulatorMemError as err:
        return err.status, base, size
    return C.STATUS_SUCCESS, result[0], result[1]


def _allocate(
    mm: MemoryManager, base: int, zero_bits: int, size: int, allocation_type: int, protect: int
) -> tuple[int, int]:
    if size <= 0:
        raise _NtFailure("region size must be nonzero", C.STATUS_INVALID_PARAMETER)
    limit = _zero_bits_limit(mm, zero_bits)
    _check_allocation_type(allocation_type, implicit_reserve=not base)
    if base < 0:
        raise _NtFailure("negative base address", C.STATUS_INVALID_PARAMETER)
    reserve = bool(allocation_type & C.MEM_RESERVE)
    if base:
        start = base & ~(GRANULARITY - 1) if reserve else page_round_down(base)
        size = page_round_up(base + size) - start
        if start < mm.lowest_address or start + size > mm.highest_address:
            raise _NtFailure(f"{base:#x} is outside the user range", C.STATUS_INVALID_PARAMETER)
    else:
        if size > mm.highest_address - GRANULARITY - 1:
            raise _NtFailure(f"{size:#x} bytes exceed the user range", C.STATUS_INVALID_PARAMETER)
        start = 0
        size = page_round_up(size)

    if allocation_type & (C.MEM_RESET | C.MEM_RESET_UNDO):
        return _reset(mm, start, size, protect)
    if reserve or not base:
        protection.check(protect)
        commit = bool(allocation_type & C.MEM_COMMIT)
        watch = bool(allocation_type & C.MEM_WRITE_WATCH)
        if base:
            new = mm.allocate(size, protect, address=start, reserve_only=not commit,
                              write_watch=watch)
        else:
            new = mm.allocate(
                size, protect, reserve_only=not commit, write_watch=watch,
                top_down=bool(allocation_type & C.MEM_TOP_DOWN),
                max_address=None if limit is None else limit + 1,
            )
        return new, size
    alloc = _allocation_covering(mm, start, size, C.STATUS_CONFLICTING_ADDRESSES)
    if _is_file_backed(alloc):
        raise _NtFailure("file-backed views and images are committed for good",
                         C.STATUS_ALREADY_COMMITTED)
    mm.commit(start, size, _effective_protect(alloc, protect))
    return start, size


def _zero_bits_limit(mm: MemoryManager, zero_bits: int) -> int | None:
    """Highest address ZeroBits allows (None: no limit); STATUS_INVALID_PARAMETER_3 if invalid."""
    bad = (
        zero_bits < 0
        or 21 < zero_bits < 32
        or (mm.is_64bit and (32 < zero_bits < ZERO_BITS_MASK_MIN or zero_bits >> 64))
        or (not mm.is_64bit and zero_bits >= 32)
    )
    if bad:
        raise _NtFailure(f"invalid ZeroBits {zero_bits:#x}", C.STATUS_INVALID_PARAMETER_3)
    if zero_bits == 0:
        return None
    if zero_bits < 32:
        return (1 << (32 - zero_bits)) - 1
    return (1 << zero_bits.bit_length()) - 1


def _check_allocation_type(allocation_type: int, *, implicit_reserve: bool = False) -> None:
    """``implicit_reserve``: a NULL base, where MEM_COMMIT reserves too."""
    reserves = allocation_type & C.MEM_RESERVE or (implicit_reserve and allocation_type & C.MEM_COMMIT)
    kinds = allocation_type & (C.MEM_COMMIT | C.MEM_RESERVE | C.MEM_RESET | C.MEM_RESET_UNDO)
    resets = allocation_type & (C.MEM_RESET | C.MEM_RESET_UNDO)
    invalid = (
        allocation_type & ~ALLOCATION_TYPE_MASK
        or not kinds
        or (resets and allocation_type != resets)
        or resets == C.MEM_RESET | C.MEM_RESET_UNDO
        or (allocation_type & C.MEM_WRITE_WATCH and not reserves)
    )
    if invalid:
        raise _NtFailure(f"invalid allocation type {allocation_type:#x}",
                         C.STATUS_INVALID_PARAMETER)


def _reset(mm: MemoryManager, start: int, size: int, protect: int) -> tuple[int, int]:
    """MEM_RESET / MEM_RESET_UNDO: validate, keep everything (contents included)."""
    if not start:
        raise _NtFailure("MEM_RESET needs an address", C.STATUS_INVALID_PARAMETER)
    protection.check(protect, allow_writecopy=True)
    _allocation_covering(mm, start, size, C.STATUS_NOT_MAPPED_VIEW)
    return start, size


# -- NtFreeVirtualMemory -------------------------------------------------------------------
def NtFreeVirtualMemory(
    mm: MemoryManager, base: int, size: int, free_type: int
) -> tuple[int, int, int]:
    """Decommit or release private memory; returns ``(status, base, size)``.

    Windows behaviour reproduced (Wine's test_NtFreeVirtualMemory is the oracle):

    * ``free_type`` must be MEM_DECOMMIT or MEM_RELEASE (both together, 0, MEM_FREE…:
      STATUS_INVALID_PARAMETER; MEM_COALESCE_PLACEHOLDERS alone: STATUS_INVALID_PARAMETER_4;
      the placeholder variants of MEM_RELEASE: STATUS_CONFLICTING_ADDRESSES, as no
      allocation here is a placeholder).
    * The base rounds down to a page; a nonzero size covers ``[base, base+size)`` in pages.
    * Free memory -> STATUS_MEMORY_NOT_ALLOCATED; views, images and MMIO (released only by
      unmapping) -> STATUS_UNABLE_TO_DELETE_SECTION; size 0 away from the allocation base ->
      STATUS_FREE_VM_NOT_AT_BASE; a range past the allocation's end -> STATUS_UNABLE_TO_FREE_VM.
    * MEM_DECOMMIT with size 0 decommits the whole allocation and returns size 0 (Windows 10
      1803+); MEM_RELEASE with size 0 releases it and returns its size.
    * MEM_RELEASE of part of an allocation splits it: the pages go, and what remains on
      either side becomes an allocation of its own (kernel32's VirtualFree never asks for
      this; it refuses a nonzero size with MEM_RELEASE).
    """
    try:
        result = _free(mm, base, size, free_type)
    except EmulatorMemError as err:
        return err.status, base, size
    return C.STATUS_SUCCESS, result[0], result[1]


def _free(mm: MemoryManager, base: int, size: int, free_type: int) -> tuple[int, int]:
    placeholder_release = free_type in (
        C.MEM_RELEASE | C.MEM_PRESERVE_PLACEHOLDER, C.MEM_RELEASE | C.MEM_COALESCE_PLACEHOLDERS
    )
    if free_type == C.MEM_COALESCE_PLACEHOLDERS:
        raise _NtFailure("MEM_COALESCE_PLACEHOLDERS needs MEM_RELEASE", C.STATUS_INVALID_PARAMETER_4)
    if free_type not in (C.MEM_DECOMMIT, C.MEM_RELEASE) and not placeholder_release:
        raise _NtFailure(f"invalid free type {free_type:#x}", C.STATUS_INVALID_PARAMETER)
    if base < 0 or size < 0:
        raise _NtFailure("negative address or size", C.STATUS_INVALID_PARAMETER)
    start = page_round_down(base)
    if size:
        size = page_round_up(base + size) - start
    if not start:
        raise _NtFailure("NULL base address", C.STATUS_INVALID_PARAMETER)
    alloc = mm.allocation_at(start)
    if alloc is None:
        raise _NtFailure(f"{base:#x} is not allocated", C.STATUS_MEMORY_NOT_ALLOCATED)
    if alloc.kind is not RegionKind.PRIVATE:
        raise _NtFailure("views are freed by unmapping them", C.STATUS_UNABLE_TO_DELETE_SECTION)
    if not size and start != alloc.base:
        raise _NtFailure(f"{base:#x} is not the allocation base", C.STATUS_FREE_VM_NOT_AT_BASE)
    if start + size > alloc.end:
        raise _NtFailure(f"{base:#x}+{size:#x} passes the allocation end",
                         C.STATUS_UNABLE_TO_FREE_VM)
    if placeholder_release:
        raise _NtFailure("not a placeholder", C.STATUS_CONFLICTING_ADDRESSES)
    if free_type == C.MEM_DECOMMIT:
        mm.decommit(start, size or alloc.size)
        return start, size
    if not size:
        size = alloc.size
    if start != alloc.base or size != alloc.size:
        mm.release(start, size)  # Windows splits the allocation
        return start, size
    mm.release(start)
    return start, size


# -- NtProtectVirtualMemory ----------------------------------------------------------------
def NtProtectVirtualMemory(
    mm: MemoryManager, base: int, size: int, new_protect: int
) -> tuple[int, int, int, int]:
    """Change the protection of committed pages; returns ``(status, base, size, old_protect)``.

    Windows behaviour reproduced: the range is page-rounded; an invalid protection ->
    STATUS_INVALID_PAGE_PROTECTION (copy-on-write only on views and images); the range must
    lie inside one allocation (STATUS_CONFLICTING_ADDRESSES otherwise, free memory included)
    and be committed throughout (STATUS_NOT_COMMITTED); ``old_protect`` is the first page's.
    PAGE_NOCACHE / PAGE_WRITECOMBINE follow the allocation, not the request (Windows 8+).
    A size of 0 is an empty range: nothing changes, ``old_protect`` is the page's (Wine's
    answer in tests/oracle vprotect split.size_zero; the page must be committed).
    """
    try:
        start, length, old = _protect(mm, base, size, new_protect)
    except EmulatorMemError as err:
        return err.status, base, size, 0
    return C.STATUS_SUCCESS, start, length, old


def _protect(mm: MemoryManager, base: int, size: int, new_protect: int) -> tuple[int, int, int]:
    if base < 0 or size < 0:
        raise _NtFailure("negative range", C.STATUS_INVALID_PARAMETER)
    protection.check(new_protect, allow_writecopy=True)
    start = page_round_down(base)
    if size == 0:
        _allocation_covering(mm, start, PAGE_SIZE, C.STATUS_CONFLICTING_ADDRESSES)
        info = mm.query(start)
        if info.State != C.MEM_COMMIT:
            raise _NtFailure(f"{start:#x} is not committed", C.STATUS_NOT_COMMITTED)
        return start, 0, int(info.Protect)
    size = page_round_up(base + size) - start
    alloc = _allocation_covering(mm, start, size, C.STATUS_CONFLICTING_ADDRESSES)
    old = mm.protect(start, size, _effective_protect(alloc, new_protect))
    return start, size, old


# -- NtQueryVirtualMemory ------------------------------------------------------------------
def NtQueryVirtualMemory(
    mm: MemoryManager, address: int
) -> tuple[int, MemoryBasicInformation | None]:
    """MemoryBasicInformation for ``address``; returns ``(status, mbi or None)``.

    Windows behaviour reproduced: any address below the top of the user range works (free
    memory reports MEM_FREE / PAGE_NOACCESS with no allocation); addresses at or above it
    (lpMaximumApplicationAddress + 1) -> STATUS_INVALID_PARAMETER.
    """
    if not 0 <= address < mm.highest_address:
        return C.STATUS_INVALID_PARAMETER, None
    try:
        return C.STATUS_SUCCESS, mm.query(address)
    except EmulatorMemError as err:
        return err.status, None


# -- helpers -------------------------------------------------------------------------------
def _allocation_covering(mm: MemoryManager, start: int, size: int, status: int) -> Allocation:
    """The allocation holding all of ``[start, start+size)``, or fail with ``status``."""
    alloc = mm.allocation_at(start)
    if alloc is None or start + size > alloc.end:
        raise _NtFailure(f"{start:#x}+{size:#x} is not inside one allocation", status)
    return alloc


def _is_file_backed(alloc: Allocation) -> bool:
    """Images and views of file-backed sections (Wine: a view with SEC_FILE)."""
    if alloc.kind is RegionKind.IMAGE:
        return True
    section = getattr(alloc.owner, "section", None)
    return alloc.kind is RegionKind.MAPPED and getattr(section, "file_path", None) is not None


def _effective_protect(alloc: Allocation, requested: int) -> int:
    """The protection pages really get: cache attributes are the allocation's (Windows 8+).

    The request is validated as given first (so a bad request still fails); if the
    allocation's attribute cannot combine with the request (e.g. PAGE_GUARD or
    PAGE_NOACCESS with PAGE_NOCACHE) the attribute is dropped for those pages.
    """
    shared = alloc.kind in (RegionKind.MAPPED, RegionKind.IMAGE)
    protection.check(requested, allow_writecopy=shared)
    effective = (requested & ~CACHE_ATTRIBUTES) | (alloc.allocation_protect & CACHE_ATTRIBUTES)
    if protection.is_valid(effective, allow_writecopy=shared):
        return effective
    return requested & ~CACHE_ATTRIBUTES


# -- sections and write watch live with their mechanisms; re-exported so ``nt`` is the one
# -- place for every Nt* call
from ..regions.writewatch import NtGetWriteWatch, NtResetWriteWatch  # noqa: E402
from .nt_sections import (  # noqa: E402
    NtClose,
    NtCreateSection,
    NtMapViewOfSection,
    NtOpenSection,
    NtUnmapViewOfSection,
)
