"""Guest-physical memory: a few big host buffers that Unicorn maps with ``mem_map_ptr``.

The only module besides :mod:`emulator_mem.mmu` that calls ``uc.mem_*``. Two areas:

* the **identity area**: physical address == virtual address for every page with a single
  owner. It is carved into aligned windows (the manager uses 16 GiB for 64-bit guests, 4 GiB
  for 32-bit), each an anonymous
  ``MAP_NORESERVE`` mmap, mapped into Unicorn on first commit inside it. Host memory is only
  spent on pages the guest touches, and the Unicorn region count stays at a handful however
  many allocations there are (one region per allocation is what makes peers slow).
* the **alias area**, above the user address range: buffers with no virtual twin — section
  storage shared by several views, copy-on-write copies, MMIO ranges.

Host access is ``ctypes.memmove`` on those buffers (~30x faster than ``uc.mem_read``).
Unicorn does not notice such writes, and in virtual-TLB mode not even ``uc.mem_write``
drops the translation blocks of the bytes it overwrites (measured), so a write to a page
that has entered the TLB executable calls ``on_code_write`` (the MMU's
:meth:`~emulator_mem.mmu.MMU.invalidate_code`) after the bytes changed.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedDict
from unicorn import UC_PROT_ALL, Uc

from ..errors import MemoryAccessError
from . import raw

PAGE_SIZE = 0x1000
MAP_NORESERVE = 0x4000  # Linux value; Python's mmap module does not export it
POOL_CHUNK = 2 << 20  # copy-on-write pages are carved from chunks of this size


class DirtyLog:
    """Physical pages written since the log was (re)started: the reusable dirty-page piece.

    The MMU feeds it from first-write TLB misses (guest writes) and from host writes, and
    calls ``before_first_write(ppn)`` exactly once per page *before* the page may change —
    checkpoints use that to save the original bytes, so rollback copies back only what was
    dirtied. Attach with :meth:`~emulator_mem.mmu.tlb.MMU.attach_log`, detach with
    :meth:`~emulator_mem.mmu.tlb.MMU.detach_log`; after
    :meth:`reset` pages count as clean again (the MMU flushes its TLB so writes miss again).
    Write watch keeps its own per-allocation page sets (virtual pages, as GetWriteWatch
    reports them) but is fed by the very same miss.
    """

    def __init__(self, before_first_write: Callable[[int], None] | None = None) -> None:
        self.pages: set[int] = set()
        self.before_first_write = before_first_write

    def mark(self, ppn: int) -> None:
        if ppn not in self.pages:
            if self.before_first_write is not None:
                self.before_first_write(ppn)
            self.pages.add(ppn)

    def reset(self) -> None:
        self.pages.clear()


def foreign_buffer(host: int, size: int) -> Any:
    """Caller-owned host memory (``uc.mem_map_ptr``) as a chunk buffer: a ctypes array (so
    snapshots can take a memoryview of it) that is never closed and never handed back to
    the OS here — zeroing it is a memset."""

    def close(_self: Any) -> None:
        """The caller's memory outlives the mapping."""

    def madvise(self: Any, _option: int, start: int, length: int) -> None:
        ctypes.memset(ctypes.addressof(self) + start, 0, length)

    cls: Any = type("ForeignBuffer", (ctypes.c_char * size,), {"close": close, "madvise": madvise})
    return cls.from_address(host)


@dataclass(slots=True, eq=False)
class Chunk:
    """One host buffer mapped at ``phys`` in guest-physical space."""

    phys: int
    size: int
    buffer: Any  # an mmap, or a foreign_buffer for caller-owned memory
    host: int  # host address of byte 0

    @property
    def end(self) -> int:
        return self.phys + self.size


def _host_buffer(size: int) -> tuple[mmap.mmap, int]:
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
    buf = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    host = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    return buf, host


class PhysicalMemory:
    """Allocates and maps guest-physical chunks; copies bytes in and out of them."""

    def __init__(self, uc: Uc, identity_end: int, alias_base: int, window: int = 1 << 30) -> None:
        self.uc = uc
        self.window = window
        self.identity_end = identity_end
        self.alias_base = alias_base
        self._alias_next = alias_base
        self._alias_free: list[tuple[int, int]] = []  # (phys, size) of released alias ranges
        self.chunks: SortedDict = SortedDict()  # phys -> Chunk
        self._windows: dict[int, Chunk] = {}
        self._free_pages: list[int] = []  # pool of single pages for copy-on-write copies
        #: physical page numbers that entered the TLB executable: host writes there must
        #: invalidate translated code (``on_code_write``, installed by the MMU)
        self.exec_pages: set[int] = set()
        self.on_code_write: Callable[[int, int], None] | None = None
        #: dirty logs (checkpoints) to tell before host code modifies a page; the MMU shares
        #: this list and feeds the same logs from guest write misses
        self.logs: list[DirtyLog] = []

    # -- mapping ---------------------------------------------------------------------
    def ensure_identity(self, start: int, end: int) -> None:
        """Map the identity windows covering [start, end) (lazily, once each)."""
        w = self.window
        for index in range(start // w, (end - 1) // w + 1):
            if index not in self._windows:
                base = index * w
                size = min(w, self.identity_end - base)
                self._windows[index] = self._map_chunk(base, size)

    def alias_chunk(self, size: int) -> Chunk:
        """A fresh zeroed chunk in the alias area (64 KiB aligned, size rounded to pages)."""
        size = (size + 0xFFFF) & ~0xFFFF
        for i, (phys, free_size) in enumerate(self._alias_free):
            if free_size == size:
                del self._alias_free[i]
                return self._map_chunk(phys, size)
        phys = self._alias_next
        self._alias_next += size
        return self._map_chunk(phys, size)

    def alias_range(self, size: int) -> int:
        """Reserve physical addresses in the alias area without backing them (for MMIO)."""
        size = (size + 0xFFFF) & ~0xFFFF
        phys = self._alias_next
        self._alias_next += size
        return phys

    def map_foreign(self, size: int, host: int) -> Chunk:
        """Map ``size`` bytes of caller-owned host memory at a fresh alias-area address."""
        phys = self.alias_range(size)
        raw.mem_map_ptr(self.uc, phys, size, UC_PROT_ALL, host)
        chunk = Chunk(phys, size, foreign_buffer(host, size), host)
        self.chunks[phys] = chunk
        return chunk

    def alloc_page(self) -> int:
        """One zeroed physical page from the alias area (for a copy-on-write copy)."""
        if not self._free_pages:
            chunk = self.alias_chunk(POOL_CHUNK)
            self._free_pages.extend(range(chunk.end - PAGE_SIZE, chunk.phys - 1, -PAGE_SIZE))
        return self._free_pages.pop()

    def free_page(self, phys: int) -> None:
        self.zero(phys, PAGE_SIZE)
        self._free_pages.append(phys)

    def release_chunk(self, chunk: Chunk) -> None:
        raw.mem_unmap(self.uc, chunk.phys, chunk.size)
        del self.chunks[chunk.phys]
        self._alias_free.append((chunk.phys, chunk.size))
        chunk.buffer.close()

    def _map_chunk(self, phys: int, size: int) -> Chunk:
        buf, host = _host_buffer(size)
        raw.mem_map_ptr(self.uc, phys, size, UC_PROT_ALL, host)
        chunk = Chunk(phys, size, buf, host)
        self.chunks[phys] = chunk
        return chunk

    def region_count(self) -> int:
        return len(raw.mem_regions(self.uc))

    # -- access ----------------------------------------------------------------------
    def chunk_of(self, phys: int) -> Chunk | None:
        chunks = self.chunks
        i = chunks.bisect_right(phys) - 1
        if i < 0:
            return None
        chunk: Chunk = chunks.peekitem(i)[1]
        return chunk if phys < chunk.end else None

    def host_address(self, phys: int) -> int:
        chunk = self.chunk_of(phys)
        if chunk is None:
            raise MemoryAccessError(f"physical address {phys:#x} has no host memory", phys)
        return chunk.host + (phys - chunk.phys)

    def _pieces(self, phys: int, size: int) -> list[tuple[int, int]]:
        """Split [phys, phys+size) at chunk boundaries: (host address, length) pieces."""
        out = []
        while size > 0:
            chunk = self.chunk_of(phys)
            if chunk is None:
                raise MemoryAccessError(f"physical address {phys:#x} has no host memory", phys)
            n = min(size, chunk.end - phys)
            out.append((chunk.host + (phys - chunk.phys), n))
            phys += n
            size -= n
        return out

    def read(self, phys: int, size: int) -> bytes:
        out = bytearray(size)
        self.read_into(phys, out, 0, size)
        return bytes(out)

    def read_into(self, phys: int, out: bytearray, offset: int, size: int) -> None:
        """Copy [phys, phys+size) into ``out[offset:offset+size]``."""
        if not size:
            return
        dst = ctypes.addressof((ctypes.c_char * size).from_buffer(out, offset))
        for host, n in self._pieces(phys, size):
            ctypes.memmove(dst, host, n)
            dst += n

    def write(self, phys: int, data: bytes | bytearray) -> None:
        """Store ``data`` at ``phys``, invalidating translated code it overwrites."""
        size = len(data)
        if not size:
            return
        if self.logs:
            self.before_modify(phys, size)
        src = data if isinstance(data, bytes) else bytes(data)
        pos = 0
        for host, n in self._pieces(phys, size):
            ctypes.memmove(host, src[pos : pos + n] if pos or n != size else src, n)
            pos += n
        self.code_changed(phys, size)

    def code_changed(self, phys: int, size: int) -> None:
        """Tell the MMU when bytes that were executed changed (it drops their translations)."""
        if self.exec_pages and self.on_code_write is not None and self._touches_code(phys, size):
            self.on_code_write(phys, size)

    def _touches_code(self, phys: int, size: int) -> bool:
        first, last = phys >> 12, (phys + size - 1) >> 12
        exec_pages = self.exec_pages
        if last - first < len(exec_pages):
            return any(p in exec_pages for p in range(first, last + 1))
        return any(first <= p <= last for p in exec_pages)

    def before_modify(self, phys: int, size: int) -> None:
        """Tell the dirty logs that host code is about to change [phys, phys+size)."""
        for ppn in range(phys >> 12, (phys + size + PAGE_SIZE - 1) >> 12):
            for log in self.logs:
                log.mark(ppn)

    def copy(self, dst_phys: int, src_phys: int, size: int) -> None:
        if self.logs:
            self.before_modify(dst_phys, size)
        ctypes.memmove(self.host_address(dst_phys), self.host_address(src_phys), size)
        self.code_changed(dst_phys, size)

    def zero(self, phys: int, size: int) -> None:
        """Zero [phys, phys+size) — decommitted pages come back zeroed, as on Windows.

        An madvise/memset on the host buffer; translations of code there are dropped.
        """
        if self.logs:
            self.before_modify(phys, size)
        self.code_changed(phys, size)
        end = phys + size
        while phys < end:
            chunk = self.chunk_of(phys)
            if chunk is None:
                return  # never mapped: still zero
            n = min(end, chunk.end) - phys
            offset = phys - chunk.phys
            if offset % PAGE_SIZE == 0 and n % PAGE_SIZE == 0:
                # hands the pages back to the host: cheaper than memset (which would first
                # fault in never-touched pages) and frees the memory
                chunk.buffer.madvise(mmap.MADV_DONTNEED, offset, n)
            else:
                ctypes.memset(chunk.host + offset, 0, n)
            phys += n

    def close(self) -> None:
        for chunk in list(self.chunks.values()):
            raw.mem_unmap(self.uc, chunk.phys, chunk.size)
            chunk.buffer.close()
        self.chunks.clear()
        self._windows.clear()
