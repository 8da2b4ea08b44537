"""The process heap: HeapAlloc/HeapFree/HeapReAlloc/HeapSize over guest memory.

The heap is a reservation (SizeOfHeapReserve) committed as it grows, and its truth lives in
guest memory like a real heap's: a segment header at the base, then blocks, each a 16-byte
header (total size, requested size, flags, magic) followed by the user bytes, 16-byte
aligned. The Python side only keeps an index of the blocks, which :meth:`ProcessHeap.attach`
rebuilds by walking the headers — so a snapshot of guest memory is a snapshot of the heap,
and resuming needs nothing else. Allocation is first fit over freed blocks, else the top of
the heap moves up; freeing coalesces with free neighbours. The handle is the base address,
as GetProcessHeap returns on Windows.

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
        return heap

    def _write_segment(self) -> None:
        self.mm.write(self.base, SEGMENT.pack(SEGMENT_MAGIC, self.reserve, self.top))

    def _write_block(self, address: int, size: int, requested: int, busy: bool) -> None:
        self.mm.write(address, BLOCK.pack(size, requested, BUSY if busy else 0, BLOCK_MAGIC))
        self.blocks[address] = (size, busy)

    # -- the API -----------------------------------------------------------------------
    def alloc(self, size: int, flags: int = 0) -> int:
        """HeapAlloc: the user pointer, or 0 when the reservation is exhausted."""
        if size < 0 or size > self.reserve:
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
        block = self._block_of(pointer)
        if block is None:
            return False
        size, _ = self.blocks[block]
        self._write_block(block, size, 0, False)
        self._coalesce(block)
        return True

    def size(self, pointer: int) -> int | None:
        """HeapSize: the requested size, or None for a foreign pointer."""
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
        if flags & C.HEAP_REALLOC_IN_PLACE_ONLY:
            return 0
        new = self.alloc(size, flags & C.HEAP_ZERO_MEMORY)
        if not new:
            return 0
        self.mm.write(new, self.mm.read(pointer, min(old, size)))
        self.free(pointer)
        return new

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
