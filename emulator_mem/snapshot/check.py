"""Validation of a decoded snapshot table: everything a load must prove before it builds.

:func:`check_meta` is the gate between untrusted bytes and the live manager. A table that
passes it can be turned into allocations, sections, views, MMIO devices and physical chunks
without any further failure: bounds, alignment, overlaps, references and counts are all
settled here, with no Unicorn involved (so it is testable and cheap).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace

from ..errors import SnapshotError
from ..space.address_space import GRANULARITY, PAGE_SIZE, RegionKind
from ..windows import protection
from .format import (
    MAX_ALIAS_SPAN,
    NO_INDEX,
    OWNER_ALIAS,
    OWNER_IMAGE,
    OWNER_MMIO,
    OWNER_NONE,
    OWNER_VIEW,
    AllocRec,
    ChunkRec,
    Geometry,
    Meta,
)


@dataclass(slots=True)
class Derived:
    """What loading needs beyond the table: where contents may go, totals for info."""

    chunks: list[ChunkRec]  # sorted by address
    starts: list[int]  # their addresses, for bisect
    identity_content: list[tuple[int, int]]  # merged physical ranges committed in the identity area
    committed_pages: int
    reserved_bytes: int
    regions: int

    def content_range_ok(self, phys: int, size: int) -> ChunkRec | None:
        """The chunk that may receive [phys, phys+size) of contents, or None."""
        i = bisect_right(self.starts, phys) - 1
        if i < 0 or phys + size > self.chunks[i].phys + self.chunks[i].size:
            return None
        chunk = self.chunks[i]
        if chunk.identity:
            ranges = self.identity_content
            j = bisect_right(ranges, (phys, NO_INDEX)) - 1
            if j < 0 or phys + size > ranges[j][1]:
                return None
        return chunk


def _bad(message: str) -> SnapshotError:
    return SnapshotError(f"inconsistent snapshot: {message}")


def _covered(chunks: list[ChunkRec], starts: list[int], start: int, end: int) -> bool:
    """Is [start, end) backed by chunks without a gap?"""
    i = bisect_right(starts, start) - 1
    while start < end:
        if i < 0 or i >= len(chunks) or not chunks[i].phys <= start < chunks[i].phys + chunks[i].size:
            return False
        start = chunks[i].phys + chunks[i].size
        i += 1
    return True


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _check_physical(meta: Meta) -> tuple[list[ChunkRec], list[int]]:
    g = meta.geometry
    alias_lo, alias_hi = g.alias_base, meta.alias_next
    if not alias_lo <= alias_hi <= alias_lo + MAX_ALIAS_SPAN or alias_hi % GRANULARITY:
        raise _bad(f"alias area end {alias_hi:#x}")
    spans: list[tuple[int, int]] = []
    for c in meta.chunks:
        if c.identity:
            expected = min(g.window, g.identity_end - c.phys)
            if c.phys % g.window or c.phys >= g.identity_end or c.size != expected:
                raise _bad(f"identity window {c.phys:#x}+{c.size:#x}")
        elif (c.phys < alias_lo or c.phys + c.size > alias_hi or c.phys % GRANULARITY
              or c.size % GRANULARITY or not c.size):
            raise _bad(f"alias chunk {c.phys:#x}+{c.size:#x}")
        spans.append((c.phys, c.phys + c.size))
    for m in meta.mmio:
        span = -(-m.size // GRANULARITY) * GRANULARITY
        if m.phys < alias_lo or m.phys + span > alias_hi or m.phys % GRANULARITY or not m.size:
            raise _bad(f"MMIO range {m.phys:#x}")
        spans.append((m.phys, m.phys + span))
    for phys, size in meta.alias_free:
        if phys < alias_lo or phys + size > alias_hi or phys % GRANULARITY or size % GRANULARITY or not size:
            raise _bad(f"free alias range {phys:#x}")
        spans.append((phys, phys + size))
    spans.sort()
    for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            raise _bad(f"physical ranges overlap at {s2:#x}")
    chunks = sorted(meta.chunks, key=lambda c: c.phys)
    return chunks, [c.phys for c in chunks]


def _check_runs(a: AllocRec, writecopy: bool) -> None:
    pages = a.size // PAGE_SIZE
    if not a.starts or a.starts[0] != 0:
        raise _bad(f"page runs of {a.base:#x}")
    for i, (s, p) in enumerate(zip(a.starts, a.protects, strict=True)):
        if i and (s <= a.starts[i - 1] or p == a.protects[i - 1]):
            raise _bad(f"page runs of {a.base:#x} are not canonical")
        if s >= pages or (p and not protection.is_valid(p, allow_writecopy=writecopy)):
            raise _bad(f"page run {s} of {a.base:#x}")
    if a.write_watch is not None and (len(set(a.write_watch)) != len(a.write_watch)
                                      or any(i >= pages for i in a.write_watch)):
        raise _bad(f"write-watch pages of {a.base:#x}")


def check_meta(meta: Meta, geometry: Geometry) -> Derived:
    """Prove the table consistent (bounds, overlaps, references, counts) or raise SnapshotError.

    After this, building the live objects from the table cannot fail: every allocation fits
    the user range and no other allocation, every page a translation can reach has physical
    memory behind it, every reference (view -> section, alias -> source, MMIO -> device,
    handle -> section) resolves, and every count agrees with what it counts.
    """
    g = meta.geometry
    # the identity window size is how the file's host buffers were carved, not an address
    # the guest sees: a file saved with another window (1 GiB in earlier versions) loads, and the
    # manager adopts the file's window along with its buffers
    if replace(g, window=geometry.window) != geometry:
        raise SnapshotError(f"snapshot address-space geometry {g} differs from the manager's {geometry}")
    if g.window < GRANULARITY or g.window & (g.window - 1) or g.window > g.identity_end:
        raise _bad(f"identity window size {g.window:#x}")
    if not g.lowest <= meta.default_allocation_address < g.highest:
        raise _bad("default allocation address")
    chunks, starts = _check_physical(meta)
    alias_chunks = {c.phys: c for c in chunks if not c.identity}

    def in_alias_chunk(phys: int) -> bool:
        i = bisect_right(starts, phys) - 1
        return i >= 0 and not chunks[i].identity and phys + PAGE_SIZE <= chunks[i].phys + chunks[i].size

    used_pages: set[int] = set()
    for phys in meta.free_pages:
        if phys % PAGE_SIZE or not in_alias_chunk(phys) or phys in used_pages:
            raise _bad(f"pool page {phys:#x}")
        used_pages.add(phys)

    nsec = len(meta.sections)
    section_chunks: set[int] = set()
    for s in meta.sections:
        if s.chunk_phys is not None:
            chunk = alias_chunks.get(s.chunk_phys)
            if chunk is None or s.chunk_phys in section_chunks or s.size > chunk.size:
                raise _bad(f"section storage {s.chunk_phys:#x}")
            section_chunks.add(s.chunk_phys)
        if s.layout is not None and s.layout >= len(meta.layouts):
            raise _bad("section image layout")
        if s.protect & ~0xFF or s.protect & 0xFF not in protection.CPU_PERMS:
            raise _bad(f"section protection {s.protect:#x}")
        pages = -(-s.size // PAGE_SIZE)
        if len(set(s.committed)) != len(s.committed) or any(p >= pages for p in s.committed):
            raise _bad("committed pages of a section")
    handle_counts = [0] * nsec
    seen_handles: set[int] = set()
    for handle, section, _ in meta.handles:
        if section >= nsec or handle in seen_handles or handle >= meta.next_handle:
            raise _bad(f"handle {handle:#x}")
        seen_handles.add(handle)
        handle_counts[section] += 1
    if any(s.handles != n for s, n in zip(meta.sections, handle_counts, strict=True)):
        raise _bad("section handle counts")
    if len({n for n, _ in meta.names}) != len(meta.names) or any(
            i >= nsec or meta.sections[i].name != n for n, i in meta.names):
        raise _bad("section names")

    by_base: dict[int, AllocRec] = {}
    views: list[set[int]] = [set() for _ in meta.sections]
    devices_used = [0] * len(meta.mmio)
    identity: list[tuple[int, int]] = []
    prev_end = g.lowest
    committed = regions = reserved = 0
    for a in meta.allocations:
        # pieces left by a partial release of private memory start on any page
        align = PAGE_SIZE if a.kind == RegionKind.PRIVATE else GRANULARITY
        if (a.base % align or a.size % PAGE_SIZE or not a.size or a.base < prev_end
                or a.base + a.size > g.highest):
            raise _bad(f"allocation {a.base:#x}+{a.size:#x}")
        prev_end = a.base + a.size
        by_base[a.base] = a
        if a.kind not in tuple(RegionKind) or not protection.is_valid(a.allocation_protect,
                                                                      allow_writecopy=True):
            raise _bad(f"kind or protection of {a.base:#x}")
        shared = a.kind in (RegionKind.MAPPED, RegionKind.IMAGE)
        _check_runs(a, shared)
        _check_owner(meta, a, alias_chunks, views, devices_used)
        pages = a.size // PAGE_SIZE
        for index, phys in a.private_pages:
            if a.kind != RegionKind.MAPPED or index >= pages or phys % PAGE_SIZE or not in_alias_chunk(phys) \
                    or phys in used_pages:
                raise _bad(f"private page {index} of {a.base:#x}")
            used_pages.add(phys)
        if len({i for i, _ in a.private_pages}) != len(a.private_pages):
            raise _bad(f"private pages of {a.base:#x} repeat")
        ends = a.starts[1:] + [pages]
        for first, last, p in zip(a.starts, ends, a.protects, strict=True):
            if not p or a.kind == RegionKind.MMIO:
                continue
            lo, hi = a.phys_base + first * PAGE_SIZE, a.phys_base + last * PAGE_SIZE
            if not _covered(chunks, starts, lo, hi):
                raise _bad(f"committed pages of {a.base:#x} have no physical memory")
            if hi <= g.identity_end:
                identity.append((lo, hi))
        committed += a.committed_pages()
        regions += len(a.starts)
        reserved += a.size
    for a in meta.allocations:
        if a.owner == OWNER_ALIAS:
            src = by_base.get(a.owner_ref)
            if src is None or src.phys_base != src.base or not src.base <= a.phys_base \
                    or a.phys_base + a.size > src.base + src.size:
                raise _bad(f"alias {a.base:#x} has no source")
    for sec, seen in zip(meta.sections, views, strict=True):
        if set(sec.views) != seen or len(sec.views) != len(seen):
            raise _bad("section views")
        if not sec.handles and not seen:
            raise _bad("a section with neither handles nor views")
    if any(n != 1 for n in devices_used):
        raise _bad("MMIO devices")
    return Derived(chunks, starts, _merge(identity), committed, reserved, regions)


def _check_owner(meta: Meta, a: AllocRec, alias_chunks: dict[int, ChunkRec], views: list[set[int]],
                 devices_used: list[int]) -> None:
    """The owner reference of one allocation, and the phys_base it implies."""
    kind = a.kind
    owner = a.owner
    if (kind == RegionKind.MMIO) != (owner == OWNER_MMIO) or (kind in (RegionKind.PRIVATE, RegionKind.IMAGE)
                                                             and a.phys_base != a.base):
        raise _bad(f"owner of {a.base:#x}")
    if owner == OWNER_VIEW:
        if kind != RegionKind.MAPPED or a.owner_ref >= len(meta.sections):
            raise _bad(f"view {a.base:#x}")
        section = meta.sections[a.owner_ref]
        chunk = None if section.chunk_phys is None else alias_chunks.get(section.chunk_phys)
        # page (not 64 KiB) aligned: an alias whose source was released becomes a view of the
        # section that took the source's pages over, at the alias's own page offset
        if chunk is None or a.owner_offset % PAGE_SIZE or a.phys_base != chunk.phys + a.owner_offset \
                or a.owner_offset + a.size > chunk.size:
            raise _bad(f"view {a.base:#x} lies outside its section")
        if not protection.is_valid(a.owner_protect, allow_writecopy=True):
            raise _bad(f"view protection of {a.base:#x}")
        views[a.owner_ref].add(a.base)
    elif owner == OWNER_MMIO:
        if a.owner_ref >= len(meta.mmio):
            raise _bad(f"MMIO device of {a.base:#x}")
        dev = meta.mmio[a.owner_ref]
        if (dev.base, dev.size, dev.phys) != (a.base, a.size, a.phys_base):
            raise _bad(f"MMIO device of {a.base:#x} is elsewhere")
        devices_used[a.owner_ref] += 1
    elif owner == OWNER_IMAGE:
        if kind != RegionKind.IMAGE or a.owner_ref >= len(meta.layouts):
            raise _bad(f"image {a.base:#x}")
        if a.image_section is not None:
            if a.image_section >= len(meta.sections):
                raise _bad(f"image section of {a.base:#x}")
            views[a.image_section].add(a.base)
    elif owner == OWNER_ALIAS:
        if kind != RegionKind.MAPPED:
            raise _bad(f"alias {a.base:#x}")
    elif owner != OWNER_NONE:
        raise _bad(f"owner kind {owner} of {a.base:#x}")
