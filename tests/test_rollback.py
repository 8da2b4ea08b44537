"""Checkpoints and rollback (``mm.checkpoint()`` / ``mm.rollback(cp)``).

After a rollback everything observable is as it was at the checkpoint: page contents, the
VirtualQuery walk, Unicorn's regions, statistics, handles and names, write-watch sets,
MMIO mappings, registers — and guest code sees the original bytes and faults where the
checkpoint's layout says. Expected values are winnt.h / ntstatus.h literals.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

from emulator_mem import MemoryManager
from emulator_mem.errors import SnapshotError
from emulator_mem.pe.writer import SCN_CODE, SCN_DATA, PEWriter
from emulator_mem.snapshot import cpu_state, load_snapshot, save_snapshot

PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE_READWRITE = 0x40
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
STATUS_ACCESS_VIOLATION = 0xC0000005
SEC_RESERVE = 0x4000000


def full_state(mm: MemoryManager) -> tuple[Any, ...]:
    contents = {}
    regions = list(mm.regions())
    for r in regions:
        kind = mm.region_kind(r.BaseAddress)
        if r.State == MEM_COMMIT and (kind is None or kind.name != "MMIO"):
            contents[r.BaseAddress] = mm.read(r.BaseAddress, r.RegionSize)
    return (
        regions, contents, cpu_state.capture(mm.uc, mm.is_64bit), mm.stats(), list(mm.uc.mem_regions()),
        {h: (id(s), access) for h, (s, access) in mm.sections.handles.items()},
        {n: id(s) for n, s in mm.sections.names.items()},
        {a.base: None if a.write_watch is None else set(a.write_watch) for a in mm.space},
        sorted(mm.images), mm.default_allocation_address,
    )


def make_image(is_64bit: bool) -> bytes:
    w = PEWriter(is_64bit=is_64bit)
    text = w.add_section(".text", SCN_CODE, size=0x100)
    data = w.add_section(".data", SCN_DATA, size=0x1000)
    text.data = b"\xb8\x34\x12\x00\x00\xc3"
    data.data = b"image data"
    w.entry_point = text.rva
    return bytes(w.build())


class World:
    """A manager with one of everything, plus a tiny guest routine at ``code``."""

    def __init__(self, is_64bit: bool) -> None:
        self.mm = mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32))
        self.is_64bit = is_64bit
        self.data = mm.allocate(0x40000, PAGE_READWRITE)
        mm.write(self.data, b"original data")
        mm.write(self.data + 0x3000, b"page three")
        self.ww = mm.allocate(0x10000, PAGE_READWRITE, write_watch=True)
        mm.write(self.ww + 0x1000, b"w")
        self.handle, _ = mm.sections.create(0x20000, PAGE_READWRITE, name="shared")
        self.view, _ = mm.sections.map_view(self.handle, PAGE_READWRITE)
        mm.write(self.view, b"section bytes")
        self.floating, _ = mm.sections.create(0x10000, PAGE_READWRITE, name="floating")
        base, _ = mm.sections.map_view(self.floating, PAGE_READWRITE)
        mm.write(base, b"floating bytes")
        mm.sections.unmap_view(base)  # only the handle keeps it alive now
        self.reads: list[int] = []
        self.mmio = mm.allocate_mmio(None, 0x1000, self._read, lambda o, n, v: None, name="dev")
        self.image = mm.map_image(make_image(is_64bit), name="tiny.dll")
        self.alias = mm.map_alias(self.data, 0x2000, PAGE_READONLY)
        reserved, _ = mm.sections.create(0x20000, PAGE_READWRITE, SEC_RESERVE, name="reserved")
        self.reserved, _ = mm.sections.map_view(reserved, PAGE_READWRITE)
        self.reserved2, _ = mm.sections.map_view(reserved, PAGE_READWRITE)
        # load eax from [ebx], store 1 to [ecx], then rewritable function at code+0x800
        ks = Ks(KS_ARCH_X86, KS_MODE_64 if is_64bit else KS_MODE_32)
        r = "r" if is_64bit else "e"
        self.code = mm.allocate(0x1000, PAGE_EXECUTE_READWRITE)
        load = bytes(ks.asm(f"mov eax, dword ptr [{r}bx]; nop", self.code)[0])
        store = bytes(ks.asm(f"mov dword ptr [{r}cx], 1; nop", self.code + 0x100)[0])
        mm.write(self.code, load)
        mm.write(self.code + 0x100, store)
        mm.write(self.code + 0x800, b"\xb8\x01\x00\x00\x00\x90")  # mov eax, 1; nop
        self.uc = mm.uc
        self.uc.reg_write(X.UC_X86_REG_EDX, 0x600D)

    def _read(self, offset: int, size: int) -> int:
        self.reads.append(offset)
        return 0x77

    def reg(self, name: str) -> int:
        return int(self.uc.reg_read(getattr(X, f"UC_X86_REG_{name}")))

    def guest_load(self, address: int) -> int:
        self.uc.reg_write(X.UC_X86_REG_RBX if self.is_64bit else X.UC_X86_REG_EBX, address)
        self.uc.emu_start(self.code, self.code + 2 + (1 if self.is_64bit else 0))
        return self.reg("EAX")

    def guest_store(self, address: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RCX if self.is_64bit else X.UC_X86_REG_ECX, address)
        self.uc.emu_start(self.code + 0x100, self.code + 0x106 + (1 if self.is_64bit else 0))

    def call_function(self) -> int:
        self.uc.emu_start(self.code + 0x800, self.code + 0x805)
        return self.reg("EAX")

    def scribble(self, round_: int) -> None:
        """Change a bit of everything the checkpoint covers."""
        mm = self.mm
        mm.write(self.data + 0x10, f"round {round_}".encode())
        self.guest_store(self.data + 0x3000)
        self.guest_store(self.ww + 0x5000)
        mm.write(self.view + 0x1000, b"view written")
        fresh = mm.allocate(0x30000, PAGE_READWRITE)
        mm.write(fresh, b"new allocation")
        mm.protect(self.data + 0x1000, 0x1000, PAGE_NOACCESS)
        mm.decommit(self.data + 0x20000, 0x10000)
        if round_ % 2:
            mm.release(self.alias)
            mm.release(self.data)
        else:
            mm.commit(self.data + 0x30000, 0x1000, PAGE_READONLY)
        mm.release(fresh + 0x1000, 0x1000)  # a partial release: fresh splits in two
        mm.commit(self.reserved + 0x4000, 0x2000, PAGE_READWRITE)  # both views see it
        mm.write(self.reserved2 + 0x4000, b"reserved")
        cow, _ = mm.sections.map_view(self.handle, PAGE_WRITECOPY)
        mm.write(cow + 0x2000, b"private copy")
        mm.sections.unmap_view(self.view)
        mm.sections.close(self.handle)  # the section dies with its last view and handle
        mm.sections.close(self.floating)
        mm.sections.create(0x10000, PAGE_READWRITE, name="later")
        mm.release(self.mmio)
        mm.allocate_mmio(None, 0x2000, lambda o, n: 0, lambda o, n, v: None, name="later")
        mm.map_alias(fresh, 0x1000, PAGE_READONLY)
        mm.unmap_view(self.image)
        mm.map_image(make_image(self.is_64bit), name="other.dll")
        mm.default_allocation_address = 0x500000
        mm.reset_write_watch(self.ww, 0x10000)
        self.uc.reg_write(X.UC_X86_REG_EDX, round_)
        mm.write(self.code + 0x800, b"\xb8\x02\x00\x00\x00\x90")  # the function now returns 2
        assert self.call_function() == 2


@pytest.fixture(params=[False, True], ids=["x86", "x64"])
def world(request: pytest.FixtureRequest) -> World:
    return World(bool(request.param))


def test_rollback_restores_everything_repeatedly(world: World) -> None:
    mm = world.mm
    assert world.call_function() == 1
    cp = mm.checkpoint()
    before = full_state(mm)
    for round_ in range(4):
        world.scribble(round_)
        mm.rollback(cp)
        assert full_state(mm) == before
        assert world.call_function() == 1  # the translated code of round_'s version is gone
        assert world.reg("EDX") == 0x600D
        # the alias is back, so is its link to the source: releasing the source hands the
        # pages over to it instead of zeroing them under it
        seen = mm.read(world.alias, 0x2000)
        assert seen != bytes(0x2000)
        mm.release(world.data)
        assert mm.read(world.alias, 0x2000) == seen
        mm.rollback(cp)
        assert full_state(mm) == before
    floating, _ = mm.sections.map_view(world.floating, PAGE_READWRITE)  # destroyed, then brought back
    assert mm.read(floating, 14) == b"floating bytes"


def test_guest_sees_the_original_bytes_and_faults_where_the_checkpoint_says(world: World) -> None:
    mm = world.mm
    cp = mm.checkpoint()
    mm.write(world.data, b"XXXX")
    later = mm.allocate(0x10000, PAGE_READWRITE)
    world.guest_store(later)  # fine now
    mm.protect(world.data + 0x3000, 0x1000, PAGE_READONLY)
    mm.rollback(cp)
    assert world.guest_load(world.data).to_bytes(4, "little") == b"orig"
    world.guest_store(world.data + 0x3000)  # writable again
    with pytest.raises(UcError):
        world.guest_store(later)  # that allocation never happened
    fault = mm.take_fault()
    assert fault is not None and fault.status == STATUS_ACCESS_VIOLATION and fault.address == later
    assert world.guest_load(world.mmio) == 0x77  # MMIO still dispatches to its callbacks


def test_cost_follows_the_dirtied_pages(world: World) -> None:
    mm = world.mm
    big = mm.allocate(0x400000, PAGE_READWRITE)  # 1024 pages, all with contents
    mm.write(big, b"\xa5" * 0x400000)
    cp = mm.checkpoint()
    for _ in range(3):
        for page in range(0, 40, 4):
            world.guest_store(big + page * 0x1000)
        assert len(cp.log.pages) == 10  # ten first writes seen, nothing else copied
        layout = mm.layout_version
        mm.rollback(cp)
        assert mm.layout_version == layout  # no layout change: bookkeeping left alone
        assert mm.read(big, 0x28000) == b"\xa5" * 0x28000
    assert sum(1 for ppn in cp.saved if big >> 12 <= ppn < (big + 0x400000) >> 12) == 10


def test_write_watch_changes_alone_are_undone(world: World) -> None:
    mm = world.mm
    cp = mm.checkpoint()
    world.guest_store(world.ww + 0x7000)
    assert mm.get_write_watch(world.ww, 0x10000) == [world.ww + 0x1000, world.ww + 0x7000]
    mm.rollback(cp)
    assert mm.get_write_watch(world.ww, 0x10000, reset=True) == [world.ww + 0x1000]
    mm.rollback(cp)
    assert mm.get_write_watch(world.ww, 0x10000) == [world.ww + 0x1000]
    world.guest_store(world.ww + 0x1000)  # the watch sees writes again after a rollback
    world.guest_store(world.ww + 0x2000)
    assert mm.get_write_watch(world.ww, 0x10000) == [world.ww + 0x1000, world.ww + 0x2000]


def test_a_newer_checkpoint_replaces_the_older(world: World) -> None:
    mm = world.mm
    hooks = list(mm.on_release)
    old = mm.checkpoint()
    mm.write(world.data, b"between")
    new = mm.checkpoint()
    assert len(mm.phys.logs) == 1
    mm.write(world.data, b"after!!")
    with pytest.raises(SnapshotError):
        mm.rollback(old)
    mm.rollback(new)
    assert mm.read(world.data, 7) == b"between"
    new.discard()
    assert mm.phys.logs == [] and mm.on_release == hooks
    with pytest.raises(SnapshotError):
        mm.rollback(new)


def test_loading_a_snapshot_discards_the_checkpoint(world: World) -> None:
    mm = world.mm
    blob = io.BytesIO()
    save_snapshot(mm, blob)
    cp = mm.checkpoint()
    load_snapshot(mm, io.BytesIO(blob.getvalue()))
    assert mm.phys.logs == []
    with pytest.raises(SnapshotError):
        mm.rollback(cp)


def test_another_managers_checkpoint_is_refused(world: World) -> None:
    other = World(world.is_64bit)
    with pytest.raises(SnapshotError):
        world.mm.rollback(other.mm.checkpoint())


def test_code_first_run_after_the_checkpoint_comes_back_too(world: World) -> None:
    """Translated code of a page that first executed after the checkpoint must not survive."""
    mm = world.mm
    cp = mm.checkpoint()
    assert world.call_function() == 1  # translated now, after the checkpoint
    mm.write(world.code + 0x800, b"\xb8\x02\x00\x00\x00\x90")
    assert world.call_function() == 2
    mm.allocate(0x10000, PAGE_READWRITE)  # a layout change: the slow path
    mm.rollback(cp)
    assert world.call_function() == 1
    mm.write(world.code + 0x800, b"\xb8\x03\x00\x00\x00\x90")
    assert world.call_function() == 3
    mm.rollback(cp)  # the fast path
    assert world.call_function() == 1


def test_code_the_guest_rewrote_is_rolled_back(world: World) -> None:
    mm = world.mm
    mm.write(world.code + 0x800, b"\xb8\x07\x00\x00\x00\x90")  # mov eax, 7
    assert world.call_function() == 7
    cp = mm.checkpoint()
    for _ in range(2):
        world.guest_store(world.code + 0x801)  # self-modifying: the immediate becomes 1
        assert world.call_function() == 1
        mm.rollback(cp)
        assert world.call_function() == 7


PAGE_GUARD = 0x100
STATUS_GUARD_PAGE_VIOLATION = 0x80000001


def writecopy_page(mm: MemoryManager, image: int) -> int:
    return next(r.BaseAddress for r in mm.regions()
                if r.AllocationBase == image and r.Protect == PAGE_WRITECOPY)


def change_pages_only(world: World, guard: int) -> None:
    """Protection and commit changes that neither add nor remove an allocation: a guard page
    the guest fires, re-protection, decommit, commit, a SEC_RESERVE commit seen by two views,
    an image page's copy-on-write."""
    mm = world.mm
    with pytest.raises(UcError):
        world.guest_load(guard)
    fault = mm.take_fault()
    assert fault is not None and fault.status == STATUS_GUARD_PAGE_VIOLATION
    mm.protect(world.data + 0x1000, 0x1000, PAGE_NOACCESS)
    mm.decommit(world.data + 0x20000, 0x10000)
    mm.commit(world.data + 0x30000, 0x1000, PAGE_READONLY)
    mm.commit(world.reserved + 0x4000, 0x2000, PAGE_READWRITE)
    cow = writecopy_page(mm, world.image)
    world.guest_store(cow)
    assert mm.query(cow).Protect == PAGE_READWRITE
    world.guest_store(world.data + 0x3000)


def test_page_changes_alone_are_undone_in_place(world: World) -> None:
    """Without an allocation coming or going, rollback puts page runs back into the same
    allocation objects (time in the allocations changed, not in all of them); a layout
    rollback in between rebuilds them, and the in-place path then works on the rebuilt ones."""
    mm = world.mm
    guard = mm.allocate(0x2000, PAGE_READWRITE | PAGE_GUARD)
    cp = mm.checkpoint()
    before = full_state(mm)
    for round_ in range(3):
        objects = [id(a) for a in mm.space]
        change_pages_only(world, guard)
        assert full_state(mm) != before
        mm.rollback(cp)
        assert full_state(mm) == before
        assert [id(a) for a in mm.space] == objects  # undone in place, not rebuilt
        assert mm.query(guard).Protect == PAGE_READWRITE | PAGE_GUARD  # fires again next round
        cow = writecopy_page(mm, world.image)
        mm.protect(cow, 0x1000, PAGE_WRITECOPY)  # not copied any more: stays copy-on-write
        assert mm.query(cow).Protect == PAGE_WRITECOPY
        if round_ == 1:
            world.scribble(round_)  # allocations come and go: the rebuilding path
            mm.rollback(cp)
            assert full_state(mm) == before
            assert [id(a) for a in mm.space] != objects
    # the SEC_RESERVE section's own commit record came back too: a new view sees it reserved
    handle = next(h for h, (s, _) in mm.sections.handles.items() if s.name == "reserved")
    view, _ = mm.sections.map_view(handle, PAGE_READWRITE)
    assert mm.query(view + 0x4000).State == MEM_RESERVE


def test_rights_granted_after_the_checkpoint_are_gone_after_an_in_place_rollback(world: World) -> None:
    """A page NOACCESS at the checkpoint, made readable and read by the guest: the rollback
    must drop that translation (and keep serving the untouched allocations)."""
    mm = world.mm
    locked = mm.allocate(0x2000, PAGE_NOACCESS)
    cp = mm.checkpoint()
    for _ in range(2):
        assert world.guest_load(world.data).to_bytes(4, "little") == b"orig"
        mm.protect(locked, 0x1000, PAGE_READONLY)  # rights grow: no flush is needed for that
        assert world.guest_load(locked) == 0
        objects = [id(a) for a in mm.space]
        mm.rollback(cp)
        assert [id(a) for a in mm.space] == objects  # the in-place path
        with pytest.raises(UcError):
            world.guest_load(locked)
        fault = mm.take_fault()
        assert fault is not None and fault.status == STATUS_ACCESS_VIOLATION and fault.address == locked
        assert world.guest_load(world.data).to_bytes(4, "little") == b"orig"
