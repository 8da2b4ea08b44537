"""The process heap over guest memory: HeapAlloc/HeapFree/HeapReAlloc/HeapSize semantics and
rebuilding the heap's index from guest memory alone (what a snapshot restore relies on)."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc

from emulator_mem import MemoryManager
from emulator_mem.runner.heap import ProcessHeap

HEAP_ZERO_MEMORY = 0x08
HEAP_REALLOC_IN_PLACE_ONLY = 0x10
MEM_COMMIT = 0x1000
PAGE_READWRITE = 0x04


@pytest.fixture(params=[UC_MODE_32, UC_MODE_64], ids=["x86", "x64"])
def heap(request: pytest.FixtureRequest) -> ProcessHeap:
    mm = MemoryManager(Uc(UC_ARCH_X86, request.param))
    return ProcessHeap.create(mm, 0x100000, 0x1000)


def test_allocations_are_aligned_distinct_and_sized(heap: ProcessHeap) -> None:
    a, b = heap.alloc(10), heap.alloc(100)
    assert a % 16 == 0 and b % 16 == 0 and b >= a + 16
    assert heap.size(a) == 10 and heap.size(b) == 100
    assert heap.alloc(0) != 0  # HeapAlloc(0) returns a unique pointer


def test_zero_memory_clears_reused_blocks(heap: ProcessHeap) -> None:
    a = heap.alloc(64)
    keep = heap.alloc(16)  # keeps `a` from being trimmed off the top
    heap.mm.write(a, b"\xff" * 64)
    assert heap.free(a)
    again = heap.alloc(64, HEAP_ZERO_MEMORY)
    assert again == a
    assert heap.mm.read(again, 64) == bytes(64)
    assert heap.free(keep)


def test_free_rejects_foreign_and_double_frees(heap: ProcessHeap) -> None:
    a = heap.alloc(32)
    assert not heap.free(a + 16)
    assert heap.size(a + 8) is None
    assert heap.free(a)
    assert not heap.free(a)


def test_freed_neighbours_coalesce(heap: ProcessHeap) -> None:
    a, b, c = heap.alloc(48), heap.alloc(48), heap.alloc(48)
    heap.free(a)
    heap.free(b)
    assert heap.alloc(100) == a  # a and b merged into one block that fits 100 bytes
    assert heap.size(c) == 48


def test_the_top_block_is_given_back(heap: ProcessHeap) -> None:
    top = heap.top
    a = heap.alloc(5000)
    assert heap.top > top
    heap.free(a)
    assert heap.top == top


def test_realloc_keeps_contents_zeroes_growth_and_moves_when_needed(heap: ProcessHeap) -> None:
    a = heap.alloc(16)
    blocker = heap.alloc(16)
    heap.mm.write(a, b"0123456789abcdef")
    assert heap.realloc(a, 4000, HEAP_REALLOC_IN_PLACE_ONLY) == 0
    b = heap.realloc(a, 4000, HEAP_ZERO_MEMORY)
    assert b not in (0, a)
    assert heap.mm.read(b, 16) == b"0123456789abcdef"
    assert heap.mm.read(b + 16, 4000 - 16) == bytes(4000 - 16)
    assert heap.size(a) is None  # the old block was freed
    assert heap.realloc(b, 8) == b  # shrinking stays in place
    assert heap.size(b) == 8
    assert heap.size(blocker) == 16


def test_heap_grows_its_commit_and_fails_cleanly_when_full(heap: ProcessHeap) -> None:
    mm = heap.mm
    assert mm.query(heap.base).RegionSize == 0x1000
    big = heap.alloc(0x20000)
    assert big and mm.query(heap.base).RegionSize >= 0x21000
    assert mm.query(heap.base).State == MEM_COMMIT
    assert heap.alloc(0x70000)  # below the large-block threshold: from the reservation
    assert heap.alloc(0x70000) == 0  # the 1 MiB reservation is full


def test_large_blocks_get_their_own_allocation_and_give_it_back(heap: ProcessHeap) -> None:
    """Above the threshold Windows' heap VirtualAllocs the block (so 2 MiB works from a
    1 MiB heap) and HeapFree releases it; Wine's recording of tests/oracle/heap.exe agrees."""
    mm = heap.mm
    top = heap.top
    big = heap.alloc(0x200000, HEAP_ZERO_MEMORY)
    assert big and heap.top == top  # not carved from the reservation
    assert big % 16 == 0 and heap.size(big) == 0x200000
    info = mm.query(big)
    assert info.AllocationBase != heap.base and big - info.AllocationBase < 0x1000
    assert info.State == MEM_COMMIT and info.Protect == PAGE_READWRITE
    mm.write(big + 0x1FFFFF, b"\x07")
    region = info.AllocationBase
    assert heap.free(big)
    assert mm.query(region).State == 0x10000  # MEM_FREE
    assert heap.size(big) is None and not heap.free(big)


def test_realloc_moves_between_small_and_large_blocks(heap: ProcessHeap) -> None:
    small = heap.alloc(32)
    heap.mm.write(small, b"x" * 32)
    large = heap.realloc(small, 0x180000, HEAP_ZERO_MEMORY)
    assert large not in (0, small) and heap.size(small) is None
    assert heap.mm.read(large, 33) == b"x" * 32 + b"\0"
    assert heap.realloc(large, 0x100000) == large  # shrinking a large block stays in place
    assert heap.size(large) == 0x100000
    back = heap.realloc(large, 16)
    assert back and heap.mm.read(back, 16) == b"x" * 16 and heap.size(large) is None


def test_attach_finds_the_large_blocks(heap: ProcessHeap) -> None:
    blocks = [heap.alloc(0x100000 + n) for n in range(3)]
    heap.free(blocks[1])  # unlink from the middle of the list
    copy = ProcessHeap.attach(heap.mm, heap.base)
    assert sorted(copy.large) == sorted((blocks[0], blocks[2]))
    assert copy.size(blocks[2]) == 0x100002
    assert copy.free(blocks[0]) and copy.free(blocks[2])
    assert ProcessHeap.attach(heap.mm, heap.base).large == {}


def test_attach_rebuilds_the_index_from_guest_memory(heap: ProcessHeap) -> None:
    ptrs = [heap.alloc(n) for n in (10, 200, 3000, 40)]
    heap.free(ptrs[1])
    copy = ProcessHeap.attach(heap.mm, heap.base)
    assert dict(copy.blocks) == dict(heap.blocks)
    assert copy.top == heap.top and copy.reserve == heap.reserve
    assert copy.size(ptrs[2]) == 3000
    assert copy.alloc(150) == ptrs[1]
