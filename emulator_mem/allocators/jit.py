"""JitAllocator: asmjit's allocator for JIT-compiled code, handing out guest memory.

Reproduces ``asmjit::JitAllocator`` (seeds ``jit_allocator.txt`` and
``virtual_memory_options.txt``) on top of the manager, so the code a JIT emits lands in
real guest pages that the emulated CPU executes:

* memory comes in *blocks* (one manager reservation each); a block is cut into granules
  of the pool's granularity (64 bytes by default);
* **no metadata lives in guest memory**: each block has two bit vectors, ``used`` (granule
  in use) and ``stop`` (last granule of an allocation), so a release needs nothing but the
  pointer. They are host bytearrays with one byte per bit: bit tests are O(1) and
  "next stop bit" is a C-speed ``find``, where Python ints as packed vectors cost time
  proportional to the whole block on every shift and mask. The price is 2 host bytes per
  granule (~3% of the guest bytes at 64-byte granularity);
* blocks are indexed by their RX address in a ``SortedDict`` (asmjit's RB tree), so
  :meth:`JitAllocator.release`, :meth:`~JitAllocator.shrink` and :meth:`~JitAllocator.query`
  find their block in O(log n);
* with ``USE_DUAL_MAPPING`` a block is mapped twice with :meth:`MemoryManager.map_alias`:
  PAGE_EXECUTE_READ at ``rx`` and PAGE_READWRITE at ``rw``, the same physical pages; code
  written through ``rw`` runs at ``rx`` and a guest write to ``rx`` faults (W^X). Without
  it a block is PAGE_EXECUTE_READWRITE and ``rx == rw``;
* ``USE_MULTIPLE_POOLS`` gives three pools of granularity g, 2g and 4g (64/128/256); a size
  goes to the pool with the largest granularity dividing it, so no granule is wasted;
* ``FILL_UNUSED_MEMORY`` fills new blocks and freed spans with the fill pattern (``int3``
  0xCC by default) so a jump into freed code traps instead of running stale instructions;
* without ``IMMEDIATE_RELEASE`` one empty block per pool is kept, so alloc/release of a single
  function at a block boundary does not reserve and release guest memory each time.

Deliberate differences from asmjit, both for speed in Python:

* asmjit scans each block's bit vectors for a free run (first fit, bit-parallel C). A scan
  in Python costs time proportional to the fragmented block, so each pool also indexes its
  *free runs* (maximal runs of free granules) in a ``SortedList`` by (length, address):
  alloc is a best-fit bisect and release merges with its neighbours through two per-block
  dicts (run start -> end, end -> start) — O(log n) both, and best fit keeps big runs whole.
  The bit vectors stay the truth for release, shrink, query and double-free detection;
* blocks of a pool double in size (the n-th block is ``block_size << n``) up to
  :data:`MAX_GROWN_BLOCK_SIZE`, as asmjit's do (its cap is larger);
* :meth:`JitAllocator.query` accepts any address inside an allocation and returns the
  allocation's start (asmjit returns the granule's).

Misuse raises typed :class:`~emulator_mem.errors.AllocatorError` subclasses and changes
nothing.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass, field

from sortedcontainers import SortedDict, SortedList

from ..errors import (
    AllocationTooLargeError,
    AllocatorOutOfMemoryError,
    DoubleReleaseError,
    EmulatorMemError,
    InvalidAllocationSizeError,
    InvalidParameterError,
    UnknownAllocationError,
)
from ..manager import MemoryManager
from ..windows import constants as C


class JitAllocatorOptions(enum.IntFlag):
    """asmjit's ``JitAllocatorOptions`` (same bit values)."""

    NONE = 0
    USE_DUAL_MAPPING = 0x00000001
    USE_MULTIPLE_POOLS = 0x00000002
    FILL_UNUSED_MEMORY = 0x00000004
    IMMEDIATE_RELEASE = 0x00000008
    CUSTOM_FILL_PATTERN = 0x10000000


class ResetPolicy(enum.IntEnum):
    """asmjit's ``ResetPolicy``: SOFT keeps one (wiped) block per pool, HARD releases all."""

    SOFT = 0
    HARD = 1


DEFAULT_BLOCK_SIZE = 0x10000  # asmjit: 64 KiB
DEFAULT_GRANULARITY = 64  # asmjit: 64 bytes
DEFAULT_FILL_PATTERN = 0xCCCCCCCC  # x86 int3, as asmjit's default
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 0x10000, 0x10000000  # asmjit: 64 KiB .. 256 MiB
MIN_GRANULARITY, MAX_GRANULARITY = 64, 256  # asmjit's accepted range
MAX_GROWN_BLOCK_SIZE = 0x400000  # growth stops at 4 MiB (asmjit: 32 MiB+)
MAX_ALLOCATION_SIZE = 0x7FFFFFFF  # asmjit: larger than UINT32_MAX / 2 is kErrorTooLarge
MULTI_POOL_COUNT = 3


@dataclass(slots=True, frozen=True)
class JitStatistics:
    """asmjit's ``JitAllocator::Statistics``: sizes in bytes.

    ``overhead_size`` is the allocator's own bookkeeping (block records, bit vectors and the
    free-run index, all on the host; nothing is stored in guest memory).
    """

    block_count: int
    allocation_count: int
    used_size: int
    reserved_size: int
    overhead_size: int

    @property
    def unused_size(self) -> int:
        return self.reserved_size - self.used_size

    @property
    def used_as_percent(self) -> float:
        return self.used_size * 100.0 / self.reserved_size if self.reserved_size else 0.0

    @property
    def overhead_as_percent(self) -> float:
        return self.overhead_size * 100.0 / self.reserved_size if self.reserved_size else 0.0

    # short aliases
    @property
    def used(self) -> int:
        return self.used_size

    @property
    def reserved(self) -> int:
        return self.reserved_size

    @property
    def overhead(self) -> int:
        return self.overhead_size


@dataclass(slots=True, frozen=True)
class JitBlockInfo:
    """One block as :meth:`JitAllocator.blocks` lists it (for vmmap-style views and tests)."""

    rx: int
    rw: int
    size: int
    granularity: int
    used_size: int


@dataclass(slots=True, eq=False)
class _Pool:
    """Blocks of one granularity and the index of their free runs.

    ``runs`` holds ``(length, block rx, start)`` for every maximal run of free granules
    in the pool's blocks, so the smallest run that fits is one bisect away.
    """

    granularity: int
    shift: int
    blocks: list[_Block] = field(default_factory=list)
    runs: SortedList = field(default_factory=SortedList)
    empty_blocks: int = 0


@dataclass(slots=True, eq=False)
class _Block:
    """One reservation cut into ``area_size`` granules.

    ``used[i]`` / ``stop[i]`` are the asmjit bit vectors (0 or 1 per granule). ``run_end``
    and ``run_start`` map the start of each free run to its end and back: the two
    neighbours a release merges with, found in O(1).
    """

    pool: _Pool
    rx: int
    rw: int
    size: int
    area_size: int
    used: bytearray
    stop: bytearray
    area_used: int = 0
    run_end: dict[int, int] = field(default_factory=dict)  # free run start -> end
    run_start: dict[int, int] = field(default_factory=dict)  # free run end -> start


_RUN_CACHE = 4096  # runs up to this many granules come from preallocated views
_ZEROS = memoryview(bytes(_RUN_CACHE))
_ONES = memoryview(b"\x01" * _RUN_CACHE)


def _zeros(n: int) -> memoryview | bytes:
    return _ZEROS[:n] if n <= _RUN_CACHE else bytes(n)


def _ones(n: int) -> memoryview | bytes:
    return _ONES[:n] if n <= _RUN_CACHE else b"\x01" * n


def _add_run(block: _Block, start: int, end: int) -> None:
    block.run_end[start] = end
    block.run_start[end] = start
    block.pool.runs.add((end - start, block.rx, start))


def _remove_run(block: _Block, start: int, end: int) -> None:
    del block.run_end[start]
    del block.run_start[end]
    block.pool.runs.remove((end - start, block.rx, start))


class JitAllocator:
    """Allocates executable guest memory for JIT code; see the module docstring.

    ``alloc`` returns ``(rx, rw)``: write code through ``rw``, run it at ``rx``.
    """

    def __init__(
        self,
        mm: MemoryManager,
        options: JitAllocatorOptions | int = JitAllocatorOptions.NONE,
        *,
        block_size: int | None = None,
        granularity: int | None = None,
        fill_pattern: int | None = None,
    ) -> None:
        opts = JitAllocatorOptions(options)
        block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        granularity = DEFAULT_GRANULARITY if granularity is None else granularity
        if not (MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE) or block_size & (block_size - 1):
            raise InvalidParameterError(
                f"block size {block_size:#x} must be a power of two in 64 KiB..256 MiB"
            )
        if not (MIN_GRANULARITY <= granularity <= MAX_GRANULARITY) or granularity & (
            granularity - 1
        ):
            raise InvalidParameterError(f"granularity {granularity} must be 64, 128 or 256")
        if fill_pattern is not None:
            if not 0 <= fill_pattern <= 0xFFFFFFFF:
                raise InvalidParameterError(f"fill pattern {fill_pattern:#x} is not a uint32")
            opts |= JitAllocatorOptions.CUSTOM_FILL_PATTERN  # a pattern given is a pattern used
        elif opts & JitAllocatorOptions.CUSTOM_FILL_PATTERN:
            raise InvalidParameterError("CUSTOM_FILL_PATTERN needs a fill_pattern")
        self.mm = mm
        self._options = opts
        self._block_size = block_size
        self._granularity = granularity
        self._fill_pattern = DEFAULT_FILL_PATTERN if fill_pattern is None else fill_pattern
        self._fill_word = self._fill_pattern.to_bytes(4, "little")
        self._fill = bool(opts & JitAllocatorOptions.FILL_UNUSED_MEMORY)
        self._dual = bool(opts & JitAllocatorOptions.USE_DUAL_MAPPING)
        count = MULTI_POOL_COUNT if opts & JitAllocatorOptions.USE_MULTIPLE_POOLS else 1
        self._pools = [
            _Pool(granularity << i, (granularity << i).bit_length() - 1) for i in range(count)
        ]
        self._tree: SortedDict = SortedDict()  # rx -> _Block
        self._allocation_count = 0
        self._used_size = 0
        self._reserved_size = 0

    # -- properties (asmjit's accessors) -------------------------------------------------
    @property
    def options(self) -> JitAllocatorOptions:
        return self._options

    def has_option(self, option: JitAllocatorOptions | int) -> bool:
        """True when every bit of ``option`` is set (asmjit's ``hasOption``)."""
        return bool(option) and self._options & option == option

    @property
    def block_size(self) -> int:
        """The base (minimum) block size."""
        return self._block_size

    @property
    def granularity(self) -> int:
        """The granularity of the first pool (the others are 2x and 4x)."""
        return self._granularity

    @property
    def fill_pattern(self) -> int:
        """The uint32 written over unused memory when FILL_UNUSED_MEMORY is set."""
        return self._fill_pattern

    # -- alloc ---------------------------------------------------------------------------
    def alloc(self, size: int) -> tuple[int, int]:
        """Allocate ``size`` bytes of code memory; returns ``(rx, rw)``.

        Raises InvalidAllocationSizeError for ``size <= 0``, AllocationTooLargeError beyond
        2 GiB and AllocatorOutOfMemoryError when the guest has no room for a new block.
        """
        if size <= 0:
            raise InvalidAllocationSizeError(f"allocation size {size} must be positive")
        if size > MAX_ALLOCATION_SIZE:
            raise AllocationTooLargeError(f"allocation size {size:#x} is too large")
        granularity = self._granularity
        size = (size + granularity - 1) & -granularity
        pool = self._pool_for(size)
        n = size >> pool.shift
        runs = pool.runs
        i = runs.bisect_left((n, 0, 0))
        if i < len(runs):
            length, rx, start = runs[i]
            block: _Block = self._tree[rx]
        else:
            block = self._new_block(pool, size)
            start, length = 0, block.area_size
        end = start + length
        _remove_run(block, start, end)
        if length > n:
            _add_run(block, start + n, end)
        block.used[start : start + n] = _ones(n)
        block.stop[start + n - 1] = 1
        if not block.area_used:
            pool.empty_blocks -= 1
        block.area_used += n
        self._allocation_count += 1
        self._used_size += size
        offset = start << pool.shift
        return block.rx + offset, block.rw + offset

    def _pool_for(self, size: int) -> _Pool:
        """The pool with the largest granularity that divides ``size`` (asmjit's choice)."""
        pools = self._pools
        for pool in reversed(pools):
            if not size & (pool.granularity - 1):
                return pool
        return pools[0]

    def _ideal_block_size(self, pool: _Pool, size: int) -> int:
        base = self._block_size
        ideal = max(base, min(MAX_GROWN_BLOCK_SIZE, base << min(len(pool.blocks), 16)))
        if size > ideal:
            ideal = (size + base - 1) & -base
        return ideal

    def _new_block(self, pool: _Pool, size: int) -> _Block:
        """Reserve, commit, map (twice for dual mapping) and fill one new block."""
        block_size = self._ideal_block_size(pool, size)
        mm = self.mm
        try:
            if self._dual:
                rx = mm.allocate(block_size, C.PAGE_EXECUTE_READ, name="jit")
                try:
                    rw = mm.map_alias(rx, block_size, C.PAGE_READWRITE)
                except EmulatorMemError:
                    mm.release(rx)
                    raise
            else:
                rx = rw = mm.allocate(block_size, C.PAGE_EXECUTE_READWRITE, name="jit")
        except EmulatorMemError as exc:
            raise AllocatorOutOfMemoryError(
                f"no guest memory for a {block_size:#x}-byte JIT block: {exc}", status=exc.status
            ) from exc
        area = block_size >> pool.shift
        block = _Block(pool, rx, rw, block_size, area, bytearray(area), bytearray(area))
        if self._fill:
            mm.write(rw, self._fill_word * (block_size >> 2))
        _add_run(block, 0, area)
        pool.blocks.append(block)
        pool.empty_blocks += 1
        self._tree[rx] = block
        self._reserved_size += block_size
        return block

    def _destroy_block(self, block: _Block) -> None:
        """Unmap an empty block (its one free run is dropped by the caller or by reset)."""
        mm = self.mm
        if block.rw != block.rx:
            mm.release(block.rw)
        mm.release(block.rx)
        del self._tree[block.rx]
        self._reserved_size -= block.size

    # -- lookup --------------------------------------------------------------------------
    def _block_at(self, rx: int) -> _Block | None:
        tree = self._tree
        i = tree.bisect_right(rx) - 1
        if i < 0:
            return None
        block: _Block = tree.peekitem(i)[1]
        return block if rx < block.rx + block.size else None

    def _locate_start(self, rx: int) -> tuple[_Block, int]:
        """Block and granule of the allocation that *starts* at ``rx``, or raise."""
        block = self._block_at(rx)
        if block is None:
            raise UnknownAllocationError(f"{rx:#x} was not allocated by this JitAllocator")
        shift = block.pool.shift
        offset = rx - block.rx
        if offset & ((1 << shift) - 1):
            raise UnknownAllocationError(f"{rx:#x} is not the start of an allocation")
        index = offset >> shift
        if not block.used[index]:
            raise DoubleReleaseError(f"{rx:#x} is not allocated (already released?)")
        if index and block.used[index - 1] and not block.stop[index - 1]:
            raise UnknownAllocationError(f"{rx:#x} is inside an allocation, not its start")
        return block, index

    # -- release / shrink ----------------------------------------------------------------
    def release(self, rx: int) -> None:
        """Free the allocation starting at ``rx``.

        DoubleReleaseError if it is already free, UnknownAllocationError for any other
        address; either way nothing changes.
        """
        block, index = self._locate_start(rx)
        last = block.stop.find(1, index)
        block.stop[last] = 0
        self._free_span(block, index, last + 1)
        self._allocation_count -= 1
        pool = block.pool
        if block.area_used:
            self._fill_span(block, index, last + 1)
        elif pool.empty_blocks or self._options & JitAllocatorOptions.IMMEDIATE_RELEASE:
            _remove_run(block, 0, block.area_size)
            pool.blocks.remove(block)
            self._destroy_block(block)
        else:
            pool.empty_blocks += 1
            self._fill_span(block, index, last + 1)

    def shrink(self, rx: int, new_size: int) -> None:
        """Give back the tail of the allocation at ``rx``; ``new_size`` 0 releases it.

        Growing is refused with InvalidAllocationSizeError (asmjit: kErrorInvalidState).
        """
        if new_size < 0:
            raise InvalidAllocationSizeError(f"new size {new_size} is negative")
        block, index = self._locate_start(rx)
        if new_size == 0:
            self.release(rx)
            return
        last = block.stop.find(1, index)
        shift = block.pool.shift
        keep = (new_size + (1 << shift) - 1) >> shift
        count = last + 1 - index
        if keep > count:
            raise InvalidAllocationSizeError(
                f"cannot shrink {count << shift:#x} bytes at {rx:#x} to {new_size:#x}"
            )
        if keep == count:
            return
        block.stop[last] = 0
        block.stop[index + keep - 1] = 1
        self._free_span(block, index + keep, last + 1)
        self._fill_span(block, index + keep, last + 1)

    def _free_span(self, block: _Block, start: int, end: int) -> None:
        """Mark granules [start, end) free and merge them into the free-run index."""
        n = end - start
        block.used[start:end] = _zeros(n)
        block.area_used -= n
        self._used_size -= n << block.pool.shift
        lo, hi = start, end
        before = block.run_start.get(start)
        if before is not None:
            _remove_run(block, before, start)
            lo = before
        after = block.run_end.get(end)
        if after is not None:
            _remove_run(block, end, after)
            hi = after
        _add_run(block, lo, hi)

    def _fill_span(self, block: _Block, start: int, end: int) -> None:
        if self._fill:
            shift = block.pool.shift
            self.mm.write(block.rw + (start << shift), self._fill_word * ((end - start) << shift >> 2))

    # -- query / reset / statistics ------------------------------------------------------
    def query(self, rx: int) -> tuple[int, int, int]:
        """``(rx, rw, size)`` of the allocation containing ``rx``; size is whole granules."""
        block = self._block_at(rx)
        if block is None:
            raise UnknownAllocationError(f"{rx:#x} was not allocated by this JitAllocator")
        shift = block.pool.shift
        index = (rx - block.rx) >> shift
        if not block.used[index]:
            raise UnknownAllocationError(f"{rx:#x} is in free JIT memory")
        start = max(block.stop.rfind(1, 0, index), block.used.rfind(0, 0, index)) + 1
        last = block.stop.find(1, index)
        offset = start << shift
        return block.rx + offset, block.rw + offset, (last + 1 - start) << shift

    def reset(self, policy: ResetPolicy | int = ResetPolicy.SOFT) -> None:
        """Free every allocation (all pointers become invalid), as asmjit's ``reset``.

        SOFT keeps the first block of each pool, wiped and refilled, unless IMMEDIATE_RELEASE
        is set; HARD releases every block.
        """
        policy = ResetPolicy(policy)
        keep_one = policy is ResetPolicy.SOFT and not self._options & (
            JitAllocatorOptions.IMMEDIATE_RELEASE
        )
        for pool in self._pools:
            keep = pool.blocks[0] if keep_one and pool.blocks else None
            for block in pool.blocks:
                if block is not keep:
                    self._destroy_block(block)
            pool.blocks = [] if keep is None else [keep]
            pool.runs.clear()
            pool.empty_blocks = 0 if keep is None else 1
            if keep is not None:
                keep.used[:] = keep.stop[:] = bytes(keep.area_size)
                keep.area_used = 0
                keep.run_end.clear()
                keep.run_start.clear()
                _add_run(keep, 0, keep.area_size)
                self._fill_span(keep, 0, keep.area_size)
        self._allocation_count = 0
        self._used_size = 0

    def statistics(self) -> JitStatistics:
        """Block and allocation counts, bytes used and reserved, host bookkeeping bytes.

        The overhead counts block records, both bit vectors and the free-run index.
        """
        overhead = sum(sys.getsizeof(p) for p in self._pools)
        run_entry = sys.getsizeof((0, 0, 0)) + 8  # tuple + its slot in the sorted list
        for b in self._tree.values():
            overhead += sys.getsizeof(b) + sys.getsizeof(b.used) + sys.getsizeof(b.stop)
            overhead += sys.getsizeof(b.run_end) + sys.getsizeof(b.run_start)
            overhead += len(b.run_end) * run_entry
        return JitStatistics(
            len(self._tree), self._allocation_count, self._used_size, self._reserved_size, overhead
        )

    def blocks(self) -> list[JitBlockInfo]:
        """Every block, lowest RX address first."""
        return [
            JitBlockInfo(b.rx, b.rw, b.size, b.pool.granularity, b.area_used << b.pool.shift)
            for b in self._tree.values()
        ]
