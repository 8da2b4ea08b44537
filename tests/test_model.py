"""Stateful model check of MemoryManager against a page-array reference model.

A hypothesis ``RuleBasedStateMachine`` drives the Pythonic API (allocate / commit / decommit /
release — whole or partial — / protect, host reads and writes, guest accesses) with random valid
*and* invalid calls
inside a small window of 32 allocation granules, so collisions are frequent. The reference
model is deliberately naive: a dict ``page -> (allocation base, protection)`` (0 meaning
reserved) plus the bytes written so far. After every step:

* the full VirtualQuery walk (``mm.regions()``, free regions included) equals the regions the
  model derives, field for field; random ``mm.query`` points agree too;
* ``mm.stats()`` and ``mm.reserved_regions()`` agree with the model;
* a few sampled pages are probed by guest code (keystone-assembled read / write / execute
  probes in a dedicated code allocation, run with ``mm.uc.emu_start``): the access faults
  exactly where the model says, ``mm.take_fault()`` carries STATUS_ACCESS_VIOLATION
  (0xC0000005) or STATUS_GUARD_PAGE_VIOLATION (0x80000001, one-shot: the model drops the
  guard), the exact address and the access code (0 read, 1 write, 8 execute); reads return
  the model's bytes, writes land; a fall-through probe runs straight-line code off the end of
  a page into the next one (the instructions retire, then the fetch faults on the boundary);
* a sampled committed page reads back (``mm.read``) as the model says: host writes, guest
  writes, and zeroes after decommit/release.

Every invalid call must raise a subclass of ``EmulatorMemError`` and leave the whole query
walk, the stats and ``layout_version`` unchanged. Expected values are Windows literals.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn.x86_const import (
    UC_X86_REG_AL,
    UC_X86_REG_EBX,
    UC_X86_REG_ECX,
    UC_X86_REG_EIP,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RIP,
)

from emulator_mem import MemoryManager
from emulator_mem.errors import EmulatorMemError, MemoryAccessError

# --- Windows literals (winnt.h / ntstatus.h) ------------------------------------------------
PAGE = 0x1000
GRANULE = 0x10000
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_FREE = 0x10000
MEM_PRIVATE = 0x20000
PAGE_NOACCESS = 0x01
PAGE_GUARD = 0x100
STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
READ, WRITE, EXECUTE = 0, 1, 8  # EXCEPTION_RECORD.ExceptionInformation[0]

R, W, X = 1, 2, 4
#: what the CPU may do on a committed page (x86: PAGE_EXECUTE pages are readable)
BASE_RIGHTS = {0x01: 0, 0x02: R, 0x04: R | W, 0x10: R | X, 0x20: R | X, 0x40: R | W | X}
NEEDED = {READ: R, WRITE: W, EXECUTE: X}

VALID_PROTECTS = [0x01, 0x02, 0x04, 0x10, 0x20, 0x40, 0x102, 0x104, 0x110, 0x120, 0x140]
#: 0 / two base values / WRITECOPY on private memory / GUARD alone / NOACCESS|GUARD /
#: NOCACHE|GUARD — all refused by VirtualAlloc and VirtualProtect
INVALID_PROTECTS = [0x00, 0x03, 0x06, 0x08, 0x80, 0x100, 0x101, 0x304]

# --- the window the machine plays in ----------------------------------------------------------
WINDOW = 0x1000_0000
GRANULES = 32
WINDOW_END = WINDOW + GRANULES * GRANULE
WINDOW_PAGES = GRANULES * GRANULE // PAGE
CODE = 0x0100_0000  # probe code, PAGE_EXECUTE_READ, outside the window
CODE_SIZE = GRANULE
READ_PROBE, WRITE_PROBE, EXEC_PROBE = CODE, CODE + 0x10, CODE + 0x20
#: never reached: a UC_HOOK_CODE over the window stops the execute probe before the first
#: instruction at the target (random data) runs. The probe deliberately avoids ``count=1`` and
#: ``until=target``: those make Unicorn look pages up again through the TLB-fill hook, which
#: test_host_view.py / test_guard_pages.py check on their own.
EXEC_UNTIL = CODE + 0x800

USER_END = {32: 0x7FFF0000, 64: 0x7FFFFFFF0000}

STEPS = {32: 0, 64: 0}  # steps actually run, per bitness (the budget check reads it)


def page_down(a: int) -> int:
    return a & ~(PAGE - 1)


def page_up(a: int) -> int:
    return (a + PAGE - 1) & ~(PAGE - 1)


def protect_is_valid(p: int) -> bool:
    return p in VALID_PROTECTS


def as_tuple(mbi: object) -> tuple[int, ...]:
    return tuple(
        getattr(mbi, f)
        for f in ("BaseAddress", "AllocationBase", "AllocationProtect", "RegionSize", "State",
                  "Protect", "Type")
    )


# --- probes -------------------------------------------------------------------------------
_PROBES: dict[int, tuple[bytes, bytes, bytes, bytes]] = {}
NOPS = b"\x90" * 16  # the fall-through probe: straight-line code up to a page boundary


def probes(bits: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(read, write, execute, ``jmp ecx/rcx``) probe bytes, assembled once per bitness."""
    if bits not in _PROBES:
        ks = Ks(KS_ARCH_X86, KS_MODE_64 if bits == 64 else KS_MODE_32)
        reg = "rbx" if bits == 64 else "ebx"
        out = []
        back = "rcx" if bits == 64 else "ecx"
        for src in (f"mov al, byte ptr [{reg}]", f"mov byte ptr [{reg}], cl", f"jmp {reg}",
                    f"jmp {back}"):
            enc, _ = ks.asm(src)
            out.append(bytes(enc))
        _PROBES[bits] = (out[0], out[1], out[2], out[3])
    return _PROBES[bits]


# --- the reference model --------------------------------------------------------------------
class Model:
    """Pages of a Windows address space, one dict entry per page; nothing clever."""

    def __init__(self, highest: int) -> None:
        self.highest = highest
        self.allocs: dict[int, tuple[int, int]] = {}  # base -> (size, allocation protect)
        self.pages: dict[int, tuple[int, int]] = {}  # page -> (allocation base, protect or 0)
        self.content: dict[int, bytearray] = {}  # page -> bytes (only pages ever written)

    # queries
    def alloc_of(self, address: int) -> int | None:
        entry = self.pages.get(page_down(address))
        return None if entry is None else entry[0]

    def protect_of(self, page: int) -> int | None:
        entry = self.pages.get(page)
        return None if entry is None else entry[1]

    def is_free(self, start: int, end: int) -> bool:
        return all(p not in self.pages for p in range(start, end, PAGE))

    def committed(self, page: int) -> bool:
        entry = self.pages.get(page)
        return entry is not None and entry[1] != 0

    def one_allocation(self, address: int, size: int) -> tuple[int, int, int] | None:
        """(base, first page, end) when [address, address+size) pages lie in one allocation."""
        if size <= 0:
            return None
        start, end = page_down(address), page_up(address + size)
        base = self.alloc_of(start)
        if base is None:
            return None
        if any(self.alloc_of(p) != base for p in range(start, end, PAGE)):
            return None
        return base, start, end

    def regions(self) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        pos = 0
        for base in sorted(self.allocs):
            size, aprot = self.allocs[base]
            if base > pos:
                out.append((pos, 0, 0, base - pos, MEM_FREE, PAGE_NOACCESS, 0))
            run_start, run_prot = base, self.pages[base][1]
            for p in range(base + PAGE, base + size + PAGE, PAGE):
                prot = self.pages[p][1] if p < base + size else None
                if prot != run_prot:
                    state = MEM_COMMIT if run_prot else MEM_RESERVE
                    out.append((run_start, base, aprot, p - run_start, state, run_prot,
                                MEM_PRIVATE))
                    run_start, run_prot = p, prot
            pos = base + size
        if pos < self.highest:
            out.append((pos, 0, 0, self.highest - pos, MEM_FREE, PAGE_NOACCESS, 0))
        return out

    def region(self, address: int) -> tuple[int, ...]:
        """The whole region (run or free gap) holding ``address``."""
        for r in self.regions():
            if r[0] <= address < r[0] + r[3]:
                return r
        raise AssertionError("address outside the model")

    def query(self, address: int) -> tuple[int, ...]:
        """VirtualQuery: the page holding ``address`` up to the end of its region (Windows,
        Wine's ``base = ROUND_ADDR(addr, page_mask)``)."""
        r = self.region(address)
        start = page_down(address)
        return (start, *r[1:3], r[0] + r[3] - start, *r[4:])

    def stats(self) -> tuple[int, int, int]:
        reserved = sum(size for size, _ in self.allocs.values())
        committed = sum(PAGE for _, p in self.pages.values() if p)
        return reserved, committed, len(self.allocs)

    def byte(self, address: int) -> int:
        page = self.content.get(page_down(address))
        return 0 if page is None else page[address - page_down(address)]

    def page_bytes(self, page: int) -> bytes:
        data = self.content.get(page)
        return bytes(PAGE) if data is None else bytes(data)

    def expected_bytes(self, address: int, size: int) -> bytes:
        out = bytearray()
        for page in range(page_down(address), page_up(address + size), PAGE):
            out += self.page_bytes(page)
        skip = address - page_down(address)
        return bytes(out[skip : skip + size])

    def first_uncommitted(self, address: int, size: int) -> int | None:
        """First byte of [address, address+size) that is not committed (None: all are)."""
        if size <= 0:
            return None
        for page in range(page_down(address), page_up(address + size), PAGE):
            if not self.committed(page):
                return max(page, address)
        return None

    # changes
    def add(self, base: int, size: int, aprot: int, reserve_only: bool) -> None:
        self.allocs[base] = (size, aprot)
        for p in range(base, base + size, PAGE):
            self.pages[p] = (base, 0 if reserve_only else aprot)

    def set_pages(self, start: int, end: int, protect: int) -> None:
        for p in range(start, end, PAGE):
            base, old = self.pages[p]
            if not protect or not old:
                self.content.pop(p, None)  # (de)committed pages start zeroed
            self.pages[p] = (base, protect)

    def remove(self, base: int) -> None:
        size, _ = self.allocs.pop(base)
        for p in range(base, base + size, PAGE):
            del self.pages[p]
            self.content.pop(p, None)

    def remove_pages(self, base: int, start: int, end: int) -> None:
        """Partial MEM_RELEASE: drop [start, end); what is left on each side of the hole
        becomes an allocation of its own, based at its first page."""
        size, aprot = self.allocs.pop(base)
        for p in range(start, end, PAGE):
            del self.pages[p]
            self.content.pop(p, None)
        if start > base:
            self.allocs[base] = (start - base, aprot)
        if end < base + size:
            self.allocs[end] = (base + size - end, aprot)
            for p in range(end, base + size, PAGE):
                self.pages[p] = (end, self.pages[p][1])

    def store(self, address: int, data: bytes) -> None:
        for i, b in enumerate(data):
            page = page_down(address + i)
            buf = self.content.setdefault(page, bytearray(PAGE))
            buf[address + i - page] = b

    def access(self, address: int, kind: int) -> int | None:
        """Status a guest access raises (None: it succeeds); drops a touched guard."""
        page = page_down(address)
        entry = self.pages.get(page)
        if entry is None or not entry[1]:
            return STATUS_ACCESS_VIOLATION
        base, prot = entry
        if prot & PAGE_GUARD:
            self.pages[page] = (base, prot & ~PAGE_GUARD)
            return STATUS_GUARD_PAGE_VIOLATION
        if not BASE_RIGHTS[prot & 0xFF] & NEEDED[kind]:
            return STATUS_ACCESS_VIOLATION
        return None


# --- strategies -----------------------------------------------------------------------------
sizes = st.one_of(
    st.integers(1, 20).map(lambda n: n * PAGE),
    st.integers(1, 3 * GRANULE),
    st.sampled_from([0, -PAGE, GRANULE, 2 * GRANULE, 5 * GRANULE]),
)
small_sizes = st.one_of(
    st.integers(1, 6).map(lambda n: n * PAGE),
    st.integers(1, 5 * PAGE),
    st.sampled_from([0, -1, GRANULE, 17 * PAGE]),
)
protects = st.one_of(st.sampled_from(VALID_PROTECTS), st.sampled_from(INVALID_PROTECTS))
granules = st.integers(-1, GRANULES)  # -1 and GRANULES: just outside the window
pages = st.one_of(
    st.integers(-16, WINDOW_PAGES + 16),
    st.integers(0, GRANULES - 1).map(lambda g: g * 16),  # allocation bases, often
)
offsets = st.one_of(st.just(0), st.integers(1, PAGE - 1))
#: (pick, page, offset): pick >= 0 aims at the pick-th allocation of the window (page counted
#: from its base, sometimes past its end); pick < 0 (or a page past 20) at a random page of the
#: window
picks = st.integers(-6, 40)
targets = st.tuples(
    picks,
    st.one_of(st.integers(0, 20), pages),
    offsets,
)
kinds = st.sampled_from([READ, WRITE, EXECUTE])


class ManagerMachine(RuleBasedStateMachine):
    BITS = 32

    def __init__(self) -> None:
        super().__init__()
        self.bits = self.BITS
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64 if self.bits == 64 else UC_MODE_32)
        self.mm = MemoryManager(self.uc)
        self.model = Model(USER_END[self.bits])
        assert self.mm.allocate(CODE_SIZE, 0x20, address=CODE) == CODE
        self.model.add(CODE, CODE_SIZE, 0x20, False)
        read, write, execute, self.jump_back = probes(self.bits)
        self.mm.write(READ_PROBE, read)
        self.mm.write(WRITE_PROBE, write)
        self.mm.write(EXEC_PROBE, execute)
        self.model.store(READ_PROBE, read)
        self.model.store(WRITE_PROBE, write)
        self.model.store(EXEC_PROBE, execute)
        self.probe_len = {READ: len(read), WRITE: len(write)}
        if self.bits == 64:
            self.reg_addr, self.reg_val = UC_X86_REG_RBX, UC_X86_REG_RCX
            self.reg_pc = UC_X86_REG_RIP
        else:
            self.reg_addr, self.reg_val = UC_X86_REG_EBX, UC_X86_REG_ECX
            self.reg_pc = UC_X86_REG_EIP
        self.rng = random.Random(0)
        self.stop_at: int | None = None
        self.uc.hook_add(UC_HOOK_CODE, self._stop_in_window, begin=WINDOW - GRANULE,
                         end=WINDOW_END + GRANULE)

    def _stop_in_window(self, uc: Uc, address: int, size: int, _data: object) -> None:
        if address == self.stop_at:
            uc.emu_stop()  # the execute probe reached its target: stop before it runs

    @initialize(seed=st.integers(0, 2**32))
    def seed(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- helpers ----------------------------------------------------------------------------
    def snapshot(self) -> tuple[object, ...]:
        mm = self.mm
        return (tuple(as_tuple(r) for r in mm.regions()), mm.layout_version, mm.stats(),
                tuple(mm.reserved_regions()))

    def refused(self, call, *args, **kwargs) -> EmulatorMemError:  # type: ignore[no-untyped-def]
        """The call must raise an EmulatorMemError and change nothing."""
        before = self.snapshot()
        with pytest.raises(EmulatorMemError) as info:
            call(*args, **kwargs)
        assert self.snapshot() == before, f"failed {call.__name__}{args} changed the state"
        return info.value

    def changed(self, before_regions: list[tuple[int, ...]], before_version: int) -> None:
        """A successful call that changed the layout must bump layout_version."""
        if self.model.regions() != before_regions:
            assert self.mm.layout_version > before_version

    def probe(self, address: int, kind: int, value: int = 0x5A) -> None:
        """Run one guest access at ``address`` and compare with the model."""
        uc, mm, model = self.uc, self.mm, self.model
        expected_value = model.byte(address) if kind == READ else None
        expected = model.access(address, kind)
        version = mm.layout_version
        assert mm.take_fault() is None
        uc.reg_write(self.reg_addr, address)
        uc.reg_write(self.reg_val, value)
        uc.reg_write(UC_X86_REG_AL, 0)
        try:
            if kind == EXECUTE:
                self.stop_at = address
                try:
                    uc.emu_start(EXEC_PROBE, EXEC_UNTIL)
                finally:
                    self.stop_at = None
            else:
                start = READ_PROBE if kind == READ else WRITE_PROBE
                uc.emu_start(start, start + self.probe_len[kind])
        except UcError as e:
            fault = mm.take_fault()
            assert fault is not None, f"{e} without a recorded fault at {address:#x}"
            # Fault.address is ExceptionInformation[1]: the exact byte, as Windows reports it
            got = (fault.status, fault.address, fault.access)
            assert got == (expected, address, kind), (
                f"access {kind} at {address:#x}: got {tuple(map(hex, got))}, "
                f"model says {expected if expected is None else hex(expected)}"
            )
            if expected == STATUS_GUARD_PAGE_VIOLATION:
                assert mm.layout_version > version
            return
        fault = mm.take_fault()
        assert fault is None, f"fault {fault} recorded for a successful access"
        assert expected is None, (
            f"access {kind} at {address:#x} succeeded; model expected {expected:#x}"
        )
        if kind == READ:
            assert uc.reg_read(UC_X86_REG_AL) == expected_value
        elif kind == WRITE:
            model.store(address, bytes([value]))
        else:
            assert uc.reg_read(self.reg_pc) == address

    def fall_through(self, page: int) -> None:
        """Run 16 bytes of straight-line code at the end of the page before ``page`` into it.

        The code is stored where memory is committed (host writes ignore protection); the
        first bytes of ``page`` get ``jmp ecx/rcx`` back to EXEC_UNTIL. Expected (Windows):
        the fetch at ``page - 16`` faults if that page may not execute; otherwise the code
        retires and the fetch at ``page`` faults (PC on the boundary) or the jump runs.
        """
        uc, mm, model = self.uc, self.mm, self.model
        start = page - len(NOPS)
        for address, data in ((start, NOPS), (page, self.jump_back)):
            # (only when needed: a host write also drops translated code, which would hide
            # stale translations from an earlier probe of the same path)
            if model.committed(page_down(address)) and model.expected_bytes(
                    address, len(data)) != data:
                mm.write(address, data)
                model.store(address, data)
        assert mm.take_fault() is None
        expected = model.access(start, EXECUTE)
        where = start
        if expected is None:
            expected = model.access(page, EXECUTE)
            where = page
        uc.reg_write(self.reg_val, EXEC_UNTIL)
        try:
            uc.emu_start(start, EXEC_UNTIL)
        except UcError as e:
            fault = mm.take_fault()
            assert fault is not None, f"{e} without a recorded fault"
            got = (fault.status, fault.address, fault.access)
            assert got == (expected, where, EXECUTE), (
                f"fall-through into {page:#x}: got {tuple(map(hex, got))}, model says "
                f"{expected if expected is None else hex(expected)} at {where:#x}")
            assert uc.reg_read(self.reg_pc) == where
            return
        assert mm.take_fault() is None
        assert expected is None, f"fall-through into {page:#x} ran; model: {expected:#x}"
        assert uc.reg_read(self.reg_pc) == EXEC_UNTIL

    def window_address(self, page: int, offset: int) -> int:
        return WINDOW + page * PAGE + offset

    def target(self, where: tuple[int, int, int]) -> int:
        pick, page, offset = where
        bases = sorted(b for b in self.model.allocs if b != CODE)
        if pick < 0 or not bases or page > 20:
            return self.window_address(page, offset)
        return bases[pick % len(bases)] + page * PAGE + offset

    def count_step(self) -> None:
        STEPS[self.bits] += 1

    # -- rules ------------------------------------------------------------------------------
    @rule(granule=st.one_of(st.none(), granules),
          misalign=st.sampled_from([0, 0, 0, 0x1000, 0x800]),
          size=sizes, protect=protects, reserve_only=st.booleans(), top_down=st.booleans(),
          alignment=st.sampled_from([GRANULE, GRANULE, 2 * GRANULE, 8 * GRANULE, 0x100000]),
          edges=st.tuples(st.integers(0, 8 * PAGE), st.integers(0, 8 * PAGE)))
    def allocate(self, granule: int | None, misalign: int, size: int, protect: int,
                 reserve_only: bool, top_down: bool, alignment: int = GRANULE,
                 edges: tuple[int, int] = (0, 0)) -> None:
        self.count_step()
        model, mm = self.model, self.mm
        valid = size > 0 and protect_is_valid(protect)
        rsize = page_up(size) if size > 0 else 0
        if granule is None:
            # a search window a little inside the machine's window, any supported alignment
            lo, hi = WINDOW + edges[0], WINDOW_END - edges[1]
            kwargs = dict(min_address=lo, max_address=hi, top_down=top_down, alignment=alignment)
            base = None
            if valid:
                candidates = range(-(-lo // alignment) * alignment, hi - rsize + 1, alignment)
                fits = [a for a in candidates if model.is_free(a, a + rsize)]
                if fits:
                    base = fits[-1] if top_down else fits[0]
                valid = base is not None
        else:
            base = WINDOW + granule * GRANULE + misalign
            kwargs = dict(address=base)
            valid = valid and not misalign and model.is_free(base, base + rsize)
        if not valid:
            self.refused(mm.allocate, size, protect, reserve_only=reserve_only, **kwargs)
            return
        regions, version = model.regions(), mm.layout_version
        assert mm.allocate(size, protect, reserve_only=reserve_only, **kwargs) == base
        assert base is not None
        model.add(base, rsize, protect, reserve_only)
        self.changed(regions, version)

    @rule(size=sizes, protect=st.sampled_from(VALID_PROTECTS), reserve_only=st.booleans(),
          top_down=st.booleans())
    def allocate_anywhere(self, size: int, protect: int, reserve_only: bool,
                          top_down: bool) -> None:
        """A second, mostly valid, allocation rule so the window fills up."""
        self.allocate(None, 0, size, protect, reserve_only, top_down)

    @rule(where=targets, size=small_sizes, protect=protects)
    def commit(self, where: tuple[int, int, int], size: int, protect: int) -> None:
        self.count_step()
        address = self.target(where)
        span = self.model.one_allocation(address, size)
        if span is None or not protect_is_valid(protect):
            self.refused(self.mm.commit, address, size, protect)
            return
        _, start, end = span
        regions, version = self.model.regions(), self.mm.layout_version
        assert self.mm.commit(address, size, protect) == start
        self.model.set_pages(start, end, protect)
        self.changed(regions, version)

    @rule(where=targets, size=small_sizes)
    def decommit(self, where: tuple[int, int, int], size: int) -> None:
        self.count_step()
        address = self.target(where)
        span = self.model.one_allocation(address, size)
        if span is None:
            self.refused(self.mm.decommit, address, size)
            return
        _, start, end = span
        regions, version = self.model.regions(), self.mm.layout_version
        assert self.mm.decommit(address, size) == start
        self.model.set_pages(start, end, 0)
        self.changed(regions, version)

    @rule(pick=picks, granule=granules,
          offset=st.sampled_from([0, 0, 0, 0, 0, PAGE, 2 * PAGE, 1]),
          size=st.one_of(st.just(0), st.just(0), small_sizes))
    def release(self, pick: int, granule: int, offset: int, size: int) -> None:
        """MEM_RELEASE: size 0 frees the allocation based at the address; a nonzero size frees
        those pages only and splits the allocation (NtFreeVirtualMemory)."""
        self.count_step()
        model = self.model
        bases = sorted(b for b in model.allocs if b != CODE)
        if pick >= 0 and bases:
            address = bases[pick % len(bases)] + offset
        else:
            address = WINDOW + granule * GRANULE + offset
        if size == 0:
            if address not in model.allocs:
                self.refused(self.mm.release, address)
                return
            regions, version = model.regions(), self.mm.layout_version
            assert self.mm.release(address) == model.allocs[address][0]
            model.remove(address)
            self.changed(regions, version)
            return
        base = model.alloc_of(address)
        start, end = page_down(address), page_up(address + size)
        if base is None or size < 0 or end > base + model.allocs[base][0]:
            self.refused(self.mm.release, address, size)
            return
        regions, version = model.regions(), self.mm.layout_version
        assert self.mm.release(address, size) == end - start
        if start == base and end == base + model.allocs[base][0]:
            model.remove(base)
        else:
            model.remove_pages(base, start, end)
        self.changed(regions, version)

    @rule(where=targets, size=small_sizes, protect=protects)
    def protect(self, where: tuple[int, int, int], size: int, protect: int) -> None:
        self.count_step()
        address = self.target(where)
        span = self.model.one_allocation(address, size)
        valid = span is not None and protect_is_valid(protect)
        if valid:
            assert span is not None
            _, start, end = span
            valid = all(self.model.committed(p) for p in range(start, end, PAGE))
        if not valid:
            self.refused(self.mm.protect, address, size, protect)
            return
        assert span is not None
        _, start, end = span
        old = self.model.protect_of(start)
        regions, version = self.model.regions(), self.mm.layout_version
        assert self.mm.protect(address, size, protect) == old
        self.model.set_pages(start, end, protect)
        self.changed(regions, version)

    @rule(where=targets, size=st.integers(1, 3 * PAGE), value=st.integers(1, 255))
    def host_write(self, where: tuple[int, int, int], size: int, value: int) -> None:
        self.count_step()
        address = self.target(where)
        data = bytes((value + i) & 0xFF or 1 for i in range(size))
        bad = self.model.first_uncommitted(address, size)
        if bad is not None:
            err = self.refused(self.mm.write, address, data)
            assert isinstance(err, MemoryAccessError)
            assert err.address == bad
            assert self.mm.try_write(address, data) is False
            for p in range(page_down(address), page_up(address + size), PAGE):
                if self.model.committed(p):  # all or nothing: nothing landed
                    assert self.mm.read(p, PAGE) == self.model.page_bytes(p)
            return
        version = self.mm.layout_version
        self.mm.write(address, data)
        self.model.store(address, data)
        assert self.mm.layout_version == version  # host writes do not touch guards

    @rule(where=targets, size=st.integers(0, 3 * PAGE))
    def host_read(self, where: tuple[int, int, int], size: int) -> None:
        self.count_step()
        address = self.target(where)
        bad = self.model.first_uncommitted(address, size)
        if bad is not None:
            err = self.refused(self.mm.read, address, size)
            assert isinstance(err, MemoryAccessError)
            assert err.address == bad
            assert self.mm.try_read(address, size) is None
            return
        assert self.mm.read(address, size) == self.model.expected_bytes(address, size)

    @rule(where=targets, kind=kinds, value=st.integers(0, 255))
    def guest_access(self, where: tuple[int, int, int], kind: int, value: int) -> None:
        self.count_step()
        address = self.target(where)
        if kind == EXECUTE:
            address = page_down(address)  # a TB from mid-page may be decoded into the next page
        self.probe(address, kind, value)

    @rule(where=targets)
    def guest_fall_through(self, where: tuple[int, int, int]) -> None:
        self.count_step()
        self.fall_through(page_down(self.target(where)))

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def query_walk_matches(self) -> None:
        got = [as_tuple(r) for r in self.mm.regions()]
        assert got == self.model.regions()
        rng, model = self.rng, self.model
        for _ in range(2):
            a = WINDOW - GRANULE + rng.randrange(GRANULE * (GRANULES + 2))
            want = model.query(a)
            assert as_tuple(self.mm.query(a)) == want
            info = self.mm.region_info(a)
            whole = model.region(a)
            size = model.allocs[want[1]][0] if want[1] else 0
            assert (info.start, info.length, info.allocation_base, info.allocation_length,
                    info.is_reserved, info.is_committed, info.protect, info.initial_protect) == (
                whole[0], whole[3], want[1], size, want[4] != MEM_FREE, want[4] == MEM_COMMIT,
                want[5] if want[4] != MEM_FREE else 0, want[2])

    @invariant()
    def stats_match(self) -> None:
        s = self.mm.stats()
        assert (s.reserved_memory, s.committed_memory, s.allocations) == self.model.stats()
        got = [(a.base, a.size, a.allocation_protect, a.committed)
               for a in self.mm.reserved_regions()]
        want = [
            (b, size, aprot, sum(PAGE for p in range(b, b + size, PAGE) if self.model.committed(p)))
            for b, (size, aprot) in sorted(self.model.allocs.items())
        ]
        assert got == want

    @invariant()
    def sampled_guest_probes(self) -> None:
        rng, model = self.rng, self.model
        window_pages = [p for p in model.pages if WINDOW <= p < WINDOW_END]
        committed = [p for p in window_pages if model.committed(p)]
        for _ in range(2):
            roll = rng.random()
            if committed and roll < 0.6:
                page = rng.choice(committed)
            elif window_pages and roll < 0.85:
                page = rng.choice(window_pages)
            else:
                page = WINDOW + rng.randrange(WINDOW_PAGES) * PAGE
            kind = rng.choice((READ, WRITE, EXECUTE, EXECUTE + 1))
            if kind == EXECUTE + 1:
                self.fall_through(page)
                continue
            offset = 0 if kind == EXECUTE else rng.randrange(PAGE)
            self.probe(page + offset, kind, rng.randrange(256))
        if committed:
            p = rng.choice(committed)
            assert self.mm.read(p, PAGE) == model.page_bytes(p)


class Machine32(ManagerMachine):
    BITS = 32


class Machine64(ManagerMachine):
    BITS = 64


MAX_EXAMPLES = 70
STEP_COUNT = 120
MODEL_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    stateful_step_count=STEP_COUNT,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("machine", [Machine32, Machine64], ids=["x86", "x64"])
def test_manager_matches_page_model(machine: type[ManagerMachine]) -> None:
    STEPS[machine.BITS] = 0
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)
    # the budget: >= 5k steps per bitness, >= 10k in all (hypothesis ends some runs early)
    assert STEPS[machine.BITS] >= 5000, f"only {STEPS[machine.BITS]} steps ran"
