"""The snapshot file format: framing, checksummed streams and the layout table codec.

Pure bookkeeping, no Unicorn: :mod:`emulator_mem.snapshot` gathers a manager's state into a
:class:`Meta`, this module turns it into bytes and back, and :func:`check_meta` proves a
decoded table self-consistent before anything is built from it. ``docs/snapshot-format.md``
describes the same format for readers in other languages.

Robustness rules that every reader function follows, because the input may be hostile:
every length and count is checked against the bytes actually left *before* anything is
allocated for it (a 4-byte count cannot make us allocate gigabytes), every failure is a
:class:`~emulator_mem.errors.SnapshotError`, and decoding never builds arbitrary objects —
only the whitelisted dataclasses the caller names (no pickle).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import InvalidParameterError, SnapshotError
from ..space.address_space import PAGE_SIZE

MAGIC = b"\x89EMSNAP\n"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHHIIII")  # magic, version, flags, arch, mode, codec, reserved
FLAG_CONTENTS = 1
CODEC_ZSTD = 1
CODEC_ZLIB = 2
RECORD = struct.Struct("<IQ")  # tag, payload length
PAGES_HEAD = struct.Struct("<QI")  # physical address, page count


def _tag(name: bytes) -> int:
    return int(struct.unpack("<I", name)[0])


TAG_META = _tag(b"META")
TAG_PAGES = _tag(b"PAGE")
TAG_CPU = _tag(b"CPU ")
TAG_EXTRA = _tag(b"XTRA")
TAG_END = _tag(b"END ")
DIGEST_SIZE = 32  # sha256

PAGES_PER_RECORD = 256  # 1 MiB of contents per record: the unit of streaming
MAX_PAGES_PAYLOAD = PAGES_HEAD.size + PAGES_PER_RECORD * PAGE_SIZE + 0x10000  # > compressBound
MAX_META_RAW = 1 << 30
MAX_CPU_PAYLOAD = 1 << 16
MAX_EXTRA_PAYLOAD = 64 << 20  # one named blob of the caller's (runner state and the like)
MAX_EXTRA_NAME = 4096
MAX_STRING = 1 << 16
MAX_ALIAS_SPAN = 1 << 44  # guest-physical alias area a snapshot may use
NO_INDEX = (1 << 64) - 1  # "none" for optional indexes and addresses

OWNER_NONE, OWNER_VIEW, OWNER_ALIAS, OWNER_MMIO, OWNER_IMAGE = range(5)

zstandard: Any
try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard is a dependency; zlib keeps files readable
    zstandard = None
CODEC_ERRORS: tuple[type[BaseException], ...] = (zlib.error,) + (
    (zstandard.ZstdError,) if zstandard is not None else ())


# -- streams ---------------------------------------------------------------------------
class Sink:
    """Writes records to a binary file while hashing every byte (the trailing checksum)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, *parts: bytes | memoryview) -> None:
        for part in parts:
            self.hash.update(part)
            self.f.write(part)
            self.size += len(part)

    def record(self, tag: int, *parts: bytes | memoryview) -> None:
        self.write(RECORD.pack(tag, sum(len(p) for p in parts)), *parts)

    def finish(self) -> None:
        self.write(RECORD.pack(TAG_END, DIGEST_SIZE))
        digest = self.hash.digest()
        self.f.write(digest)
        self.size += len(digest)


class Source:
    """Reads records from a binary file, hashing them; short reads raise SnapshotError."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.offset = 0
        self.limit: int | None = None  # total size when the file can tell it
        try:
            if f.seekable():
                here = f.tell()
                self.limit = f.seek(0, 2) - here
                f.seek(here)
        except (OSError, ValueError, AttributeError):
            self.limit = None

    def read(self, n: int, *, hashed: bool = True) -> bytes:
        if self.limit is not None and self.offset + n > self.limit:
            raise SnapshotError(f"snapshot is truncated at offset {self.limit:#x}")
        chunks = []
        got = 0
        while got < n:
            try:
                piece = self.f.read(n - got)
            except OSError as exc:
                raise SnapshotError(f"cannot read the snapshot: {exc}") from exc
            if not piece:
                raise SnapshotError(f"snapshot is truncated at offset {self.offset + got:#x}")
            chunks.append(piece)
            got += len(piece)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if hashed:
            self.hash.update(data)
        self.offset += n
        return data

    def record(self, max_payload: int) -> tuple[int, int]:
        """Next record header; its length must fit ``max_payload`` and the file."""
        tag, length = RECORD.unpack(self.read(RECORD.size))
        if length > max_payload:
            raise SnapshotError(f"record at {self.offset - RECORD.size:#x} claims {length:#x} bytes")
        if self.limit is not None and self.offset + length > self.limit:
            raise SnapshotError("snapshot is truncated inside a record")
        return int(tag), int(length)

    def finish(self) -> None:
        """Check the END record's digest (the record header is hashed, the digest not) and EOF."""
        digest = self.hash.digest()
        stored = self.read(DIGEST_SIZE, hashed=False)
        if stored != digest:
            raise SnapshotError("snapshot checksum mismatch")
        if self.f.read(1):
            raise SnapshotError("trailing bytes after the end of the snapshot")


# -- compression and extras ------------------------------------------------------------
class Codec:
    """Page-run compression; decompression demands the exact size the record promised."""

    def __init__(self, codec: int, level: int = 3) -> None:
        self.codec = codec
        if codec == CODEC_ZSTD:
            if zstandard is None:
                raise SnapshotError("snapshot is zstd-compressed and zstandard is not installed")
            self._c = zstandard.ZstdCompressor(level=level)
            self._d = zstandard.ZstdDecompressor()
        self.level = level

    def compress(self, data: bytes | memoryview) -> bytes:
        if self.codec == CODEC_ZSTD:
            return bytes(self._c.compress(data))
        return zlib.compress(data, min(self.level, 9))

    def check_size(self, data: bytes | memoryview, size: int) -> None:
        """The cheap part of :meth:`decompress`'s check (zstd frames declare their size)."""
        if self.codec == CODEC_ZSTD and zstandard.frame_content_size(data) != size:
            raise SnapshotError("compressed run does not declare the size its record promises")

    def decompress(self, data: bytes | memoryview, size: int) -> bytes:
        if self.codec == CODEC_ZSTD:
            self.check_size(data, size)  # first: it sizes the output buffer
            out = self._d.decompress(data)
        else:
            d = zlib.decompressobj()
            out = d.decompress(data, size + 1)
            if not d.eof or d.unused_data:
                raise SnapshotError("compressed run does not end where its record does")
        if len(out) != size:
            raise SnapshotError(f"compressed run holds {len(out)} bytes, not {size}")
        return bytes(out)


def encode_extras(extras: Mapping[str, bytes]) -> list[bytes]:
    """The XTRA record payloads: ``u32 name length, UTF-8 name, data``, sorted by name."""
    out = []
    for name in sorted(extras):
        data = extras[name]
        raw = name.encode("utf-8") if isinstance(name, str) else b""
        if not raw or len(raw) > MAX_EXTRA_NAME or not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidParameterError(f"extra {name!r}: names are non-empty strings, data bytes")
        payload = struct.pack("<I", len(raw)) + raw + bytes(data)
        if len(payload) > MAX_EXTRA_PAYLOAD:
            raise InvalidParameterError(f"extra {name!r} is larger than {MAX_EXTRA_PAYLOAD} bytes")
        out.append(payload)
    return out


def decode_extra(payload: bytes) -> tuple[str, bytes]:
    (n,) = struct.unpack_from("<I", payload)
    if not 0 < n <= MAX_EXTRA_NAME or 4 + n > len(payload):
        raise SnapshotError("malformed extra record")
    try:
        name = payload[4 : 4 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise SnapshotError("extra record name is not UTF-8") from None
    return name, payload[4 + n :]


# -- primitive codec -------------------------------------------------------------------
class Encoder:
    """Little-endian fixed-width integers and length-prefixed strings/blobs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(struct.pack("<B", v))

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack("<I", v))

    def u64(self, v: int) -> None:
        self.parts.append(struct.pack("<Q", v))

    def u64s(self, *values: int) -> None:
        self.parts.append(struct.pack(f"<{len(values)}Q", *values))

    def blob(self, b: bytes) -> None:
        self.u64(len(b))
        self.parts.append(bytes(b))

    def text(self, s: str | None) -> None:
        """Optional UTF-8 string: u32 length + 1 (0 meaning None), then the bytes."""
        if s is None:
            self.u32(0)
            return
        raw = s.encode("utf-8", "surrogatepass")
        if len(raw) >= MAX_STRING:
            raise SnapshotError(f"string of {len(raw)} bytes is too long for a snapshot")
        self.u32(len(raw) + 1)
        self.parts.append(raw)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Decoder:
    """Bounds-checked reads over one buffer; every overrun is a SnapshotError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > len(self.data):
            raise SnapshotError("layout table is truncated")
        self.pos = pos + n
        return pos

    def u8(self) -> int:
        return self.data[self._take(1)]

    def u32(self) -> int:
        return int(struct.unpack_from("<I", self.data, self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack_from("<Q", self.data, self._take(8))[0])

    def u64s(self, n: int) -> tuple[int, ...]:
        return struct.unpack_from(f"<{n}Q", self.data, self._take(8 * n))

    def left(self) -> int:
        return len(self.data) - self.pos

    def count(self, item_size: int) -> int:
        """A list length, refused when the items could not fit in the bytes left."""
        n = self.u64()
        if n * item_size > self.left():
            raise SnapshotError(f"list of {n} items does not fit in the layout table")
        return n

    def rows(self, width: int) -> list[tuple[int, ...]]:
        """A counted list of ``width``-tuples of u64."""
        n = self.count(8 * width)
        flat = self.u64s(n * width)
        return [flat[i : i + width] for i in range(0, len(flat), width)]

    def blob(self) -> bytes:
        n = self.u64()
        pos = self._take(n)
        return bytes(self.data[pos : pos + n])

    def text(self) -> str | None:
        n = self.u32()
        if n == 0:
            return None
        if n > MAX_STRING:
            raise SnapshotError("string too long")
        pos = self._take(n - 1)
        try:
            return self.data[pos : pos + n - 1].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise SnapshotError("string is not UTF-8") from None

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SnapshotError("layout table has trailing bytes")


# -- whitelisted dataclasses (image layouts) -------------------------------------------
_V_NONE, _V_FALSE, _V_TRUE, _V_INT, _V_STR, _V_BYTES, _V_LIST, _V_OBJ = range(8)
_MAX_DEPTH = 6


def _accepts(annotation: Any, value: Any, classes: Sequence[type]) -> bool:
    """Does ``value`` fit a field annotation written as a string ("int | None", "list[X]")?"""
    for part in str(annotation).split("|"):
        part = part.strip()
        if part.startswith("list[") and part.endswith("]"):
            inner = part[5:-1]
            if isinstance(value, list) and all(_accepts(inner, v, classes) for v in value):
                return True
            continue
        simple = {"int": int, "bool": bool, "str": str, "bytes": bytes, "float": float}.get(part)
        if part == "None" and value is None:
            return True
        if simple is not None and isinstance(value, simple):
            if simple is bool or not isinstance(value, bool):  # bool is an int subclass
                return True
        if any(cls.__name__ == part and type(value) is cls for cls in classes):
            return True
        if part in ("object", "Any"):
            return True
    return False


def encode_object(enc: Encoder, value: Any, classes: Sequence[type], depth: int = 0) -> None:
    """Encode None/bool/int/str/bytes/lists and instances of ``classes`` (by class and field name,
    so a reader notices when a class changed instead of misreading it)."""
    if depth > _MAX_DEPTH:
        raise SnapshotError("object nests too deeply for a snapshot")
    if value is None or value is False or value is True:
        enc.u8({None: _V_NONE, False: _V_FALSE, True: _V_TRUE}[value])
    elif isinstance(value, int):
        enc.u8(_V_INT)
        enc.blob(value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True))
    elif isinstance(value, str):
        enc.u8(_V_STR)
        enc.blob(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, (bytes, bytearray)):
        enc.u8(_V_BYTES)
        enc.blob(bytes(value))
    elif isinstance(value, list):
        enc.u8(_V_LIST)
        enc.u64(len(value))
        for item in value:
            encode_object(enc, item, classes, depth + 1)
    elif type(value) in classes:
        cls = type(value)
        enc.u8(_V_OBJ)
        enc.text(cls.__name__)
        fields = dataclasses.fields(cls)
        enc.u64(len(fields))
        for f in fields:
            item = getattr(value, f.name)
            if not _accepts(f.type, item, classes):
                raise SnapshotError(f"cannot snapshot {cls.__name__}.{f.name} = {type(item).__name__}")
            enc.text(f.name)
            encode_object(enc, item, classes, depth + 1)
    else:
        raise SnapshotError(f"cannot snapshot a {type(value).__name__}")


def decode_object(dec: Decoder, classes: Sequence[type], depth: int = 0) -> Any:
    """Inverse of :func:`encode_object`; builds only ``classes``, with exactly their fields."""
    if depth > _MAX_DEPTH:
        raise SnapshotError("object nests too deeply")
    tag = dec.u8()
    if tag in (_V_NONE, _V_FALSE, _V_TRUE):
        return {_V_NONE: None, _V_FALSE: False, _V_TRUE: True}[tag]
    if tag == _V_INT:
        raw = dec.blob()
        if len(raw) > 64:
            raise SnapshotError("integer too long")
        return int.from_bytes(raw, "little", signed=True)
    if tag == _V_STR:
        try:
            return dec.blob().decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise SnapshotError("string is not UTF-8") from None
    if tag == _V_BYTES:
        return dec.blob()
    if tag == _V_LIST:
        return [decode_object(dec, classes, depth + 1) for _ in range(dec.count(1))]
    if tag != _V_OBJ:
        raise SnapshotError(f"unknown value tag {tag}")
    name = dec.text()
    found = [c for c in classes if c.__name__ == name]
    if not found:
        raise SnapshotError(f"unknown object class {name!r}")
    cls = found[0]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    n = dec.count(2)
    values: dict[str, Any] = {}
    for _ in range(n):
        key = dec.text()
        if key is None or key not in fields or key in values:
            raise SnapshotError(f"{cls.__name__} has no field {key!r} (or it repeats)")
        value = decode_object(dec, classes, depth + 1)
        if not _accepts(fields[key].type, value, classes):
            raise SnapshotError(f"{cls.__name__}.{key} has a value of the wrong type")
        values[key] = value
    if values.keys() != fields.keys():
        raise SnapshotError(f"{cls.__name__} record lacks fields")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"cannot rebuild {cls.__name__}: {exc}") from None


# -- the layout table ------------------------------------------------------------------
@dataclass(slots=True)
class Geometry:
    """Address-space constants a snapshot must share with the manager it is loaded into."""

    lowest: int
    highest: int
    identity_end: int
    alias_base: int
    window: int


@dataclass(slots=True)
class ChunkRec:
    phys: int
    size: int
    identity: bool  # an identity window (physical == virtual) or an alias-area buffer


@dataclass(slots=True)
class MmioRec:
    base: int
    size: int
    phys: int
    maximum_protect: int
    name: str


@dataclass(slots=True)
class SectionRec:
    size: int
    protect: int
    attributes: int
    chunk_phys: int | None
    name: str | None
    file_path: str | None
    handles: int
    layout: int | None
    views: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)  # SEC_RESERVE pages committed so far


@dataclass(slots=True)
class AllocRec:
    base: int
    size: int
    allocation_protect: int
    kind: int
    phys_base: int
    name: str | None
    owner: int = OWNER_NONE
    owner_ref: int = 0  # section / source base / device / layout, by owner kind
    owner_offset: int = 0  # view offset
    owner_protect: int = 0  # the protection a view was mapped with
    image_name: str | None = None
    image_section: int | None = None
    starts: list[int] = field(default_factory=list)
    protects: list[int] = field(default_factory=list)
    write_watch: list[int] | None = None
    private_pages: list[tuple[int, int]] = field(default_factory=list)

    def committed_pages(self) -> int:
        ends = self.starts[1:] + [self.size // PAGE_SIZE]
        return sum(e - s for s, e, p in zip(self.starts, ends, self.protects, strict=True) if p)


@dataclass(slots=True)
class Meta:
    """Everything in a snapshot except page contents and registers."""

    geometry: Geometry
    layout_version: int
    default_allocation_address: int
    alias_next: int
    chunks: list[ChunkRec] = field(default_factory=list)
    alias_free: list[tuple[int, int]] = field(default_factory=list)
    free_pages: list[int] = field(default_factory=list)
    layouts: list[Any] = field(default_factory=list)
    mmio: list[MmioRec] = field(default_factory=list)
    sections: list[SectionRec] = field(default_factory=list)
    next_handle: int = 0
    handles: list[tuple[int, int, int]] = field(default_factory=list)  # handle, section, access
    names: list[tuple[str, int]] = field(default_factory=list)
    allocations: list[AllocRec] = field(default_factory=list)


def _opt(v: int | None, none: int) -> int:
    return none if v is None else v


def encode_meta(meta: Meta, classes: Sequence[type]) -> bytes:
    """The layout table; integers are u64 except where the docs say otherwise."""
    e = Encoder()
    g = meta.geometry
    e.u64s(g.lowest, g.highest, g.identity_end, g.alias_base, g.window,
           meta.layout_version, meta.default_allocation_address, meta.alias_next)
    e.u64(len(meta.chunks))
    for c in meta.chunks:
        e.u64s(c.phys, c.size, int(c.identity))
    e.u64(len(meta.alias_free))
    for phys, size in meta.alias_free:
        e.u64s(phys, size)
    e.u64(len(meta.free_pages))
    e.u64s(*meta.free_pages)
    e.u64(len(meta.layouts))
    for layout in meta.layouts:
        encode_object(e, layout, classes)
    e.u64(len(meta.mmio))
    for m in meta.mmio:
        e.u64s(m.base, m.size, m.phys, m.maximum_protect)
        e.text(m.name)
    e.u64(len(meta.sections))
    for s in meta.sections:
        e.u64s(s.size, s.protect, s.attributes, _opt(s.chunk_phys, NO_INDEX), s.handles,
               _opt(s.layout, NO_INDEX), len(s.views), *s.views, len(s.committed), *s.committed)
        e.text(s.name)
        e.text(s.file_path)
    e.u64s(meta.next_handle, len(meta.handles))
    for handle in meta.handles:
        e.u64s(*handle)
    e.u64(len(meta.names))
    for name, section in meta.names:
        e.u64(section)
        e.text(name)
    e.u64(len(meta.allocations))
    for a in meta.allocations:
        e.u64s(a.base, a.size, a.allocation_protect, a.kind, a.phys_base, a.owner, a.owner_ref,
               a.owner_offset, a.owner_protect, _opt(a.image_section, NO_INDEX), len(a.starts))
        e.u64s(*(v for run in zip(a.starts, a.protects, strict=True) for v in run))
        watch = a.write_watch
        e.u64s(NO_INDEX if watch is None else len(watch), *(watch or ()))
        e.u64(len(a.private_pages))
        e.u64s(*(v for pair in a.private_pages for v in pair))
        e.text(a.name)
        e.text(a.image_name)
    return e.getvalue()


def decode_meta(data: bytes, classes: Sequence[type]) -> Meta:
    """Parse a layout table; shapes only — :func:`check_meta` judges the values."""
    d = Decoder(data)
    geometry = Geometry(*d.u64s(5))
    layout_version, default_address, alias_next = d.u64s(3)
    meta = Meta(geometry, layout_version, default_address, alias_next)
    meta.chunks = [ChunkRec(p, s, bool(i)) for p, s, i in d.rows(3)]
    meta.alias_free = [(p, s) for p, s in d.rows(2)]
    meta.free_pages = list(d.u64s(d.count(8)))
    meta.layouts = [decode_object(d, classes) for _ in range(d.count(1))]
    for _ in range(d.count(36)):
        base, size, phys, maximum = d.u64s(4)
        meta.mmio.append(MmioRec(base, size, phys, maximum, d.text() or ""))
    for _ in range(d.count(72)):
        size, protect, attributes, chunk, handles, layout = d.u64s(6)
        views = list(d.u64s(d.count(8)))
        committed = list(d.u64s(d.count(8)))
        meta.sections.append(SectionRec(size, protect, attributes, None if chunk == NO_INDEX else chunk,
                                        d.text(), d.text(), handles,
                                        None if layout == NO_INDEX else layout, views, committed))
    meta.next_handle = d.u64()
    meta.handles = [(h, s, a) for h, s, a in d.rows(3)]
    for _ in range(d.count(12)):
        section = d.u64()
        meta.names.append((d.text() or "", section))
    for _ in range(d.count(104)):
        base, size, aprotect, kind, phys_base, owner, ref, offset, oprotect, section = d.u64s(10)
        a = AllocRec(base, size, aprotect, kind, phys_base, None, owner, ref, offset, oprotect)
        a.image_section = None if section == NO_INDEX else section
        for start, protect in d.rows(2):
            a.starts.append(start)
            a.protects.append(protect)
        watched = d.u64()
        if watched != NO_INDEX:
            if watched * 8 > d.left():
                raise SnapshotError("write-watch list does not fit in the layout table")
            a.write_watch = list(d.u64s(watched))
        a.private_pages = [(i, p) for i, p in d.rows(2)]
        a.name = d.text()
        a.image_name = d.text()
        meta.allocations.append(a)
    d.done()
    return meta
