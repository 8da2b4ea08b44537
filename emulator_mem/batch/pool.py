"""The ``local`` backend: a pool of worker processes on this machine, no setup needed.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies the whole
pool is broken, and a task that hangs cannot be cancelled. A batch must survive both, so
each worker here is a plain :mod:`multiprocessing` process with its own pipe. The driver
sends jobs in chunks (several per message: one message per job costs a context switch per
job, which on a busy machine is milliseconds) and keeps two chunks queued per worker, so a
worker never waits for the driver; the worker answers each job on its own, so progress,
timeouts and blame stay per job. The driver waits on the pipes and the process sentinels
together:

* a result arrives — it is emitted, the next queued job counts as started;
* a worker dies — the job it was running is reported ``worker-crashed`` (with the signal
  or exit status), the jobs queued behind it go back to the front of the feed, and a new
  worker takes its place;
* a job runs past its timeout plus a grace period (the worker enforces the timeout itself
  between instruction slices, so this means the worker hangs) — the worker is killed, the
  job reported ``timeout``, and the rest handled as for a crash.

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
        for job in jobs:
            conn.send(session.run(job))


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
    queue: deque[Job] = field(default_factory=deque)  # sent, not answered yet
    head_started: float = 0.0  # when the job at the head of the queue began to run
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

    def send(self, jobs: list[Job]) -> None:
        if not self.queue:
            self.head_started = time.monotonic()
        self.queue.extend(jobs)
        self.outbox.put(jobs)

    def deadline(self, grace: float) -> float | None:
        if not self.queue:
            return None
        allowed = hard_deadline([self.queue[0]], grace)
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
        idle_deaths = 0
        try:
            while True:
                for worker in pool:
                    while len(worker.queue) < CHUNKS_IN_FLIGHT * chunk and not worker.broken.is_set():
                        jobs = feed.take_many(chunk)
                        if not jobs:
                            break
                        worker.send(jobs)
                if feed.empty and not any(w.queue for w in pool):
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
                    self._retire(worker, feed, emit, killed=not dead)
                    pool[index] = self._start()
        finally:
            for worker in pool:
                self._stop(worker)

    @staticmethod
    def _receive(worker: _Worker, emit: Emit) -> bool:
        """Take every result waiting in the worker's pipe; False when the pipe is closed."""
        try:
            while worker.conn.poll():
                result: Result | str = worker.conn.recv()
                if isinstance(result, str):
                    worker.ready = result == READY
                    continue
                worker.queue.popleft()
                worker.head_started = time.monotonic()
                emit(result)
        except (EOFError, OSError):
            return False
        return True

    def _retire(self, worker: _Worker, feed: JobFeed, emit: Emit, *, killed: bool) -> None:
        """A worker died or hangs: report its current job, requeue the rest, stop it."""
        if killed:
            worker.process.kill()
        worker.process.join(5)
        if not worker.ready:  # died starting up: its jobs never ran
            feed.push_front(worker.queue)
            worker.queue.clear()
        if worker.queue:
            job = worker.queue.popleft()
            spent = time.monotonic() - worker.head_started
            if killed:
                result = failed(job.id, job.label, job.target, "timeout",
                                f"the worker did not finish within {spent:.1f} s and was killed", spent)
            else:
                result = failed(job.id, job.label, job.target, "worker-crashed",
                                describe_exit(worker.process.exitcode), spent)
            feed.push_front(worker.queue)
            worker.queue.clear()
            emit(result)
        worker.close()

    @staticmethod
    def _stop(worker: _Worker) -> None:
        worker.outbox.put(None)  # the worker exits when it reads it
        worker.process.join(1)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(1)
        worker.close()
