"""Snapshots: a guest resumed in a fresh process, fidelity of every kind of state, and
hostile files that must change nothing.

The round trip is the contract's: run a keystone-assembled guest loop N instructions, save,
run M more (state S1); in a new process load the file into a new Unicorn + MemoryManager and
run M (S2); S1 == S2 compares registers, the whole VirtualQuery walk and every committed
byte. Expected protection/state values are winnt.h literals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc
from unicorn import x86_const as X

from emulator_mem import MemoryManager
from emulator_mem.errors import EmulatorMemError, SnapshotError
from emulator_mem.pe.writer import SCN_CODE, SCN_DATA, PEWriter
from emulator_mem.snapshot import (
    cpu_state,
    load_snapshot,
    register_mmio_device,
    save_snapshot,
    snapshot_extras,
    snapshot_info,
    unregister_mmio_device,
)
from emulator_mem.snapshot import format as F

PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE_READ = 0x20
PAGE_GUARD = 0x100
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_FREE = 0x10000
MEM_IMAGE = 0x1000000
MEM_MAPPED = 0x40000
SEC_RESERVE = 0x4000000


def state_json(mm: Any) -> dict[str, Any]:
    """Registers, the VirtualQuery walk and a digest of every committed non-MMIO region."""
    import hashlib

    from emulator_mem.snapshot import cpu_state

    captured = cpu_state.capture(mm.uc, mm.is_64bit)
    regs = {k: list(v) if isinstance(v, tuple) else v for k, v in captured.items()}
    regions, contents = [], {}
    for r in mm.regions():
        regions.append([r.BaseAddress, r.AllocationBase, r.AllocationProtect, r.RegionSize, r.State,
                        r.Protect, r.Type])
        kind = mm.region_kind(r.BaseAddress)
        if r.State == 0x1000 and (kind is None or kind.name != "MMIO"):
            contents[hex(r.BaseAddress)] = hashlib.sha256(mm.read(r.BaseAddress, r.RegionSize)).hexdigest()
    return {"regs": regs, "regions": regions, "contents": contents}


def live_state(mm: MemoryManager) -> tuple[Any, ...]:
    """Everything a failed load must leave alone (in this process)."""
    return (state_json(mm), mm.stats(), list(mm.uc.mem_regions()), mm.layout_version,
            sorted(mm.sections.handles), {a.base: a.write_watch for a in mm.space})


# -- the guest -------------------------------------------------------------------------
PROGRAM_64 = """
    xor ecx, ecx
    fldz
loop:
    mov rax, rcx
    imul rax, rax, 0x3779B1
    mov rdx, rcx
    and rdx, 0x3fff
    mov qword ptr [rbx + rdx*8], rax
    mov rsi, 8
    add qword ptr fs:[rsi], rax
    push rax
    pop rdi
    movq xmm0, rax
    paddq xmm1, xmm0
    fld1
    faddp st(1), st(0)
    inc rcx
    cmp rcx, 0x1000000
    jne loop
    hlt
"""
PROGRAM_32 = PROGRAM_64.replace("rax", "eax").replace("rcx", "ecx").replace("rdx", "edx") \
    .replace("rbx", "ebx").replace("rsi", "esi").replace("rdi", "edi").replace("qword", "dword") \
    .replace("rdx*8", "edx*4").replace("movq xmm0, eax", "movd xmm0, eax").replace("edx*8", "edx*4")


def _descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    value = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40) | (((limit >> 16) & 0xF) << 48) \
        | (flags << 52) | ((base >> 24) << 56)
    return struct.pack("<Q", value)


def make_guest(is_64bit: bool) -> tuple[MemoryManager, int, int]:
    """A manager running the loop above; returns (mm, start, end) with FS at a TEB page."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32)
    mm = MemoryManager(uc)
    code = mm.allocate(0x1000, PAGE_EXECUTE_READ)
    data = mm.allocate(0x20000, PAGE_READWRITE)
    stack = mm.allocate(0x10000, PAGE_READWRITE, reserve_only=True)
    mm.commit(stack + 0xF000, 0x1000, PAGE_READWRITE)
    mm.commit(stack + 0xE000, 0x1000, PAGE_READWRITE | PAGE_GUARD)
    teb = mm.allocate(0x1000, PAGE_READWRITE)
    ks = Ks(KS_ARCH_X86, KS_MODE_64 if is_64bit else KS_MODE_32)
    encoding, _ = ks.asm(PROGRAM_64 if is_64bit else PROGRAM_32, code)
    mm.write(code, bytes(encoding))
    end = code + len(encoding) - 1  # the hlt
    if is_64bit:
        uc.reg_write(X.UC_X86_REG_FS_BASE, teb)
        uc.reg_write(X.UC_X86_REG_RBX, data)
        uc.reg_write(X.UC_X86_REG_RSP, stack + 0xFF00)
    else:
        gdt = mm.allocate(0x1000, PAGE_READWRITE)
        mm.write(gdt, bytes(8) + _descriptor(0, 0xFFFFF, 0x9B, 0xC) + _descriptor(0, 0xFFFFF, 0x93, 0xC)
                 + _descriptor(teb, 0xFFF, 0x93, 0x4))
        uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt, 0x1F, 0))
        for reg, sel in ((X.UC_X86_REG_DS, 0x10), (X.UC_X86_REG_ES, 0x10), (X.UC_X86_REG_FS, 0x18),
                         (X.UC_X86_REG_GS, 0x10), (X.UC_X86_REG_CS, 0x08), (X.UC_X86_REG_SS, 0x10)):
            uc.reg_write(reg, sel)
        uc.reg_write(X.UC_X86_REG_EBX, data)
        uc.reg_write(X.UC_X86_REG_ESP, stack + 0xFF00)
    return mm, code, end


def ip(mm: MemoryManager) -> int:
    return int(mm.uc.reg_read(X.UC_X86_REG_RIP if mm.is_64bit else X.UC_X86_REG_EIP))


RESUME = """
from __future__ import annotations
import json, sys
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc
from emulator_mem import MemoryManager
from emulator_mem.snapshot import load_snapshot, snapshot_info
{state_json}
path, count, until, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
info = snapshot_info(path)
mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if info["mode"] == 64 else UC_MODE_32))
load_snapshot(mm, path)
mm.uc.emu_start(info["instruction_pointer"], until, count=count)
with open(out, "w") as f:
    json.dump(state_json(mm), f)
"""


@pytest.mark.parametrize("is_64bit", [False, True], ids=["x86", "x64"])
def test_resume_in_a_fresh_process_matches(is_64bit: bool, tmp_path: Path) -> None:
    n, m = 200_000, 300_000
    mm, start, end = make_guest(is_64bit)
    mm.uc.emu_start(start, end, count=n)
    path = tmp_path / "guest.snap"
    save_snapshot(mm, path)
    mm.uc.emu_start(ip(mm), end, count=m)
    s1 = json.loads(json.dumps(state_json(mm)))
    assert s1["regs"]["RIP" if is_64bit else "EIP"] != start  # it ran
    script = RESUME.format(state_json=textwrap.dedent(inspect.getsource(state_json)))
    out = tmp_path / "s2.json"
    subprocess.run([sys.executable, "-c", script, str(path), str(m), str(end), str(out)], check=True,
                   cwd=Path(__file__).parent.parent, timeout=60)
    s2 = json.loads(out.read_text())
    assert s2["regions"] == s1["regions"]
    assert s2["contents"] == s1["contents"]
    assert s2["regs"] == s1["regs"]


@pytest.mark.parametrize("is_64bit", [False, True], ids=["x86", "x64"])
def test_reload_into_the_running_manager_resumes_identically(is_64bit: bool) -> None:
    mm, start, end = make_guest(is_64bit)
    mm.uc.emu_start(start, end, count=50_000)
    blob = io.BytesIO()
    save_snapshot(mm, blob)
    mm.uc.emu_start(ip(mm), end, count=70_000)
    s1 = state_json(mm)
    mm.release(mm.allocate(0x10000, PAGE_READWRITE))  # and scribble over the layout meanwhile
    mm.uc.emu_start(ip(mm), end, count=10_000)
    load_snapshot(mm, io.BytesIO(blob.getvalue()))
    mm.uc.emu_start(ip(mm), end, count=70_000)
    assert state_json(mm) == s1


# -- fidelity of the other kinds of state -----------------------------------------------
def rich_manager(is_64bit: bool = True) -> tuple[MemoryManager, dict[str, int]]:
    """Sections with shared and copy-on-write views, an alias, MMIO, write watch, an image."""
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32))
    at: dict[str, int] = {}
    at["a"] = mm.allocate(0x40000, PAGE_READWRITE)
    mm.write(at["a"] + 0x1000, b"private bytes" * 50)
    mm.protect(at["a"] + 0x3000, 0x2000, PAGE_READONLY)
    mm.decommit(at["a"] + 0x10000, 0x1000)
    at["ww"] = mm.allocate(0x10000, PAGE_READWRITE, write_watch=True)
    mm.write(at["ww"] + 0x2000, b"w")
    h, _ = mm.sections.create(0x30000, PAGE_READWRITE, name="shared")
    at["h"] = h
    at["v1"], _ = mm.sections.map_view(h, PAGE_READWRITE)
    at["v2"], _ = mm.sections.map_view(h, PAGE_WRITECOPY)
    mm.write(at["v1"] + 0x10, b"seen by every view")
    mm.write(at["v2"] + 0x2000, b"my private copy")
    at["alias"] = mm.map_alias(at["a"], 0x2000, PAGE_READONLY)
    at["mmio"] = mm.allocate_mmio(None, 0x1000, lambda off, n: 0xAB, lambda off, n, v: None, name="dev")
    at["image"] = mm.map_image(make_image(is_64bit), name="tiny.dll")
    at["split"] = mm.allocate(0x40000, PAGE_READWRITE)
    mm.write(at["split"] + 0x30000, b"right piece")
    mm.release(at["split"] + 0x11000, 0x2000)  # pieces at split and split+0x13000 (not 64 KiB aligned)
    h2, _ = mm.sections.create(0x20000, PAGE_READWRITE, SEC_RESERVE, name="reserved")
    at["r1"], _ = mm.sections.map_view(h2, PAGE_READWRITE)
    at["r2"], _ = mm.sections.map_view(h2, PAGE_READONLY)
    mm.commit(at["r1"] + 0x3000, 0x1000, PAGE_READWRITE)  # committed in the section: both views
    mm.write(at["r1"] + 0x3000, b"reserved section")
    mm.default_allocation_address = 0x200000
    return mm, at


def make_image(is_64bit: bool) -> bytes:
    w = PEWriter(is_64bit=is_64bit)
    text = w.add_section(".text", SCN_CODE, size=0x100)
    data = w.add_section(".data", SCN_DATA, size=0x1000)
    text.data = b"\xb8\x34\x12\x00\x00\xc3"  # mov eax, 0x1234; ret
    data.data = b"image data"
    w.entry_point = text.rva
    return bytes(w.build())


def reload(mm: MemoryManager, **kw: Any) -> MemoryManager:
    blob = io.BytesIO()
    save_snapshot(mm, blob, **kw)
    fresh = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if mm.is_64bit else UC_MODE_32))
    devices = {"dev": (lambda off, n: 0xCD, lambda o, n, v: None)}
    load_snapshot(fresh, io.BytesIO(blob.getvalue()), devices=devices)
    return fresh


@pytest.mark.parametrize("is_64bit", [False, True], ids=["x86", "x64"])
def test_every_kind_of_state_survives(is_64bit: bool) -> None:
    mm, at = rich_manager(is_64bit)
    mm2 = reload(mm)
    assert state_json(mm2) == state_json(mm)
    assert mm2.stats() == mm.stats()
    assert mm2.layout_version == mm.layout_version
    assert mm2.default_allocation_address == 0x200000
    assert list(mm2.uc.mem_regions()) == list(mm.uc.mem_regions())
    # views share one buffer again; the copy-on-write page stayed private
    mm2.write(at["v1"] + 0x40, b"after load")
    assert mm2.read(at["v2"] + 0x10, 18) == b"seen by every view"
    assert mm2.read(at["v2"] + 0x40, 10) == b"after load"
    assert mm2.read(at["v2"] + 0x2000, 15) == b"my private copy"
    assert mm2.read(at["v1"] + 0x2000, 15) == bytes(15)
    # the alias still translates to its source
    mm2.write(at["a"], b"via source")
    assert mm2.read(at["alias"], 10) == b"via source"
    # releasing the source keeps its pages alive for the alias (Windows: until the last view),
    # and that state round-trips too
    assert mm2.release(at["a"]) == 0x40000
    assert mm2.read(at["alias"], 10) == b"via source"
    assert reload(mm2).read(at["alias"], 10) == b"via source"
    # the pieces of a partial release, and a SEC_RESERVE section's commits
    assert mm2.query(at["split"] + 0x13000).AllocationBase == at["split"] + 0x13000
    assert mm2.read(at["split"] + 0x30000, 11) == b"right piece"
    assert mm2.read(at["r2"] + 0x3000, 16) == b"reserved section"
    mm2.commit(at["r2"] + 0x5000, 0x1000, PAGE_READONLY)
    assert mm2.query(at["r1"] + 0x5000).State == MEM_COMMIT  # shared commit, as on Windows
    # write watch, handles, names
    assert mm2.get_write_watch(at["ww"], 0x10000) == [at["ww"] + 0x2000]
    section, _ = mm2.sections.lookup(at["h"])
    assert mm2.sections.names["shared"] is section and section.views == {at["v1"], at["v2"]}
    # MMIO re-attached by name to the callbacks given to load_snapshot
    assert mm2.read(at["mmio"], 1) == b"\xcd"
    # the image: record, kind, bytes
    image = mm2.images[at["image"]]
    assert image.name == "tiny.dll" and image.layout == mm.images[at["image"]].layout
    assert mm2.query(at["image"]).Type == MEM_IMAGE
    assert snapshot_info(io.BytesIO(_blob(mm)))["images"] == ["tiny.dll"]


def test_guest_code_in_a_loaded_image_runs() -> None:
    mm, at = rich_manager(True)
    mm2 = reload(mm)
    entry = mm2.images[at["image"]].entry_point
    mm2.uc.emu_start(entry, entry + 5)  # up to the ret
    assert mm2.uc.reg_read(X.UC_X86_REG_EAX) == 0x1234


def test_layout_only_snapshot_has_the_map_and_zero_pages() -> None:
    mm, at = rich_manager()
    blob = _blob(mm, contents=False)
    info = snapshot_info(io.BytesIO(blob))
    assert info["contents"] is False and info["content_bytes"] == 0
    assert len(blob) < 8192  # no page contents (the image layout is in the table)
    mm2 = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    load_snapshot(mm2, io.BytesIO(blob), devices={"dev": (lambda o, n: 0, lambda o, n, v: None)})
    assert [r for r in mm2.regions()] == [r for r in mm.regions()]
    assert mm2.read(at["a"] + 0x1000, 13) == bytes(13)


def test_info_reports_the_summary() -> None:
    mm, _ = rich_manager()
    blob = _blob(mm)
    info = snapshot_info(io.BytesIO(blob))
    assert info["format_version"] == F.FORMAT_VERSION and info["arch"] == "x86" and info["mode"] == 64
    assert info["allocations"] == len(mm.space)
    assert info["committed_bytes"] == mm.stats().committed_memory
    assert info["regions"] == sum(len(a.starts) for a in mm.space)
    assert 0 < info["compressed_size"] < info["content_bytes"] <= info["committed_bytes"] + 0x300000
    assert info["file_size"] == len(blob)
    assert info["mmio_devices"] == ["dev"]


def test_paths_non_seekable_streams_and_the_registry(tmp_path: Path) -> None:
    mm, at = rich_manager()
    path = tmp_path / "s.snap"
    size = save_snapshot(mm, path)
    assert path.stat().st_size == size and os.listdir(tmp_path) == ["s.snap"]

    class Pipe(io.RawIOBase):  # read() only: no seek, no size
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            chunk = self.data.read(min(len(b), 1000))
            b[: len(chunk)] = chunk
            return len(chunk)

    mm2 = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    with pytest.raises(SnapshotError, match="dev"):
        load_snapshot(mm2, path)  # nobody knows the device
    register_mmio_device("dev", lambda o, n: 0x5A, lambda o, n, v: None)
    try:
        load_snapshot(mm2, io.BufferedReader(Pipe(path.read_bytes())))
    finally:
        unregister_mmio_device("dev")
    assert mm2.read(at["mmio"], 1) == b"\x5a"
    assert state_json(mm2)["contents"] == state_json(mm)["contents"]


def test_extras_travel_with_the_snapshot(tmp_path: Path) -> None:
    mm, _ = rich_manager()
    path = tmp_path / "x.snap"
    save_snapshot(mm, path, extras={"runner": b'{"teb": 1}', "empty": b""})
    assert snapshot_info(path)["extras"] == {"empty": 0, "runner": 10}
    assert snapshot_extras(path) == {"empty": b"", "runner": b'{"teb": 1}'}
    fresh = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    devices = {"dev": (lambda o, n: 0, lambda o, n, v: None)}
    assert load_snapshot(fresh, path, devices=devices) == {"empty": b"", "runner": b'{"teb": 1}'}
    with pytest.raises(EmulatorMemError):
        save_snapshot(mm, io.BytesIO(), extras={"": b"nameless"})


def test_zlib_when_zstandard_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    mm, at = rich_manager()
    monkeypatch.setattr(F, "zstandard", None)
    blob = _blob(mm)
    assert snapshot_info(io.BytesIO(blob))["codec"] == "zlib"
    mm2 = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    load_snapshot(mm2, io.BytesIO(blob), devices={"dev": (lambda o, n: 0, lambda o, n, v: None)})
    assert state_json(mm2)["contents"] == state_json(mm)["contents"]
    monkeypatch.undo()
    zstd_blob = _blob(mm)
    monkeypatch.setattr(F, "zstandard", None)
    with pytest.raises(SnapshotError, match="zstandard"):
        snapshot_info(io.BytesIO(zstd_blob))


def test_unnamed_mmio_cannot_be_saved() -> None:
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    mm.allocate_mmio(None, 0x1000, lambda o, n: 0, lambda o, n, v: None)
    with pytest.raises(SnapshotError, match="name"):
        save_snapshot(mm, io.BytesIO())


def test_mode_mismatch_is_refused() -> None:
    mm, _ = rich_manager(True)
    other = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_32))
    before = live_state(other)
    with pytest.raises(SnapshotError, match="64-bit"):
        load_snapshot(other, io.BytesIO(_blob(mm)))
    assert live_state(other) == before


# -- hostile input ---------------------------------------------------------------------
def _blob(mm: MemoryManager, **kw: Any) -> bytes:
    out = io.BytesIO()
    save_snapshot(mm, out, **kw)
    return out.getvalue()


def split(blob: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A snapshot as (header, [(tag, payload)...]) without its END record."""
    pos = F.HEADER.size
    records: list[tuple[int, bytes]] = []
    while True:
        tag, n = F.RECORD.unpack_from(blob, pos)
        pos += F.RECORD.size
        if tag == F.TAG_END:
            return blob[: F.HEADER.size], records
        records.append((tag, blob[pos : pos + n]))
        pos += n


def join(header: bytes, records: list[tuple[int, bytes]]) -> bytes:
    """Reassemble with a *valid* checksum: only the validation stands between it and the manager."""
    body = header + b"".join(F.RECORD.pack(t, len(p)) + p for t, p in records) + F.RECORD.pack(F.TAG_END, 32)
    return body + hashlib.sha256(body).digest()


def edit_meta(blob: bytes, edit: Any) -> bytes:
    from emulator_mem.snapshot import LAYOUT_CLASSES

    header, records = split(blob)
    payload = records[0][1]
    meta = F.decode_meta(zstandard.ZstdDecompressor().decompress(payload[8:]), LAYOUT_CLASSES)
    edit(meta)
    raw = F.encode_meta(meta, LAYOUT_CLASSES)
    records[0] = (F.TAG_META, struct.pack("<Q", len(raw)) + zstandard.ZstdCompressor().compress(raw))
    return join(header, records)


def edit_cpu(blob: bytes, is_64bit: bool, edit: Any) -> bytes:
    header, records = split(blob)
    regs = cpu_state.decode(records[-1][1], is_64bit)
    edit(regs)
    records[-1] = (F.TAG_CPU, cpu_state.encode(regs, is_64bit))
    return join(header, records)


def _first_pages(records: list[tuple[int, bytes]]) -> int:
    return next(i for i, (t, _) in enumerate(records) if t == F.TAG_PAGES)


def _move_pages(blob: bytes, phys: int) -> bytes:
    header, records = split(blob)
    i = _first_pages(records)
    _, count = F.PAGES_HEAD.unpack_from(records[i][1])
    records[i] = (F.TAG_PAGES, F.PAGES_HEAD.pack(phys, count) + records[i][1][F.PAGES_HEAD.size :])
    return join(header, records)


def _recount_pages(blob: bytes) -> bytes:
    header, records = split(blob)
    i = _first_pages(records)
    phys, count = F.PAGES_HEAD.unpack_from(records[i][1])
    records[i] = (F.TAG_PAGES, F.PAGES_HEAD.pack(phys, count + 1) + records[i][1][F.PAGES_HEAD.size :])
    return join(header, records)


def _insert_extra(blob: bytes, where: int, copies: int = 1) -> bytes:
    header, records = split(blob)
    for _ in range(copies):
        records.insert(where, (F.TAG_EXTRA, struct.pack("<I", 1) + b"x" + b"data"))
    return join(header, records)


HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "extra record after the pages": lambda b: _insert_extra(b, -1),
    "extra record twice": lambda b: _insert_extra(b, 1, copies=2),
    "overlapping allocations": lambda b: edit_meta(b, lambda m: setattr(m.allocations[1], "base",
                                                                        m.allocations[0].base)),
    "allocation past the user range": lambda b: edit_meta(b, lambda m: setattr(m.allocations[-1], "size",
                                                                               1 << 47)),
    "unaligned allocation": lambda b: edit_meta(b, lambda m: setattr(m.allocations[0], "base",
                                                                     m.allocations[0].base + 0x1000)),
    "non-canonical runs": lambda b: edit_meta(b, lambda m: (m.allocations[0].starts.append(1),
                                                            m.allocations[0].protects.append(
                                                                m.allocations[0].protects[-1]))),
    "invalid protection": lambda b: edit_meta(b, lambda m: m.allocations[0].protects.__setitem__(0, 0x3)),
    "private page outside memory": lambda b: edit_meta(b, lambda m: next(
        a for a in m.allocations if a.private_pages).private_pages.__setitem__(0, (2, 0x1234000))),
    "committed pages without memory": lambda b: edit_meta(b, lambda m: setattr(
        m, "chunks", [c for c in m.chunks if not c.identity])),
    "overlapping chunks": lambda b: edit_meta(b, lambda m: m.chunks.append(F.ChunkRec(m.chunks[-1].phys,
                                                                                      0x10000, False))),
    "view beyond its section": lambda b: edit_meta(b, lambda m: setattr(next(
        a for a in m.allocations if a.owner == F.OWNER_VIEW), "owner_offset", 0x100000)),
    "handle count": lambda b: edit_meta(b, lambda m: setattr(m.sections[0], "handles", 7)),
    "write watch past the end": lambda b: edit_meta(b, lambda m: next(
        a for a in m.allocations if a.write_watch is not None).write_watch.append(1 << 40)),
    "alias without source": lambda b: edit_meta(b, lambda m: setattr(next(
        a for a in m.allocations if a.owner == F.OWNER_ALIAS), "owner_ref", 0x7000_0000)),
    "unknown MMIO device": lambda b: edit_meta(b, lambda m: setattr(m.mmio[0], "name", "nobody")),
    "other geometry": lambda b: edit_meta(b, lambda m: setattr(m.geometry, "window", 1 << 20)),
    "page run outside committed memory": lambda b: _move_pages(b, 0x7000_0000),
    "page run of the wrong size": _recount_pages,
    "register missing": lambda b: edit_cpu(b, True, lambda r: r.pop("RAX")),
    "newer format": lambda b: b[:8] + struct.pack("<H", 2) + b[10:],
    "trailing garbage": lambda b: b + b"\0",
    "empty": lambda b: b"",
    "not a snapshot": lambda b: b"PK\x03\x04" + b[4:],
}


@pytest.fixture(scope="module")
def victim_blob() -> bytes:
    mm, _ = rich_manager(True)
    return _blob(mm)


def victim() -> MemoryManager:
    """A live manager with its own state, different from the snapshot's."""
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    base = mm.allocate(0x20000, PAGE_READWRITE)
    mm.write(base, b"live state")
    mm.allocate_mmio(None, 0x1000, lambda o, n: 1, lambda o, n, v: None, name="dev")
    mm.uc.reg_write(X.UC_X86_REG_RAX, 0xFEED)
    return mm


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_snapshots_change_nothing(name: str, victim_blob: bytes) -> None:
    bad = HOSTILE[name](victim_blob)
    mm = victim()
    before = live_state(mm)
    with pytest.raises(SnapshotError):
        load_snapshot(mm, io.BytesIO(bad))
    assert live_state(mm) == before
    if name != "unknown MMIO device":
        with pytest.raises(SnapshotError):
            snapshot_info(io.BytesIO(bad))


def test_registers_the_cpu_refuses_undo_the_whole_load() -> None:
    """A well-formed file whose CS selector the restored GDT rejects: swapped in, then undone."""
    mm, start, end = make_guest(False)
    blob = edit_cpu(_blob(mm), False, lambda r: r.__setitem__("CS", 0x38))  # beyond the GDT limit
    live, start2, end2 = make_guest(False)
    live.uc.emu_start(start2, end2, count=1000)
    before = live_state(live)
    with pytest.raises(SnapshotError, match="refused"):
        load_snapshot(live, io.BytesIO(blob))
    assert live_state(live) == before
    live.uc.emu_start(ip(live), end2, count=1000)  # and it still runs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_raises_and_changes_nothing(data: st.DataObject, victim_blob: bytes) -> None:
    blob = bytearray(victim_blob)
    how = data.draw(st.sampled_from(["truncate", "flip", "length", "overwrite"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        offset = data.draw(st.integers(0, len(blob) - 1))
        blob[offset] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "length":  # a bogus length in one of the record headers
        _, records = split(bytes(blob))
        offsets, pos = [], F.HEADER.size
        for _, payload in records:
            offsets.append(pos + 4)
            pos += F.RECORD.size + len(payload)
        offset = data.draw(st.sampled_from(offsets))
        value = data.draw(st.one_of(st.integers(0, 1 << 64 - 1), st.integers(0, 0x200000)))
        blob[offset : offset + 8] = struct.pack("<Q", value)
    else:
        offset = data.draw(st.integers(0, len(blob) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=16))
        blob[offset : offset + len(junk)] = junk
    if bytes(blob) == victim_blob:
        return
    mm = victim()
    before = live_state(mm)
    with pytest.raises(SnapshotError):
        load_snapshot(mm, io.BytesIO(bytes(blob)))
    assert live_state(mm) == before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_signed_but_inconsistent_tables_never_crash(data: st.DataObject, victim_blob: bytes) -> None:
    """Random fields of a *correctly checksummed* table: SnapshotError or a clean load, and a
    failed load changes nothing."""
    numbers = st.one_of(st.integers(0, 64), st.integers(0, (1 << 64) - 1),
                        st.sampled_from([0x10000, 0x1000, 0x7FFF_FFFE_0000, 0x8000_0000_0000, 1 << 63]))

    def edit(meta: F.Meta) -> None:
        for _ in range(data.draw(st.integers(1, 3))):
            pool: list[Any] = [meta, meta.geometry, *meta.allocations, *meta.sections, *meta.chunks,
                               *meta.mmio]
            record = data.draw(st.sampled_from(pool))
            fields = [f.name for f in dataclasses.fields(record) if type(getattr(record, f.name)) is int]
            lists = {"free_pages": 1, "views": 1, "write_watch": 1, "private_pages": 2, "alias_free": 2,
                     "starts": 0}
            fields += [name for name in lists if getattr(record, name, None) is not None]
            name = data.draw(st.sampled_from(fields))
            value = getattr(record, name)
            if name == "starts":
                record.starts.append(data.draw(numbers))
                record.protects.append(data.draw(numbers))
            elif isinstance(value, list):
                item = tuple(data.draw(numbers) for _ in range(lists[name]))
                value.append(item[0] if len(item) == 1 else item)
            else:
                setattr(record, name, data.draw(st.one_of(numbers, st.just(value + 0x1000))))

    try:
        bad = edit_meta(victim_blob, edit)
    except struct.error:  # the drawn value does not fit the field's encoding: no such file
        assume(False)
    mm = victim()
    before = live_state(mm)
    try:
        load_snapshot(mm, io.BytesIO(bad))
    except SnapshotError:
        assert live_state(mm) == before


def test_alias_outliving_its_source_round_trips() -> None:
    """An alias whose source was released holds the pages (as a view of the section that
    took them over, at the alias's page offset, not 64 KiB aligned)."""
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    src = mm.allocate(0x3000, PAGE_READWRITE)
    mm.write(src + 0x1000, b"kept alive")
    alias = mm.map_alias(src + 0x1000, 0x1000, PAGE_READWRITE)
    mm.release(src)
    mm2 = reload(mm)
    assert mm2.read(alias, 10) == b"kept alive"
    mm2.unmap_view(alias)
    assert mm2.query(alias).State == MEM_FREE


@pytest.mark.parametrize("is_64bit", [False, True])
def test_a_snapshot_carved_into_1_gib_windows_loads_and_keeps_working(is_64bit: bool) -> None:
    """Earlier versions carved the identity area into 1 GiB host windows; such a file loads
    into today's manager (bigger windows), the manager adopts the file's carving, and
    commits after the load land in the right window with the file's bytes intact."""
    old = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32))
    old.phys.window = 1 << 30  # what an earlier version built, before anything is mapped
    a = old.allocate(0x10000, PAGE_READWRITE)
    b = old.allocate(0x10000, PAGE_READWRITE, address=0x4000_0000 + 0x10000)  # the 2nd window
    old.write(a, b"first window")
    old.write(b, b"second window")
    blob = _blob(old)
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32))
    assert mm.phys.window != 1 << 30
    load_snapshot(mm, io.BytesIO(blob))
    assert mm.phys.window == 1 << 30
    assert mm.read(a, 12) == b"first window" and mm.read(b, 13) == b"second window"
    c = mm.allocate(0x10000, PAGE_READWRITE, address=0x6000_0000)  # a window the file lacks
    mm.write(c, b"new")
    assert mm.read(c, 3) == b"new" and mm.read(b, 13) == b"second window"
    assert state_json(mm) != state_json(old)  # c is new; everything else as saved:
    mm.release(c)
    assert state_json(mm) == state_json(old)


def test_swap_pages_exchanges_bytes_and_ownership_without_copying() -> None:
    """The load path's mremap swap (emulator_mem.mmu.hostpages): each Chunk object keeps its
    own bytes, at the other's address; swapping again restores both; foreign (caller-owned)
    buffers and unequal sizes are refused, unchanged."""
    import ctypes

    from emulator_mem.mmu.hostpages import swap_pages
    from emulator_mem.mmu.physmem import Chunk, _host_buffer, foreign_buffer

    size = 1 << 30  # a sparse gigabyte: only the touched pages move
    a = Chunk(0, size, *_host_buffer(size))
    b = Chunk(0, size, *_host_buffer(size))
    ctypes.memmove(a.host + 0x5000, b"old bytes", 9)
    ctypes.memmove(b.host + size - 0x1000, b"new bytes", 9)
    a_host, b_host = a.host, b.host
    assert swap_pages(a, b)
    assert (a.host, b.host) == (b_host, a_host)  # b's bytes now live at a's old address
    assert ctypes.string_at(b.host + size - 0x1000, 9) == b"new bytes"
    assert ctypes.string_at(a.host + 0x5000, 9) == b"old bytes"
    assert ctypes.string_at(b.host + 0x5000, 9) == bytes(9)
    assert swap_pages(a, b) and (a.host, b.host) == (a_host, b_host)
    assert ctypes.string_at(a.host + 0x5000, 9) == b"old bytes"
    small = Chunk(0, 0x10000, *_host_buffer(0x10000))
    assert not swap_pages(a, small)
    foreign = Chunk(0, size, foreign_buffer(b.host, size), b.host)
    assert not swap_pages(a, foreign)
    assert ctypes.string_at(a.host + 0x5000, 9) == b"old bytes"
    for chunk in (a, b, small):
        chunk.buffer.close()
