"""Fill a :class:`~emulator_mem.report.model.RunReport` from a live process.

The map comes from ``mm.regions()`` (VirtualQuery's walk) at the time of the call; image
regions are cut at PE section boundaries, so ``uart64.exe .text`` and ``uart64.exe .data``
get bars of their own even when VirtualQuery merges sections of equal protection into one
region (each piece keeps the region's MEMORY_BASIC_INFORMATION fields apart from its own
base and size). The history, when one was recorded, is the recorder's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..runner.report import EXCEPTION_NAMES
from ..space import RegionKind, page_round_up
from ..windows import constants as C
from .model import Region, RunReport, TypeTotals

if TYPE_CHECKING:
    from ..manager import MemoryManager
    from ..runner import Process
    from ..space.records import MemoryBasicInformation
    from .history import HistoryRecorder

CONSOLE_LIMIT = 64 * 1024  # bytes of console output a report keeps
_TYPE_NAMES = {C.MEM_IMAGE: "image", C.MEM_MAPPED: "mapped", C.MEM_PRIVATE: "private"}


def exit_line(exit_code: int | None, instructions: int) -> str:
    """The console's closing line for a run (``emulator-mem run`` prints the same)."""
    if exit_code is None:
        return (f"--- stopped by the instruction limit after {instructions:,} instructions "
                "(the process is still running)")
    name = EXCEPTION_NAMES.get(exit_code, "")
    label = f" {name}" if name else f" ({exit_code})"
    return f"--- process exited with code {exit_code:#010x}{label}"


def region_name(mm: MemoryManager, base: int) -> str:
    """What a person calls the allocation at ``base``: its name, or its kind for unnamed
    views and MMIO; "" for anonymous private memory."""
    alloc = mm.allocation_at(base)
    if alloc is None:
        return ""
    if alloc.name:
        return alloc.name
    return "" if alloc.kind is RegionKind.PRIVATE else alloc.kind.name.lower()


def map_regions(mm: MemoryManager) -> list[Region]:
    """Every reserved or committed region, image regions cut per PE section."""
    out: list[Region] = []
    for mbi in mm.regions():
        if mbi.State == C.MEM_FREE:
            continue
        alloc = mm.allocation_at(mbi.BaseAddress)
        kind = alloc.kind if alloc is not None else RegionKind.PRIVATE
        category = "mmio" if kind is RegionKind.MMIO else _TYPE_NAMES.get(mbi.Type, "private")
        name = region_name(mm, mbi.BaseAddress)
        image = mm.images.get(mbi.AllocationBase) if mbi.Type == C.MEM_IMAGE else None
        if image is None:
            out.append(_region(mbi, mbi.BaseAddress, mbi.RegionSize, category, name))
            continue
        cuts: list[tuple[int, str]] = [(0, "headers")]
        for section in image.sections:
            cuts.append((section.virtual_address, section.name))
        for piece_base, piece_size, section_name in _cut(mbi, cuts):
            out.append(_region(mbi, piece_base, piece_size, category, f"{name} {section_name}".strip()))
    return out


def _cut(mbi: MemoryBasicInformation, cuts: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """Split a region of an image at the page-aligned starts of its sections."""
    start, end = mbi.BaseAddress, mbi.BaseAddress + mbi.RegionSize
    marks = sorted((mbi.AllocationBase + page_round_up(rva) if rva else mbi.AllocationBase, label)
                   for rva, label in cuts)
    pieces: list[tuple[int, int, str]] = []
    for i, (mark, label) in enumerate(marks):
        nxt = marks[i + 1][0] if i + 1 < len(marks) else end
        lo, hi = max(mark, start), min(nxt, end)
        if lo < hi:
            pieces.append((lo, hi - lo, label))
    if not pieces:
        pieces.append((start, end - start, ""))
    elif pieces[0][0] > start:  # cannot happen for a well-formed image; keep every byte shown
        pieces.insert(0, (start, pieces[0][0] - start, ""))
    return pieces


def _region(mbi: MemoryBasicInformation, base: int, size: int, category: str, name: str) -> Region:
    return Region(base, size, mbi.State, mbi.Protect, mbi.Type, mbi.AllocationBase,
                  mbi.AllocationProtect, category, name)


def totals(regions: list[Region]) -> list[TypeTotals]:
    """Reserved and committed bytes per type (VMMap's summary), MMIO apart from views."""
    acc: dict[str, list[int]] = {}
    for r in regions:
        entry = acc.setdefault(r.category, [0, 0, 0])
        entry[0] += r.RegionSize
        entry[1] += r.RegionSize if r.State == C.MEM_COMMIT else 0
        entry[2] += 1
    return [TypeTotals(name, v[0], v[1], v[2]) for name, v in sorted(acc.items())]


def collect(
    process: Process, recorder: HistoryRecorder | None = None, *, source: str = "",
    origin: str = "run", history: str | None = None,
) -> RunReport:
    """The report of ``process`` as it is now, with the history ``recorder`` kept."""
    mm = process.mm
    regions = map_regions(mm)
    if process.exit_code is not None:
        state = "exited"
    else:
        state = "running" if process.instructions else "not started"
    report = RunReport(
        title=process.image_name, source=source or process.image_name, bits=64 if mm.is_64bit else 32,
        origin=origin, state=state, lowest_address=mm.lowest_address, highest_address=mm.highest_address,
        regions=regions, totals=totals(regions), instructions=process.instructions,
        exit_code=process.exit_code,
        exception="" if process.exception is None else process.exception.describe(),
        console=bytes(process.console.stdout[:CONSOLE_LIMIT]).decode("utf-8", errors="replace"),
    )
    if state != "not started":
        report.exit_text = exit_line(process.exit_code, process.instructions)
    if recorder is not None:
        recorder.fill(report)
    else:
        report.history = history or "not recorded"
    return report

