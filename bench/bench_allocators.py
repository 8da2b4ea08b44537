"""Allocator scaling benchmark: alloc+release pairs at 1k and 100k live allocations.

For the JitAllocator and the GuestArena: fill to N live allocations (sizes 16..512 bytes
from a fixed seed), then time pairs of one ``alloc`` and one ``release`` of a *random* live
allocation, so the allocators work on fragmented state, not on a stack. Reports pairs per
second (fastest of three rounds), the per-pair cost ratio between 100k and 1k live
allocations (target: at most 2x, i.e. O(log n) behaviour), and overhead bytes per
allocation: host bookkeeping (nothing is kept in guest memory) and guest rounding waste
(granules / 16-byte alignment).

Run as a script (prints a table; takes well under a minute) or call :func:`run` for the
aggregated ``make bench`` numbers.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc  # noqa: E402

from emulator_mem.allocators import GuestArena, JitAllocator, JitAllocatorOptions  # noqa: E402
from emulator_mem.manager import MemoryManager  # noqa: E402

SIZES = (1_000, 100_000)
PAIRS = 30_000
ROUNDS = 3  # the timed pairs run in rounds; the fastest round counts (as timeit)
MIN_SIZE, MAX_SIZE = 16, 512
TARGET_RATIO = 2.0


def _manager() -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))


def _bench_jit(live: int, pairs: int, options: JitAllocatorOptions) -> dict[str, float]:
    rng = random.Random(1234)
    jit = JitAllocator(_manager(), options)
    ptrs: list[int] = []
    requested: list[int] = []
    for _ in range(live):
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        requested.append(size)
        ptrs.append(jit.alloc(size)[0])
    sizes = [rng.randint(MIN_SIZE, MAX_SIZE) for _ in range(pairs)]
    victims = [rng.randrange(live) for _ in range(pairs)]
    alloc, release = jit.alloc, jit.release
    elapsed = math.inf
    for lo in range(0, pairs, pairs // ROUNDS):
        start = time.perf_counter()
        for size, victim in zip(sizes[lo : lo + pairs // ROUNDS],
                                victims[lo : lo + pairs // ROUNDS], strict=True):
            rx = alloc(size)[0]
            release(ptrs[victim])
            ptrs[victim] = rx
        elapsed = min(elapsed, (time.perf_counter() - start) * ROUNDS)
    for size, victim in zip(sizes, victims, strict=True):
        requested[victim] = size
    stats = jit.statistics()
    return {
        "live": live,
        "pairs_per_second": pairs / elapsed,
        "us_per_pair": elapsed / pairs * 1e6,
        "host_overhead_bytes_per_allocation": stats.overhead_size / stats.allocation_count,
        "guest_waste_bytes_per_allocation": (stats.used_size - sum(requested)) / live,
        "blocks": stats.block_count,
        "reserved_bytes": stats.reserved_size,
    }


def _bench_arena(live: int, pairs: int) -> dict[str, float]:
    rng = random.Random(1234)
    arena = GuestArena(_manager(), live * MAX_SIZE * 2)
    ptrs: list[int] = []
    for _ in range(live):
        ptrs.append(arena.allocate(rng.randint(MIN_SIZE, MAX_SIZE), "bench"))
    sizes = [rng.randint(MIN_SIZE, MAX_SIZE) for _ in range(pairs)]
    victims = [rng.randrange(live) for _ in range(pairs)]
    allocate, release = arena.allocate, arena.release
    elapsed = math.inf
    for lo in range(0, pairs, pairs // ROUNDS):
        start = time.perf_counter()
        for size, victim in zip(sizes[lo : lo + pairs // ROUNDS],
                                victims[lo : lo + pairs // ROUNDS], strict=True):
            p = allocate(size, "bench")
            release(ptrs[victim])
            ptrs[victim] = p
        elapsed = min(elapsed, (time.perf_counter() - start) * ROUNDS)
    stats = arena.statistics()
    return {
        "live": live,
        "pairs_per_second": pairs / elapsed,
        "us_per_pair": elapsed / pairs * 1e6,
        "host_overhead_bytes_per_allocation": stats.overhead_size / stats.allocation_count,
        "guest_waste_bytes_per_allocation":
            (stats.used_size - stats.requested_size) / stats.allocation_count,
        "free_spans": stats.free_spans,
        "fragmentation": arena.fragmentation(),
    }


def run(pairs: int = PAIRS) -> dict[str, Any]:
    """Run every case; returns {case: {"1000": {...}, "100000": {...}, "ratio": x}}."""
    cases: dict[str, Any] = {}
    runners: dict[str, Callable[[int], dict[str, float]]] = {
        "jit_default": lambda n: _bench_jit(n, pairs, JitAllocatorOptions.NONE),
        "jit_dual_fill_pools": lambda n: _bench_jit(
            n, pairs,
            JitAllocatorOptions.USE_DUAL_MAPPING | JitAllocatorOptions.FILL_UNUSED_MEMORY
            | JitAllocatorOptions.USE_MULTIPLE_POOLS,
        ),
        "guest_arena": lambda n: _bench_arena(n, pairs),
    }
    for name, bench in runners.items():
        results = {str(n): bench(n) for n in SIZES}
        small, large = results[str(SIZES[0])], results[str(SIZES[-1])]
        ratio = large["us_per_pair"] / small["us_per_pair"]
        cases[name] = {**results, "ratio": ratio, "within_target": ratio <= TARGET_RATIO}
    return cases


def main() -> None:
    start = time.perf_counter()
    cases = run()
    print(f"{'case':<22}{'live':>8}{'pairs/s':>11}{'us/pair':>9}"
          f"{'host B/alloc':>14}{'guest B/alloc':>15}")
    for name, case in cases.items():
        for n in SIZES:
            r = case[str(n)]
            print(f"{name:<22}{n:>8}{r['pairs_per_second']:>11.0f}{r['us_per_pair']:>9.1f}"
                  f"{r['host_overhead_bytes_per_allocation']:>14.2f}"
                  f"{r['guest_waste_bytes_per_allocation']:>15.2f}")
        verdict = "ok" if case["within_target"] else "ABOVE TARGET"
        print(f"{'':<22}ratio 100k/1k per-pair cost: {case['ratio']:.2f}x "
              f"(target <= {TARGET_RATIO:.0f}x) {verdict}")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
