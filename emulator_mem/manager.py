"""MemoryManager: Windows virtual memory for a Unicorn x86 CPU (the seed's memory_manager).

The Pythonic core: typed errors (each carrying the NTSTATUS Windows would return), plain
ints in and out. Every call validates the whole request before it changes anything, so a
failed call leaves bookkeeping, Unicorn mappings and guest memory exactly as they were.
:mod:`emulator_mem.nt` and :mod:`emulator_mem.win32` put Windows' calling conventions on top.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from .errors import (
    ConflictingAddressesError,
    EmulatorMemError,
    InvalidParameterError,
    MemoryAccessError,
    NoMemoryError,
    NotAllocatedError,
    NotCommittedError,
)
from .mmu import faults
from .mmu.faults import Fault
from .mmu.physmem import PhysicalMemory
from .mmu.tlb import MMU
from .regions import access, image_map, mmio, writewatch
from .regions.image_map import MappedImage, SharedImagePages
from .regions.mmio import MmioRead, MmioWrite
from .regions.sections import SectionTable
from .snapshot.rollback import Checkpoint
from .snapshot.rollback import checkpoint as _checkpoint
from .snapshot.rollback import rollback as _rollback
from .space.address_space import (
    GRANULARITY,
    PAGE_SHIFT,
    PAGE_SIZE,
    AddressSpace,
    Allocation,
    RegionKind,
    memory_type,
    page_round_down,
    page_round_up,
)
from .space.events import LayoutEvent, LayoutObserver
from .space.records import AllocationInfo, MemoryBasicInformation, MemoryStats, RegionInfo
from .ucapi import UnicornApi
from .ucapi import install as _install_unicorn_api
from .windows import constants as C
from .windows import protection

USER_LOWEST = 0x10000
USER_END_32 = 0x7FFF0000  # lpMaximumApplicationAddress 0x7FFEFFFF + 1
USER_END_64 = 0x7FFFFFFF0000  # lpMaximumApplicationAddress 0x7FFFFFFEFFFF + 1
ALIAS_BASE_32 = 0x1_0000_0000  # guest-physical area for pages with no virtual twin
ALIAS_BASE_64 = 0x8000_0000_0000
IDENTITY_WINDOW_32 = 1 << 32  # the whole 32-bit identity area in one Unicorn region
IDENTITY_WINDOW_64 = 1 << 34
#: RAM + page files of a modest machine; ``mm.commit_limit`` changes it
DEFAULT_COMMIT_LIMIT = 64 << 30


class MemoryManager:
    """Windows reserve/commit/protect/query semantics over one Unicorn x86 CPU.

    Construct it before mapping anything else: it switches Unicorn to virtual-TLB mode and
    becomes the MMU. 32-bit guests get the user range 0x10000..0x7FFEFFFF, 64-bit guests
    0x10000..0x7FFFFFFEFFFF.
    """

    def __init__(self, uc: Uc) -> None:
        if uc.ctl_get_arch() != UC_ARCH_X86:
            raise InvalidParameterError("MemoryManager supports x86 (32- and 64-bit) only")
        self.uc = uc
        self.is_64bit = bool(uc.ctl_get_mode() & UC_MODE_64)
        self.lowest_address = USER_LOWEST
        self.highest_address = USER_END_64 if self.is_64bit else USER_END_32
        alias_base = ALIAS_BASE_64 if self.is_64bit else ALIAS_BASE_32
        # the space spans every guest address, so Unicorn's own uc.mem_map can put memory
        # below 64 KiB or above the user range; the Windows calls keep to the user range
        self.space = AddressSpace(0, 1 << (64 if self.is_64bit else 32))
        # one identity window per 16 GiB (4 GiB: all of a 32-bit space): sparse reservations
        # (100k x 1 MiB spans 100 GiB) stay at a few Unicorn regions; host address space is
        # only reserved (MAP_NORESERVE), so a bigger window costs nothing until touched
        window = IDENTITY_WINDOW_64 if self.is_64bit else IDENTITY_WINDOW_32
        self.phys = PhysicalMemory(uc, alias_base, alias_base, window)
        self.mmu = MMU(uc, self.space, self.phys)
        self.mmu.trap.read_memory = self.try_read
        self._default_allocation_address = self.lowest_address
        #: the most private memory that may be committed at once, in bytes (Windows' commit
        #: limit: RAM + page files). A commit past it fails with STATUS_COMMITMENT_LIMIT
        #: before anything changes, instead of mapping host windows for it.
        self.commit_limit = DEFAULT_COMMIT_LIMIT
        #: extension points filled by the modules that own other region kinds
        self.on_release: list[Callable[[Allocation], None]] = [self._release_owner]
        self.sections = SectionTable(
            self, lambda section, address: image_map.map_image_section(self, section, address))
        #: mapped PE images by base (sections, entry point, imports, exports)
        self.images: dict[int, MappedImage] = {}
        #: IMAGE_SCN_MEM_SHARED pages by image identity (see :mod:`.regions.image_map`)
        self.shared_images: dict[Hashable, SharedImagePages] = {}
        #: told about every layout change after it is made (see :meth:`observe`)
        self.observers: list[LayoutObserver] = []
        #: Unicorn's own memory API on this Uc, in virtual addresses (see emulator_mem.ucapi)
        self.unicorn: UnicornApi = _install_unicorn_api(self)

    def observe(self, observer: LayoutObserver) -> None:
        """Tell ``observer`` about every later layout change and write-watch hit.

        For recorders such as the HTML report's history: calls come from the few methods
        that change the layout, after the change, never per instruction or access.
        """
        self.observers.append(observer)
        self.mmu.write_watch_observers.append(observer)

    def _notify(self, kind: LayoutEvent, alloc: Allocation, address: int, size: int,
                protect: int = 0, old_protect: int = 0) -> None:
        for observer in self.observers:
            observer.layout_event(kind, alloc, address, size, protect, old_protect)

    # -- properties --------------------------------------------------------------------
    @property
    def page_size(self) -> int:
        return PAGE_SIZE

    @property
    def allocation_granularity(self) -> int:
        return GRANULARITY

    @property
    def layout_version(self) -> int:
        """Bumps on every change of the address-space layout (allocations, commits, protections)."""
        return self.space.layout_version

    @property
    def default_allocation_address(self) -> int:
        """Where searches for a free range start when the caller gives no address."""
        return self._default_allocation_address

    @default_allocation_address.setter
    def default_allocation_address(self, address: int) -> None:
        if not self.lowest_address <= address < self.highest_address:
            raise InvalidParameterError(f"{address:#x} is outside the user address range")
        self._default_allocation_address = address

    # -- allocation --------------------------------------------------------------------
    def allocate(
        self,
        size: int,
        protect: int,
        *,
        address: int | None = None,
        reserve_only: bool = False,
        min_address: int | None = None,
        max_address: int | None = None,
        top_down: bool = False,
        kind: RegionKind = RegionKind.PRIVATE,
        write_watch: bool = False,
        alignment: int = GRANULARITY,
        name: str | None = None,
    ) -> int:
        """Reserve (and unless ``reserve_only`` commit) ``size`` bytes; returns the base.

        ``address`` must be 64 KiB aligned and free (ConflictingAddressesError otherwise);
        without it the lowest (``top_down``: highest) free aligned range at or above
        ``min_address`` (default: :attr:`default_allocation_address`) is taken, as
        VirtualAlloc(NULL, …) does. Sizes round up to whole pages.
        """
        kind = RegionKind(kind)
        size = self.check_size(size)
        protection.check(protect, allow_writecopy=kind in (RegionKind.MAPPED, RegionKind.IMAGE))
        if alignment < GRANULARITY or alignment & (alignment - 1):
            raise InvalidParameterError(f"alignment {alignment:#x} is not a power of two >= 64 KiB")
        if address is None:
            base = self.find_free(
                size, min_address=min_address, max_address=max_address,
                alignment=alignment, top_down=top_down,
            )
        else:
            if address % alignment:
                raise InvalidParameterError(f"allocation base {address:#x} is not aligned")
            self.check_range(address, size)
            if not self.space.free.is_free(address, address + size):
                raise ConflictingAddressesError(f"{address:#x}+{size:#x} overlaps a reservation")
            base = address
        return self.insert_allocation(Allocation(base, size, protect, kind, phys_base=base, name=name),
                            reserve_only=reserve_only, write_watch=write_watch).base

    def insert_allocation(self, alloc: Allocation, *, reserve_only: bool,
                          write_watch: bool = False) -> Allocation:
        """Commit (unless ``reserve_only``) and index a validated new allocation."""
        base, size, protect = alloc.base, alloc.size, alloc.allocation_protect
        if write_watch:
            alloc.write_watch = set()
            self.mmu.watched_allocations += 1
        if not reserve_only:
            self._charge_commit(size)
            if alloc.phys_base == base:
                self.phys.ensure_identity(base, base + size)
            alloc.set_pages(0, alloc.page_count, protect)
        self.space.insert(alloc)
        self.mmu.trap.untrap(base, base + size)
        if self.observers:
            kind = LayoutEvent.ALLOCATE if alloc.kind is RegionKind.PRIVATE else LayoutEvent.MAP_VIEW
            self._notify(kind, alloc, base, size, protect if alloc.committed_pages else 0)
        return alloc

    def commit(self, address: int, size: int, protect: int) -> int:
        """Commit the pages of [address, address+size) inside one reservation (MEM_COMMIT).

        Already committed pages take the new protection, as on Windows. Returns the
        page-aligned start.
        """
        alloc, first, last = self._pages_in_one_allocation(address, size)
        protect = self._page_protect(alloc, protect)
        if alloc.kind is RegionKind.MMIO:
            raise ConflictingAddressesError("MMIO regions are committed for their whole life")
        self._charge_commit((last - first - alloc.committed_in(first, last)) << PAGE_SHIFT)
        if alloc.phys_base == alloc.base:
            self.phys.ensure_identity(alloc.base + (first << PAGE_SHIFT), alloc.base + (last << PAGE_SHIFT))
        need_flush = self._narrows(alloc.runs(first, last), protect)
        self._set_protection(alloc, first, last, protect)
        self.sections.commit_shared(alloc, first, last)
        self.mmu.trap.untrap(alloc.base + (first << PAGE_SHIFT), alloc.base + (last << PAGE_SHIFT))
        if need_flush:
            self.mmu.flush()
        if self.observers:
            self._notify(LayoutEvent.COMMIT, alloc, alloc.base + (first << PAGE_SHIFT),
                         (last - first) << PAGE_SHIFT, protect)
        return alloc.base + (first << PAGE_SHIFT)

    def decommit(self, address: int, size: int) -> int:
        """Decommit [address, address+size) inside one reservation (MEM_DECOMMIT).

        Reserved pages in the range are fine; contents are discarded (zero on recommit).
        Images, views and MMIO cannot be decommitted, as on Windows.
        """
        alloc, first, last = self._pages_in_one_allocation(address, size)
        if alloc.kind is not RegionKind.PRIVATE:
            raise EmulatorMemError(
                "only private memory can be decommitted", status=C.STATUS_UNABLE_TO_DELETE_SECTION
            )
        self._drop_contents(alloc, first, last)
        writewatch.decommitted(alloc, first, last)
        self.space.set_pages(alloc, first, last, 0)
        self.mmu.flush()
        if self.observers:
            self._notify(LayoutEvent.DECOMMIT, alloc, alloc.base + (first << PAGE_SHIFT),
                         (last - first) << PAGE_SHIFT)
        return alloc.base + (first << PAGE_SHIFT)

    def release(self, address: int, size: int = 0) -> int:
        """Release memory (MEM_RELEASE); returns the number of bytes released.

        ``size`` 0 releases the whole reservation based at ``address``. A nonzero size
        releases just those pages of private memory, as NtFreeVirtualMemory does: Windows
        splits the allocation and what is left on either side becomes an allocation of its
        own (based at its first page). Views and images are released by unmapping them.
        """
        alloc = self.space.find(address)
        if alloc is None:
            raise NotAllocatedError(f"{address:#x} is not allocated")
        if getattr(alloc.owner, "unmap_only", False):
            raise EmulatorMemError(
                f"{address:#x} is a mapped view: unmap it instead",
                status=C.STATUS_UNABLE_TO_DELETE_SECTION,
            )
        if alloc.alias_count and (size or alloc.phys_base != alloc.base):
            raise EmulatorMemError(
                f"{alloc.base:#x} is still mapped by {alloc.alias_count} alias view(s): release those first",
                status=C.STATUS_UNABLE_TO_FREE_VM,
            )
        if size:
            return self._release_pages(alloc, address, size)
        if alloc.base != address:
            raise EmulatorMemError(
                f"{address:#x} is not the allocation base {alloc.base:#x}",
                status=C.STATUS_FREE_VM_NOT_AT_BASE,
            )
        if alloc.alias_count:  # its pages live on in the aliases (Windows: until the last view)
            self.sections.adopt_aliases(alloc, [a for a in self.space if a.owner is alloc])
            alloc.alias_count = 0
        self.release_allocation(alloc)
        return alloc.size

    def _release_pages(self, alloc: Allocation, address: int, size: int) -> int:
        if size < 0:
            raise InvalidParameterError("negative size")
        start, end = page_round_down(address), page_round_up(address + size)
        if end > alloc.end:
            raise EmulatorMemError(f"{address:#x}+{size:#x} passes the allocation end",
                                   status=C.STATUS_UNABLE_TO_FREE_VM)
        if alloc.kind is not RegionKind.PRIVATE:
            raise EmulatorMemError("only private memory can be released in part",
                                   status=C.STATUS_UNABLE_TO_DELETE_SECTION)
        if start == alloc.base and end == alloc.end:
            self.release_allocation(alloc)
            return alloc.size
        first, last = (start - alloc.base) >> PAGE_SHIFT, (end - alloc.base) >> PAGE_SHIFT
        pieces = [alloc.slice(0, first)] if first else []
        if last < alloc.page_count:
            pieces.append(alloc.slice(last, alloc.page_count))
        self._drop_contents(alloc, first, last)
        if alloc.write_watch is not None:
            self.mmu.watched_allocations += len(pieces) - 1
        self.space.remove(alloc)
        for piece in pieces:
            self.space.insert(piece)
        self.mmu.flush()
        if self.observers:
            self._notify(LayoutEvent.RELEASE, alloc, start, end - start)
        return end - start

    def release_allocation(self, alloc: Allocation) -> None:
        """Release a whole allocation: owners first (``on_release``), then pages and index."""
        for hook in self.on_release:
            hook(alloc)
        self._drop_contents(alloc, 0, alloc.page_count)
        if alloc.write_watch is not None:
            self.mmu.watched_allocations -= 1
        self.space.remove(alloc)
        self.mmu.flush()
        if self.observers:
            kind = LayoutEvent.RELEASE if alloc.kind is RegionKind.PRIVATE else LayoutEvent.UNMAP_VIEW
            self._notify(kind, alloc, alloc.base, alloc.size)

    def _drop_contents(self, alloc: Allocation, first: int, last: int) -> None:
        """Zero the identity pages of [first, last) and free their private copies."""
        private = alloc.private_pages
        if private:
            for index in [i for i in private if first <= i < last]:
                self.phys.free_page(private.pop(index))
        if alloc.phys_base != alloc.base:
            return  # shared storage (views, aliases, MMIO) belongs to its owner
        for s, e, p in alloc.runs(first, last):
            if p:
                self.phys.zero(alloc.base + (s << PAGE_SHIFT), (e - s) << PAGE_SHIFT)

    def unmap_all(self) -> None:
        """Release every reservation (the seed's ``unmap_all_memory``)."""
        for alloc in list(self.space):
            self.release_allocation(alloc)

    # -- protection --------------------------------------------------------------------
    def protect(self, address: int, size: int, protect: int) -> int:
        """Change the protection of committed pages; returns the old protection of the first.

        The range must lie in one reservation and be committed throughout
        (STATUS_NOT_COMMITTED otherwise), as VirtualProtect requires.
        """
        alloc, first, last = self._pages_in_one_allocation(address, size)
        protect = self._page_protect(alloc, protect)
        if alloc.kind is RegionKind.MMIO:
            raise EmulatorMemError("MMIO protection is fixed", status=C.STATUS_INVALID_PAGE_PROTECTION)
        runs = list(alloc.runs(first, last))  # one walk serves the three questions below
        if not all(p for _, _, p in runs):
            raise NotCommittedError(f"{address:#x}+{size:#x} is not committed throughout")
        old = runs[0][2]
        need_flush = self._narrows(runs, protect)
        writewatch.latch(alloc, first, last)
        self._set_protection(alloc, first, last, protect)
        self.mmu.trap.untrap(alloc.base + (first << PAGE_SHIFT), alloc.base + (last << PAGE_SHIFT))
        if need_flush:
            self.mmu.flush()
        if self.observers:
            self._notify(LayoutEvent.PROTECT, alloc, alloc.base + (first << PAGE_SHIFT),
                         (last - first) << PAGE_SHIFT, protect, old)
        return old

    def _narrows(self, runs: Iterable[tuple[int, int, int]], protect: int) -> bool:
        """Could a cached translation of these pages now allow too much?

        Adding rights needs no flush (a missing right is a TLB miss); removing rights,
        adding a guard or copy-on-write does.
        """
        new = protection.cpu_perms(protect)
        if protect & C.PAGE_GUARD or protection.is_writecopy(protect) or not new:
            return True
        for _, _, p in runs:
            if p and protection.cpu_perms(p) & ~new:
                return True
        return False

    def _page_protect(self, alloc: Allocation, protect: int) -> int:
        """Validate ``protect`` for pages of ``alloc``; return what the pages really get.

        The one place for Windows' page-protection rules: a valid PAGE_* value, copy-on-write
        only in views and images, image pages asked to be writable become copy-on-write
        (they are shared until written), and inside a view or image only what the view's
        protection grants (:func:`~emulator_mem.windows.protection.within`; e.g.
        PAGE_NOACCESS anywhere, PAGE_EXECUTE_WRITECOPY in a PAGE_EXECUTE_READ view).
        """
        shared = alloc.kind in (RegionKind.MAPPED, RegionKind.IMAGE)
        protection.check(protect, allow_writecopy=shared)
        if alloc.kind is RegionKind.IMAGE:
            protect = protection.without_write(protect)
        allows = getattr(alloc.owner, "allows_protect", None)
        if allows is not None and not allows(protect):
            raise EmulatorMemError(
                f"protection {protect:#x} is incompatible with the view",
                status=C.STATUS_SECTION_PROTECTION,
            )
        return protect

    def _set_protection(self, alloc: Allocation, first: int, last: int, protect: int) -> None:
        """Give pages [first, last) ``protect``; copy-on-write pages that already have their
        private copy get the resolved protection instead (Windows reports PAGE_READWRITE
        for PAGE_WRITECOPY asked of a written page: it is private already)."""
        self.space.set_pages(alloc, first, last, protect)
        if not protection.is_writecopy(protect):
            return
        copies = alloc.copied_pages(first, last)
        if copies:
            resolved = protection.resolve_writecopy(protect)
            for index in copies:
                self.space.set_pages(alloc, index, index + 1, resolved)

    # -- host access (emulator_mem.regions.access) -----------------------------------------
    def read(self, address: int, size: int) -> bytes:
        """Guest memory as the host sees it: ignores protection, not commit state."""
        return access.read(self.space, self.phys, address, size)

    def try_read(self, address: int, size: int) -> bytes | None:
        try:
            return self.read(address, size)
        except MemoryAccessError:
            return None

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Store into guest memory, ignoring protection (not commit state); all or nothing.

        Copy-on-write pages get their private copy and write-watched or checkpointed pages
        are marked, exactly as a guest write would.
        """
        access.write(self.space, self.mmu, address, data)

    def try_write(self, address: int, data: bytes | bytearray | memoryview) -> bool:
        try:
            self.write(address, data)
        except MemoryAccessError:
            return False
        return True

    # -- queries -----------------------------------------------------------------------
    def query(self, address: int) -> MemoryBasicInformation:
        """VirtualQuery: the page holding ``address`` and the rest of its region.

        Windows (and Wine: ``base = ROUND_ADDR(addr, page_mask)``) reports the page that
        holds the address as ``BaseAddress`` and counts ``RegionSize`` from that page to the
        end of the run of equal pages, so a query in the middle of a region does not see the
        pages before it. :meth:`region_info` gives the whole run.
        """
        # one record, built once: VirtualQuery is the hottest call of many samples
        base, abase, aprot, size, state, protect, mtype = self._run_fields(address)
        start = page_round_down(address)
        return MemoryBasicInformation(
            start, abase, aprot, base + size - start, state, protect, mtype
        )

    def _run_at(self, address: int) -> MemoryBasicInformation:
        """The whole region (maximal run of equal pages, or free gap) containing ``address``."""
        return MemoryBasicInformation(*self._run_fields(address))

    def _run_fields(self, address: int) -> tuple[int, int, int, int, int, int, int]:
        """:meth:`_run_at`'s fields, in MEMORY_BASIC_INFORMATION order."""
        if not 0 <= address < self.highest_address:
            raise InvalidParameterError(f"{address:#x} is outside the user address range")
        alloc = self.space.find(address)
        if alloc is None:
            allocations = self.space.allocations
            nxt = allocations.bisect_right(address)
            end = allocations.peekitem(nxt)[0] if nxt < len(allocations) else self.highest_address
            start = allocations.peekitem(nxt - 1)[1].end if nxt else 0
            return start, 0, 0, end - start, C.MEM_FREE, C.PAGE_NOACCESS, 0
        s, e, p = alloc.run_at((address - alloc.base) >> PAGE_SHIFT)
        return (alloc.base + (s << PAGE_SHIFT), alloc.base, alloc.allocation_protect,
                (e - s) << PAGE_SHIFT, C.MEM_COMMIT if p else C.MEM_RESERVE, p,
                memory_type(alloc.kind))  # fmt: skip

    def regions(self) -> Iterator[MemoryBasicInformation]:
        """Every region from the lowest user address up, free ones included (a VMMap walk)."""
        address = 0
        while address < self.highest_address:
            mbi = self.query(address)
            yield mbi
            address = mbi.BaseAddress + mbi.RegionSize

    def region_info(self, address: int) -> RegionInfo:
        """The whole region around ``address`` (from its first page, unlike :meth:`query`)."""
        mbi = self._run_at(address)
        alloc = self.space.find(address)
        if alloc is None:
            return RegionInfo(mbi.BaseAddress, mbi.RegionSize, 0, 0, False, False, 0, 0, None)
        return RegionInfo(
            mbi.BaseAddress, mbi.RegionSize, alloc.base, alloc.size, True,
            mbi.State == C.MEM_COMMIT, mbi.Protect, alloc.allocation_protect, alloc.kind,
        )

    def region_kind(self, address: int) -> RegionKind | None:
        alloc = self.space.find(address)
        return None if alloc is None else alloc.kind

    def allocation_at(self, address: int) -> Allocation | None:
        return self.space.find(address)

    def find_free(
        self,
        size: int,
        *,
        min_address: int | None = None,
        max_address: int | None = None,
        alignment: int = GRANULARITY,
        top_down: bool = False,
    ) -> int:
        """Lowest (or highest) free aligned range of ``size`` bytes; NoMemoryError if none."""
        size = self.check_size(size)
        lo = self.lowest_address if top_down else self._default_allocation_address
        if min_address is not None:
            lo = max(min_address, self.lowest_address)
        hi = self.highest_address if max_address is None else min(max_address, self.highest_address)
        free = self.space.free
        found = (free.find_last if top_down else free.find_first)(size, alignment, lo, hi)
        if found is None and min_address is None and lo > self.lowest_address and not top_down:
            found = free.find_first(size, alignment, self.lowest_address, hi)
        if found is None:
            raise NoMemoryError(f"no free range of {size:#x} bytes")
        return int(found)

    def overlaps_reserved(self, address: int, size: int) -> bool:
        return self.space.overlaps(address, address + size)

    def reserved_regions(self) -> list[AllocationInfo]:
        return [
            AllocationInfo(a.base, a.size, a.allocation_protect, a.kind,
                           a.committed_pages << PAGE_SHIFT, a.name)
            for a in self.space
        ]

    def stats(self) -> MemoryStats:
        return MemoryStats(
            self.space.reserved_bytes, self.space.committed_pages << PAGE_SHIFT,
            len(self.space), self.phys.region_count(),
        )

    # -- faults ------------------------------------------------------------------------
    def take_fault(self) -> Fault | None:
        """The exception the last refused guest access raised (then forget it).

        Call it right after ``uc.emu_start`` stopped: the exact faulting address is
        recovered from the faulting instruction (Unicorn reports only the page), which the
        PC still points at.
        """
        fault, self.mmu.fault = self.mmu.fault, None
        if fault is None:
            return None
        address = faults.precise_address(fault, self.uc, self.try_read, self.is_64bit)
        return Fault(fault.status, address, fault.access)

    # -- aliases -----------------------------------------------------------------------
    def map_alias(self, source: int, size: int, protect: int, *, address: int | None = None) -> int:
        """Map the committed pages [source, source+size) a second time (MEM_MAPPED).

        The new pages translate to the *same* physical pages, so guest writes through one
        mapping are visible through the other: JIT dual mapping (RX + RW views) is built on
        this. ``source`` must be page aligned, identity backed and committed throughout.
        """
        size = self.check_size(size)
        protection.check(protect)
        if source % PAGE_SIZE:
            raise InvalidParameterError("alias source must be page aligned")
        spans = list(access.spans(self.space, source, size))
        if len(spans) != 1 or spans[0][0].private_pages or spans[0][0].kind is RegionKind.MMIO:
            raise InvalidParameterError("alias source must be one plain allocation")
        src = spans[0][0]
        if address is None:
            address = self.find_free(size)
        elif address % GRANULARITY or not self.space.free.is_free(address, address + size):
            raise ConflictingAddressesError(f"{address:#x} is not a free 64 KiB aligned range")
        self.check_range(address, size)
        alias = Allocation(address, size, protect, RegionKind.MAPPED,
                           phys_base=src.phys_base + (source - src.base), owner=src)
        self.insert_allocation(alias, reserve_only=False)
        src.alias_count += 1
        return address

    # -- write watch -------------------------------------------------------------------
    def get_write_watch(
        self, address: int, size: int, *, reset: bool = False, max_count: int | None = None
    ) -> list[int]:
        """Pages of a MEM_WRITE_WATCH allocation written since the last reset (GetWriteWatch)."""
        return writewatch.get_write_watch(self, address, size, reset=reset, max_count=max_count)

    def reset_write_watch(self, address: int, size: int) -> None:
        """ResetWriteWatch: forget the writes to the range."""
        writewatch.reset_write_watch(self, address, size)

    # -- other region kinds ------------------------------------------------------------
    def allocate_mmio(
        self, address: int | None, size: int, read: MmioRead, write: MmioWrite,
        *, name: str | None = None,
    ) -> int:
        """An MMIO region whose guest and host accesses call ``read(offset, size) -> int``
        and ``write(offset, size, value)``; see :mod:`emulator_mem.mmio`."""
        return mmio.allocate_mmio(self, address, size, read, write, name)

    def _release_owner(self, alloc: Allocation) -> None:
        if isinstance(alloc.owner, Allocation):  # a map_alias view
            alloc.owner.alias_count -= 1
        mmio.release_mmio(self, alloc)
        image_map.forget_image(self, alloc)

    def map_image(self, data: bytes, base: int | None = None, name: str | None = None) -> int:
        """Map a PE32/PE32+ file like the Windows loader; returns its base.

        ``mm.images[base]`` then describes it (sections, entry point, imports with their IAT
        slots, exports). ImageFormatError for a malformed file, and nothing is mapped.
        """
        return image_map.map_image(self, data, base, name)

    def unmap_view(self, address: int) -> None:
        """NtUnmapViewOfSection for section views and images."""
        self.sections.unmap_view(address)

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """Remember the whole state (memory, layout, registers) for :meth:`rollback`.

        Replaces the previous checkpoint. Costs a copy of the bookkeeping, not of memory:
        pages are saved as they are first written afterwards (see :mod:`emulator_mem.rollback`).
        """
        return _checkpoint(self)

    def rollback(self, checkpoint: Checkpoint) -> None:
        """Return to ``checkpoint``; time proportional to the pages dirtied since. Repeatable."""
        _rollback(self, checkpoint)

    # -- validation helpers ------------------------------------------------------------
    def _charge_commit(self, size: int) -> None:
        """Refuse a commit of ``size`` more bytes that would pass :attr:`commit_limit`."""
        if self.space.committed_pages * PAGE_SIZE + size > self.commit_limit:
            raise NoMemoryError(
                f"committing {size:#x} more bytes passes the commit limit {self.commit_limit:#x}",
                status=C.STATUS_COMMITMENT_LIMIT)

    def check_size(self, size: int) -> int:
        """A positive size that fits the address space, rounded up to whole pages."""
        if size <= 0:
            raise InvalidParameterError(f"size {size:#x} must be positive")
        if size > self.highest_address:
            raise NoMemoryError(f"size {size:#x} exceeds the address space")
        return page_round_up(size)

    def check_range(self, address: int, size: int) -> None:
        """Refuse a range that leaves the user address range."""
        if address < self.lowest_address or address + size > self.highest_address:
            raise InvalidParameterError(f"{address:#x}+{size:#x} is outside the user address range")

    def _pages_in_one_allocation(self, address: int, size: int) -> tuple[Allocation, int, int]:
        if size <= 0:
            raise InvalidParameterError(f"size {size:#x} must be positive")
        start = page_round_down(address)
        end = page_round_up(address + size)
        alloc = self.space.find(start)
        if alloc is None:
            raise NotAllocatedError(f"{address:#x} is not inside a reservation")
        if end > alloc.end:
            raise ConflictingAddressesError(f"{address:#x}+{size:#x} crosses the end of its reservation")
        return alloc, (start - alloc.base) >> PAGE_SHIFT, (end - alloc.base) >> PAGE_SHIFT
