"""Allocators built on the manager: everything they hand out is real guest memory.

* :class:`VirtualAllocator` — the embedder-facing IVirtualAllocator interface (reserve,
  commit, decommit, release, partial free) with its C-style 0/False results;
* :class:`JitAllocator` — asmjit's JIT code allocator: bit-vector blocks, pools, dual RX/RW
  mapping, fill pattern, shrink, query, reset, statistics;
* :class:`GuestArena` — the kmem subsystem: one fixed buffer dealt out as zeroed pieces with
  per-reason bookkeeping.
"""

from __future__ import annotations

from .arena import ArenaAllocation, ArenaStatistics, GuestArena, ReasonUsage
from .jit import (
    JitAllocator,
    JitAllocatorOptions,
    JitBlockInfo,
    JitStatistics,
    ResetPolicy,
)
from .virtual import Reservation, VirtualAllocator

__all__ = [
    "ArenaAllocation",
    "ArenaStatistics",
    "GuestArena",
    "JitAllocator",
    "JitAllocatorOptions",
    "JitBlockInfo",
    "JitStatistics",
    "ReasonUsage",
    "Reservation",
    "ResetPolicy",
    "VirtualAllocator",
]
