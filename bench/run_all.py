"""`make bench`: every benchmark in one run, written to bench/RESULTS.md as ratios.

Each scenario compares our number with a baseline measured in the same run on the same
machine: bare Unicorn, the peers' own allocators (dumpulator, speakeasy, qiling, each in its
own virtualenv because they pin different Unicorn versions — see peer_envs.py), or plain
``uc.mem_read``/``mem_write``. Figures are medians of several repetitions; the machine is
shared, so ratios matter more than absolute numbers.

    .venv/bin/python bench/run_all.py [--quick] [--no-peers] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_core  # noqa: E402
import bench_mapped  # noqa: E402
import bench_workloads  # noqa: E402

PEER_SIZES = (1000, 10000)


def machine_facts() -> list[str]:
    import unicorn

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Unicorn {unicorn.__version__} (ours and bare)",
    ]


def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def section_guest(core: dict[str, Any]) -> list[str]:
    out = ["## 2. Guest execution: 10M-instruction loop, manager attached vs bare Unicorn", "",
           "CPU time of the run, median of 3. Cold = first run on a fresh CPU (the TLB grows "
           "while it runs); after rollback = first run after `mm.rollback()` to a checkpoint "
           "taken before the first run (bare: `context_restore` + the data rewritten, untimed); "
           "warm = a second run. Targets: cold ≤ 1.0x bare, after rollback ≤ 1.0x bare, "
           "warm ≤ 1.0x bare.", "",
           "| pages touched | bare cold | ours cold | ratio | bare after restore | ours after "
           "rollback | ratio | bare warm | ours warm | ratio |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for g in core["guest"]:
        def ms(k: str, g: dict[str, Any] = g) -> str:
            return f"{g[k] * 1e3:.1f} ms"

        def ok(v: float) -> str:
            return f"{'✅' if v <= 1.0 else '❌'} {v:.2f}x"

        out.append(f"| {g['pages']:,} | {ms('bare_cold_s')} | {ms('mm_cold_s')} | "
                   f"{ok(g['cold_ratio'])} | {ms('bare_rollback_s')} | {ms('mm_rollback_s')} | "
                   f"{ok(g['rollback_ratio'])} | {ms('bare_warm_s')} | {ms('mm_warm_s')} | "
                   f"{ok(g['warm_ratio'])} |")
    out += ["", "Where the cold time goes (TLB misses: every one is a call into Python; "
            "time per miss = (cold − warm) / misses, so it includes everything a cold run adds: "
            "first-touch page faults of the host, translating the code):", "",
            "| pages | misses/page cold | of which slow (address space consulted) | µs/miss cold "
            "| misses/page after rollback | µs/miss after rollback |",
            "|---|---|---|---|---|---|"]
    def per_miss(us: float, misses: float) -> str:
        # With a few dozen misses the difference cold - warm is below the noise of a 10M
        # instruction run (it even comes out negative): no per-miss figure then.
        return f"{us:.2f}" if misses >= 1000 and us > 0 else "– (too few misses to time)"

    for g in core["guest"]:
        out.append(f"| {g['pages']:,} | {g['misses_per_page']:.2f} | {g['slow_fills_per_page']:.2f} "
                   f"| {per_miss(g['us_per_miss'], g['misses_per_page'] * g['pages'])} "
                   f"| {g['rollback_misses_per_page']:.2f} | "
                   f"{per_miss(g['rollback_us_per_miss'], g['rollback_misses_per_page'] * g['pages'])} |")
    return out + [""]


def section_snapshot(snap: dict[str, Any] | None) -> list[str]:
    out = ["## 3. Snapshots and rollback", ""]
    if snap is None:
        return out + ["(bench_snapshot.py not available)", ""]
    for line in snap.get("markdown", []):
        out.append(line)
    if not snap.get("markdown"):
        out += ["```", *(f"{k}: {v}" for k, v in snap.items()), "```"]
    return out + [""]


def section_mapped(mapped: dict[str, Any]) -> list[str]:
    m, w = mapped["mmio"], mapped["write_watch"]
    return ["## 4. MMIO dispatch and write watch", "",
            f"- MMIO: {m['mm_per_s']:,.0f} guest accesses/s through the manager vs {m['raw_per_s']:,.0f}/s "
            f"with raw `uc.mmio_map` callbacks: **{m['ratio']:.2f}x** the time (target ≤ 1.5x).",
            f"- Write watch on {w['mib']} MiB: first touch "
            f"{w['first_touch_us_per_page_watched']:.2f} µs/page watched vs "
            f"{w['first_touch_us_per_page_plain']:.2f} µs/page unwatched (one TLB miss per page either way);"
            f" steady state **{w['steady_ratio']:.3f}x** unwatched (target ≤ 1.05x).", ""]


def section_allocators(alloc: dict[str, Any]) -> list[str]:
    out = ["## 5. Allocators: alloc+release pairs", "",
           "Target: per-op cost at 100k live ≤ 2x that at 1k.", "",
           "| allocator | live | pairs/s | µs/pair | host bytes/alloc | guest bytes wasted/alloc |",
           "|---|---|---|---|---|---|"]
    for name, case in alloc.items():
        for n, r in case.items():
            if not isinstance(r, dict):
                continue
            out.append(f"| {name} | {int(n):,} | {r['pairs_per_second']:,.0f} | "
                       f"{r['us_per_pair']:.1f} | {r['host_overhead_bytes_per_allocation']:.0f} | "
                       f"{r['guest_waste_bytes_per_allocation']:.1f} |")
        out.append(f"| {name} | growth | | **{case['ratio']:.2f}x** | | |")
    return out + [""]


def section_batch(batch: dict[str, Any] | None) -> list[str]:
    out = ["## 6. Batch: many inputs through one snapshot (local pool, Ray)", ""]
    if batch is None:
        return out + ["(not run)", ""]
    return out + list(batch["markdown"]) + [""]


def run_under_qiling(peers: list[dict[str, Any]]) -> dict[str, Any]:
    """qiling with and without the manager on its Uc: the shellcode comparison (its report,
    output, exit code, registers, regions) and its ql.mem path at 1k and 10k allocations."""
    import json
    import subprocess

    import peer_envs

    env = peer_envs.ensure_env("qiling_mm")
    if not env.ok:
        return {"skipped": env.reason}
    proc = subprocess.run([str(env.python), str(HERE / "peers" / "qiling_compare.py")],
                          capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    compare = json.loads(lines[-1]) if lines else {"error": proc.stderr[-500:]}
    runs = [r for r in peers if r.get("peer") == "qiling"]  # plain qiling ran with the peers
    for live in PEER_SIZES:
        # the same ops and budget as the plain qiling runs of the 64k workload
        r = peer_envs.run_peer("qiling_mm", live, bench_workloads.PEER_OPS,
                               bench_workloads.PEER_BUDGET)
        print(f"  qiling_mm {live}: {r.get('skipped') or r.get('error') or 'ok'}", flush=True)
        runs.append(r)
    return {"compare": compare, "runs": runs}


def section_qiling(q: dict[str, Any] | None) -> list[str]:
    out = ["## 7. Under an existing emulator: qiling 1.4.6 with the manager on its Uc", "",
           "qiling unmodified, in its own venv; `MemoryManager(uc)` attached right after qiling "
           "creates its `Uc` (bench/peers/qiling_driver.py `attach_memory_manager`).", ""]
    if q is None:
        return out + ["(not run)", ""]
    if "skipped" in q:
        return out + [f"(skipped: {q['skipped']})", ""]
    c = q["compare"]
    if "error" in c:
        out.append(f"Shellcode comparison failed: {c['error']}")
    else:
        fields = ", ".join(f"{k} {'same' if v else 'DIFFERENT'}" for k, v in c["fields"].items())
        out.append(f"x86-64 shellcode (mmap, mprotect RX + call, partial munmap, write, exit) run "
                   f"plain and with the manager (attached: {c.get('attached')}): "
                   f"**{'identical' if c['same'] else 'different'}** — {fields}; "
                   f"stdout {c['plain']['stdout']!r}, exit code {c['plain']['exit_code']}.")
    out += ["", "qiling's own allocation path (`ql.mem.map_anywhere`/`protect`/`unmap`, 64 KiB "
            "allocations, one partial protect round trip per op):", "",
            "| qiling | live | alloc/s | query/s | protect/s | free/s | note |",
            "|---|---|---|---|---|---|---|"]
    for r in q["runs"]:
        who = "with the manager" if r.get("peer") == "qiling_mm" else "plain"
        note = r.get("skipped") or r.get("error") or ""
        if r.get("live_reached"):
            note = f"{note} (reached {r['live_reached']:,})"
        out.append(f"| {who} | {r.get('live', 0):,} | {fmt(r.get('alloc_per_s'))} | "
                   f"{fmt(r.get('query_per_s'))} | {fmt(r.get('protect_per_s'), 1)} | "
                   f"{fmt(r.get('free_per_s'))} | {str(note)[:100]} |")
    return out + [""]


def section_report(rep: dict[str, Any] | None) -> list[str]:
    out = ["## 8. HTML report: recording cost and rendering 100k allocations", ""]
    if rep is None:
        return out + ["(skipped: Chromium is not installed — Debian package `chromium`)", ""]
    return out + list(rep["markdown"])


def main() -> None:
    parser = argparse.ArgumentParser(description="run every benchmark, write RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer emulators")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    print("core (bookkeeping, guest execution)...", flush=True)
    core = bench_core.run(args.quick, bookkeeping_too=False)
    print("mapped regions (MMIO, write watch)...", flush=True)
    mapped = bench_mapped.run(args.quick)
    print("allocators...", flush=True)
    alloc = importlib.import_module("bench_allocators").run()
    snap = None
    try:
        snap_mod = importlib.import_module("bench_snapshot")
    except ImportError:
        snap_mod = None
    if snap_mod is not None:
        print("snapshots...", flush=True)
        takes_quick = "quick" in snap_mod.run.__code__.co_varnames
        snap = snap_mod.run(quick=args.quick) if takes_quick else snap_mod.run()
    print("batch (local pool, Ray)...", flush=True)
    batch = importlib.import_module("bench_batch").run(quick=args.quick)
    print("HTML report (run --report overhead, 100k allocations in Chromium)...", flush=True)
    bench_report = importlib.import_module("bench_report")
    report = bench_report.run(args.quick) if bench_report.chromium_available() else None
    print("allocation workloads (ours and the peers, each in its own process/venv)...", flush=True)
    workloads = bench_workloads.run(args.quick, peers=not args.no_peers)
    peers = [r for r in workloads["results"]
             if r.get("workload") == "64k" and r.get("live") in PEER_SIZES]  # fmt: skip
    qiling = None
    if not args.no_peers:
        print("qiling with and without the manager...", flush=True)
        qiling = run_under_qiling(peers)
    load_end = os.getloadavg()
    lines = ["# emulator-mem benchmark results", "", "Written by `make bench` (`bench/run_all.py`).", "",
             *machine_facts(), f"- total run time: {time.perf_counter() - t0:.0f} s",
             f"- load average (1/5/15 min) at the start {load_start[0]:.1f}/{load_start[1]:.1f}/"
             f"{load_start[2]:.1f}, at the end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} "
             f"on {os.cpu_count()} cores: the machine is shared, so rates are CPU time of the "
             "measuring process where noted, and ratios are taken within one run", ""]
    lines += bench_workloads.markdown(workloads)
    lines += section_guest(core)
    lines += section_snapshot(snap)
    lines += section_mapped(mapped)
    lines += section_allocators(alloc)
    lines += section_batch(batch)
    lines += section_qiling(qiling)
    lines += section_report(report)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
