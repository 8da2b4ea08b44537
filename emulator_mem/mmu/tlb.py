"""The software MMU: Unicorn's virtual TLB mode driven by our page table.

Unicorn holds only a few big physical chunks (:mod:`emulator_mem.physmem`). Every TLB miss
calls :meth:`MMU._fill`, which looks the virtual page up in the
:class:`~emulator_mem.space.AddressSpace` and either hands Unicorn the physical page and the
CPU permissions of its Windows protection, or refuses — recording the Windows exception
(:mod:`emulator_mem.faults`). Consequences, all without per-access hooks:

* protection changes are a page-table update plus one TLB flush;
* PAGE_GUARD and PAGE_NOACCESS, reserved and free pages simply have no translation;
* **first-write tracking**: a page that a :class:`DirtyLog` (write watch, checkpoints) still
  considers clean enters the TLB without write permission; the write miss marks it and the
  refill makes it writable. Copy-on-write uses the same miss;
* several virtual pages can translate to one physical page (views, JIT dual mapping).

TLB warm-up: qemu only grows its TLB when it is flushed while more than 70% of it is in
use, so a cold TLB misses on every access. The fill hook counts misses and flushes itself
just past that mark (181 misses for qemu's initial 256 entries, then 360, 718, …), which
lets the TLB double each time (flushing from inside the fill hook is safe because qemu
re-reads the entry after ``tlb_fill``). The growth stops once every page translated since
the last real flush fits the TLB (give or take 1/64 for conflicts): doubling further would
only empty a warm TLB. A cold 16k-page working set costs ~1.7 misses a page in all (~3 when
flushing at 100%, as round one did); the size survives rollbacks.

Re-misses: a growth flush (and every conflict eviction) throws away translations that are
still valid, and those pages miss again. So the MMU remembers what it handed out since the
last :meth:`MMU.flush` (``refill``: virtual page -> physical address and permissions) and
answers a re-miss from there without consulting the address space: exactly a larger TLB,
since whatever may invalidate a translation already calls :meth:`MMU.flush`, which forgets
them. Entries that need the slow path's side effects are never remembered: refusals, trap
and hole pages, executable pages (the fill records them in ``phys.exec_pages`` for code
invalidation). A remembered entry with fewer rights than an access needs (a clean page
entered read-only) goes the slow way again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from unicorn import (
    UC_ERR_EXCEPTION,
    UC_MODE_64,
    UC_TLB_VIRTUAL,
    Uc,
    UcError,
)
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn.x86_const import UC_X86_REG_EIP, UC_X86_REG_RIP

from ..space.address_space import AddressSpace, Allocation, RegionKind
from ..space.events import WriteWatchObserver
from ..windows import constants as C
from ..windows.protection import CPU_PERMS, UC_EXEC, UC_WRITE, WRITECOPY_RESOLVED
from .faults import UC_ACCESS_TO_WINDOWS, Fault
from .fetchtrap import FetchTrap
from .fillhook import add_raw_fill_hook, hand_to_emu_start
from .holes import Holes, uc_error
from .physmem import DirtyLog, PhysicalMemory

UC_MEM_WRITE = 17
UC_MEM_FETCH = 18
NEED = {16: 1, 17: 2, 18: 4}  # TLB access code -> UC_PROT bit needed
GUARD = C.PAGE_GUARD
FIRST_TLB_SIZE = 256  # qemu's CPU_TLB_DYN_DEFAULT_BITS
MAX_TLB_SIZE = 1 << 22  # CPU_TLB_DYN_MAX_BITS on 64-bit hosts


def growth_mark(tlb_size: int) -> int:
    """Misses after which a flush makes qemu double a TLB of ``tlb_size`` entries.

    qemu's ``tlb_mmu_resize_locked`` doubles the table when the entries used since the last
    flush exceed 70% of it. Every entry dropped by the flush misses again, so flush as soon
    as that is true. qemu computes ``used * 100 / size`` in integer arithmetic and needs more
    than 70, and a few misses may land in a slot already used (conflicts), so the mark
    keeps a 2% margin: at 70% + 2 misses a 512-entry TLB scores exactly 70 and stays put.
    """
    return tlb_size * 72 // 100 + 1



class _Entry:
    """Where :meth:`MMU._fill` writes a translation before it is copied into Unicorn's."""

    __slots__ = ("paddr", "perms")

    def __init__(self) -> None:
        self.paddr = 0
        self.perms = 0


class MMU:
    """Owns the TLB-fill hook; every translation the guest uses comes from here."""

    def __init__(self, uc: Uc, space: AddressSpace, phys: PhysicalMemory) -> None:
        self.uc = uc
        self.space = space
        self.phys = phys
        self.fault: Fault | None = None
        self.logs: list[DirtyLog] = phys.logs  # one list: guest misses and host writes
        self.watched_allocations = 0  # allocations with MEM_WRITE_WATCH
        #: told about the first write to a write-watched page since its reset (report history)
        self.write_watch_observers: list[WriteWatchObserver] = []
        self.misses = 0  # every TLB fill Unicorn asked for
        self.refills = 0  # of which answered from ``refill``
        self.growth_flushes = 0
        #: translations handed out since the last flush: virtual page -> (paddr, perms)
        self.refill: dict[int, tuple[int, int]] = {}
        self.flushes = 0
        self._since_flush = 0
        self._tlb_size = FIRST_TLB_SIZE  # what qemu's TLB has grown to, as far as we know
        self._grow_at = growth_mark(FIRST_TLB_SIZE)
        #: called with the exception when a fault is recorded (runners use it for guard
        #: page stack growth); must not touch Unicorn
        self.on_fault: Callable[[Fault], None] | None = None
        self.pc_reg = UC_X86_REG_RIP if uc.ctl_get_mode() & UC_MODE_64 else UC_X86_REG_EIP
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self._hook = add_raw_fill_hook(uc, self._make_on_miss())
        self.until: int | None = None
        self._forced: dict[int, int] | None = None  # see invalidate_code
        phys.on_code_write = self.invalidate_code
        #: plain Unicorn's error code for the refusal that stopped the current run
        self.uc_error: int | None = None
        self._wrap_emu_start(uc)
        self.trap = FetchTrap(self, self.pc_reg == UC_X86_REG_RIP)
        self.holes = Holes(uc, self.pc_reg == UC_X86_REG_RIP)

    # -- TLB ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Drop every cached translation (after a protection or mapping change)."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self.trap.pages.clear()
        self.refill.clear()
        self.flushes += 1
        self._since_flush = 0

    def flush_writes(self, changed: Sequence[tuple[int, int]] = ()) -> None:
        """Every page became clean again (a dirty log was reset) but no translation changed:
        flush, yet keep the translations handed out, without write permission, so that only
        the first write of a page takes the slow path (rollback uses this; reads after it
        are answered from memory). Translations inside the ``changed`` virtual ranges
        [start, end) are dropped instead (their protection or backing changed)."""
        pages = [(start >> 12, (end + 0xFFF) >> 12) for start, end in changed]
        kept = {vpn: (paddr, perms & ~UC_WRITE) for vpn, (paddr, perms) in self.refill.items()
                if not any(lo <= vpn < hi for lo, hi in pages)}
        self.flush()
        self.refill.update(kept)

    def _make_on_miss(self) -> Callable[[Any, int, int, Any, Any], bool]:
        """The callback Unicorn calls on every TLB miss (see :func:`add_raw_fill_hook`):
        growth flushes, then a remembered translation, else :meth:`_fill`.

        A closure, so a re-miss is answered without a further Python call: it runs ~1.7
        times per page of a cold working set, mostly for re-misses.
        """
        refill = self.refill
        uc = self.uc
        fill = self._fill
        slot = _Entry()

        def on_miss(_handle: Any, vaddr: int, access: int, entry: Any, _key: Any) -> bool:
            try:
                if self._forced is not None:
                    return self._fill_into(vaddr, access, entry, slot)
                self.misses += 1
                self._since_flush += 1
                if self._since_flush >= self._grow_at:
                    self._grow()
                hit = refill.get(vaddr >> 12)
                if hit is not None and hit[1] & NEED.get(access, 1):
                    self.refills += 1
                    entry[0] = hit[0]
                    entry[1] = hit[1]
                    return True
                if not fill(vaddr, access, slot):
                    return False
                entry[0] = slot.paddr
                entry[1] = slot.perms
                return True
            except BaseException as err:  # noqa: BLE001 - emu_start re-raises it
                return hand_to_emu_start(uc, err)

        return on_miss

    def _fill_into(self, vaddr: int, access: int, entry: Any, slot: _Entry) -> bool:
        if not self._fill(vaddr, access, slot):
            return False
        entry[0] = slot.paddr
        entry[1] = slot.perms
        return True

    def _grow(self) -> None:
        """Let qemu see a busy TLB at flush time so it doubles its size: it grows when more
        than 70% of the entries were used since the last flush, so flushing just past that
        mark (not when full) costs the fewest re-misses. Not when every page translated
        since the last real flush fits already (see the module docstring)."""
        self._since_flush = 0
        size = self._tlb_size
        if len(self.refill) <= size + (size >> 6) or size >= MAX_TLB_SIZE:
            return
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self.growth_flushes += 1
        self._tlb_size = min(size * 2, MAX_TLB_SIZE)
        self._grow_at = growth_mark(self._tlb_size)

    def _fill(self, vaddr: int, access: int, entry: Any) -> bool:
        """Translate one page into ``entry.paddr`` / ``entry.perms``, or refuse it."""
        forced = self._forced
        if forced is not None and vaddr >> 12 in forced:
            entry.paddr = forced[vaddr >> 12]
            entry.perms = UC_EXEC | 1
            return True
        alloc = self.space.find(vaddr)
        if alloc is None:
            if self.trap.is_marker(vaddr):
                return self.trap.marker_fault()
            return self._refuse(C.STATUS_ACCESS_VIOLATION, vaddr, access, entry, False)
        index = (vaddr - alloc.base) >> 12
        protect = alloc.page_protect(index)
        if not protect:
            return self._refuse(C.STATUS_ACCESS_VIOLATION, vaddr, access, entry, False)
        if protect & GUARD:
            if access == UC_MEM_FETCH and self.trap.wanted(vaddr) and not self.holes.wants(vaddr, access):
                return self.trap.map(vaddr, entry)
            # one-shot, as on Windows: the touch clears the guard and raises
            self.space.set_pages(alloc, index, index + 1, protect & ~GUARD)
            return self._refuse(C.STATUS_GUARD_PAGE_VIOLATION, vaddr, access, entry, True)
        perms = CPU_PERMS.get(protect & 0xFF, 0)
        if not perms & NEED.get(access, 1):
            return self._refuse(C.STATUS_ACCESS_VIOLATION, vaddr, access, entry, True)
        private = alloc.private_pages
        if private is not None and index in private:
            paddr = private[index]
        else:
            paddr = alloc.phys_base + (index << 12)
        if perms & UC_WRITE:
            if access == UC_MEM_WRITE:
                if protect & 0xFF in WRITECOPY_RESOLVED:
                    paddr = self.copy_on_write(alloc, index, protect)
                self.note_page_write(alloc, index, paddr >> 12)
            elif self._clean(alloc, index, paddr >> 12, protect):
                perms &= ~UC_WRITE
        if perms & UC_EXEC:
            self.phys.exec_pages.add(paddr >> 12)
        else:
            self.refill[vaddr >> 12] = (paddr, perms)
        entry.paddr = paddr
        entry.perms = perms
        return True

    def _refuse(self, status: int, vaddr: int, access: int, entry: Any = None,
                mapped: bool = False) -> bool:
        """Record the Windows exception of a refused access and stop the guest.

        ``mapped``: the page is committed (Unicorn's "mapped"), which decides between the
        ``*_PROT`` and ``*_UNMAPPED`` error plain Unicorn would raise. When a Unicorn memory
        hook watches the page, the entry goes to a hole instead and Unicorn calls the hooks
        itself (:mod:`emulator_mem.mmu.holes`).
        """
        holes = self.holes
        watched = entry is not None and holes.wants(vaddr, access)
        if access == UC_MEM_FETCH and entry is not None and not watched and self.trap.wanted(vaddr):
            return self.trap.map(vaddr, entry)
        fault = Fault(status, vaddr, UC_ACCESS_TO_WINDOWS.get(access, 0))
        self.fault = fault
        if self.on_fault is not None:
            self.on_fault(fault)
        if watched:
            self.trap.pages.add(vaddr >> 12)  # flushed after the run and on layout changes
            return holes.map(vaddr, access, mapped, entry)
        self.uc_error = uc_error(access, mapped)
        return False

    # -- translated code -------------------------------------------------------------
    def invalidate_code(self, phys: int, size: int) -> None:
        """Drop Unicorn's translation blocks for [phys, phys+size) after host code changed.

        Unicorn only offers invalidation by *virtual* address (``ctl_remove_cache``),
        which looks the page up through this very hook. So each executed page in the range
        is looked up under a forced translation (virtual == physical: identity pages are
        the ones that hold code), then the TLB is flushed to forget that translation. Code
        in the alias area (executed through a view) has no such twin: the whole
        translation cache is flushed instead.
        """
        exec_pages = self.phys.exec_pages
        pages = [p for p in range(phys >> 12, ((phys + size - 1) >> 12) + 1) if p in exec_pages]
        if not pages:
            return
        uc = self.uc
        if any((p << 12) >= self.phys.identity_end for p in pages):
            uc.ctl_flush_tb()
        else:
            self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
            self._forced = {p: p << 12 for p in pages}
            try:
                for p in pages:
                    uc.ctl_remove_cache(p << 12, (p << 12) + 0x1000)
            finally:
                self._forced = None
        exec_pages.difference_update(pages)
        self.flush()

    # -- the exit address of emu_start -------------------------------------------------
    def _wrap_emu_start(self, uc: Uc) -> None:
        """Know each run's ``until``, tidy up after the run, report refusals as Unicorn does.

        The fetch trap (:mod:`emulator_mem.fetchtrap`) needs each run's ``until``; Unicorn
        offers no hook for it, so the instance's ``emu_start`` is wrapped. A refused access
        stops qemu with ``UC_ERR_EXCEPTION``; the wrapper raises the code plain Unicorn would
        (``UC_ERR_READ_UNMAPPED``, ``UC_ERR_WRITE_PROT`` …) instead.
        """
        original = uc.emu_start

        def emu_start(begin: int, until: int, timeout: int = 0, count: int = 0) -> None:
            outer, self.until = self.until, until
            self.uc_error = None
            try:
                try:
                    original(begin, until, timeout, count)
                except UcError as err:
                    kept = getattr(uc, "_hook_exception", None)
                    if kept is not None and kept is not err:
                        # a hook (ours, or on_fault's callback) raised and the refused
                        # access then failed the run: the cause, not UC_ERR_EXCEPTION
                        raise kept from err
                    if self.trap.straddle is None:
                        raise
                    self._finish_straddle(original)
            except UcError as exc:
                code = self.uc_error
                if exc.errno == UC_ERR_EXCEPTION and code is not None:
                    raise UcError(code) from None  # what plain Unicorn says about it
                raise
            finally:
                self.until = outer
                self.trap.after_run()

        uc.emu_start = emu_start

    def _finish_straddle(self, original: Callable[..., None]) -> None:
        """Run a block up to the instruction that straddles into a non-executable page,
        then raise that fetch fault with the PC on it (see :mod:`emulator_mem.fetchtrap`)."""
        if self.trap.straddle is None:
            return
        start, stop, boundary = self.trap.straddle
        self.trap.straddle = None
        self.fault = None
        self.uc.ctl_flush_tb()  # the abandoned block was built with made-up bytes
        self.flush()
        self.until = stop
        original(start, stop, 0, 0)  # a fault in these instructions comes first, as it should
        self.record_fetch_fault(boundary)
        raise UcError(UC_ERR_EXCEPTION)

    def record_fetch_fault(self, vaddr: int) -> None:
        """Record the fault of an instruction fetch at ``vaddr`` (guard pages are one-shot)."""
        alloc = self.space.find(vaddr)
        status = C.STATUS_ACCESS_VIOLATION
        mapped = False
        if alloc is not None:
            index = (vaddr - alloc.base) >> 12
            protect = alloc.page_protect(index)
            mapped = protect != 0
            if protect & GUARD:
                self.space.set_pages(alloc, index, index + 1, protect & ~GUARD)
                status = C.STATUS_GUARD_PAGE_VIOLATION
        self._refuse(status, vaddr, UC_MEM_FETCH, None, mapped)

    # -- first-write tracking ----------------------------------------------------------
    def _clean(self, alloc: Allocation, index: int, ppn: int, protect: int) -> bool:
        """Must this page enter the TLB read-only so its first write comes back to us?"""
        if protect & 0xFF in WRITECOPY_RESOLVED:
            return True
        watch = alloc.write_watch
        if watch is not None and index not in watch:
            return True
        if alloc.kind is RegionKind.MMIO:
            return False
        for log in self.logs:  # a loop, not any(): this runs on every cold miss
            if ppn not in log.pages:
                return True
        return False

    def note_page_write(self, alloc: Allocation, index: int, ppn: int) -> None:
        """Record that the guest is writing page ``index`` of ``alloc`` (physical ``ppn``).

        Host writes reach the dirty logs through :meth:`PhysicalMemory.before_modify`
        instead, and write watch through ``MemoryManager.write``.
        """
        watch = alloc.write_watch
        if watch is not None:
            if self.write_watch_observers and index not in watch:
                for observer in self.write_watch_observers:
                    observer.write_watch_hit(alloc, alloc.base + (index << 12))
            watch.add(index)
        if self.logs and alloc.kind is not RegionKind.MMIO:
            for log in self.logs:
                log.mark(ppn)

    def attach_log(self, log: DirtyLog) -> None:
        self.logs.append(log)
        self.flush()

    def detach_log(self, log: DirtyLog) -> None:
        self.logs.remove(log)

    # -- copy-on-write -----------------------------------------------------------------
    def copy_on_write(self, alloc: Allocation, index: int, protect: int) -> int:
        """Resolve a PAGE_*WRITECOPY page on its first write; returns its physical address.

        Identity-backed pages (images) have a single owner, so the page only changes
        protection. Pages shared with other views get a private physical copy.
        """
        resolved = WRITECOPY_RESOLVED[protect & 0xFF] | (protect & ~0xFF)
        self.space.set_pages(alloc, index, index + 1, resolved)
        if alloc.phys_base == alloc.base:
            alloc.copied.add(index)
            return alloc.base + (index << 12)
        shared = alloc.phys_base + (index << 12)
        private = self.phys.alloc_page()
        self.phys.copy(private, shared, 0x1000)
        if alloc.private_pages is None:
            alloc.private_pages = {}
        alloc.private_pages[index] = private
        return private

    def close(self) -> None:
        self.uc.hook_del(self._hook)
