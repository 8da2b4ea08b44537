"""The ``local`` backend: a pool of worker processes on this machine, no setup needed.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies the whole
pool is broken, and a task that hangs cannot be cancelled. A batch must survive both, so
each worker here is a plain :mod:`multiprocessing` process with its own pipe. Jobs go out
in chunks and results come back in batches (at the end of a chunk, or every
:data:`FLUSH_SECONDS`): a message per job costs the driver a wake-up per job, and on two
cores every wake-up preempts a worker — per-job messages halved the driver's CPU per job
and were the difference between the local pool and Ray. Two chunks are queued per worker,
so a worker never waits for the driver. The driver waits on the pipes and the process
sentinels together:

* results arrive — they are emitted;
* a worker dies — if it was running a job alone, that job is reported ``worker-crashed``
  (with the signal or exit status); otherwise its unanswered jobs are run again one per
  message, where a death names its job (emulation is deterministic, so re-running is
  harmless; the Ray backend does the same). A new worker takes its place;
* a worker makes no progress for the sum of its queued jobs' timeouts plus a grace period
  each (the worker enforces the timeout itself between instruction slices, so this means
  it hangs) — it is killed and its jobs handled as for a death, with ``timeout`` for the
  job that ran alone.

Sends happen on a small thread per worker: a chunk with large inputs can fill the pipe,
and a driver blocked in ``send`` while that worker is blocked sending results would be a
deadlock; with its own sender the driver's loop always keeps reading.

Workers start with the ``forkserver`` method where it exists (a clean, single-threaded
parent to fork from, with the package preloaded; ``fork`` from a driver that runs threads
is unsafe) and ignore SIGINT: Ctrl-C reaches the whole process group, and only the driver
decides what to do with it (stop, keep the results so far). As with any multiprocessing
code, a script that calls :func:`~emulator_mem.batch.run_batch` needs the
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import BatchError
from .feed import DEFAULT_GRACE, Emit, JobFeed, hard_deadline
from .jobs import Job
from .result import Result, failed
from .worker import WorkerSession, import_modules

CHUNKS_IN_FLIGHT = 2  # chunks queued per worker
MAX_CHUNK = 16  # jobs per message
FLUSH_SECONDS = 0.05  # a worker sends its results at the end of a chunk, or after this long
MAX_IDLE_DEATHS = 3  # workers that die before they are ready, in a row: something is wrong with them
READY = "ready"  # a worker's first message: it imported everything and waits for jobs
_PRELOAD = ["emulator_mem.batch.worker"]


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_main(conn: Connection, fresh: bool, imports: tuple[str, ...]) -> None:
    """A worker process: run jobs from the pipe until told to stop (None) or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_modules(imports)
    session = WorkerSession(fresh=fresh)
    conn.send(READY)
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            return
        if jobs is None:
            return
        results: list[Result] = []
        flushed = time.monotonic()
        for job in jobs:
            results.append(session.run(job))
            if time.monotonic() - flushed >= FLUSH_SECONDS:
                conn.send(results)
                results, flushed = [], time.monotonic()
        if results:
            conn.send(results)


def _sender(conn: Connection, outbox: queue.SimpleQueue[list[Job] | None], broken: threading.Event) -> None:
    """Send what the driver queues for one worker (see the module docstring for why a thread)."""
    while True:
        item = outbox.get()
        try:
            conn.send(item)
        except OSError:
            broken.set()
            return
        if item is None:
            return


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, for the ``worker-crashed`` result."""
    if exitcode is None:
        return "the worker process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the worker process died ({name})"
    return f"the worker process exited with status {exitcode}"


@dataclass(slots=True)
class _Worker:
    process: Any
    conn: Connection
    outbox: queue.SimpleQueue[list[Job] | None] = field(default_factory=queue.SimpleQueue)
    broken: threading.Event = field(default_factory=threading.Event)  # the pipe refused a send
    queue: deque[tuple[Job, bool]] = field(default_factory=deque)  # sent, not answered; single?
    head_started: float = 0.0  # when the worker last made progress (a result, or work when idle)
    ready: bool = False  # said READY: a death from now on is the running job's doing
    sender: threading.Thread | None = None

    def start_sender(self) -> None:
        self.sender = threading.Thread(target=_sender, args=(self.conn, self.outbox, self.broken),
                                       daemon=True, name="emulator-mem batch sender")
        self.sender.start()

    def close(self) -> None:
        """Stop the sender (it must not write to a closed, maybe reused, descriptor), then the pipe."""
        self.outbox.put(None)
        if self.sender is not None:
            self.sender.join(2)
        self.conn.close()

    def send(self, jobs: list[Job], single: bool) -> None:
        if not self.queue:
            self.head_started = time.monotonic()
        self.queue.extend((job, single) for job in jobs)
        self.outbox.put(jobs)

    def deadline(self, grace: float) -> float | None:
        """When to give up on the worker: results come per chunk, so allow every queued job."""
        if not self.queue:
            return None
        allowed = hard_deadline([job for job, _ in self.queue], grace)
        return None if allowed is None else self.head_started + allowed


class LocalPool:
    """``workers`` processes on this machine (default: the number of CPUs)."""

    name = "local"

    def __init__(self, workers: int | None = None, *, fresh: bool = False, imports: tuple[str, ...] = (),
                 grace: float = DEFAULT_GRACE) -> None:
        count = workers if workers is not None else (os.cpu_count() or 1)
        if count < 1:
            raise BatchError("a batch needs at least one worker")
        self.workers = count
        self.fresh = fresh
        self.imports = imports
        self.grace = grace
        self._ctx = _context()

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self.fresh, self.imports),
                                 name="emulator-mem batch worker", daemon=True)
        proc.start()
        child.close()
        worker = _Worker(proc, parent)
        worker.start_sender()
        return worker

    def run(self, feed: JobFeed, emit: Emit, total: int | None = None) -> None:
        """Run every job of ``feed``; results go to ``emit`` as they arrive."""
        chunk = max(1, min(MAX_CHUNK, (total or MAX_CHUNK * self.workers * 4) // (self.workers * 4)))
        pool = [self._start() for _ in range(self.workers)]
        singles: deque[Job] = deque()  # jobs of a chunk whose worker died: run one per message
        idle_deaths = 0
        try:
            while True:
                for worker in pool:
                    while len(worker.queue) < CHUNKS_IN_FLIGHT * chunk and not worker.broken.is_set():
                        jobs = [singles.popleft()] if singles else feed.take_many(chunk)
                        if not jobs:
                            break
                        worker.send(jobs, single=len(jobs) == 1)
                if feed.empty and not singles and not any(w.queue for w in pool):
                    return
                deadlines = [d for d in (w.deadline(self.grace) for w in pool) if d is not None]
                timeout = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
                ready = set(wait([w.conn for w in pool] + [w.process.sentinel for w in pool], timeout))
                for index, worker in enumerate(pool):
                    if worker.conn in ready and self._receive(worker, emit):
                        continue
                    dead = worker.process.sentinel in ready or worker.conn in ready
                    late = worker.deadline(self.grace)
                    if not dead and (late is None or time.monotonic() < late):
                        continue
                    if worker.ready:
                        idle_deaths = 0
                    else:
                        idle_deaths += 1
                        if idle_deaths >= MAX_IDLE_DEATHS:
                            raise BatchError("batch workers die before they are ready: "
                                             f"{describe_exit(worker.process.exitcode)}")
                    self._retire(worker, feed, emit, singles, killed=not dead)
                    pool[index] = self._start()
        finally:
            for worker in pool:
                self._stop(worker)

    @staticmethod
    def _receive(worker: _Worker, emit: Emit) -> bool:
        """Take every result waiting in the worker's pipe; False when the pipe is closed."""
        try:
            while worker.conn.poll():
                message: list[Result] | str = worker.conn.recv()
                if isinstance(message, str):
                    worker.ready = message == READY
                    continue
                for result in message:
                    worker.queue.popleft()
                    emit(result)
                worker.head_started = time.monotonic()
        except (EOFError, OSError):
            return False
        return True

    def _retire(self, worker: _Worker, feed: JobFeed, emit: Emit, singles: deque[Job], *,
                killed: bool) -> None:
        """A worker died or hangs: blame its job if it ran one alone, else rerun its jobs alone.

        Results come back per chunk, so when a worker dies in the middle of one the driver
        does not know which job did it: every job it held is run again one per message,
        where a failure names its job. Emulation is deterministic, so that is harmless.
        """
        if killed:
            worker.process.kill()
        worker.process.join(5)
        pending = list(worker.queue)
        worker.queue.clear()
        if not worker.ready:  # died starting up: its jobs never ran
            feed.push_front(job for job, _ in pending)
        elif pending and pending[0][1]:  # it ran this job alone: the culprit
            job = pending[0][0]
            spent = time.monotonic() - worker.head_started
            if killed:
                result = failed(job.id, job.label, job.target, "timeout",
                                f"the worker did not finish within {spent:.1f} s and was killed", spent)
            else:
                result = failed(job.id, job.label, job.target, "worker-crashed",
                                describe_exit(worker.process.exitcode), spent)
            feed.push_front(job for job, _ in pending[1:])
            emit(result)
        else:
            singles.extend(job for job, _ in pending)
        worker.close()

    @staticmethod
    def _stop(worker: _Worker) -> None:
        worker.outbox.put(None)  # the worker exits when it reads it
        worker.process.join(1)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(1)
        worker.close()
