"""Shared scenario runner for the peer-emulator allocator drivers.

Every driver in this folder runs in a *different* interpreter (each peer pins its own
Unicorn, so each lives in its own virtualenv under ``.venv-bench/``).  This module is
therefore stdlib-only and is imported by the drivers as a sibling script module
(``python bench/peers/x_driver.py`` puts ``bench/peers`` on ``sys.path``); it must not
import ``emulator_mem`` or anything installed only in our own venv.

The scenario is identical for every peer so the numbers can be put side by side:

1. *setup*: create ``--live`` allocations of 64 KiB each.  The cost of one allocation
   grows with the number already live in every peer (linear scans, Unicorn's own
   region array / flat view rebuild), so ``alloc_per_s`` is the rate over the **last
   10 %** of the allocations, not the average.
2. *query*: ``--ops`` look-ups of a random address inside a random live allocation.
3. *protect*: ``--ops`` partial protects: one interior 4 KiB page of a random live
   allocation to read-only and back.  One op is the round trip (two calls), because
   the second call is what a guest doing ``VirtualProtect`` / restore really pays and
   because it leaves the page the way it was, so every op does the same work.
4. *free*: ``--ops`` frees of distinct random live allocations.

Every phase has a share of the single ``--budget`` (seconds, counted from before the
emulator object is built).  A phase that runs out of time stops, reports the rate of
the ops it did and sets ``"truncated": true``.  Setup is different: a half-built
address space makes the later phases meaningless, so when setup runs out of its share
the run stops and reports ``"skipped": "setup would exceed budget"``, how far it got
(``live_reached``) and the rate over the last 10 % of the allocations it did make.
Setup keeps going until its deadline rather than stopping at the first sign it cannot
finish, so that rate is measured at as high a live count as the budget allows.  The
one exception saves the budget of hopeless runs (peers at 10^5 live): per-op cost only
grows with the count, so ``remaining / current_rate`` is a lower bound of the time
left, and once that bound exceeds the remaining setup time many times over the run
stops at once.  Nothing is extrapolated into a result field.

The driver prints exactly one JSON line and leaves with ``os._exit`` so that tearing
down an engine holding 10^5 regions (which is itself O(N^2) in some Unicorn versions)
is not charged to anybody's wall clock.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import time
import traceback
from array import array
from collections.abc import Callable
from typing import Any, Protocol

ALLOC_SIZE = 0x10000
PAGE_SIZE = 0x1000

# Share of the remaining budget each phase gets; what a phase leaves unused rolls over
# to the next ones.  Setup gets the most because it is the one that cannot be
# truncated without voiding the run.
PHASE_WEIGHTS: dict[str, float] = {"setup": 0.5, "query": 0.1, "protect": 0.25, "free": 0.15}

# Setup's "hopeless" check: only once this many allocations exist (the rate is taken
# over the last 10 % of them, so a slow first call -- lazy init inside the peer -- has
# dropped out of the window), and only when the lower bound of the time still needed
# exceeds the whole setup share of the budget by this factor: a GC pause inside the
# window or a temporarily busy machine must not turn a run that could have got much
# further into a skip measured at a low live count.
_MIN_ALLOCS_BEFORE_PROJECTION = 100
#: what rates are measured with: CPU time of this process. Every allocator here runs on
#: the calling thread, and on a shared machine wall time mostly measures the neighbours.
#: Deadlines (the budget) stay in wall time.
CLOCK = time.process_time
_HOPELESS_FACTOR = 5.0


class Backend(Protocol):
    """What a driver adapts its peer's allocator to.

    Each method must go through the peer's own bookkeeping (the code path its Windows
    API emulation uses), not around it: this benchmark is about that bookkeeping.
    """

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        """Create one read/write allocation of ``size`` bytes (64 KiB here) and return its base.

        Raise ``MemoryError`` when the peer itself cannot hold more (reported as a
        capacity skip, not as a crash).
        """

    def query(self, addr: int) -> object:
        """Look up the allocation/region containing ``addr``; falsy means not found."""

    def protect(self, page: int, readonly: bool, size: int = PAGE_SIZE) -> None:
        """Set [page, page+size) (one 4 KiB page here) to read-only (``True``) or back.

        A backend whose peer has no working protect sets a ``protect_unsupported``
        attribute (the reason) instead; the phase is then reported as skipped.
        """

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        """Release the whole allocation (of ``size`` bytes) starting at ``base``."""

    def region_count(self) -> int:
        """Number of regions Unicorn itself holds right now."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line shared by all drivers (``peer_envs.run_peer`` relies on it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--live", type=int, default=1000, help="allocations to create")
    p.add_argument("--ops", type=int, default=1000, help="queries/protects/frees to time")
    p.add_argument("--budget", type=float, default=20.0, help="seconds for the whole run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="", help="driver-specific variant (see driver doc)")
    p.add_argument("--workload", default="64k", help="64k (this module) or one of _workloads")
    return p.parse_args(argv)


class _Clock:
    """Hands each phase its share of what is left of the budget."""

    def __init__(self, budget: float, start: float) -> None:
        self.end = start + budget
        self.pending = dict(PHASE_WEIGHTS)

    def deadline(self, phase: str) -> float:
        now = time.perf_counter()
        total_w = sum(self.pending.values())
        share = self.pending.pop(phase) / total_w if total_w else 1.0
        return now + max(0.0, self.end - now) * share


def _rate(n: int, seconds: float) -> float | None:
    if n <= 0:
        return None
    return round(n / seconds, 2) if seconds > 0 else None


def _window_rate(ts: array[float], n_done: int) -> float | None:
    """Rate over the last 10 % (at least 1) of the ``n_done`` allocations.

    ``ts[i]`` is the time just after allocation ``i`` finished; ``ts`` has one extra
    leading entry (time before the first allocation) so ``ts[n_done]`` is the last.
    """
    if n_done <= 0:
        return None
    w = max(1, n_done // 10)
    return _rate(w, ts[n_done] - ts[n_done - w])


def _timed_loop(
    items: list[Any], op: Callable[[Any], object], deadline: float
) -> tuple[int, float, int]:
    """Run ``op`` over ``items`` until done or past ``deadline``.

    Returns (ops done, seconds, ops whose result was falsy).  The deadline is checked
    after every op: ``perf_counter`` costs ~50 ns, far below the cheapest op here.
    """
    misses = 0
    done = 0
    t0 = CLOCK()
    for item in items:
        if not op(item):
            misses += 1
        done += 1
        if time.perf_counter() > deadline:
            break
    return done, CLOCK() - t0, misses


def run_scenario(
    make_backend: Callable[[], Backend], live: int, ops: int, budget: float, seed: int
) -> dict[str, Any]:
    """Run the four phases against a fresh backend and return the result fields."""
    rng = random.Random(seed)
    res: dict[str, Any] = {"live": live, "ops": ops, "budget_s": budget}
    t_start = time.perf_counter()
    clock = _Clock(budget, t_start)

    backend = make_backend()
    res["init_s"] = round(time.perf_counter() - t_start, 4)
    res["regions_at_init"] = backend.region_count()

    # --- setup -------------------------------------------------------------------
    deadline = clock.deadline("setup")
    setup_share = deadline - time.perf_counter()
    bases: list[int] = []
    ts: array[float] = array("d", [CLOCK()])
    next_check = _MIN_ALLOCS_BEFORE_PROJECTION
    check_every = 10  # a check is a few float ops; allocations cost >= 100 us here
    stop_reason = ""
    capacity_error = ""
    for i in range(live):
        try:
            bases.append(backend.alloc())
        except MemoryError as exc:  # the peer's own address-space/heap limit
            capacity_error = str(exc) or "MemoryError"
            break
        now = time.perf_counter()
        ts.append(CLOCK())
        done = i + 1
        if done == live:
            break
        if now > deadline:
            stop_reason = f"setup share of the budget used up at {done}/{live}"
            break
        if done >= next_check:
            next_check = done + check_every
            rate = _window_rate(ts, done)
            # per-op cost only grows with the count: (left / current rate) is a lower bound
            if rate and (live - done) / rate > setup_share * _HOPELESS_FACTOR:
                stop_reason = (
                    f"hopeless: {live - done} allocs left at >= {1 / rate * 1e3:.2f} ms each "
                    f"> {_HOPELESS_FACTOR:g}x the {setup_share:.1f} s setup share"
                )
                break
    n = len(bases)
    res["setup_s"] = round(ts[n] - ts[0], 4)
    res["alloc_per_s"] = _window_rate(ts, n)
    res["alloc_avg_per_s"] = _rate(n, ts[n] - ts[0])
    res["regions"] = backend.region_count()
    if n < live:
        res["skipped"] = (
            f"peer capacity: {capacity_error}" if capacity_error else "setup would exceed budget"
        )
        res["live_reached"] = n
        res["setup_stop"] = stop_reason
        for k in ("query_per_s", "protect_per_s", "free_per_s"):
            res[k] = None
        return res

    # --- query -------------------------------------------------------------------
    deadline = clock.deadline("query")
    targets = [bases[rng.randrange(n)] + rng.randrange(ALLOC_SIZE) for _ in range(ops)]
    done, secs, misses = _timed_loop(targets, backend.query, deadline)
    res["query_per_s"] = _rate(done, secs)
    res["query_done"] = done
    if misses:
        res["query_misses"] = misses
    truncated = done < ops

    # --- protect -----------------------------------------------------------------
    deadline = clock.deadline("protect")
    unsupported = getattr(backend, "protect_unsupported", "")
    if unsupported:
        res["protect_per_s"] = None
        res["protect_skipped"] = unsupported
    else:
        pages = [bases[rng.randrange(n)] + rng.randrange(1, 15) * PAGE_SIZE for _ in range(ops)]

        def protect_round_trip(page: int) -> bool:
            backend.protect(page, True)
            backend.protect(page, False)
            return True

        done, secs, _ = _timed_loop(pages, protect_round_trip, deadline)
        res["protect_per_s"] = _rate(done, secs)
        res["protect_done"] = done
        res["regions_after_protect"] = backend.region_count()
        truncated = truncated or done < ops

    # --- free --------------------------------------------------------------------
    deadline = clock.deadline("free")
    victims = list(bases)
    rng.shuffle(victims)
    victims = victims[: min(ops, n)]

    def free_one(base: int) -> bool:
        backend.free(base)
        return True

    done, secs, _ = _timed_loop(victims, free_one, deadline)
    res["free_per_s"] = _rate(done, secs)
    res["free_done"] = done
    truncated = truncated or done < len(victims)

    res["truncated"] = truncated
    return res


def main(
    peer: str,
    versions: Callable[[], tuple[str, str]],
    make_backend: Callable[[argparse.Namespace], Backend],
    note: str | Callable[[argparse.Namespace], str],
) -> None:
    """Parse the CLI, run the scenario, print ONE JSON line, exit without teardown.

    ``versions`` returns (peer version, unicorn version).  Any exception is reported
    in the JSON (``"error"``) rather than as a traceback, so the caller always gets a
    parseable line; the exit status is 1 in that case.
    """
    args = parse_args()
    out: dict[str, Any] = {"peer": peer, "live": args.live}
    if args.variant:
        out["variant"] = args.variant
    status = 0
    try:
        out["version"], out["unicorn_version"] = versions()
        out["note"] = note(args) if callable(note) else note
        # The peers allocate millions of small objects; a GC pass in the middle of a
        # timed phase is part of their real cost, so the collector stays on.
        gc.collect()
        if args.workload == "64k":
            out.update(
                run_scenario(lambda: make_backend(args), args.live, args.ops, args.budget, args.seed)
            )
        else:
            from _workloads import run_workload

            out.update(run_workload(lambda: make_backend(args), args.workload, args.live,
                                    args.ops, args.budget, args.seed))  # fmt: skip
    except Exception as exc:  # any peer failure becomes a recorded result
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
        status = 1
    out["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def dist_version(name: str) -> str:
    """Installed distribution version, or ``"?"`` (drivers must never fail on this)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"
