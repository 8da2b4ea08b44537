"""In-memory checkpoints: roll back in time proportional to the pages dirtied since.

A fuzzing or sandbox loop restores the same state thousands of times, so a rollback must
not cost anything per page of the address space. The MMU already tells us, once per
physical page, *before* the page first changes (:class:`~emulator_mem.mmu.DirtyLog`: guest
write misses, host writes, zeroing on decommit/release, copy-on-write copies). A
:class:`Checkpoint` saves the original 4 KiB there and a rollback copies back only the pages
in its log, resets the log and flushes the TLB so the next writes miss again.

Layout is cheaper still to detect: every bookkeeping change bumps ``layout_version`` (or a
handle/physical-allocator counter), so a rollback restores allocations, sections, MMIO
mappings and the physical allocator only when that fingerprint moved; then it installs
fresh clones of what the checkpoint copied (``Allocation.clone()``), releases the physical
chunks created since and recreates the ones destroyed since (their bytes were saved when
their last view went, or at checkpoint time for sections no view maps). ``layout_version``
moves *forward* across such a rollback, so nothing keyed on it mistakes the restored layout
for a later one. When no allocation came or went and nothing but page protections moved (a
guard page fired, a page was re-protected or committed: what a faulting fuzz input does), the
space's journal of touched allocations lets the rollback put their page runs back in place
instead, in time proportional to those allocations rather than to all of them. Write-watch
sets change without a version bump and are compared directly.
CPU registers come back through Unicorn's CPU-only context (same process, same Unicorn: the
opaque blob is fine here).

Deliberate limits: a file-backed section's bytes already flushed to its host file stay
there; objects outside the manager (allocators, runners) keep their own state; one
checkpoint is active per manager — a newer one replaces it.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from sortedcontainers import SortedDict
from unicorn import UC_PROT_ALL, Uc

from ..errors import SnapshotError
from ..mmu import raw
from ..mmu.physmem import Chunk, DirtyLog, _host_buffer
from ..regions import mmio
from ..regions.image_map import ImageHost
from ..regions.sections import Section, SectionTable
from ..space.address_space import PAGE_SIZE, AddressSpace, Allocation, RegionKind


class SnapshotHost(ImageHost, Protocol):
    """What checkpoints and snapshot files need of the manager: the whole layout.

    Every table of the address space (allocations, sections, images, the allocation
    cursor) is read to save and replaced to restore, so this is wider than a region
    feature's :class:`~emulator_mem.regions.host.RegionHost`; it stays a protocol so the
    snapshot layer sits below :class:`~emulator_mem.manager.SnapshotHost`.
    """

    sections: SectionTable
    #: where free-range searches start (restored with the layout)
    default_allocation_address: int

    @property
    def layout_version(self) -> int: ...

ZERO_PAGE = bytes(PAGE_SIZE)
_UNBACKED = b""  # saved "content" of a page that had no host memory when first written
_ACTIVE: WeakKeyDictionary[SnapshotHost, Checkpoint] = WeakKeyDictionary()


# -- helpers shared with snapshot loading ----------------------------------------------
# MMIO mapping lives in :mod:`emulator_mem.mmio`; these names are what snapshot loading uses
mmio_span = mmio.mmio_span
map_mmio = mmio.map_device


def new_chunk(uc: Uc, phys: int, size: int) -> Chunk:
    """A zeroed host buffer mapped at ``phys`` (like ``PhysicalMemory._map_chunk``, unregistered)."""
    buf, host = _host_buffer(size)
    raw.mem_map_ptr(uc, phys, size, UC_PROT_ALL, host)
    return Chunk(phys, size, buf, host)


def build_space(mm: SnapshotHost, allocations: Iterable[Allocation], layout_version: int) -> AddressSpace:
    """A fresh AddressSpace holding ``allocations`` (through its own ``insert``, so every
    index it keeps is built by its own code)."""
    space = AddressSpace(mm.space.lowest, mm.space.highest)
    for alloc in allocations:
        space.insert(alloc)
    space.layout_version = layout_version
    return space


@dataclass(slots=True, eq=False)
class Book:
    """The manager's bookkeeping apart from page contents: what load and rollback swap.

    ``apply`` installs copies of the containers, so a Book can be applied many times.
    The address space is carried as the attribute dict of an AddressSpace instance, which
    keeps this module independent of that class's internal indexes.
    """

    space: dict[str, Any]
    chunks: SortedDict
    window: int
    windows: dict[int, Chunk]
    free_pages: list[int]
    alias_next: int
    alias_free: list[tuple[int, int]]
    exec_pages: set[int]
    handles: dict[int, tuple[Section, int]]
    names: dict[str, Section]
    next_handle: int
    images: dict[int, Any]
    default_allocation_address: int

    @classmethod
    def capture(cls, mm: SnapshotHost) -> Book:
        phys, sections = mm.phys, mm.sections
        return cls(
            dict(vars(mm.space)), SortedDict(phys.chunks), phys.window, dict(phys._windows),
            list(phys._free_pages), phys._alias_next, list(phys._alias_free), set(phys.exec_pages),
            dict(sections.handles), dict(sections.names), sections._next_handle,
            dict(getattr(mm, "images", {})), mm.default_allocation_address,
        )

    def apply(self, mm: SnapshotHost) -> None:
        """Install this bookkeeping (Python objects only; Unicorn mappings are the caller's)."""
        state = vars(mm.space)
        state.clear()
        state.update(self.space)
        phys, sections = mm.phys, mm.sections
        phys.chunks = SortedDict(self.chunks)
        phys.window = self.window
        phys._windows = dict(self.windows)
        phys._free_pages = list(self.free_pages)
        phys._alias_next = self.alias_next
        phys._alias_free = list(self.alias_free)
        phys.exec_pages.clear()
        phys.exec_pages.update(self.exec_pages)
        sections.handles = dict(self.handles)
        sections.names = dict(self.names)
        sections._next_handle = self.next_handle
        images = getattr(mm, "images", None)
        if images is not None:
            images.clear()
            images.update(self.images)
        mm.default_allocation_address = self.default_allocation_address
        mm.mmu.watched_allocations = sum(1 for a in mm.space if a.write_watch is not None)
        mm.mmu.fault = None


def count_aliases(allocations: Iterable[Allocation]) -> None:
    """Recompute ``alias_count`` (the live ``map_alias`` views of each allocation) from the
    owners, the one source of truth: clones and freshly built allocations start at 0."""
    allocations = list(allocations)
    for alloc in allocations:
        alloc.alias_count = 0
    for alloc in allocations:
        if isinstance(alloc.owner, Allocation):
            alloc.owner.alias_count += 1


def reachable_sections(mm: SnapshotHost) -> list[Section]:
    """Sections the manager can still reach: by handle, by name, or through a view."""
    found: dict[int, Section] = {}
    for section, _ in mm.sections.handles.values():
        found.setdefault(id(section), section)
    for section in mm.sections.names.values():
        found.setdefault(id(section), section)
    for alloc in mm.space:
        owned = getattr(alloc.owner, "section", None)
        if isinstance(owned, Section):
            found.setdefault(id(owned), owned)
    return list(found.values())


def invalidate(mm: SnapshotHost) -> None:
    """Discard ``mm``'s active checkpoint (a snapshot load replaced everything it knew)."""
    cp = _ACTIVE.pop(mm, None)
    if cp is not None:
        cp.discard()


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page numbers as [start, end) runs."""
    out: list[tuple[int, int]] = []
    for p in pages:
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out


# -- checkpoints -----------------------------------------------------------------------
def _fingerprint(mm: SnapshotHost) -> tuple[int, ...]:
    """Moves whenever bookkeeping changed: layout, handles, physical allocator."""
    phys, sections = mm.phys, mm.sections
    return (mm.space.layout_version, sections._next_handle, len(sections.handles), phys._alias_next,
            len(phys.chunks), len(phys._free_pages), len(phys._alias_free))


class Checkpoint:
    """A state of one manager (and its CPU) that :func:`rollback` returns to, any number of times."""

    def __init__(self, mm: SnapshotHost) -> None:
        self._mm = weakref.ref(mm)  # the registry of active checkpoints must not keep mm alive
        self.valid = True
        #: physical page -> its bytes at checkpoint time (None: all zero)
        self.saved: dict[int, bytes | None] = {}
        self.log = DirtyLog(before_first_write=self._save)
        self.book = Book.capture(mm)
        self.book.space = {}
        clones = {id(a): a.clone() for a in mm.space}
        for clone in clones.values():  # aliases point at the clone of their source
            if isinstance(clone.owner, Allocation):
                clone.owner = clones.get(id(clone.owner), clone.owner)
        count_aliases(clones.values())
        self.allocations = list(clones.values())
        self.committed_pages = mm.space.committed_pages
        self._listen(mm.space, clones)
        self.sections = {
            s: (s.handles, frozenset(s.views), None if s.chunk is None else s.chunk.phys,
                frozenset(s.committed))
            for s in reachable_sections(mm)
        }
        #: IMAGE_SCN_MEM_SHARED pages by image, with their mapping counts and storage
        self.shared_images = {key: (pages, pages.mappings, pages.chunk.phys)
                              for key, pages in getattr(mm, "shared_images", {}).items()}
        self.cpu = mm.uc.context_save()
        self.fault = mm.mmu.fault
        self._watch_live(mm.space)
        self.fingerprint = _fingerprint(mm)
        for s in self.sections:
            if not s.views and s.chunk is not None:
                self._save_chunk(s.chunk)  # a handle close may destroy it without telling us
        mm.on_release.insert(0, self._before_release)
        mm.mmu.attach_log(self.log)

    @property
    def mm(self) -> SnapshotHost:
        mm = self._mm()
        if mm is None:
            raise SnapshotError("the checkpoint's memory manager is gone")
        return mm

    def _listen(self, space: AddressSpace, clones: dict[int, Allocation]) -> None:
        """Start the space's journal of touched allocations for :meth:`_undo_pages`, with
        ``clones`` (by ``id`` of the live allocation) as what each one goes back to."""
        #: live allocation -> its clone, for undoing page changes in place
        self.clone_of: dict[Allocation, Allocation] = {a: clones[id(a)] for a in space}
        self.shape = space.shape_version
        space.touched = set()

    def _watch_live(self, allocations: Iterable[Allocation]) -> None:
        self.watch = [(a, set(a.write_watch), set(a.watch_latched))
                      for a in allocations if a.write_watch is not None]

    # -- saving originals ----------------------------------------------------------------
    def _save(self, ppn: int) -> None:
        """DirtyLog hook: keep page ``ppn`` as it is now, before its first change.

        A page saved in an earlier round needs no new copy: every rollback restored it to
        exactly the saved bytes.
        """
        saved = self.saved
        if ppn in saved:
            return
        addr = ppn << 12
        chunk = self.mm.phys.chunk_of(addr)
        if chunk is None:
            saved[ppn] = _UNBACKED
            return
        data = ctypes.string_at(chunk.host + (addr - chunk.phys), PAGE_SIZE)
        saved[ppn] = None if data == ZERO_PAGE else data

    def _save_chunk(self, chunk: Chunk) -> None:
        for ppn in range(chunk.phys >> 12, chunk.end >> 12):
            self._save(ppn)

    def _before_release(self, alloc: Allocation) -> None:
        """on_release hook: a section losing its last view, or an image's shared pages losing
        their last mapping, may be destroyed next; save their storage."""
        key = getattr(alloc.owner, "shared_key", None)
        shared = None if key is None else getattr(self.mm, "shared_images", {}).get(key)
        if shared is not None and shared.mappings <= 1:
            if self.book.chunks.get(shared.chunk.phys) is shared.chunk:
                self._save_chunk(shared.chunk)
        section = getattr(alloc.owner, "section", None)
        if not isinstance(section, Section) or section.chunk is None or not section.views <= {alloc.base}:
            return
        if self.book.chunks.get(section.chunk.phys) is section.chunk:
            self._save_chunk(section.chunk)

    # -- rolling back --------------------------------------------------------------------
    def rollback(self) -> None:
        mm = self.mm
        if not self.valid or _ACTIVE.get(mm) is not self:
            raise SnapshotError("this checkpoint was discarded (a newer checkpoint or a snapshot load)")
        fingerprint = _fingerprint(mm)
        same_layout = fingerprint == self.fingerprint
        undone: list[tuple[int, int]] | None = None
        if not same_layout:
            undone = self._undo_pages(fingerprint)
            if undone is None:
                self._restore_layout()
        else:
            self._restore_watch()
            mm.default_allocation_address = self.book.default_allocation_address
        self._restore_pages()
        self.log.reset()
        if same_layout:
            mm.mmu.flush_writes()  # translations still hold; writes must miss again
        elif undone is not None:
            mm.mmu.flush_writes(undone)  # except in the allocations whose pages were undone
        else:
            mm.mmu.flush()
        mm.uc.context_restore(self.cpu)
        mm.mmu.fault = self.fault

    def _restore_pages(self) -> None:
        mm = self.mm
        phys = mm.phys
        exec_pages = phys.exec_pages
        others = [log for log in phys.logs if log is not self.log]
        saved = self.saved
        chunk: Chunk | None = None
        code: list[int] = []
        for ppn in self.log.pages:
            data = saved.get(ppn, _UNBACKED)
            addr = ppn << 12
            if data == _UNBACKED:
                continue
            if chunk is None or not chunk.phys <= addr < chunk.end:
                chunk = phys.chunk_of(addr)
                if chunk is None:
                    continue  # a chunk created after the checkpoint, gone again
            for log in others:
                log.mark(ppn)
            if data is None:
                ctypes.memset(chunk.host + (addr - chunk.phys), 0, PAGE_SIZE)
            else:
                ctypes.memmove(chunk.host + (addr - chunk.phys), data, PAGE_SIZE)
            if ppn in exec_pages:
                code.append(ppn)
        for start, end in _runs(sorted(code)):  # translated code of those bytes must go
            phys.code_changed(start << 12, (end - start) << 12)

    def _undo_pages(self, fingerprint: tuple[int, ...]) -> list[tuple[int, int]] | None:
        """Undo protection changes in place when nothing else moved; returns the virtual
        ranges of the allocations it restored, or None when it cannot.

        The common case of a fuzzing loop that faults: a guard page fired or a page was
        re-protected, and no allocation came or went, no handle or physical page changed.
        Then the allocations the space's journal names get their page runs back from the
        checkpoint's clones, in time proportional to those allocations; rebuilding the whole
        address space (``_restore_layout``) costs time proportional to all of them.
        """
        mm = self.mm
        space = mm.space
        touched = space.touched
        if (touched is None or space.shape_version != self.shape
                or fingerprint[1:] != self.fingerprint[1:]):
            return None
        originals: list[tuple[Allocation, Allocation]] = []
        for alloc in touched:
            saved = self.clone_of.get(alloc)
            if saved is None:  # cannot happen while the shape holds; rebuild to be sure
                return None
            originals.append((alloc, saved))
        for alloc, saved in originals:
            alloc.restore_pages(saved)
        touched.clear()
        space.committed_pages = self.committed_pages
        space.layout_version += 1  # versions never repeat, even across rollbacks
        for section, (_, _, _, committed) in self.sections.items():
            section.committed = set(committed)
        self._restore_watch()
        mm.default_allocation_address = self.book.default_allocation_address
        self.fingerprint = _fingerprint(mm)
        return [(alloc.base, alloc.end) for alloc, _ in originals]

    def _restore_watch(self) -> None:
        for alloc, pages, latched in self.watch:
            if alloc.write_watch != pages and alloc.write_watch is not None:
                alloc.write_watch.clear()
                alloc.write_watch.update(pages)
            if alloc.watch_latched != latched:
                alloc.watch_latched = set(latched)

    def _restore_layout(self) -> None:
        """Put allocations, sections, MMIO and physical chunks back as they were."""
        mm = self.mm
        uc, phys, book = mm.uc, mm.phys, self.book
        live_mmio = {a.phys_base: a.owner for a in mm.space if a.kind is RegionKind.MMIO}
        old_mmio = {a.phys_base: a.owner for a in self.allocations if a.kind is RegionKind.MMIO}
        for base, device in live_mmio.items():
            if old_mmio.get(base) is not device:
                raw.mem_unmap(uc, base, mmio_span(device.size))
        for base, device in old_mmio.items():
            if live_mmio.get(base) is not device:
                map_mmio(uc, device)
        changed = False
        for base, chunk in list(phys.chunks.items()):
            if book.chunks.get(base) is not chunk:  # created since the checkpoint
                raw.mem_unmap(uc, chunk.phys, chunk.size)
                chunk.buffer.close()
                changed = True
        for base, chunk in list(book.chunks.items()):
            if phys.chunks.get(base) is not chunk:  # destroyed since: bring it back
                fresh = new_chunk(uc, chunk.phys, chunk.size)
                book.chunks[base] = fresh
                book.windows = {k: fresh if c is chunk else c for k, c in book.windows.items()}
                self._refill(fresh)
                changed = True
        live_exec = set(phys.exec_pages)
        fresh_allocs = {id(a): a.clone() for a in self.allocations}
        for clone in fresh_allocs.values():
            if isinstance(clone.owner, Allocation):
                clone.owner = fresh_allocs.get(id(clone.owner), clone.owner)
        count_aliases(fresh_allocs.values())
        version = mm.space.layout_version + 1  # versions never repeat, even across rollbacks
        book.space = vars(build_space(mm, fresh_allocs.values(), version))
        book.apply(mm)
        book.space = {}
        # pages that took translated code since the checkpoint still hold it: keep them marked
        # so restoring their bytes goes through uc.mem_write, which drops the translations
        phys.exec_pages.update(live_exec)
        for section, (handles, views, chunk_phys, committed) in self.sections.items():
            section.handles = handles
            section.views = set(views)
            section.committed = set(committed)
            section.chunk = None if chunk_phys is None else phys.chunks[chunk_phys]
        shared_images = getattr(mm, "shared_images", None)
        if shared_images is not None:
            shared_images.clear()
            for key, (pages, mappings, chunk_phys) in self.shared_images.items():
                pages.mappings = mappings
                pages.chunk = phys.chunks[chunk_phys]  # recreated if it was destroyed since
                shared_images[key] = pages
        mm.mmu.fault = self.fault
        self._watch_live(mm.space)
        self._listen(mm.space, {id(fresh_allocs[id(saved)]): saved for saved in self.allocations})
        self.fingerprint = _fingerprint(mm)
        if changed:
            uc.ctl_flush_tb()

    def _refill(self, chunk: Chunk) -> None:
        """Contents of a recreated chunk: every page saved before it was destroyed."""
        saved = self.saved
        for ppn in range(chunk.phys >> 12, chunk.end >> 12):
            data = saved.get(ppn)
            if data:
                ctypes.memmove(chunk.host + ((ppn << 12) - chunk.phys), data, PAGE_SIZE)

    def discard(self) -> None:
        """Stop tracking writes and free the saved pages; rollback to it is refused after."""
        if not self.valid:
            return
        self.valid = False
        mm = self.mm
        if self.log in mm.phys.logs:
            mm.mmu.detach_log(self.log)
        if self._before_release in mm.on_release:
            mm.on_release.remove(self._before_release)
        self.saved.clear()
        self.clone_of.clear()
        mm.space.touched = None
        if _ACTIVE.get(mm) is self:
            del _ACTIVE[mm]


def checkpoint(mm: SnapshotHost) -> Checkpoint:
    """Take a checkpoint of ``mm`` (discarding its previous one); see :func:`rollback`."""
    invalidate(mm)
    cp = Checkpoint(mm)
    _ACTIVE[mm] = cp
    return cp


def rollback(mm: SnapshotHost, cp: Checkpoint) -> None:
    """Return ``mm`` and its CPU to ``cp``: memory, layout, sections, MMIO, write watch, registers.

    Costs one page copy per page dirtied since the checkpoint (or the previous rollback to
    it) plus, only when the layout changed, a rebuild of the bookkeeping. The checkpoint
    stays usable: roll back to it again as often as needed.
    """
    if cp.mm is not mm:
        raise SnapshotError("checkpoint belongs to another memory manager")
    cp.rollback()
