"""What a person reads about a batch: a progress bar while it runs, a summary at the end.

The summary groups outcomes the way crash triage does: by exception code and
``module+offset`` of the faulting instruction, so a thousand inputs that hit the same bug
are one line, listed before the ordinary outcomes (exit codes, limits, errors). Each crash
line names the first input that produced it, which is the one to open in a debugger.

The progress bar is tqdm's (jobs done, jobs/s, ETA) with the crash count beside it, drawn
only on a terminal.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any

from tqdm import tqdm

from .result import Result


@dataclass(slots=True)
class CrashBucket:
    """Every job that died of the same exception at the same place."""

    code: int
    name: str
    location: str
    instruction: str
    jobs: int
    first_job: int
    first_input: str  # the input's name, or the target's for a job without input


class Summary:
    """Counts results as they arrive; :meth:`format` is the end-of-batch report."""

    def __init__(self, backend: str = "local", workers: int | None = None) -> None:
        self.backend = backend
        self.workers = workers
        self.jobs = 0
        self.outcomes: Counter[tuple[str, int | None]] = Counter()
        self.buckets: dict[tuple[int, str], CrashBucket] = {}
        self.crashes = 0  # unhandled exceptions plus dead workers
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.interrupted = False
        self.startup_seconds = 0.0

    def add(self, result: Result) -> None:
        self.jobs += 1
        exc = result.exception
        if result.outcome == "exception" and exc is not None:
            self.crashes += 1
            key = (exc.code, exc.location)
            bucket = self.buckets.get(key)
            label = result.input if result.input is not None else PurePath(result.target).name
            if bucket is None:
                self.buckets[key] = CrashBucket(exc.code, exc.name, exc.location, exc.instruction, 1,
                                                result.job, label)
            else:
                bucket.jobs += 1
                if result.job < bucket.first_job:
                    bucket.first_job, bucket.first_input = result.job, label
            return
        if result.outcome == "worker-crashed":
            self.crashes += 1
        code = result.exit_code if result.outcome == "exited" else None
        self.outcomes[(result.outcome, code)] += 1

    def finish(self) -> None:
        self.elapsed = time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.jobs / self.elapsed if self.elapsed > 0 else 0.0

    def sorted_buckets(self) -> list[CrashBucket]:
        """Rarest first (the unique crashes), then by where they happen."""
        return sorted(self.buckets.values(), key=lambda b: (b.jobs, b.code, b.location))

    def format(self) -> str:
        workers = f", {self.workers} workers" if self.workers else ""
        head = (f"batch: {self.jobs} jobs in {self.elapsed:.2f} s, {self.rate:.1f} jobs/s "
                f"({self.backend}{workers})")
        if self.startup_seconds:
            head += f"; backend start-up {self.startup_seconds:.1f} s"
        lines = [head + (" — interrupted, results so far" if self.interrupted else "")]
        buckets = self.sorted_buckets()
        lines.append(f"unique crashes: {len(buckets)}")
        for b in buckets:
            first = f"{b.first_input} (job {b.first_job})"
            lines.append(f"  {b.code:#010x} {b.name:<32} {b.location or '?':<24} {b.jobs:>6} jobs"
                         f"  first: {first}  [{b.instruction}]")
        lines.append("other outcomes:")
        for (outcome, code), count in sorted(self.outcomes.items(), key=lambda i: (-i[1], i[0][0])):
            label = outcome if code is None else f"{outcome} with code {code:#x}"
            lines.append(f"  {label:<58} {count:>6} jobs")
        if not self.outcomes:
            lines.append("  none")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs, "seconds": self.elapsed, "jobs_per_second": self.rate,
            "interrupted": self.interrupted, "backend": self.backend, "workers": self.workers,
            "crashes": [
                {"code": b.code, "name": b.name, "location": b.location, "instruction": b.instruction,
                 "jobs": b.jobs, "first_job": b.first_job, "first_input": b.first_input}
                for b in self.sorted_buckets()
            ],
            "outcomes": [{"outcome": o, "exit_code": c, "jobs": n} for (o, c), n in self.outcomes.items()],
        }


class ProgressBar:
    """tqdm on standard error: jobs done, jobs/s, crashes so far; silent off a terminal."""

    def __init__(self, total: int | None, *, enabled: bool | None = None,
                 stream: IO[str] | None = None) -> None:
        stream = stream or sys.stderr
        if enabled is None:
            enabled = stream.isatty()
        self._bar = tqdm(total=total, unit="job", file=stream, disable=not enabled, dynamic_ncols=True,
                         smoothing=0.05, mininterval=0.2)

    def update(self, summary: Summary) -> None:
        self._bar.set_postfix(crashes=summary.crashes, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
