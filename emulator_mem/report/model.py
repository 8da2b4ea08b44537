"""The plain data an HTML report is made of: regions, events, API calls, totals, exit.

The renderer (:mod:`emulator_mem.report.render`) is a pure function of a :class:`RunReport`,
so a report can be rendered from anything that fills these records — a live process
(:mod:`emulator_mem.report.collect`), a snapshot, or a test that writes them by hand — and
nothing here knows about Unicorn, the manager or the runner (the event kinds are the
address space's own names, :class:`~emulator_mem.space.events.LayoutEvent`). Field names follow Windows
where a Windows structure exists (MEMORY_BASIC_INFORMATION); numbers stay plain ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..space.events import LayoutEvent

#: what a bar is coloured by: the VirtualQuery Type, with MMIO told apart from mapped views
CATEGORIES = ("image", "mapped", "private", "mmio")

#: what the history records, in the order the timeline draws its lanes (see LayoutEvent)
EVENT_KINDS = tuple(kind.value for kind in LayoutEvent)


@dataclass(frozen=True, slots=True)
class Region:
    """One VirtualQuery region, or one PE section's part of an image region.

    The first seven fields are MEMORY_BASIC_INFORMATION's; ``category`` picks the colour and
    ``name`` is what a person calls the region (``uart64.exe .text``, ``stack (thread 0)``).
    """

    BaseAddress: int
    RegionSize: int
    State: int
    Protect: int
    Type: int
    AllocationBase: int
    AllocationProtect: int
    category: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class ApiCallRecord:
    """One entry of the runner's API log: ``kernel32.dll!VirtualProtect(args) = result``."""

    index: int
    instructions: int  # instructions executed before the call (see RunReport.resolution)
    name: str
    args: tuple[int, ...]
    result: int | None
    caller: int = 0  # the return address: where in the guest the call came from


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """One change to the address space, or one memory exception, in the order it happened."""

    instructions: int  # instructions executed before it
    kind: str  # one of EVENT_KINDS
    address: int
    size: int = 0
    protect: int = 0  # new protection (allocate, commit, protect, map_view)
    old_protect: int = 0  # protect: what VirtualProtect returns as the old protection
    name: str = ""  # the region's name when the event happened
    api: int | None = None  # index of the ApiCallRecord that caused it; None for the loader/CPU
    detail: str = ""  # free text: exception name, "stack grew", the caller's module+offset


@dataclass(frozen=True, slots=True)
class TypeTotals:
    """One row of the totals table: bytes reserved and committed for one region type."""

    type: str
    reserved: int
    committed: int
    regions: int = 0


@dataclass(slots=True)
class RunReport:
    """Everything one HTML report shows."""

    title: str  # the image's name
    source: str  # the file or snapshot it came from
    bits: int  # 32 or 64
    origin: str  # "run", "image" (mapped, not run) or "snapshot"
    state: str  # "exited", "running" or "not started"
    lowest_address: int  # the user range the map spans
    highest_address: int
    regions: list[Region] = field(default_factory=list)
    totals: list[TypeTotals] = field(default_factory=list)
    events: list[MemoryEvent] = field(default_factory=list)
    api_calls: list[ApiCallRecord] = field(default_factory=list)
    instructions: int = 0
    #: the instruction counts of events and calls are exact to within this many instructions
    resolution: int = 0
    exit_code: int | None = None
    exit_text: str = ""  # the console's closing line ("process exited with code 0x0 (0)")
    exception: str = ""  # the unhandled-exception report, as the console prints it
    console: str = ""  # what the guest wrote to its console (may be cut short)
    history: str = "recorded"  # or why there is none ("not recorded: loaded from a snapshot")
    dropped_events: int = 0  # events beyond the recorder's cap (counted, not kept)
    dropped_calls: int = 0
