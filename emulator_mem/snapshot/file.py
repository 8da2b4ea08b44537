"""Snapshots: a MemoryManager and its CPU written to a versioned binary file and read back.

``save_snapshot(mm, file)`` writes the layout table (allocations with their page runs,
sections and views, aliases, copy-on-write pages, write-watch sets, MMIO descriptors,
images, the physical allocator), then the non-zero page contents in compressed runs of up
to 1 MiB, then the registers by name (:mod:`emulator_mem.cpu_state`), then a sha256 over
all of it. ``docs/snapshot-format.md`` is the byte-level description.

Contents are saved per *physical* page, as the MMU sees memory: a section shared by five
views is stored once and the views come back pointing at it; an alias made by
``map_alias`` comes back translating to its source's pages; a copy-on-write copy is a page
of the alias area like any other.

``load_snapshot(mm, file)`` validates *everything* — magic, version, geometry, every count,
bound, overlap and cross-reference, every record's decompressed size, the checksum —
before the live manager is touched: the contents are decompressed into fresh host buffers
(the future physical memory, so loading needs no second copy), and only when the whole file
has proven good are those buffers swapped into Unicorn and the bookkeeping replaced. If the
CPU then refuses the registers (a selector the restored GDT does not allow), the swap is
undone. Corrupt, truncated or hostile input raises :class:`SnapshotError` with the live
address space, Unicorn mappings and registers exactly as they were.

MMIO callbacks are never serialized: a snapshot keeps each device's *name*, and loading
attaches ``(read, write)`` from, in order, the ``devices`` argument, a device of that name
already in the live manager, or :func:`register_mmio_device`'s registry.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from sortedcontainers import SortedDict
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, UC_PROT_ALL, UcError

from ..errors import InvalidParameterError, SnapshotError
from ..mmu import raw
from ..mmu.hostpages import swap_pages
from ..mmu.physmem import Chunk, _host_buffer
from ..pe import image
from ..pe.image import ImageLayout
from ..regions.image_map import MappedImage
from ..regions.mmio import MmioDevice, MmioRead, MmioWrite
from ..regions.sections import Section, View
from ..space.address_space import PAGE_SHIFT, PAGE_SIZE, Allocation, RegionKind
from . import cpu_state
from . import format as F
from . import rollback as rb
from .check import Derived, check_meta
from .rollback import SnapshotHost

__all__ = [
    "load_snapshot",
    "register_mmio_device",
    "save_snapshot",
    "snapshot_extras",
    "snapshot_info",
    "unregister_mmio_device",
]

FileArg = str | os.PathLike[str] | IO[bytes]
DeviceCallbacks = tuple[MmioRead, MmioWrite]


def _layout_classes() -> tuple[type, ...]:
    """ImageLayout and the dataclasses its fields name (sections, imports, fixups…), found by
    walking the annotations so the whitelist follows :mod:`emulator_mem.image` as it evolves."""
    found: list[type] = [ImageLayout]
    for cls in found:
        for f in dataclasses.fields(cls):
            for word in re.findall(r"[A-Za-z_]\w*", str(f.type)):
                candidate = getattr(image, word, None)
                if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
                    if candidate not in found:
                        found.append(candidate)
    return tuple(found)


LAYOUT_CLASSES = _layout_classes()
ZERO_PAGE = bytes(PAGE_SIZE)
MADV_POPULATE_WRITE = 23  # Linux 5.14; Python's mmap module does not export it yet
_RECORD_MAX = max(F.MAX_PAGES_PAYLOAD, F.MAX_CPU_PAYLOAD, F.MAX_EXTRA_PAYLOAD)
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    struct.error, ValueError, OverflowError, MemoryError, OSError, KeyError, IndexError,
) + F.CODEC_ERRORS

_DEVICES: dict[str, DeviceCallbacks] = {}


# -- MMIO device registry --------------------------------------------------------------
def register_mmio_device(name: str, read: MmioRead, write: MmioWrite) -> None:
    """Make ``(read, write)`` the callbacks a loaded MMIO region called ``name`` gets
    (unless ``load_snapshot``'s ``devices`` or the live manager name it first)."""
    if not callable(read) or not callable(write):
        raise InvalidParameterError("MMIO callbacks must be callable")
    _DEVICES[name] = (read, write)


def unregister_mmio_device(name: str) -> None:
    _DEVICES.pop(name, None)


# -- plumbing --------------------------------------------------------------------------
@contextmanager
def _opened(file: FileArg, mode: str) -> Iterator[IO[bytes]]:
    if isinstance(file, (str, os.PathLike)):
        try:
            f = open(file, mode)
        except OSError as exc:
            raise SnapshotError(f"cannot open {os.fspath(file)!r}: {exc}") from exc
        with f:
            yield f
    else:
        yield file


def _geometry(mm: SnapshotHost) -> F.Geometry:
    phys = mm.phys
    return F.Geometry(mm.lowest_address, mm.highest_address, phys.identity_end, phys.alias_base, phys.window)


# -- saving ----------------------------------------------------------------------------
def _gather(mm: SnapshotHost) -> F.Meta:
    """The layout table of ``mm``; refuses state it could not bring back faithfully."""
    phys, table = mm.phys, mm.sections
    meta = F.Meta(_geometry(mm), mm.layout_version, mm.default_allocation_address, phys._alias_next)
    windows = {c.phys for c in phys._windows.values()}
    meta.chunks = [F.ChunkRec(c.phys, c.size, c.phys in windows) for c in phys.chunks.values()]
    meta.alias_free = list(phys._alias_free)
    meta.free_pages = list(phys._free_pages)
    layouts: dict[int, int] = {}

    def layout_index(layout: Any) -> int:
        if not isinstance(layout, ImageLayout):
            raise SnapshotError(f"cannot snapshot an image layout of type {type(layout).__name__}")
        if id(layout) not in layouts:
            layouts[id(layout)] = len(meta.layouts)
            meta.layouts.append(layout)
        return layouts[id(layout)]

    sections = rb.reachable_sections(mm)
    index = {id(s): i for i, s in enumerate(sections)}
    for s in sections:
        meta.sections.append(F.SectionRec(
            s.size, s.protect, s.attributes, None if s.chunk is None else s.chunk.phys, s.name, s.file_path,
            s.handles, None if s.image is None else layout_index(s.image), sorted(s.views),
            sorted(getattr(s, "committed", ()))))
    meta.next_handle = table._next_handle
    meta.handles = [(h, index[id(s)], access) for h, (s, access) in sorted(table.handles.items())]
    meta.names = [(n, index[id(s)]) for n, s in sorted(table.names.items())]
    for alloc in mm.space:
        rec = F.AllocRec(alloc.base, alloc.size, alloc.allocation_protect, int(alloc.kind), alloc.phys_base,
                         alloc.name, starts=list(alloc.starts), protects=list(alloc.protects),
                         write_watch=None if alloc.write_watch is None else sorted(alloc.write_watch),
                         private_pages=sorted((alloc.private_pages or {}).items()))
        owner = alloc.owner
        if isinstance(owner, View):
            rec.owner, rec.owner_ref = F.OWNER_VIEW, index[id(owner.section)]
            rec.owner_offset, rec.owner_protect = owner.offset, owner.protect
        elif isinstance(owner, Allocation):
            if mm.space.allocations.get(owner.base) is owner:  # else the source is gone: a plain mapping
                rec.owner, rec.owner_ref = F.OWNER_ALIAS, owner.base
        elif isinstance(owner, MmioDevice):
            if not owner.name:
                raise SnapshotError(f"MMIO region at {alloc.base:#x} has no name to re-attach its "
                                    "callbacks by; give allocate_mmio a name=")
            rec.owner, rec.owner_ref = F.OWNER_MMIO, len(meta.mmio)
            meta.mmio.append(F.MmioRec(owner.base, owner.size, owner.phys, owner.maximum_protect, owner.name))
        elif isinstance(owner, MappedImage):
            if owner.shared_key is not None and alloc.private_pages:
                raise SnapshotError(f"cannot snapshot {alloc.base:#x}: an image with shared "
                                    "(IMAGE_SCN_MEM_SHARED) sections")
            rec.owner, rec.owner_ref, rec.image_name = F.OWNER_IMAGE, layout_index(owner.layout), owner.name
            rec.image_section = None if owner.section is None else index[id(owner.section)]
        elif owner is not None:
            raise SnapshotError(f"cannot snapshot {alloc.base:#x}: it belongs to a {type(owner).__name__}")
        meta.allocations.append(rec)
    return meta


def save_snapshot(mm: SnapshotHost, file: FileArg, *, contents: bool = True, level: int = 3,
                  extras: Mapping[str, bytes] | None = None) -> int:
    """Write ``mm`` and its CPU registers to ``file`` (a path or a binary file); returns its size.

    ``contents=False`` writes the layout only (the seed's ``is_snapshot`` distinction):
    loading it recreates every allocation, section and view with zero-filled pages.
    ``extras`` are named blobs of the caller's (a runner's own state, say) stored in the same
    file under the same checksum; ``load_snapshot`` returns them and :func:`snapshot_extras`
    reads them alone. A path is written through a temporary file and renamed, so it is never
    left half-written.
    """
    blobs = F.encode_extras(extras or {})
    meta = _gather(mm)
    derived = check_meta(meta, meta.geometry)  # never write what load would refuse
    regs = cpu_state.encode(cpu_state.capture(mm.uc, mm.is_64bit), mm.is_64bit)
    codec = F.Codec(F.CODEC_ZSTD if F.zstandard is not None else F.CODEC_ZLIB, level)
    raw = F.encode_meta(meta, LAYOUT_CLASSES)
    if len(raw) > F.MAX_META_RAW:
        raise SnapshotError("layout table too large for the format")
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                size = _write(mm, f, meta, derived, raw, regs, codec, contents, blobs)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size
    return _write(mm, file, meta, derived, raw, regs, codec, contents, blobs)


def _write(mm: SnapshotHost, f: IO[bytes], meta: F.Meta, derived: Derived, raw: bytes, regs: bytes,
           codec: F.Codec, contents: bool, extras: list[bytes]) -> int:
    sink = F.Sink(f)
    mode = UC_MODE_64 if mm.is_64bit else UC_MODE_32
    sink.write(F.HEADER.pack(F.MAGIC, F.FORMAT_VERSION, F.FLAG_CONTENTS if contents else 0, UC_ARCH_X86,
                             mode, codec.codec, 0))
    sink.record(F.TAG_META, struct.pack("<Q", len(raw)), codec.compress(raw))
    for payload in extras:
        sink.record(F.TAG_EXTRA, payload)
    if contents:
        for chunk in mm.phys.chunks.values():
            if chunk.phys < meta.geometry.identity_end:
                ranges = [(max(lo, chunk.phys), min(hi, chunk.end)) for lo, hi in derived.identity_content
                          if lo < chunk.end and hi > chunk.phys]
            else:
                ranges = [(chunk.phys, chunk.end)]
            with memoryview(chunk.buffer) as mv:
                for lo, hi in ranges:
                    _write_range(sink, codec, mv, chunk.phys, lo, hi)
    sink.record(F.TAG_CPU, regs)
    sink.finish()
    return sink.size


def _write_range(sink: F.Sink, codec: F.Codec, mv: memoryview, base: int, lo: int, hi: int) -> None:
    """Records for the non-zero pages of [lo, hi): runs of at most PAGES_PER_RECORD pages.

    Zero pages are skipped (a fresh host buffer is zero), so a loaded snapshot only touches
    host memory the saved process had actually used.
    """
    limit = F.PAGES_PER_RECORD * PAGE_SIZE
    run = -1

    def emit(start: int, end: int) -> None:
        data = codec.compress(mv[start - base : end - base])
        sink.record(F.TAG_PAGES, F.PAGES_HEAD.pack(start, (end - start) >> PAGE_SHIFT), data)

    for addr in range(lo, hi, PAGE_SIZE):
        off = addr - base
        if mv[off : off + PAGE_SIZE] == ZERO_PAGE:
            if run >= 0:
                emit(run, addr)
                run = -1
        elif run < 0:
            run = addr
        elif addr - run >= limit:
            emit(run, addr)
            run = addr
    if run >= 0:
        emit(run, hi)


# -- reading ---------------------------------------------------------------------------
def _read_header(src: F.Source) -> tuple[int, bool, F.Codec]:
    magic, version, flags, arch, mode, codec, reserved = F.HEADER.unpack(src.read(F.HEADER.size))
    if magic != F.MAGIC:
        raise SnapshotError("not an emulator-mem snapshot (bad magic)")
    if version != F.FORMAT_VERSION:
        raise SnapshotError(f"snapshot format version {version} is not supported (this build reads "
                            f"{F.FORMAT_VERSION})")
    if flags & ~F.FLAG_CONTENTS or reserved or arch != UC_ARCH_X86 or mode not in (UC_MODE_32, UC_MODE_64):
        raise SnapshotError("snapshot header has unknown flags, architecture or mode")
    if codec not in (F.CODEC_ZSTD, F.CODEC_ZLIB):
        raise SnapshotError(f"unknown compression {codec}")
    return flags, mode == UC_MODE_64, F.Codec(codec)


def _read_meta(src: F.Source, codec: F.Codec) -> F.Meta:
    tag, length = src.record(F.MAX_META_RAW + (1 << 20))
    if tag != F.TAG_META or length < 8:
        raise SnapshotError("snapshot does not start with its layout table")
    payload = src.read(length)
    (raw_size,) = struct.unpack_from("<Q", payload)
    if raw_size > F.MAX_META_RAW:
        raise SnapshotError("layout table too large")
    return F.decode_meta(codec.decompress(memoryview(payload)[8:], raw_size), LAYOUT_CLASSES)


def _records(src: F.Source, flags: int, extras: dict[str, bytes]) -> Iterator[tuple[int, bytes]]:
    """PAGE records then the CPU record (yielded last), then the checked END record. The XTRA
    records, which come before any PAGE record, are collected into ``extras``."""
    pages = False
    contents = bool(flags & F.FLAG_CONTENTS)
    while True:
        tag, length = src.record(_RECORD_MAX)
        if tag == F.TAG_EXTRA and not pages and 4 < length <= F.MAX_EXTRA_PAYLOAD:
            name, data = F.decode_extra(src.read(length))
            if name in extras:
                raise SnapshotError(f"extra {name!r} appears twice")
            extras[name] = data
        elif tag == F.TAG_PAGES and contents and F.PAGES_HEAD.size < length <= F.MAX_PAGES_PAYLOAD:
            pages = True
            yield tag, src.read(length)
        elif tag == F.TAG_CPU and length <= F.MAX_CPU_PAYLOAD:
            yield tag, src.read(length)
            break
        else:
            raise SnapshotError(f"unexpected record {tag:#x} of {length} bytes at {src.offset:#x}")
    tag, length = src.record(F.DIGEST_SIZE)
    if tag != F.TAG_END or length != F.DIGEST_SIZE:
        raise SnapshotError("snapshot lacks its END record")
    src.finish()


def _page_run(payload: bytes) -> tuple[int, int]:
    phys, count = F.PAGES_HEAD.unpack_from(payload)
    if phys % PAGE_SIZE or not 0 < count <= F.PAGES_PER_RECORD:
        raise SnapshotError(f"page run {phys:#x} x{count} is malformed")
    return int(phys), int(count) * PAGE_SIZE


@dataclass(slots=True, eq=False)
class _Staged:
    """A loaded snapshot, validated and built, not yet installed."""

    chunks: list[Chunk] = field(default_factory=list)
    devices: list[MmioDevice] = field(default_factory=list)
    book: rb.Book | None = None
    regs: dict[str, cpu_state.RegValue] = field(default_factory=dict)
    extras: dict[str, bytes] = field(default_factory=dict)

    def close(self) -> None:
        for chunk in self.chunks:
            chunk.buffer.close()
        self.chunks.clear()


def _resolve_devices(mm: SnapshotHost, meta: F.Meta,
                     devices: Mapping[str, DeviceCallbacks] | None) -> list[DeviceCallbacks]:
    live = {a.owner.name: (a.owner.read, a.owner.write) for a in mm.space
            if a.kind is RegionKind.MMIO and isinstance(a.owner, MmioDevice) and a.owner.name}
    out = []
    for m in meta.mmio:
        found = (devices or {}).get(m.name) or live.get(m.name) or _DEVICES.get(m.name)
        if found is None:
            raise SnapshotError(f"no callbacks for MMIO device {m.name!r}: pass devices= or register it")
        out.append(found)
    return out


def _populate(chunk: Chunk, offset: int, size: int) -> bool:
    """Fault the pages in with one madvise rather than one page fault each (several times
    faster for a fresh buffer); False when the kernel lacks MADV_POPULATE_WRITE (< 5.14)."""
    try:
        chunk.buffer.madvise(MADV_POPULATE_WRITE, offset, size)
    except (OSError, ValueError):
        return False
    return True


def _stage(mm: SnapshotHost, f: IO[bytes], devices: Mapping[str, DeviceCallbacks] | None) -> _Staged:
    src = F.Source(f)
    flags, is_64bit, codec = _read_header(src)
    if is_64bit != mm.is_64bit:
        raise SnapshotError(f"snapshot is of a {64 if is_64bit else 32}-bit CPU, the manager's is not")
    meta = _read_meta(src, codec)
    derived = check_meta(meta, _geometry(mm))
    for a in meta.allocations:
        if a.owner == F.OWNER_IMAGE and getattr(meta.layouts[a.owner_ref], "size_of_image", None) != a.size:
            raise SnapshotError(f"image at {a.base:#x} does not match its layout's SizeOfImage")
    callbacks = _resolve_devices(mm, meta, devices)
    staged = _Staged()
    try:
        by_phys: dict[int, Chunk] = {}
        for rec in derived.chunks:
            buf, host = _host_buffer(rec.size)
            chunk = Chunk(rec.phys, rec.size, buf, host)
            staged.chunks.append(chunk)
            by_phys[rec.phys] = chunk
        prev_end = 0
        populate = True
        for tag, payload in _records(src, flags, staged.extras):
            if tag == F.TAG_CPU:
                staged.regs = cpu_state.decode(payload, is_64bit)
                continue
            phys, size = _page_run(payload)
            target = derived.content_range_ok(phys, size)
            if target is None or phys < prev_end:
                raise SnapshotError(f"page run {phys:#x}+{size:#x} is out of order or outside "
                                    "committed memory")
            prev_end = phys + size
            data = codec.decompress(memoryview(payload)[F.PAGES_HEAD.size :], size)
            chunk = by_phys[target.phys]
            offset = phys - chunk.phys
            if populate:
                populate = _populate(chunk, offset, size)
            with memoryview(chunk.buffer) as mv:
                mv[offset : offset + size] = data
        staged.devices = [MmioDevice(m.base, m.size, m.phys, r, w, m.name, m.maximum_protect)
                          for m, (r, w) in zip(meta.mmio, callbacks, strict=True)]
        staged.book = _build(mm, meta, by_phys, staged.devices)
    except BaseException:
        staged.close()
        raise
    return staged


def _build(mm: SnapshotHost, meta: F.Meta, chunks: dict[int, Chunk], devices: list[MmioDevice]) -> rb.Book:
    """Live objects for a checked table (cannot fail: :func:`check_meta` proved every reference)."""
    layouts = meta.layouts
    sections = [
        Section(s.size, s.protect, s.attributes, None if s.chunk_phys is None else chunks[s.chunk_phys],
                s.name, s.file_path, s.handles, set(s.views), None if s.layout is None else layouts[s.layout],
                set(s.committed))
        for s in meta.sections
    ]
    allocations: list[Allocation] = []
    images: dict[int, Any] = {}
    for a in meta.allocations:
        owner: Any = None
        if a.owner == F.OWNER_VIEW:
            owner = View(sections[a.owner_ref], a.owner_offset, a.owner_protect)
        elif a.owner == F.OWNER_MMIO:
            owner = devices[a.owner_ref]
        elif a.owner == F.OWNER_IMAGE:
            section = None if a.image_section is None else sections[a.image_section]
            owner = images[a.base] = MappedImage(a.base, layouts[a.owner_ref], a.image_name, section)
        alloc = Allocation(a.base, a.size, a.allocation_protect, RegionKind(a.kind), a.phys_base,
                           list(a.starts), list(a.protects), a.committed_pages(),
                           None if a.write_watch is None else set(a.write_watch), a.name, owner,
                           dict(a.private_pages) if a.private_pages else None)
        # the file keeps which pages were written, not which a protection change latched:
        # count them all as latched, so a decommit after loading never loses a reported page
        alloc.watch_latched = set() if alloc.write_watch is None else set(alloc.write_watch)
        allocations.append(alloc)
    by_base = {a.base: a for a in allocations}
    for alloc, rec in zip(allocations, meta.allocations, strict=True):
        if rec.owner == F.OWNER_ALIAS:
            alloc.owner = by_base[rec.owner_ref]
    rb.count_aliases(allocations)
    space = rb.build_space(mm, allocations, meta.layout_version)
    window = meta.geometry.window
    return rb.Book(
        dict(vars(space)), SortedDict(chunks), window,
        {c.phys // window: chunks[c.phys] for c in meta.chunks if c.identity},
        list(meta.free_pages), meta.alias_next, list(meta.alias_free), set(),
        {h: (sections[s], access) for h, s, access in meta.handles},
        {n: sections[i] for n, i in meta.names}, meta.next_handle, images, meta.default_allocation_address,
    )


# -- installing ------------------------------------------------------------------------
def _mmio_devices(mm: SnapshotHost) -> list[MmioDevice]:
    return [a.owner for a in mm.space if a.kind is RegionKind.MMIO and isinstance(a.owner, MmioDevice)]


def _check_foreign(mm: SnapshotHost, staged: _Staged) -> None:
    """Unicorn regions the manager did not map must not collide with the snapshot's."""
    ours = {(c.phys, c.end - 1) for c in mm.phys.chunks.values()}
    ours |= {(d.phys, d.phys + rb.mmio_span(d.size) - 1) for d in _mmio_devices(mm)}
    foreign = [(b, e) for b, e, _ in raw.mem_regions(mm.uc) if (b, e) not in ours]
    wanted = [(c.phys, c.end - 1) for c in staged.chunks]
    wanted += [(d.phys, d.phys + rb.mmio_span(d.size) - 1) for d in staged.devices]
    for b, e in foreign:
        for lo, hi in wanted:
            if lo <= e and b <= hi:
                raise SnapshotError(f"Unicorn region {b:#x}-{e:#x} (not the manager's) is in the way")


def _quiet(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except UcError:
        pass


def _commit(mm: SnapshotHost, staged: _Staged) -> None:
    """Swap the staged physical memory and bookkeeping in; undo it all if the CPU objects."""
    if staged.book is None:
        raise SnapshotError("nothing staged")
    uc = mm.uc
    _check_foreign(mm, staged)
    old_book = rb.Book.capture(mm)
    old_chunks = list(mm.phys.chunks.values())
    old_devices = _mmio_devices(mm)
    context = uc.context_save()
    # a staged chunk where an equal one is mapped takes over its mapping (hostpages.py:
    # unmapping a 16 GiB window costs ~0.24 s whatever it holds)
    live = {(c.phys, c.size): c for c in old_chunks}
    swapped = [(old, new) for new in staged.chunks
               if (old := live.get((new.phys, new.size))) is not None and swap_pages(old, new)]
    kept = {id(c) for pair in swapped for c in pair}
    try:
        for c in old_chunks:
            if id(c) not in kept:
                raw.mem_unmap(uc, c.phys, c.size)
        for d in old_devices:
            raw.mem_unmap(uc, d.phys, rb.mmio_span(d.size))
        for c in staged.chunks:
            if id(c) not in kept:
                raw.mem_map_ptr(uc, c.phys, c.size, UC_PROT_ALL, c.host)
        for d in staged.devices:
            rb.map_mmio(uc, d)
        staged.book.apply(mm)
        cpu_state.restore(uc, mm.is_64bit, staged.regs)
    except UcError as exc:
        for c in staged.chunks:
            if id(c) not in kept:
                _quiet(raw.mem_unmap, uc, c.phys, c.size)
        for d in staged.devices:
            _quiet(raw.mem_unmap, uc, d.phys, rb.mmio_span(d.size))
        for old, new in swapped:
            swap_pages(old, new)  # the old bytes back under the mapping that stayed
        for c in old_chunks:
            if id(c) not in kept:
                _quiet(raw.mem_unmap, uc, c.phys, c.size)
                raw.mem_map_ptr(uc, c.phys, c.size, UC_PROT_ALL, c.host)
        for d in old_devices:
            _quiet(raw.mem_unmap, uc, d.phys, rb.mmio_span(d.size))
            rb.map_mmio(uc, d)
        old_book.apply(mm)
        uc.context_restore(context)
        uc.ctl_flush_tb()
        mm.mmu.flush()
        raise SnapshotError(f"the CPU refused the snapshot's registers ({exc}); nothing was changed") from exc
    staged.chunks = []  # they are the manager's now
    for c in old_chunks:
        c.buffer.close()
    rb.invalidate(mm)
    uc.ctl_flush_tb()  # translated code belonged to the old physical memory
    mm.mmu.flush()


def load_snapshot(mm: SnapshotHost, file: FileArg, *,
                  devices: Mapping[str, DeviceCallbacks] | None = None) -> dict[str, bytes]:
    """Replace ``mm``'s whole state and its CPU registers with the snapshot in ``file``.

    The manager must be of the same mode (32/64-bit) as the one saved. ``devices`` maps
    MMIO device names to ``(read, write)`` callbacks (see the module docstring for the
    fallbacks). All or nothing: any problem raises :class:`SnapshotError` and changes nothing.
    An active checkpoint is discarded by a successful load. Returns the ``extras`` the
    snapshot was saved with.
    """
    with _opened(file, "rb") as f:
        try:
            staged = _stage(mm, f, devices)
        except _PARSE_ERRORS as exc:
            raise SnapshotError(f"unreadable snapshot: {exc}") from exc
    try:
        _commit(mm, staged)
    finally:
        staged.close()
    return staged.extras


def snapshot_info(file: FileArg) -> dict[str, Any]:
    """Summary of a snapshot for ``emulator-mem snapshot info``.

    Everything is checked as a load would (checksum, table, record bounds) except that page
    runs are not decompressed, so it is fast on big files; a load may still refuse a run
    whose compressed stream is damaged in a way its frame header does not show.
    """
    with _opened(file, "rb") as f:
        try:
            return _info(f)
        except _PARSE_ERRORS as exc:
            raise SnapshotError(f"unreadable snapshot: {exc}") from exc


def snapshot_extras(file: FileArg) -> dict[str, bytes]:
    """The named blobs saved with ``save_snapshot(..., extras=)``, from a fully checked file."""
    with _opened(file, "rb") as f:
        try:
            extras: dict[str, bytes] = {}
            _info(f, extras)
            return extras
        except _PARSE_ERRORS as exc:
            raise SnapshotError(f"unreadable snapshot: {exc}") from exc


def _info(f: IO[bytes], extras: dict[str, bytes] | None = None) -> dict[str, Any]:
    extras = {} if extras is None else extras
    src = F.Source(f)
    flags, is_64bit, codec = _read_header(src)
    meta = _read_meta(src, codec)
    derived = check_meta(meta, meta.geometry)
    pages = compressed = runs = prev_end = 0
    regs: dict[str, cpu_state.RegValue] = {}
    for tag, payload in _records(src, flags, extras):
        if tag == F.TAG_CPU:
            regs = cpu_state.decode(payload, is_64bit)
        else:
            phys, size = _page_run(payload)
            if derived.content_range_ok(phys, size) is None or phys < prev_end:
                raise SnapshotError(f"page run {phys:#x}+{size:#x} is out of order or outside memory")
            prev_end = phys + size
            codec.check_size(memoryview(payload)[F.PAGES_HEAD.size :], size)
            pages += size >> PAGE_SHIFT
            compressed += len(payload) - F.PAGES_HEAD.size
            runs += 1
    return {
        "format_version": F.FORMAT_VERSION,
        "arch": "x86",
        "mode": 64 if is_64bit else 32,
        "codec": "zstd" if codec.codec == F.CODEC_ZSTD else "zlib",
        "contents": bool(flags & F.FLAG_CONTENTS),
        "layout_version": meta.layout_version,
        "allocations": len(meta.allocations),
        "regions": derived.regions,
        "reserved_bytes": derived.reserved_bytes,
        "committed_bytes": derived.committed_pages * PAGE_SIZE,
        "content_bytes": pages * PAGE_SIZE,
        "compressed_size": compressed,
        "page_runs": runs,
        "file_size": src.offset,
        "sections": len(meta.sections),
        "views": sum(len(s.views) for s in meta.sections),
        "mmio_devices": [m.name for m in meta.mmio],
        "images": sorted(a.image_name or "" for a in meta.allocations if a.owner == F.OWNER_IMAGE),
        "instruction_pointer": regs.get("RIP" if is_64bit else "EIP", 0),
        "extras": {name: len(data) for name, data in sorted(extras.items())},
    }
