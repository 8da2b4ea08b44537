"""Allocation workloads (issue 13) for us and the peers, in one run: the RESULTS.md headline.

Every allocator -- ours through its kernel32 layer (``peers/emulator_mem_driver.py``), bare
Unicorn, dumpulator, speakeasy, qiling -- runs the same workloads (``peers/_workloads.py``)
through the same harness, each in its own process (the peers in their own venvs), at 1k,
10k and 100k live allocations. Our figures are the median of ``OUR_REPS`` runs (separate
processes); each peer runs once per cell, within ``PEER_BUDGET`` seconds, and reports what
it got through (``truncated``/``skipped`` as the harness defines them, never extrapolated).

    .venv/bin/python bench/bench_workloads.py [--quick] [--no-peers]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_envs  # noqa: E402

WORKLOADS = ("small", "mixed", "churn", "commit", "64k")
SIZES = (1000, 10000, 100000)
PEERS = ("bare_unicorn", "dumpulator", "speakeasy", "qiling")
OUR_REPS = 3
OUR_BUDGET = 600.0  # never reached: our runs are not truncated
OPS = 1000
PEER_OPS = 200
PEER_BUDGET = 20.0
RATES = ("alloc", "query", "protect", "free", "commit", "decommit")
TARGETS = {"alloc": 20_000, "protect": 50_000, "query": 150_000, "free": 20_000}
GROWTH_TARGET = 1.3


def _median_run(workload: str, live: int, reps: int) -> dict[str, Any]:
    runs = [peer_envs.run_peer("emulator_mem", live, OPS, OUR_BUDGET, workload=workload)
            for _ in range(reps)]  # fmt: skip
    for r in runs:
        r["workload"] = workload
    ok = [r for r in runs if "error" not in r and "skipped" not in r]
    if not ok:
        return runs[0]
    out = dict(ok[0])
    for rate in RATES:
        values = [r[f"{rate}_per_s"] for r in ok if r.get(f"{rate}_per_s")]
        out[f"{rate}_per_s"] = statistics.median(values) if values else None
    out["reps"] = len(ok)
    return out


def run(quick: bool = False, peers: bool = True) -> dict[str, Any]:
    sizes = (1000, 10000) if quick else SIZES
    results: list[dict[str, Any]] = []
    for workload in WORKLOADS:
        for live in sizes:
            r = _median_run(workload, live, 1 if quick else OUR_REPS)
            print(f"  {workload} {live} emulator_mem: {r.get('error') or r.get('skipped') or 'ok'}",
                  flush=True)
            results.append(r)
            for peer in PEERS if peers else ():
                r = peer_envs.run_peer(peer, live, PEER_OPS, PEER_BUDGET, workload=workload)
                r.setdefault("workload", workload)
                print(f"  {workload} {live} {peer}: {r.get('error') or r.get('skipped') or 'ok'}",
                      flush=True)
                results.append(r)
    return {"results": results, "sizes": sizes, "reps": 1 if quick else OUR_REPS}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _rate(r: dict[str, Any], rate: str) -> float | None:
    """Ops per second; protect counts VirtualProtect calls (the harness times round trips)."""
    v = r.get(f"{rate}_per_s")
    if v is None:
        return None
    return float(v) * (2 if rate == "protect" else 1)


def _note(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {str(r['error'])[:80]}"
    if "skipped" in r:
        reached = f" (reached {r['live_reached']:,} live)" if r.get("live_reached") else ""
        return f"{r['skipped']}{reached}"
    notes = []
    if r.get("truncated"):
        steps = r.get("churn_steps")
        notes.append(f"truncated ({steps:,} of 100,000 churn steps)" if steps else "truncated")
    if r.get("protect_skipped"):
        notes.append("protect n/a")
    return ", ".join(notes)


def markdown(res: dict[str, Any]) -> list[str]:
    results, sizes = res["results"], res["sizes"]
    out = [
        "## 1. Allocation workloads at 1k, 10k and 100k live allocations", "",
        "The same workloads through the same harness for everyone (bench/peers/_workloads.py): "
        "**small** = VirtualAlloc(NULL, 0x1000) repeated; **mixed** = 1-16 pages, random "
        "sub-range protects, queries, frees; **churn** = at N live, free a random allocation "
        "and allocate a random size, 100,000 times (alloc/free measured there); **commit** = "
        "reserve 1 MiB and commit its first page N times, then commit pages one by one, "
        "decommit some; **64k** = 64 KiB allocations, one page protected. alloc/s during setup "
        "is the rate over the last 10% of the N allocations. protect/s counts calls (read-only "
        "and back is two). Ours: kernel32 VirtualAlloc/VirtualQuery/VirtualProtect/VirtualFree, "
        f"median of {res['reps']} runs (separate processes); each peer runs once within "
        f"{PEER_BUDGET:g} s and reports what it got through.", "",
        f"Targets at 100k live (ours, every workload): alloc ≥ {TARGETS['alloc']:,}/s, "
        f"protect ≥ {TARGETS['protect']:,}/s, query ≥ {TARGETS['query']:,}/s, "
        f"free ≥ {TARGETS['free']:,}/s; per-op cost at 100k ≤ {GROWTH_TARGET}x that at 1k; "
        "Unicorn regions ≤ 64.", "",
    ]  # fmt: skip
    for workload in WORKLOADS:
        rows = [r for r in results if r.get("workload") == workload]
        cols = [c for c in RATES if any(r.get(f"{c}_per_s") for r in rows)]
        out += [f"### {workload}", "",
                "| who | live | " + " | ".join(f"{c}/s" for c in cols) + " | Unicorn regions | note |",
                "|---|---|" + "---|" * len(cols) + "---|---|"]  # fmt: skip
        for r in rows:
            who = "**emulator-mem**" if r.get("peer") == "emulator_mem" else r.get("peer", "?")
            cells = " | ".join(_fmt(_rate(r, c)) for c in cols)
            out.append(f"| {who} | {r.get('live', 0):,} | {cells} | {_fmt(r.get('regions'))} | "
                       f"{_note(r)} |")
        ours = {r["live"]: r for r in rows if r.get("peer") == "emulator_mem" and "error" not in r
                and "skipped" not in r}  # fmt: skip
        top = ours.get(sizes[-1])
        if top is not None:
            cells = []
            for c in cols:
                v, t = _rate(top, c), TARGETS.get(c)
                cells.append("–" if v is None or t is None
                             else f"{'✅' if v >= t else '❌'} ≥ {t:,}")  # fmt: skip
            out.append(f"| target at {sizes[-1]:,} | | " + " | ".join(cells) + " | ≤ 64 "
                       f"{'✅' if (top.get('regions') or 0) <= 64 else '❌'} | |")
        low = ours.get(sizes[0])
        if low is not None and top is not None:
            cells = []
            for c in cols:
                a, b = _rate(low, c), _rate(top, c)
                if a and b:
                    g = a / b
                    cells.append(f"{'✅' if g <= GROWTH_TARGET else '❌'} {g:.2f}x")
                else:
                    cells.append("–")
            out.append(f"| cost {sizes[-1] // 1000}k / {sizes[0] // 1000}k (≤ {GROWTH_TARGET}x) | | "
                       + " | ".join(cells) + " | | |")
        out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    print("\n".join(markdown(run(args.quick, not args.no_peers))))


if __name__ == "__main__":
    main()
