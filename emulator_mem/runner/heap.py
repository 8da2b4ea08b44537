"""The process heap: HeapAlloc/HeapFree/HeapReAlloc/HeapSize over guest memory.

The heap is a reservation (SizeOfHeapReserve) committed as it grows, and its truth lives in
guest memory like a real heap's: a segment header at the base, then blocks, each a 16-byte
header (total size, requested size, flags, magic) followed by the user bytes, 16-byte
aligned. The Python side only keeps an index of the blocks, which :meth:`ProcessHeap.attach`
rebuilds by walking the headers — so a snapshot of guest memory is a snapshot of the heap,
and resuming needs nothing else. Allocation is first fit over freed blocks, else the top of
the heap moves up; freeing coalesces with free neighbours. The handle is the base address,
as GetProcessHeap returns on Windows.

Large blocks: a request above :data:`LARGE_THRESHOLD` bytes (the VirtualMemoryThreshold of
Windows' heap, 0x7F000 on x86 and 0xFF000 on x64) gets its own virtual allocation, as on
Windows, so a heap whose reservation is 1 MiB still serves a 2 MiB HeapAlloc; HeapFree
releases the allocation again. Each such block starts with a header (next large block,
requested size, flags, magic) and the blocks form a list whose head is kept in the segment
header, so :meth:`ProcessHeap.attach` finds them after a snapshot too.

Deliberate differences: no look-aside lists or low-fragmentation heap, so addresses differ
from Windows'; a corrupt or foreign pointer makes HeapFree/HeapSize fail with
ERROR_INVALID_PARAMETER instead of raising STATUS_HEAP_CORRUPTION.
"""

from __future__ import annotations

import struct

from sortedcontainers import SortedDict

from ..errors import EmulatorMemError, RunnerError
from ..manager import MemoryManager
from ..space.address_space import PAGE_SIZE, page_round_up
from ..windows import constants as C

SEGMENT_MAGIC = b"EMHEAP01"
SEGMENT = struct.Struct("<8sQQ")  # magic, reserve size, top (offset past the last block)
LARGE_HEAD = struct.Struct("<Q")  # after the segment header: the first large block, or 0
LARGE = struct.Struct("<QQII")  # next large block, requested size, flags, magic
LARGE_MAGIC = 0x1A6EB10C
LARGE_HEADER = 0x20  # user bytes start here in a large block's allocation (16-byte aligned)
LARGE_THRESHOLD = {False: 0x7F000, True: 0xFF000}  # by bitness
FIRST_BLOCK = 0x40
BLOCK = struct.Struct("<IIII")  # total size, requested size, flags, magic
BLOCK_MAGIC = 0xB10C4EA9
BUSY = 1
ALIGN = 16
MIN_SPLIT = 2 * BLOCK.size


class ProcessHeap:
    """One Windows heap in guest memory; ``handle`` is its base address."""

    def __init__(self, mm: MemoryManager, base: int, reserve: int, top: int) -> None:
        self.mm = mm
        self.base = base
        self.reserve = reserve
        self.top = top  # offset of the first byte past the last block
        self.blocks: SortedDict = SortedDict()  # address -> (total size, busy)
        self.large: dict[int, int] = {}  # user pointer -> allocation base, in list order

    @property
    def handle(self) -> int:
        return self.base

    # -- creation / re-attachment ------------------------------------------------------
    @classmethod
    def create(cls, mm: MemoryManager, reserve: int, commit: int) -> ProcessHeap:
        reserve = max(page_round_up(reserve), 16 * PAGE_SIZE)
        base = mm.allocate(reserve, C.PAGE_READWRITE, reserve_only=True, name="process heap")
        mm.commit(base, max(page_round_up(commit), PAGE_SIZE), C.PAGE_READWRITE)
        heap = cls(mm, base, reserve, FIRST_BLOCK)
        heap._write_segment()
        return heap

    @classmethod
    def attach(cls, mm: MemoryManager, base: int) -> ProcessHeap:
        """Rebuild the block index from guest memory (after a snapshot was loaded)."""
        magic, reserve, top = SEGMENT.unpack(mm.read(base, SEGMENT.size))
        if magic != SEGMENT_MAGIC:
            raise RunnerError(f"no process heap at {base:#x}")
        heap = cls(mm, base, reserve, top)
        pos = FIRST_BLOCK
        while pos < top:
            size, _, flags, block_magic = BLOCK.unpack(mm.read(base + pos, BLOCK.size))
            if block_magic != BLOCK_MAGIC or size < BLOCK.size or size % ALIGN:
                raise RunnerError(f"heap block at {base + pos:#x} is corrupt")
            heap.blocks[base + pos] = (size, bool(flags & BUSY))
            pos += size
        (region,) = LARGE_HEAD.unpack(mm.read(base + SEGMENT.size, LARGE_HEAD.size))
        while region:
            nxt, _, _, magic = LARGE.unpack(mm.read(region, LARGE.size))
            if magic != LARGE_MAGIC or region + LARGE_HEADER in heap.large:
                raise RunnerError(f"large heap block at {region:#x} is corrupt")
            heap.large[region + LARGE_HEADER] = region
            region = nxt
        return heap

    def _write_segment(self) -> None:
        self.mm.write(self.base, SEGMENT.pack(SEGMENT_MAGIC, self.reserve, self.top))

    def _write_block(self, address: int, size: int, requested: int, busy: bool) -> None:
        self.mm.write(address, BLOCK.pack(size, requested, BUSY if busy else 0, BLOCK_MAGIC))
        self.blocks[address] = (size, busy)

    # -- the API -----------------------------------------------------------------------
    def alloc(self, size: int, flags: int = 0) -> int:
        """HeapAlloc: the user pointer, or 0 when the memory is exhausted."""
        if size < 0:
            return 0
        if size > LARGE_THRESHOLD[self.mm.is_64bit]:
            return self._alloc_large(size)  # fresh pages are zero: HEAP_ZERO_MEMORY holds
        if size > self.reserve:
            return 0
        need = _block_size(size)
        address = self._first_fit(need)
        if address is None:
            address = self._grow(need)
            if address is None:
                return 0
            self._write_block(address, need, size, True)
        else:
            self._take(address, need, size)
        user = address + BLOCK.size
        if flags & C.HEAP_ZERO_MEMORY and size:
            self.mm.write(user, bytes(size))
        return user

    def free(self, pointer: int) -> bool:
        """HeapFree: False for a pointer that is not a busy block of this heap."""
        if pointer in self.large:
            self._free_large(pointer)
            return True
        block = self._block_of(pointer)
        if block is None:
            return False
        size, _ = self.blocks[block]
        self._write_block(block, size, 0, False)
        self._coalesce(block)
        return True

    def size(self, pointer: int) -> int | None:
        """HeapSize: the requested size, or None for a foreign pointer."""
        region = self.large.get(pointer)
        if region is not None:
            return int(LARGE.unpack(self.mm.read(region, LARGE.size))[1])
        block = self._block_of(pointer)
        if block is None:
            return None
        return int(BLOCK.unpack(self.mm.read(block, BLOCK.size))[1])

    def realloc(self, pointer: int, size: int, flags: int = 0) -> int:
        """HeapReAlloc: in place when the block (plus a free neighbour) suffices, else move.

        HEAP_ZERO_MEMORY zeroes the bytes beyond the old size; HEAP_REALLOC_IN_PLACE_ONLY
        fails (0) rather than move. The contents up to the smaller size are kept.
        """
        old = self.size(pointer)
        if old is None or size < 0:
            return 0
        large = size > LARGE_THRESHOLD[self.mm.is_64bit]
        if pointer in self.large or large:
            return self._realloc_large(pointer, old, size, flags, large)
        block = pointer - BLOCK.size
        need = _block_size(size)
        total, _ = self.blocks[block]
        if need > total:
            total = self._extend_in_place(block, total, need)
        if need <= total:
            self._write_block(block, total, size, True)
            self._split(block, need)
            if flags & C.HEAP_ZERO_MEMORY and size > old:
                self.mm.write(pointer + old, bytes(size - old))
            return pointer
        return self._move(pointer, old, size, flags)

    def _move(self, pointer: int, old: int, size: int, flags: int) -> int:
        """HeapReAlloc that cannot stay in place: a new block, the bytes copied, the old freed
        (0, and the old block kept, with HEAP_REALLOC_IN_PLACE_ONLY or when memory runs out)."""
        if flags & C.HEAP_REALLOC_IN_PLACE_ONLY:
            return 0
        new = self.alloc(size, flags & C.HEAP_ZERO_MEMORY)
        if not new:
            return 0
        self.mm.write(new, self.mm.read(pointer, min(old, size)))
        self.free(pointer)
        return new

    # -- large blocks ------------------------------------------------------------------
    def _alloc_large(self, size: int) -> int:
        try:
            region = self.mm.allocate(LARGE_HEADER + size, C.PAGE_READWRITE, name="heap large block")
        except EmulatorMemError:
            return 0
        head = self._large_head()
        self.mm.write(region, LARGE.pack(head, size, BUSY, LARGE_MAGIC))
        self._set_large_head(region)
        self.large = {region + LARGE_HEADER: region, **self.large}
        return region + LARGE_HEADER

    def _free_large(self, pointer: int) -> None:
        region = self.large.pop(pointer)
        nxt = int(LARGE.unpack(self.mm.read(region, LARGE.size))[0])
        previous = None
        for other in self.large.values():  # find the block that links to this one
            if int(LARGE.unpack(self.mm.read(other, LARGE.size))[0]) == region:
                previous = other
                break
        if previous is None:
            self._set_large_head(nxt)
        else:
            _, requested, flags, magic = LARGE.unpack(self.mm.read(previous, LARGE.size))
            self.mm.write(previous, LARGE.pack(nxt, requested, flags, magic))
        self.mm.release(region)

    def _realloc_large(self, pointer: int, old: int, size: int, flags: int, large: bool) -> int:
        """HeapReAlloc where the old or the new block is a large one."""
        region = self.large.get(pointer)
        if region is not None and large:
            capacity = self.mm.allocation_at(region)
            if capacity is not None and LARGE_HEADER + size <= capacity.size:
                nxt, _, bits, magic = LARGE.unpack(self.mm.read(region, LARGE.size))
                self.mm.write(region, LARGE.pack(nxt, size, bits, magic))
                if flags & C.HEAP_ZERO_MEMORY and size > old:
                    self.mm.write(pointer + old, bytes(size - old))
                return pointer  # fits in the pages it already has
        return self._move(pointer, old, size, flags)

    def _large_head(self) -> int:
        return int(LARGE_HEAD.unpack(self.mm.read(self.base + SEGMENT.size, LARGE_HEAD.size))[0])

    def _set_large_head(self, region: int) -> None:
        self.mm.write(self.base + SEGMENT.size, LARGE_HEAD.pack(region))

    # -- internals ---------------------------------------------------------------------
    def _block_of(self, pointer: int) -> int | None:
        block = pointer - BLOCK.size
        entry = self.blocks.get(block)
        if entry is None or not entry[1]:
            return None
        try:
            magic = BLOCK.unpack(self.mm.read(block, BLOCK.size))[3]
        except EmulatorMemError:
            return None
        return block if magic == BLOCK_MAGIC else None

    def _first_fit(self, need: int) -> int | None:
        for address, (size, busy) in self.blocks.items():
            if not busy and size >= need:
                return int(address)
        return None

    def _take(self, address: int, need: int, requested: int) -> None:
        size, _ = self.blocks[address]
        self._write_block(address, size, requested, True)
        self._split(address, need)

    def _split(self, address: int, need: int) -> None:
        """Give the tail of a block beyond ``need`` bytes back as a free block."""
        size, busy = self.blocks[address]
        if size - need < MIN_SPLIT:
            return
        requested = int(BLOCK.unpack(self.mm.read(address, BLOCK.size))[1])
        self._write_block(address, need, requested, busy)
        self._write_block(address + need, size - need, 0, False)
        self._coalesce(address + need)

    def _grow(self, need: int) -> int | None:
        if self.top + need > self.reserve:
            return None
        address = self.base + self.top
        committed_end = self._committed_end()
        if address + need > committed_end:
            self.mm.commit(committed_end, page_round_up(address + need) - committed_end,
                           C.PAGE_READWRITE)
        self.top += need
        self._write_segment()
        return address

    def _committed_end(self) -> int:
        mbi = self.mm.query(self.base)
        return int(mbi.BaseAddress + mbi.RegionSize)

    def _extend_in_place(self, block: int, total: int, need: int) -> int:
        """Absorb a free successor (or the heap top) so the block reaches ``need`` bytes."""
        nxt = block + total
        entry = self.blocks.get(nxt)
        if entry is not None and not entry[1] and total + entry[0] >= need:
            del self.blocks[nxt]
            return total + int(entry[0])
        if nxt == self.base + self.top and self._grow(need - total) is not None:
            return need
        return total

    def _coalesce(self, address: int) -> None:
        """Merge the free block at ``address`` with free neighbours; trim a free top block."""
        size, _ = self.blocks[address]
        nxt = address + size
        entry = self.blocks.get(nxt)
        if entry is not None and not entry[1]:
            del self.blocks[nxt]
            size += entry[0]
        index = self.blocks.index(address)
        if index:
            prev = self.blocks.keys()[index - 1]
            psize, pbusy = self.blocks[prev]
            if not pbusy and prev + psize == address:
                del self.blocks[address]
                address, size = prev, psize + size
        self._write_block(address, size, 0, False)
        if address + size == self.base + self.top:
            del self.blocks[address]
            self.top = address - self.base
            self._write_segment()


def _block_size(size: int) -> int:
    return BLOCK.size + max(-(-size // ALIGN) * ALIGN, ALIGN)
