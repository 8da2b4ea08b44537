"""The allocation workloads of issue 13, run identically against every peer's allocator.

Stdlib only, like ``_harness`` (each driver runs in its peer's own venv). ``--workload``:

* ``64k``: the original scenario of ``_harness.run_scenario`` (64 KiB allocations);
* ``small``: ``VirtualAlloc(NULL, 0x1000)`` repeated: each allocation is one page, and on a
  Windows-like allocator leaves the rest of its 64 KiB granule free;
* ``mixed``: sizes of 1-16 pages, uniformly (the size mix the peers' own examples use);
  protect = a random sub-range of pages of a random allocation, read-only and back;
* ``churn``: ``mixed`` set up, then at a steady N live ``CHURN_STEPS`` times: free a random
  allocation, allocate a random size (fragmentation); alloc/s and free/s are measured
  there, at N live, not during setup;
* ``commit``: reserve 1 MiB and commit its first page, N times; then commit further pages
  one by one, query, protect one committed page, decommit some pages, release. Peers
  without a reserve/commit distinction report it as not applicable.

Every phase gets a share of ``--budget``; a phase that runs out stops and the run is marked
``truncated`` (never extrapolated), a setup that runs out is ``skipped`` with
``live_reached`` and the rate seen so far, exactly as in ``_harness``.
"""

from __future__ import annotations

import random
import time
from array import array
from collections.abc import Callable
from typing import Any

from _harness import (
    _HOPELESS_FACTOR,
    _MIN_ALLOCS_BEFORE_PROJECTION,
    CLOCK,
    PAGE_SIZE,
    _Clock,
    _rate,
    _timed_loop,
    _window_rate,
)

WORKLOADS = ("64k", "small", "mixed", "churn", "commit")
CHURN_STEPS = 100_000
RESERVE_SIZE = 0x100000
# budget shares; what a phase leaves unused rolls over to the next ones
WEIGHTS: dict[str, dict[str, float]] = {
    "small": {"setup": 0.5, "query": 0.1, "protect": 0.2, "free": 0.2},
    "mixed": {"setup": 0.5, "query": 0.1, "protect": 0.2, "free": 0.2},
    "churn": {"setup": 0.4, "churn": 0.6},
    "commit": {"setup": 0.4, "commit": 0.15, "query": 0.1, "protect": 0.15,
               "decommit": 0.1, "free": 0.1},
}  # fmt: skip


def _pages(workload: str, rng: random.Random) -> int:
    return 1 if workload == "small" else rng.randint(1, 16)


def run_workload(
    make_backend: Callable[[], Any], workload: str, live: int, ops: int, budget: float, seed: int
) -> dict[str, Any]:
    """Run ``workload`` against a fresh backend; returns the result fields."""
    rng = random.Random(seed)
    res: dict[str, Any] = {"workload": workload, "live": live, "ops": ops, "budget_s": budget}
    t_start = time.perf_counter()
    clock = _Clock(budget, t_start)
    clock.pending = dict(WEIGHTS[workload])
    backend = make_backend()
    res["init_s"] = round(time.perf_counter() - t_start, 4)
    commit = workload == "commit"
    if commit and not hasattr(backend, "reserve"):
        res["skipped"] = "not applicable: no reserve/commit distinction in this API"
        return res

    # --- setup: N live allocations --------------------------------------------------
    deadline = clock.deadline("setup")
    setup_share = deadline - time.perf_counter()
    allocs: list[tuple[int, int]] = []  # (base, size)
    ts: array[float] = array("d", [CLOCK()])
    stop = ""
    for i in range(live):
        try:
            if commit:
                base = backend.reserve(RESERVE_SIZE)
                backend.commit(base, PAGE_SIZE)
                allocs.append((base, RESERVE_SIZE))
            else:
                size = _pages(workload, rng) * PAGE_SIZE
                allocs.append((backend.alloc(size), size))
        except MemoryError as exc:
            stop = f"peer capacity: {exc or 'MemoryError'}"
            break
        now = time.perf_counter()
        ts.append(CLOCK())
        done = i + 1
        if done == live:
            break
        if now > deadline:
            stop = "setup would exceed budget"
            break
        if done >= _MIN_ALLOCS_BEFORE_PROJECTION and done % 10 == 0:
            rate = _window_rate(ts, done)
            if rate and (live - done) / rate > setup_share * _HOPELESS_FACTOR:
                stop = "setup would exceed budget"
                res["setup_stop"] = f"hopeless at {done}: >= {1 / rate * 1e3:.2f} ms per alloc"
                break
    n = len(allocs)
    res["setup_s"] = round(ts[n] - ts[0], 4)
    res["alloc_per_s"] = _window_rate(ts, n)
    res["regions"] = backend.region_count()
    if n < live:
        res["skipped"] = stop or "setup would exceed budget"
        res["live_reached"] = n
        return res
    truncated = False

    def phase(name: str, items: list[Any], op: Callable[[Any], object]) -> None:
        nonlocal truncated
        done, secs, _ = _timed_loop(items, op, clock.deadline(name))
        res[f"{name}_per_s"] = _rate(done, secs)
        res[f"{name}_done"] = done
        truncated = truncated or done < len(items)

    # --- churn: steady N live, free a random allocation + allocate a random size -------
    if workload == "churn":
        t_free = t_alloc = 0.0
        steps = 0
        deadline = clock.deadline("churn")
        for _ in range(CHURN_STEPS):
            j = rng.randrange(n)
            base, size = allocs[j]
            new_size = _pages(workload, rng) * PAGE_SIZE
            t0 = CLOCK()
            backend.free(base, size)
            t1 = CLOCK()
            allocs[j] = (backend.alloc(new_size), new_size)
            t2 = CLOCK()
            t_free += t1 - t0
            t_alloc += t2 - t1
            steps += 1
            if time.perf_counter() > deadline:
                break
        res["alloc_per_s"] = _rate(steps, t_alloc)
        res["free_per_s"] = _rate(steps, t_free)
        res["churn_steps"] = steps
        res["regions"] = backend.region_count()
        res["truncated"] = steps < CHURN_STEPS
        return res

    # --- commit pages one by one into random reservations ------------------------------
    next_page = [1] * n if commit else []
    if commit:
        picks = [rng.randrange(n) for _ in range(ops)]

        def commit_one(j: int) -> bool:
            page = next_page[j]
            if page >= RESERVE_SIZE // PAGE_SIZE:
                return True
            backend.commit(allocs[j][0] + page * PAGE_SIZE, PAGE_SIZE)
            next_page[j] = page + 1
            return True

        phase("commit", picks, commit_one)

    # --- query -----------------------------------------------------------------------
    def target(j: int) -> int:
        base, size = allocs[j]
        span = next_page[j] * PAGE_SIZE if commit else size
        return base + rng.randrange(span)

    phase("query", [target(rng.randrange(n)) for _ in range(ops)], backend.query)

    # --- protect: a random committed sub-range, read-only and back --------------------
    ranges = []
    for _ in range(ops):
        j = rng.randrange(n)
        base, size = allocs[j]
        pages = next_page[j] if commit else size // PAGE_SIZE
        if commit:
            first, count = rng.randrange(pages), 1
        else:
            first = rng.randrange(pages)
            count = rng.randint(1, pages - first)
        ranges.append((base + first * PAGE_SIZE, count * PAGE_SIZE))
    unsupported = getattr(backend, "protect_unsupported", "")
    if unsupported:
        res["protect_per_s"] = None
        res["protect_skipped"] = unsupported
    else:

        def protect_round_trip(r: tuple[int, int]) -> bool:
            backend.protect(r[0], True, r[1])
            backend.protect(r[0], False, r[1])
            return True

        phase("protect", ranges, protect_round_trip)

    # --- decommit some committed pages (never page 0, so each stays queryable) ---------
    if commit:
        # half of the pages the commit phase added: the same count at every N (sampling
        # reservations instead left ~10 victims at 100k live, too few to time)
        added = [allocs[j][0] + page * PAGE_SIZE for j in range(n) for page in range(1, next_page[j])]
        victims = rng.sample(added, len(added) // 2)
        phase("decommit", victims, lambda a: backend.decommit(a, PAGE_SIZE) or True)

    # --- free ------------------------------------------------------------------------
    frees = [allocs[j] for j in rng.sample(range(n), min(ops, n))]
    phase("free", frees, lambda a: backend.free(a[0], a[1]) or True)
    res["truncated"] = truncated
    return res
