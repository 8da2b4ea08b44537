"""Exchange the host pages behind two physical chunks without copying or unmapping them.

Loading a snapshot builds its physical memory in fresh host buffers first (so a refused
snapshot changes nothing), then puts them where the old ones were. Doing that with
``uc.mem_unmap`` + ``uc.mem_map_ptr`` costs time proportional to the *size* of each region,
not to what it holds: Unicorn's unmap flushes the TLB page by page over the whole region
(``memory_unmap`` → ``tlb_flush_page`` for every page), which for one 16 GiB identity
window is four million calls, ~0.24 s, for a snapshot of a few MiB.

When a staged chunk has the same physical address and size as a live one, the live Unicorn
mapping can stay: Linux ``mremap`` moves the page tables of the staged buffer onto the live
buffer's address (and the live pages to the staged address, through a spare reservation),
in time proportional to the pages populated. The two :class:`Chunk` objects then exchange
``buffer`` and ``host``, so each object keeps describing its own bytes: the staged chunk
now owns the mapped address, the old one the pages it held, to be freed or swapped back.
Where ``mremap`` is missing (not Linux) or refuses, :func:`swap_pages` says so and the
caller falls back to unmapping and mapping.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

from ..errors import EmulatorMemError
from .physmem import MAP_NORESERVE, Chunk

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
PROT_NONE = 0  # Linux value; Python 3.11's mmap module does not export it
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mremap.restype = ctypes.c_void_p
        libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                                ctypes.c_void_p]
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def _move(libc: ctypes.CDLL, source: int, target: int, size: int) -> bool:
    """Move the mapping at ``source`` to ``target`` (replacing what is there)."""
    moved = libc.mremap(source, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, target)
    return bool(moved == target)


def swap_pages(a: Chunk, b: Chunk) -> bool:
    """Exchange the bytes of two equal-sized chunks (and their ``buffer``/``host``).

    Returns False, having changed nothing, when it cannot: sizes differ, a buffer is not one
    of our anonymous mmaps (caller-owned memory stays where its owner put it), or the
    kernel refuses. Calling it again swaps back.
    """
    libc = _LIBC
    if libc is None or a.size != b.size or not isinstance(a.buffer, mmap.mmap) \
            or not isinstance(b.buffer, mmap.mmap):
        return False
    size = a.size
    spare = libc.mmap(None, size, PROT_NONE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if spare in (None, _MAP_FAILED):
        return False
    if not _move(libc, a.host, spare, size):
        libc.munmap(spare, size)
        return False
    restored = True
    if not _move(libc, b.host, a.host, size):
        restored = _move(libc, spare, a.host, size)  # a's pages back where they were
    elif not _move(libc, spare, b.host, size):
        restored = _move(libc, a.host, b.host, size) and _move(libc, spare, a.host, size)
    else:
        a.buffer, b.buffer = b.buffer, a.buffer
        a.host, b.host = b.host, a.host
        return True
    if not restored:
        raise EmulatorMemError(f"mremap failed halfway (errno {ctypes.get_errno()}): host memory "
                               f"of the chunk at {a.phys:#x} could not be put back")
    return False
