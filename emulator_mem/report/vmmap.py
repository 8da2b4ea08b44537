"""Text rendering of an address space, in the spirit of Sysinternals VMMap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..windows import constants as C

if TYPE_CHECKING:
    from ..manager import MemoryManager
    from ..space.records import MemoryBasicInformation

_PROTECT_NAMES = {
    C.PAGE_NOACCESS: "NOACCESS", C.PAGE_READONLY: "R", C.PAGE_READWRITE: "RW",
    C.PAGE_WRITECOPY: "WC", C.PAGE_EXECUTE: "X", C.PAGE_EXECUTE_READ: "RX",
    C.PAGE_EXECUTE_READWRITE: "RWX", C.PAGE_EXECUTE_WRITECOPY: "XWC",
}
_STATE_NAMES = {C.MEM_COMMIT: "commit", C.MEM_RESERVE: "reserve", C.MEM_FREE: "free"}
_TYPE_NAMES = {C.MEM_PRIVATE: "private", C.MEM_MAPPED: "mapped", C.MEM_IMAGE: "image", 0: ""}


def protect_name(protect: int) -> str:
    """PAGE_* value as a short VMMap-style string ("RW+G" for PAGE_READWRITE|PAGE_GUARD)."""
    if not protect:
        return ""
    name = _PROTECT_NAMES.get(protect & 0xFF, f"{protect & 0xFF:#x}")
    if protect & C.PAGE_GUARD:
        name += "+G"
    if protect & C.PAGE_NOCACHE:
        name += "+NC"
    if protect & C.PAGE_WRITECOMBINE:
        name += "+WCB"
    return name


def region_rows(mm: MemoryManager, include_free: bool = False) -> list[dict[str, object]]:
    """One dict per VirtualQuery region (free ones only if asked), ready for text or JSON."""
    rows: list[dict[str, object]] = []
    for mbi in mm.regions():
        if mbi.State == C.MEM_FREE and not include_free:
            continue
        rows.append(_row(mm, mbi))
    return rows


def _row(mm: MemoryManager, mbi: MemoryBasicInformation) -> dict[str, object]:
    alloc = mm.allocation_at(mbi.BaseAddress) if mbi.State != C.MEM_FREE else None
    kind = "" if alloc is None else alloc.kind.name.lower()
    return {
        "base": mbi.BaseAddress,
        "size": mbi.RegionSize,
        "type": _TYPE_NAMES.get(mbi.Type, hex(mbi.Type)),
        "kind": kind,
        "state": _STATE_NAMES.get(mbi.State, hex(mbi.State)),
        "protect": protect_name(mbi.Protect),
        "allocation_base": mbi.AllocationBase,
        "allocation_protect": protect_name(mbi.AllocationProtect),
        "name": "" if alloc is None or alloc.name is None else alloc.name,
    }


def summary(mm: MemoryManager) -> dict[str, dict[str, int]]:
    """Reserved and committed bytes per region type (VMMap's top table)."""
    out: dict[str, dict[str, int]] = {}
    for mbi in mm.regions():
        if mbi.State == C.MEM_FREE:
            continue
        entry = out.setdefault(_TYPE_NAMES.get(mbi.Type, "?"), {"reserved": 0, "committed": 0})
        entry["reserved"] += mbi.RegionSize
        if mbi.State == C.MEM_COMMIT:
            entry["committed"] += mbi.RegionSize
    return out


def image_section_names(mm: MemoryManager, address: int, size: int = 1) -> list[str]:
    """The PE sections (".text", ".data"…, "headers") of a mapped image that overlap
    ``[address, address+size)``, in address order; [] outside images."""
    alloc = mm.allocation_at(address)
    image = None if alloc is None else mm.images.get(alloc.base)
    if alloc is None or image is None:
        return []
    lo, hi = address - alloc.base, address - alloc.base + max(size, 1)
    names = ["headers"] if lo < image.layout.size_of_headers else []
    for section in image.sections:
        start = section.virtual_address
        end = start + max(section.virtual_size, section.raw_size, 1)
        if start < hi and lo < end:
            names.append(section.name)
    return names


def detailed_rows(mm: MemoryManager, include_free: bool = False) -> list[dict[str, object]]:
    """:func:`region_rows` plus ``details``: the allocation's name, with the PE section for
    image regions ("app.exe .text") and the kind for unnamed views and MMIO."""
    rows = region_rows(mm, include_free)
    for row in rows:
        details = str(row["name"] or (row["kind"] if row["kind"] not in ("private", "") else ""))
        if row["type"] == "image":
            sections = image_section_names(mm, int(str(row["base"])), int(str(row["size"])))
            details = f"{details} {', '.join(sections)}".strip()
        row["details"] = details
    return rows


def format_detailed(mm: MemoryManager, include_free: bool = False) -> str:
    """The region table (details: image/section names) plus the per-type summary, as text."""
    width = 16 if mm.is_64bit else 8
    lines = [f"{'Address':<{width + 2}} {'Size':>12}  {'Type':<8} {'State':<8} {'Protect':<8} "
             f"{'AllocBase':<{width + 2}} {'AllocProt':<9} Details"]
    for r in detailed_rows(mm, include_free):
        lines.append(
            f"{r['base']:#0{width + 2}x} {r['size']:>12,}  {r['type']!s:<8} {r['state']!s:<8} "
            f"{r['protect']!s:<8} {r['allocation_base']:#0{width + 2}x} {r['allocation_protect']!s:<9} "
            f"{r['details']}".rstrip()
        )
    lines.append("")
    lines.append(f"{'Type':<8} {'Reserved':>14} {'Committed':>14}")
    total_r = total_c = 0
    for name, entry in sorted(summary(mm).items()):
        lines.append(f"{name:<8} {entry['reserved']:>14,} {entry['committed']:>14,}")
        total_r += entry["reserved"]
        total_c += entry["committed"]
    lines.append(f"{'Total':<8} {total_r:>14,} {total_c:>14,}")
    return "\n".join(lines)
