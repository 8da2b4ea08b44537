"""VirtualAllocator: the embedder-facing IVirtualAllocator interface over the manager.

The seed (``virtual_allocator_interface.txt``) is an engine's hook for reserving and
committing its own memory. The interface speaks C: ``allocate`` returns 0 and ``free`` /
``partial_free`` return False on failure. So that the reason is not lost, every failure
records the NTSTATUS the manager raised in :attr:`VirtualAllocator.last_status` (the
GetLastError of this interface); a success resets it to STATUS_SUCCESS.

Windows behaviour reproduced, and the deliberate choices:

* reservations are 64 KiB aligned and sizes round up to 4 KiB pages; ``alignment`` above
  64 KiB is honoured by the manager's aligned free-range search;
* ``address`` is a *hint* when reserving (tried exactly, rounded down to the alignment, then
  the lowest free range above it, then anywhere) and *exact* when committing;
* MEM_COMMIT alone with ``address`` 0 reserves and commits, as VirtualAlloc(NULL, MEM_COMMIT)
  does on Windows;
* MEM_RELEASE frees the whole reservation and ignores ``size`` (the seed's note: Windows
  releases the whole region, whatever size the caller passes);
* Windows cannot release part of a reservation, so ``partial_free`` with MEM_RELEASE only
  decommits the tail and the final ``free(address, new_size, MEM_RELEASE)`` frees it all;
* only reservations made through this allocator can be committed, decommitted or released
  through it: the engine must not be able to free the guest's image or stack by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedDict

from ..errors import (
    ConflictingAddressesError,
    EmulatorMemError,
    InvalidParameterError,
    NotAllocatedError,
)
from ..manager import MemoryManager
from ..windows import constants as C

ALLOCATION_PAGE_SIZE = C.ALLOCATION_GRANULARITY
COMMIT_PAGE_SIZE = C.PAGE_SIZE


@dataclass(slots=True)
class Reservation:
    """One reservation made through the allocator.

    ``size`` is what the manager reserved; ``logical_size`` is what the caller still
    considers in use after partial releases (Windows keeps the whole reservation).
    """

    base: int
    size: int
    logical_size: int

    @property
    def end(self) -> int:
        return self.base + self.size


def _round_up(value: int, unit: int) -> int:
    return (value + unit - 1) // unit * unit


class VirtualAllocator:
    """IVirtualAllocator on a :class:`~emulator_mem.manager.MemoryManager`.

    Everything handed out is ordinary private guest memory, so guest code can read, write
    and (with an executable protection) run it.
    """

    def __init__(self, mm: MemoryManager) -> None:
        self.mm = mm
        #: NTSTATUS of the last failed call, STATUS_SUCCESS after a successful one
        self.last_status: int = C.STATUS_SUCCESS
        self._reservations: SortedDict = SortedDict()  # base -> Reservation

    # -- geometry ------------------------------------------------------------------------
    def allocation_page_size(self) -> int:
        """Granularity of reservations: 64 KiB, Windows' allocation granularity."""
        return ALLOCATION_PAGE_SIZE

    def commit_page_size(self) -> int:
        """Granularity of commits: the 4 KiB x86 page."""
        return COMMIT_PAGE_SIZE

    # -- bookkeeping -------------------------------------------------------------------
    def reservations(self) -> list[Reservation]:
        """The live reservations made through this allocator, lowest address first."""
        return list(self._reservations.values())

    def _reservation_at(self, address: int) -> Reservation | None:
        i = self._reservations.bisect_right(address) - 1
        if i < 0:
            return None
        res: Reservation = self._reservations.peekitem(i)[1]
        return res if address < res.end else None

    def _own(self, address: int, size: int) -> Reservation:
        """The reservation holding all of [address, address+size), or raise."""
        res = self._reservation_at(address)
        if res is None:
            raise NotAllocatedError(f"{address:#x} is not in a reservation of this allocator")
        if address + size > res.end:
            raise ConflictingAddressesError(
                f"{address:#x}+{size:#x} crosses the end of its reservation {res.base:#x}"
            )
        return res

    def _fail(self, exc: EmulatorMemError) -> None:
        self.last_status = exc.status

    # -- Allocate ----------------------------------------------------------------------
    def allocate(self, address: int, size: int, alignment: int, protection: int, flags: int) -> int:
        """Reserve and/or commit; the address of the region, or 0 (reason in last_status)."""
        try:
            result = self._allocate(address, size, alignment, protection, flags)
        except EmulatorMemError as exc:
            self._fail(exc)
            return 0
        self.last_status = C.STATUS_SUCCESS
        return result

    def _allocate(self, address: int, size: int, alignment: int, protection: int, flags: int) -> int:
        if flags & ~(C.MEM_RESERVE | C.MEM_COMMIT) or not flags & (C.MEM_RESERVE | C.MEM_COMMIT):
            raise InvalidParameterError(f"flags {flags:#x} must be MEM_RESERVE and/or MEM_COMMIT")
        if size <= 0:
            raise InvalidParameterError(f"size {size:#x} must be positive")
        if address < 0:
            raise InvalidParameterError(f"address {address:#x} is negative")
        if alignment < 0 or alignment & (alignment - 1):
            raise InvalidParameterError(f"alignment {alignment:#x} is not a power of two")
        if flags & C.MEM_RESERVE or address == 0:
            return self._reserve(address, size, max(alignment, ALLOCATION_PAGE_SIZE),
                                 protection, commit=bool(flags & C.MEM_COMMIT))
        start = address - address % COMMIT_PAGE_SIZE
        if alignment and start % alignment:
            raise InvalidParameterError(
                f"commit address {start:#x} does not have the alignment {alignment:#x}"
            )
        self._own(start, _round_up(address + size, COMMIT_PAGE_SIZE) - start)
        return self.mm.commit(address, size, protection)

    def _reserve(self, hint: int, size: int, alignment: int, protection: int, *, commit: bool) -> int:
        mm = self.mm
        base: int | None = None
        if hint:
            candidate = hint - hint % alignment
            try:
                base = mm.allocate(size, protection, address=candidate, reserve_only=not commit,
                                   alignment=alignment)
            except (ConflictingAddressesError, InvalidParameterError) as exc:
                if exc.status == C.STATUS_INVALID_PAGE_PROTECTION:
                    raise
                try:
                    base = mm.allocate(size, protection, reserve_only=not commit,
                                       min_address=candidate, alignment=alignment)
                except EmulatorMemError:
                    base = None
        if base is None:
            base = mm.allocate(size, protection, reserve_only=not commit, alignment=alignment)
        reserved = _round_up(size, COMMIT_PAGE_SIZE)
        self._reservations[base] = Reservation(base, reserved, reserved)
        return base

    # -- Free --------------------------------------------------------------------------
    def free(self, address: int, size: int, flags: int) -> bool:
        """Decommit [address, address+size) or release the reservation based at ``address``.

        MEM_RELEASE also decommits (it frees everything) and ignores ``size``. MEM_DECOMMIT
        with ``size`` 0 at a reservation base decommits the whole reservation, as on Windows.
        """
        try:
            if flags == C.MEM_RELEASE:
                self._release(address)
            elif flags == C.MEM_DECOMMIT:
                self._decommit(address, size)
            else:
                raise InvalidParameterError(
                    f"flags {flags:#x} must be exactly MEM_DECOMMIT or MEM_RELEASE"
                )
        except EmulatorMemError as exc:
            self._fail(exc)
            return False
        self.last_status = C.STATUS_SUCCESS
        return True

    def _release(self, address: int) -> None:
        res = self._reservations.get(address)
        if res is None:
            raise NotAllocatedError(
                f"{address:#x} is not the base of a reservation of this allocator",
                status=C.STATUS_FREE_VM_NOT_AT_BASE if self._reservation_at(address) else None,
            )
        self.mm.release(address)
        del self._reservations[address]

    def _decommit(self, address: int, size: int) -> None:
        if size < 0:
            raise InvalidParameterError(f"size {size:#x} is negative")
        if size == 0:
            res = self._reservations.get(address)
            if res is None:
                raise InvalidParameterError(
                    "MEM_DECOMMIT with size 0 needs the base of a reservation"
                )
            size = res.size
        start = address - address % COMMIT_PAGE_SIZE
        self._own(start, _round_up(address + size, COMMIT_PAGE_SIZE) - start)
        self.mm.decommit(address, size)

    def partial_free(self, address: int, old_size: int, new_size: int, flags: int) -> bool:
        """Give back the tail [address+new_size, address+old_size) of a region.

        The tail starts at the first page boundary at or after ``address + new_size``: the
        page holding the last kept byte stays committed. MEM_DECOMMIT decommits the tail.
        MEM_RELEASE cannot shrink a reservation on Windows, so — exactly as the seed's note
        says — it also only decommits and waits for the final release, which will pass
        ``new_size`` and free the whole reservation. A release down to ``new_size`` 0 keeps
        nothing and is an ordinary whole release.
        """
        try:
            self._partial_free(address, old_size, new_size, flags)
        except EmulatorMemError as exc:
            self._fail(exc)
            return False
        self.last_status = C.STATUS_SUCCESS
        return True

    def _partial_free(self, address: int, old_size: int, new_size: int, flags: int) -> None:
        if flags not in (C.MEM_DECOMMIT, C.MEM_RELEASE):
            raise InvalidParameterError(
                f"flags {flags:#x} must be exactly MEM_DECOMMIT or MEM_RELEASE"
            )
        if old_size <= 0 or new_size < 0 or new_size > old_size:
            raise InvalidParameterError(
                f"sizes old={old_size:#x} new={new_size:#x} do not describe a shrink"
            )
        res = self._own(address, old_size)
        if flags == C.MEM_RELEASE and address != res.base:
            raise NotAllocatedError(
                f"{address:#x} is not the base of its reservation {res.base:#x}",
                status=C.STATUS_FREE_VM_NOT_AT_BASE,
            )
        if flags == C.MEM_RELEASE and new_size == 0:
            self._release(address)  # nothing is kept: an ordinary, whole release
            return
        tail = _round_up(address + new_size, COMMIT_PAGE_SIZE)
        end = _round_up(address + old_size, COMMIT_PAGE_SIZE)
        if tail < end:
            self.mm.decommit(tail, end - tail)
        if flags == C.MEM_RELEASE:
            res.logical_size = min(res.logical_size, new_size)
