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


def per_input(session: WorkerSession, jobs: list[Job]) -> float:
    """CPU seconds per input through ``session`` (inputs already in memory, after one warm-up).

    CPU time of this process rather than wall time: both sides of the ratio run here, one
    after the other, and on a machine shared with other work the wall clock mostly measures
    the neighbours."""
    loaded = [Job(j.id, j.target, j.kind, j.label, None, Path(j.input_path or "").read_bytes(), j.input,
                  j.limits) for j in jobs]
    session.run(loaded[0])
    started = time.process_time()
    for job in loaded:
        session.run(job)
    return (time.process_time() - started) / len(loaded)


def steady_rate(jobs: list[Job], **options: Any) -> tuple[float, float]:
    """(steady-state jobs/s, seconds to the first result) of one batch."""
    stamps: list[float] = []

    def on_result(result: Result) -> None:
        stamps.append(time.perf_counter())
        if result.outcome in ("error", "worker-crashed"):
            raise RuntimeError(f"job {result.job}: {result.error}")

    started = time.perf_counter()
    run_batch(jobs, on_result=on_result, **options)
    warm = max(1, int(len(stamps) * WARMUP))
    return (len(stamps) - 1 - warm) / (stamps[-1] - stamps[warm]), stamps[0] - started


def run(quick: bool = False, with_ray: bool = True) -> dict[str, Any]:
    reps = 3 if quick else 5
    out: dict[str, Any] = {}
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

        # 2. the local pool: 1 worker vs 2
        count = 1000 if quick else 3000
        jobs = jobs_for(snapshot, corpus, count)
        one = [steady_rate(jobs, workers=1) for _ in range(reps)]
        two = [steady_rate(jobs, workers=2) for _ in range(reps)]
        out["local1_jobs_s"] = statistics.median(r for r, _ in one)
        out["local2_jobs_s"] = statistics.median(r for r, _ in two)
        out["local_first_result_s"] = statistics.median(s for _, s in two)
        out["scaling"] = out["local2_jobs_s"] / out["local1_jobs_s"]

        # 4. per-job overhead: the guest runs 0 instructions
        empty = jobs_for(snapshot, corpus, count, Limits(max_instructions=0))
        inproc = per_input(WorkerSession(), empty)
        out["empty_inprocess_us"] = inproc * 1e6
        out["empty_local_us"] = 1e6 / statistics.median(steady_rate(empty, workers=1)[0] for _ in range(reps))

        if with_ray:
            out.update(_ray(jobs, empty, reps))
    out["markdown"] = markdown(out)
    return out


def _ray(jobs: list[Job], empty: list[Job], reps: int) -> dict[str, Any]:
    try:
        import ray
    except ImportError:
        return {"ray": "not installed (pip install 'emulator-mem[ray]')"}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    out: dict[str, Any] = {"ray_init_s": time.perf_counter() - started}
    try:
        runs = [steady_rate(jobs, backend="ray", workers=2) for _ in range(reps)]
        out["ray2_jobs_s"] = statistics.median(r for r, _ in runs)
        out["ray_first_result_s"] = statistics.median(s for _, s in runs)
        out["empty_ray_us"] = 1e6 / statistics.median(
            steady_rate(empty, backend="ray", workers=1)[0] for _ in range(reps))
    finally:
        ray.shutdown()
    return out


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
    ]
    if "ray2_jobs_s" in r:
        ratio = r["ray2_jobs_s"] / r["local2_jobs_s"]
        lines.append(f"| Ray local (2 CPUs), once started | {r['ray2_jobs_s']:,.0f} jobs/s | local pool, "
                     f"2 workers: {r['local2_jobs_s']:,.0f} jobs/s | **{ratio:.2f}x** | ≥ 0.8x |")
    lines += [
        f"| per-job overhead, local pool (guest runs 0 instructions) | {r['empty_local_us']:,.0f} µs/job | "
        f"in-process: {r['empty_inprocess_us']:,.0f} µs/job | dispatch ≈ "
        f"{r['empty_local_us'] - r['empty_inprocess_us']:,.0f} µs | — |",
    ]
    if "empty_ray_us" in r:
        lines.append(f"| per-job overhead, Ray (1 actor) | {r['empty_ray_us']:,.0f} µs/job | in-process: "
                     f"{r['empty_inprocess_us']:,.0f} µs/job | dispatch ≈ "
                     f"{r['empty_ray_us'] - r['empty_inprocess_us']:,.0f} µs | — |")
    lines += ["", f"Start-up: local pool, first result after {r['local_first_result_s']:.2f} s"
              + (f"; Ray: `ray.init` {r['ray_init_s']:.1f} s, then first result after "
                 f"{r['ray_first_result_s']:.2f} s (actors start, snapshot through the object store)"
                 if "ray_init_s" in r else f"; Ray: {r.get('ray', 'not measured')}") + "."]
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
