"""Batch benchmark: many inputs through one snapshot, on one worker, two, and Ray.

Not a test: prints ratios measured in one run on this machine. Targets from the batch issue:

* inputs/s through one worker with checkpoint/rollback vs loading the snapshot afresh for
  every input: >= 20x;
* 2 local workers vs 1: >= 1.7x (2 cores); Ray local (2 CPUs) vs the local pool, once
  started: >= 0.8x, with Ray's start-up reported on its own;
* per-job overhead (a job whose guest run is ~0), local and Ray, in µs.

The workload is the fuzzing one the batch was built for: ``samples/bin/parse32.exe``
snapshotted right before it reads its input, inputs from ``samples/corpus.py``. Pool
throughput is the steady state: jobs/s between the result that completes the warm-up (the
first 10% of the jobs: workers start, load the snapshot once) and the last result, median of
several repetitions; start-up is reported apart. The one-worker ratio is measured in this
process, in CPU time.

    .venv/bin/python bench/bench_batch.py [--quick] [--no-ray]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from emulator_mem.batch import InputSpec, Job, Limits, Location, Result, WorkerSession, run_batch  # noqa: E402
from emulator_mem.runner import Process  # noqa: E402
from samples import build  # noqa: E402
from samples.corpus import write_corpus  # noqa: E402

SETUP_INSTRUCTIONS = 15  # parse32's prologue: the snapshot is taken where it reads the input
SPEC = InputSpec(Location.parse("parse32.exe!input"), length_at=Location.parse("parse32.exe!input_len"))
WARMUP = 0.1


def make_snapshot(directory: Path) -> Path:
    process = Process.load_file(build.BIN / "parse32.exe")
    process.run(SETUP_INSTRUCTIONS)
    path = directory / "parse32.snap"
    process.save(path)
    return path


def jobs_for(snapshot: Path, corpus: list[Path], count: int, limits: Limits | None = None) -> list[Job]:
    return [Job(i, str(snapshot), "snapshot", corpus[i % len(corpus)].name, str(corpus[i % len(corpus)]),
                None, SPEC, limits or Limits()) for i in range(count)]


def per_input(session: WorkerSession, jobs: list[Job], clock: Any = time.process_time) -> float:
    """CPU seconds per input through ``session`` (inputs already in memory, after one warm-up).

    CPU time of this process rather than wall time: both sides of the ratio run here, one
    after the other, and on a machine shared with other work the wall clock mostly measures
    the neighbours. The garbage collector runs first: the two sides alternate, and a fresh
    load per input leaves thousands of objects whose collection would otherwise be charged
    to whichever measurement runs next (it inflated the rollback side by up to 1.6x)."""
    loaded = [Job(j.id, j.target, j.kind, j.label, None, Path(j.input_path or "").read_bytes(), j.input,
                  j.limits) for j in jobs]
    session.run(loaded[0])
    gc.collect()
    started = clock()
    for job in loaded:
        session.run(job)
    return float(clock() - started) / len(loaded)


def steady_rate(jobs: list[Job], **options: Any) -> tuple[float, float, float]:
    """(steady-state jobs/s, seconds to the first result, driver CPU seconds per job)."""
    stamps: list[float] = []

    def on_result(result: Result) -> None:
        stamps.append(time.perf_counter())
        if result.outcome in ("error", "worker-crashed"):
            raise RuntimeError(f"job {result.job}: {result.error}")

    started, cpu = time.perf_counter(), time.process_time()
    run_batch(jobs, on_result=on_result, **options)
    driver = (time.process_time() - cpu) / len(stamps)
    warm = max(1, int(len(stamps) * WARMUP))
    return (len(stamps) - 1 - warm) / (stamps[-1] - stamps[warm]), stamps[0] - started, driver


def run(quick: bool = False, with_ray: bool = True) -> dict[str, Any]:
    reps = 3 if quick else 5
    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        directory = Path(tmp)
        snapshot = make_snapshot(directory)
        corpus = write_corpus(directory / "corpus", count=200, seed=15)

        # 1. one worker: rollback vs loading the snapshot for every input, on the whole
        # corpus and apart for the inputs that exit and those that crash (a crash costs the
        # guest's exception dispatch and a report, the same on both paths)
        fast, fresh = WorkerSession(), WorkerSession(fresh=True)
        every = jobs_for(snapshot, corpus, len(corpus))
        crashed = {job.id for job in every
                   if fast.run(job.with_data(Path(job.input_path or "").read_bytes())).outcome == "exception"}
        out["crash_share"] = len(crashed) / len(every)
        groups = {"": every, "exit_": [j for j in every if j.id not in crashed],
                  "crash_": [j for j in every if j.id in crashed]}
        for prefix, group in groups.items():
            rolled = [per_input(fast, group) for _ in range(reps)]
            loaded = [per_input(fresh, group[:40]) for _ in range(reps)]
            out[prefix + "rollback_us"] = statistics.median(rolled) * 1e6
            out[prefix + "reload_us"] = statistics.median(loaded) * 1e6
            out[prefix + "rollback_ratio"] = out[prefix + "reload_us"] / out[prefix + "rollback_us"]
        out["snapshot_bytes"] = snapshot.stat().st_size

        # 2-4. the pools, one repetition of each in turn (the machine's load drifts; taking
        # the compared figures side by side keeps it out of the ratios)
        count = 1000 if quick else 3000
        jobs = jobs_for(snapshot, corpus, count)
        empty = jobs_for(snapshot, corpus, count, Limits(max_instructions=0))
        out["empty_inprocess_us"] = per_input(WorkerSession(), empty, clock=time.perf_counter) * 1e6
        ray = _start_ray(out) if with_ray else None
        runs: dict[str, list[tuple[float, float, float]]] = {}
        try:
            for _ in range(reps):
                runs.setdefault("local1", []).append(steady_rate(jobs, workers=1))
                runs.setdefault("local2", []).append(steady_rate(jobs, workers=2))
                runs.setdefault("empty_local", []).append(steady_rate(empty, workers=1))
                if ray is not None:
                    runs.setdefault("ray2", []).append(steady_rate(jobs, backend="ray", workers=2))
                    runs.setdefault("empty_ray", []).append(steady_rate(empty, backend="ray", workers=1))
        finally:
            if ray is not None:
                ray.shutdown()
        rate = {k: statistics.median(r for r, _, _ in v) for k, v in runs.items()}
        out["local1_jobs_s"], out["local2_jobs_s"] = rate["local1"], rate["local2"]
        out["scaling"] = rate["local2"] / rate["local1"]
        out["local_first_result_s"] = statistics.median(s for _, s, _ in runs["local2"])
        out["local2_driver_us"] = statistics.median(d for _, _, d in runs["local2"]) * 1e6
        # what two idle cores would give: every job costs a worker its CPU time (measured in
        # process above) plus the driver's share; two cores serve two such streams
        worker_us = out["rollback_us"]
        out["idle_estimate_scaling"] = (2e6 / (worker_us + out["local2_driver_us"])) / (1e6 / worker_us)
        out["empty_local_us"] = 1e6 / rate["empty_local"]
        if ray is not None:
            out["ray2_jobs_s"] = rate["ray2"]
            out["ray_first_result_s"] = statistics.median(s for _, s, _ in runs["ray2"])
            out["ray2_driver_us"] = statistics.median(d for _, _, d in runs["ray2"]) * 1e6
            out["empty_ray_us"] = 1e6 / rate["empty_ray"]
    out["load_after"] = os.getloadavg()[0]
    out["markdown"] = markdown(out)
    return out


def _start_ray(out: dict[str, Any]) -> Any:
    """``ray.init(num_cpus=2)``, its time in ``out``; None when Ray is not installed."""
    try:
        import ray
    except ImportError:
        out["ray"] = "not installed (pip install 'emulator-mem[ray]')"
        return None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    out["ray_init_s"] = time.perf_counter() - started
    return ray


def markdown(r: dict[str, Any]) -> list[str]:
    lines = [
        "Workload: `samples/bin/parse32.exe` snapshotted where it reads its input "
        f"({r['snapshot_bytes']:,}-byte snapshot), inputs from `samples/corpus.py`. "
        "Pool figures are steady-state jobs/s (after the first 10% of the jobs), medians.", "",
        "| measure | value | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        *[f"| one worker, checkpoint/rollback per input: {label} | {1e6 / r[p + 'rollback_us']:,.0f} "
          f"inputs/s ({r[p + 'rollback_us']:,.0f} µs) | reload the snapshot per input: "
          f"{1e6 / r[p + 'reload_us']:,.0f} inputs/s ({r[p + 'reload_us']:,.0f} µs) | "
          f"**{r[p + 'rollback_ratio']:.1f}x** | {'≥ 20x' if not p else ''} |"
          for p, label in (("", f"whole corpus ({r['crash_share']:.0%} crash)"),
                           ("exit_", "inputs that exit"), ("crash_", "inputs that crash"))],
        f"| local pool, 2 workers | {r['local2_jobs_s']:,.0f} jobs/s | 1 worker: {r['local1_jobs_s']:,.0f} "
        f"jobs/s | **{r['scaling']:.2f}x** | ≥ 1.7x |",
        f"| the same from CPU accounting (2 idle cores) | worker {r['rollback_us']:,.0f} µs + driver "
        f"{r['local2_driver_us']:,.0f} µs CPU per job | 1 worker: worker CPU only | "
        f"{r['idle_estimate_scaling']:.2f}x (estimate) | |",
    ]
    if "ray2_jobs_s" in r:
        ratio = r["ray2_jobs_s"] / r["local2_jobs_s"]
        lines.append(f"| Ray local (2 CPUs), once started | {r['ray2_jobs_s']:,.0f} jobs/s | local pool, "
                     f"2 workers: {r['local2_jobs_s']:,.0f} jobs/s | **{ratio:.2f}x** | ≥ 0.8x |")
    lines += [
        f"| per-job overhead, local pool (guest runs 0 instructions) | {r['empty_local_us']:,.0f} µs/job | "
        f"in-process (wall): {r['empty_inprocess_us']:,.0f} µs/job | dispatch ≈ "
        f"{r['empty_local_us'] - r['empty_inprocess_us']:,.0f} µs | — |",
    ]
    if "empty_ray_us" in r:
        lines.append(f"| per-job overhead, Ray (1 actor) | {r['empty_ray_us']:,.0f} µs/job | "
                     f"in-process (wall): {r['empty_inprocess_us']:,.0f} µs/job | dispatch ≈ "
                     f"{r['empty_ray_us'] - r['empty_inprocess_us']:,.0f} µs | — |")
    lines += ["", f"Start-up: local pool, first result after {r['local_first_result_s']:.2f} s"
              + (f"; Ray: `ray.init` {r['ray_init_s']:.1f} s, then first result after "
                 f"{r['ray_first_result_s']:.2f} s (actors start, snapshot through the object store); "
                 f"driver CPU per job: local {r['local2_driver_us']:,.0f} µs, "
                 f"Ray {r['ray2_driver_us']:,.0f} µs"
                 if "ray_init_s" in r else f"; Ray: {r.get('ray', 'not measured')}") + ".",
              "", f"Load average (1 min) before and after: {r['load_before']:.1f}, {r['load_after']:.1f} "
              f"on {os.cpu_count()} cores."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    result = run(args.quick, with_ray=not args.no_ray)
    print("\n".join(result["markdown"]))


if __name__ == "__main__":
    main()
