"""The ``ray`` backend: the same worker code as Ray actors, on one machine or a cluster.

Ray (an optional extra: ``pip install 'emulator-mem[ray]'``) schedules, moves data and
restarts nothing of ours: each actor is a :class:`~.worker.WorkerSession`, exactly what a
local worker process runs. Each target file (a snapshot, a PE) is read once by the driver
and put into Ray's object store once; actors fetch it from their node's store the first
time they need it and keep it in a file of their own, so a cluster never needs a shared
file system and a snapshot crosses the network at most once per node.

Jobs travel in chunks (one actor call runs several jobs back to back) so that Ray's
per-call cost, about a millisecond, is shared; two calls are in flight per actor. When an
actor dies, or a call outlives the sum of its jobs' timeouts plus a grace period (the
actor is then killed), the chunk's jobs are run again one per call: a job that fails alone
is the culprit and is reported ``worker-crashed`` or ``timeout``; the others give their
normal results. Emulation is deterministic, so running a job twice changes nothing.

``address=None`` starts a private local Ray instance with ``workers`` CPUs and shuts it
down at the end; ``"auto"`` or ``"HOST:PORT"`` joins a running cluster (``ray start``).
A Ray session that is already initialised (a test fixture, a notebook) is used as is and
left running.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BatchError
from .feed import DEFAULT_GRACE, Emit, JobFeed, hard_deadline
from .jobs import Job
from .result import Result, failed
from .worker import WorkerSession, import_modules, read_target

CALLS_IN_FLIGHT = 2
MAX_CHUNK = 16
MAX_STARTUP_FAILURES = 3


def ray_module() -> Any:
    """``import ray`` with a clear error when the extra is not installed."""
    try:
        import ray
    except ImportError:
        raise BatchError("the ray backend needs Ray: pip install 'emulator-mem[ray]'") from None
    return ray


class BatchActor:
    """One Ray actor: a worker session whose targets come from the object store."""

    def __init__(self, fresh: bool, imports: tuple[str, ...]) -> None:
        import_modules(imports)
        self._dir = Path(tempfile.mkdtemp(prefix="emulator-mem-batch-"))
        self._files: dict[str, Path] = {}
        self._refs: dict[str, Any] = {}
        self.session = WorkerSession(self._resolve, fresh=fresh)

    def _resolve(self, target: str) -> Path:
        path = self._files.get(target)
        if path is None:
            import ray

            data = ray.get(self._refs[target])
            path = self._dir / f"{len(self._files)}-{Path(target).name}"
            path.write_bytes(data)
            self._files[target] = path
        return path

    def run(self, jobs: list[Job], refs: dict[str, Any]) -> list[Result]:
        self._refs.update(refs)
        return [self.session.run(job) for job in jobs]

    def pid(self) -> int:
        return os.getpid()


@dataclass(slots=True)
class _Call:
    ref: Any
    jobs: list[Job]
    single: bool  # a retry of one job: its failure is that job's
    started: float = 0.0


@dataclass(slots=True)
class _Actor:
    handle: Any
    ready: Any  # the ref of its pid() call: done once the actor process is up
    calls: deque[_Call] = field(default_factory=deque)
    started: bool = False  # ready has come back; deadlines count from then


class RayPool:
    """Actors on a Ray cluster (or a private local Ray)."""

    name = "ray"

    def __init__(self, workers: int | None = None, *, fresh: bool = False, imports: tuple[str, ...] = (),
                 address: str | None = None, grace: float = DEFAULT_GRACE, chunk: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise BatchError("a batch needs at least one worker")
        self.ray = ray_module()
        self.workers = workers
        self.fresh = fresh
        self.imports = imports
        self.address = address
        self.grace = grace
        self.chunk = chunk
        self.startup_seconds = 0.0
        self._targets: dict[str, Any] = {}  # target path -> ObjectRef, or BatchError text
        self._actor_class: Any = None
        self._startup_failures = 0

    def _init(self) -> bool:
        """Connect to (or start) Ray; True when this pool started it and must shut it down."""
        ray = self.ray
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        started = time.perf_counter()
        if self.address is None:
            ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
        self.startup_seconds = time.perf_counter() - started
        return True

    def _new_actor(self) -> _Actor:
        if self._actor_class is None:
            self._actor_class = self.ray.remote(num_cpus=1, max_restarts=0)(BatchActor)
        handle = self._actor_class.remote(self.fresh, self.imports)
        return _Actor(handle, handle.pid.remote())

    def _ref_for(self, target: str) -> Any:
        ref = self._targets.get(target)
        if ref is None:
            try:
                ref = self.ray.put(read_target(target))
            except BatchError as exc:
                ref = str(exc)
            self._targets[target] = ref
        return ref

    def run(self, feed: JobFeed, emit: Emit, total: int | None = None) -> None:
        owns = self._init()
        try:
            count = self.workers or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
            chunk = self.chunk or max(1, min(MAX_CHUNK, (total or MAX_CHUNK * count * 4) // (count * 4)))
            actors = [self._new_actor() for _ in range(count)]
            try:
                self._loop(actors, feed, emit, chunk)
            finally:
                for actor in actors:
                    self.ray.kill(actor.handle)
        finally:
            if owns:
                self.ray.shutdown()

    def _submit(self, actor: _Actor, jobs: list[Job], emit: Emit, *, single: bool) -> None:
        runnable, refs = [], {}
        for job in jobs:
            ref = self._ref_for(job.target)
            if isinstance(ref, str):  # the driver could not read the target
                emit(failed(job.id, job.label, job.target, "error", ref))
                continue
            runnable.append(job)
            refs[job.target] = ref
        if not runnable:
            return
        # a call of one job is its own culprit: no retry needed to tell whose failure it is
        call = _Call(actor.handle.run.remote(runnable, refs), runnable, single or len(runnable) == 1)
        if not actor.calls and actor.started:
            call.started = time.monotonic()
        actor.calls.append(call)

    def _loop(self, actors: list[_Actor], feed: JobFeed, emit: Emit, chunk: int) -> None:
        ray = self.ray
        singles: deque[Job] = deque()  # jobs of a failed chunk, to run one per call
        while True:
            for actor in actors:
                while len(actor.calls) < CALLS_IN_FLIGHT:
                    if singles:
                        self._submit(actor, [singles.popleft()], emit, single=True)
                        continue
                    jobs = feed.take_many(chunk)
                    if not jobs:
                        break
                    self._submit(actor, jobs, emit, single=False)
            pending = {a.calls[0].ref: a for a in actors if a.calls}
            if not pending and feed.empty and not singles:
                return
            if not pending:
                continue
            starting = {a.ready: a for a in actors if not a.started and a.calls}
            deadlines = [d for d in (self._deadline(a) for a in actors) if d is not None]
            timeout = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            done, _ = ray.wait([*pending, *starting], num_returns=1, timeout=timeout)
            for ref in done:
                if ref in starting:  # the actor is up: its first call's clock starts now
                    actor = starting[ref]
                    self._check_started(ref)
                    actor.started = True
                    actor.calls[0].started = time.monotonic()
                    continue
                actor = pending[ref]
                call = actor.calls.popleft()
                if actor.calls:
                    actor.calls[0].started = time.monotonic()
                try:
                    results: list[Result] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    self._lost(actors, actor, call, singles, feed, emit, str(exc).splitlines()[0], False)
                    continue
                for result in results:
                    emit(result)
            now = time.monotonic()
            for actor in list(actors):
                late = self._deadline(actor)
                if late is not None and now >= late:
                    call = actor.calls.popleft()
                    self._lost(actors, actor, call, singles, feed, emit, "", True)

    def _check_started(self, ready: Any) -> None:
        """An actor that dies while it starts never ran a job; several in a row end the batch."""
        try:
            self.ray.get(ready)
        except self.ray.exceptions.RayError as exc:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                raise BatchError(f"Ray actors die while starting: {str(exc).splitlines()[0]}") from None
            return
        self._startup_failures = 0

    def _deadline(self, actor: _Actor) -> float | None:
        if not actor.calls or not actor.started:
            return None
        call = actor.calls[0]
        allowed = hard_deadline(call.jobs, self.grace)
        return None if allowed is None else call.started + allowed

    def _lost(self, actors: list[_Actor], actor: _Actor, call: _Call, singles: deque[Job], feed: JobFeed,
              emit: Emit, reason: str, killed: bool) -> None:
        """An actor died or hangs: replace it; retry its jobs (one per call for the culprit chunk)."""
        self.ray.kill(actor.handle)
        spent = time.monotonic() - call.started
        if call.single:
            job = call.jobs[0]
            if killed:
                emit(failed(job.id, job.label, job.target, "timeout",
                            f"the worker did not finish within {spent:.1f} s and was killed", spent))
            else:
                emit(failed(job.id, job.label, job.target, "worker-crashed",
                            f"the worker process died ({reason})", spent))
        else:
            singles.extend(call.jobs)
        for later in actor.calls:  # queued behind the lost call: run them normally again
            if later.single:
                singles.extendleft(later.jobs)
            else:
                feed.push_front(later.jobs)
        actors[actors.index(actor)] = self._new_actor()
