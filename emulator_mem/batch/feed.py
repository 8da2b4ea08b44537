"""The driver's side of job dispatch, shared by both backends.

:class:`JobFeed` hands out jobs one at a time, each carrying its input bytes: the input file
is read right then (a corpus of a million files is never held in memory), and a file that
cannot be read becomes that job's ``error`` result on the spot, so the batch goes on. Jobs
a backend has to run again (the rest of a chunk whose worker died) go back to the front.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from .jobs import Job
from .result import Result, failed

Emit = Callable[[Result], None]

#: how long past a job's own timeout the driver waits before it kills the worker: the worker
#: checks the timeout itself between slices, so this only fires for a worker that hangs
#: outside guest code (or inside one enormous slice), plus room for loading the target
DEFAULT_GRACE = 5.0


class JobFeed:
    """Jobs in order, inputs read on the way out; retried jobs first."""

    def __init__(self, jobs: Iterable[Job], emit: Emit) -> None:
        self._jobs: Iterator[Job] = iter(jobs)
        self._emit = emit
        self._retry: deque[Job] = deque()
        self.exhausted = False

    def push_front(self, jobs: Iterable[Job]) -> None:
        """Run these again before any new job (they already carry their input bytes)."""
        self._retry.extendleft(reversed(list(jobs)))

    def take(self) -> Job | None:
        """The next runnable job, or None when there is none left."""
        if self._retry:
            return self._retry.popleft()
        while not self.exhausted:
            job = next(self._jobs, None)
            if job is None:
                self.exhausted = True
                break
            if job.input_path is None:
                return job
            try:
                with open(job.input_path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                self._emit(failed(job.id, job.label, job.target, "error",
                                  f"cannot read input {job.input_path}: {exc.strerror or exc}"))
                continue
            return job.with_data(data)
        return None

    def take_many(self, count: int) -> list[Job]:
        out: list[Job] = []
        while len(out) < count:
            job = self.take()
            if job is None:
                break
            out.append(job)
        return out

    @property
    def empty(self) -> bool:
        return self.exhausted and not self._retry


def hard_deadline(jobs: Iterable[Job], grace: float) -> float | None:
    """Seconds the driver allows for ``jobs`` run back to back; None if any is unlimited."""
    total = 0.0
    for job in jobs:
        if job.limits.timeout is None:
            return None
        total += job.limits.timeout + grace
    return total
