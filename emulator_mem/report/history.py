"""Record what a run does to memory, cheaply, for the report's timeline.

A :class:`HistoryRecorder` is an optional observer, never a per-instruction hook: the
manager tells it about each layout change (allocate, commit, protect, decommit, release,
views mapped and unmapped) from the few methods that make them, the MMU about the first
write to a write-watched page (a TLB miss that happens anyway), and the runner about each
API call, each guest fault it handles (guard pages) and the exception that ends the
process. Each notification costs one Python call and one small tuple; a run that makes no
API calls pays nothing at all while it computes.

Time is "instructions executed", which Unicorn only reports at the end of an
``emu_start``: the runner therefore runs short chunks while the guest is busy with the
system and doubles them while it computes (see ``Process.run``), and an event is stamped
with the instruction count at the start of its chunk. ``resolution`` is the largest chunk
in which something was recorded: every stamp is exact to within that many instructions.

Events and calls beyond the caps are counted, not kept, so a guest that calls VirtualAlloc
in a loop for an hour cannot exhaust the host's memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..space import RegionKind
from ..space.events import LayoutEvent
from .model import ApiCallRecord, MemoryEvent, RunReport

if TYPE_CHECKING:
    from ..mmu.faults import Fault
    from ..runner.observer import ObservedProcess
    from ..runner.report import GuestException
    from ..space import Allocation

MAX_EVENTS = 200_000
MAX_CALLS = 200_000


def _allocation_name(alloc: Allocation) -> str:
    if alloc.name:
        return alloc.name
    return "" if alloc.kind is RegionKind.PRIVATE else alloc.kind.name.lower()


class HistoryRecorder:
    """Observer of one process's manager and runner; :meth:`fill` puts what it saw in a report."""

    def __init__(self, max_events: int = MAX_EVENTS, max_calls: int = MAX_CALLS) -> None:
        self.events: list[MemoryEvent] = []
        self.calls: list[ApiCallRecord] = []
        self.max_events = max_events
        self.max_calls = max_calls
        self.dropped_events = 0
        self.dropped_calls = 0
        self.resolution = 0
        self._process: ObservedProcess | None = None
        self._call: int | None = None  # index of the API call in progress
        self._call_detail = ""
        self._chunk = 0  # budget of the chunk running now (0: the loader, before any chunk)
        self._since = 0  # events from here on came after the last call or chunk start

    # -- wiring --------------------------------------------------------------------------
    def attach(self, process: ObservedProcess) -> None:
        """Start observing ``process`` (its manager included); called by ``Process.load``."""
        self._process = process
        process.mm.observe(self)

    @property
    def _now(self) -> int:
        process = self._process
        return 0 if process is None else process.instructions

    def _add(self, event: MemoryEvent) -> None:
        if len(self.events) >= self.max_events:
            self.dropped_events += 1
            return
        self.events.append(event)
        if self._chunk > self.resolution:
            self.resolution = self._chunk

    # -- the manager's observer (emulator_mem.space.events.LayoutObserver) ---------------------
    def layout_event(self, kind: LayoutEvent, alloc: Allocation, address: int, size: int,
                     protect: int, old_protect: int) -> None:
        detail = "" if self._call is not None or self._chunk else "loader"
        self._add(MemoryEvent(self._now, kind.value, address, size, protect, old_protect,
                              _allocation_name(alloc), self._call, detail))

    def write_watch_hit(self, alloc: Allocation, address: int) -> None:
        self._add(MemoryEvent(self._now, LayoutEvent.WRITE_WATCH.value, address, 0x1000, 0, 0,
                              _allocation_name(alloc), self._call, "first write since reset"))

    # -- the runner's observer (emulator_mem.runner.observer.RunObserver) ----------------------
    def chunk_start(self, budget: int) -> None:
        self._chunk = budget
        self._since = len(self.events)

    def api_call(self, name: str, args: list[int], caller: int) -> None:
        """Before the handler runs: what it changes is linked to this call."""
        if len(self.calls) >= self.max_calls:
            self.dropped_calls += 1
            self._call = None
            return
        self._call = len(self.calls)
        self.calls.append(ApiCallRecord(self._call, self._now, name, tuple(args), None, caller))
        if self._chunk > self.resolution:
            self.resolution = self._chunk

    def api_return(self, result: int | None) -> None:
        """After the handler: the call's result (None for void and noreturn functions)."""
        if self._call is not None and result is not None:
            call = self.calls[self._call]
            self.calls[self._call] = ApiCallRecord(call.index, call.instructions, call.name, call.args,
                                                   result, call.caller)
        self._call = None
        self._since = len(self.events)

    def guest_fault(self, fault: Fault, outcome: str) -> None:
        """A fault the runner handled (a guard page that grew the stack) or died of."""
        if not fault.is_guard_page:
            return
        process = self._process
        alloc = None if process is None else process.mm.allocation_at(fault.address)
        name = "" if alloc is None else _allocation_name(alloc)
        # what the runner did about it (commit the next stack page) happened since the
        # chunk ended: the hit goes before those changes, and they name it as their cause
        hit = MemoryEvent(self._now, LayoutEvent.GUARD_PAGE.value, fault.address & ~0xFFF, 0x1000,
                          0, 0, name, None, outcome)
        caused = [i for i in range(self._since, len(self.events))
                  if self.events[i].api is None and not self.events[i].detail]
        for i in caused:
            e = self.events[i]
            self.events[i] = MemoryEvent(e.instructions, e.kind, e.address, e.size, e.protect,
                                         e.old_protect, e.name, None, f"guard page: {outcome}")
        if caused and len(self.events) < self.max_events:
            self.events.insert(caused[0], hit)
            if self._chunk > self.resolution:
                self.resolution = self._chunk
        else:
            self._add(hit)
        self._since = len(self.events)

    def guest_exception(self, exception: GuestException) -> None:
        target = exception.information[1] if len(exception.information) >= 2 else exception.address
        self._add(MemoryEvent(self._now, LayoutEvent.EXCEPTION.value, target, 0, 0, 0,
                              exception.location, None, f"{exception.code:#010x} {exception.name}"))

    # -- into the report ---------------------------------------------------------------------
    def fill(self, report: RunReport) -> None:
        """Put the recorded history into ``report``."""
        report.events = list(self.events)
        report.api_calls = list(self.calls)
        report.resolution = self.resolution
        report.dropped_events = self.dropped_events
        report.dropped_calls = self.dropped_calls
        report.history = "recorded"
