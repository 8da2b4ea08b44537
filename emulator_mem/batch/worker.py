"""Run jobs inside one worker: the code every backend runs, in a process or a Ray actor.

A :class:`WorkerSession` loads each target once — a snapshot with ``Process.resume``, a PE
file with ``Process.load`` — takes a :class:`~.rewind.ProcessCheckpoint` before anything
else happens, and for every job writes the input, runs, records one :class:`Result` and
rolls back. Rolling back costs time proportional to the pages the job dirtied; loading a
snapshot costs time proportional to the whole snapshot, which is why this is the fast path
(``bench/bench_batch.py`` measures the ratio). ``fresh=True`` loads the target afresh for
every job instead: the reference the tests compare the fast path with.

Limits are enforced here: ``max_instructions`` by the runner, the wall-clock ``timeout``
between slices of :data:`SLICE` instructions (the runner's own chunk size, so slicing does
not change instruction counts). A guest that hangs inside one slice, or a worker that hangs
anywhere else, is the driver's business: it kills the worker (see :mod:`.pool`).

Every failure to prepare a job (target unreadable or not a snapshot, input location that
does not resolve, input that does not fit) becomes that job's ``error`` result; after a
failure in the middle of a run the cached process is dropped, never reused half-rolled-back.
"""

from __future__ import annotations

import importlib
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from unicorn import x86_const as X

from ..errors import BatchError, EmulatorMemError
from ..mmu.physmem import DirtyLog
from ..runner import Process
from ..runner.process import DEFAULT_CHUNK
from .jobs import InputSpec, Job, Location
from .result import ExceptionInfo, Result, failed, printable_output
from .rewind import ProcessCheckpoint

SLICE = DEFAULT_CHUNK  # instructions between two looks at the clock
CACHED_TARGETS = 4  # prepared processes a worker keeps (most recently used)

#: how a worker gets a target file: a local path, or a file written from Ray's object store
TargetResolver = Callable[[str], Path]


def read_target(path: str | Path) -> bytes:
    """The bytes of a job's target; BatchError (one wording for every backend) otherwise."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BatchError(f"cannot read target {path}: {exc.strerror or exc}") from None


def import_modules(names: Iterable[str]) -> None:
    """Import user modules in a worker (e.g. ones that register ``@api`` handlers)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise BatchError(f"cannot import {name!r} in the worker: {exc}") from None


@dataclass(slots=True)
class _Prepared:
    """A loaded target and its checkpoint, plus input locations resolved in it."""

    process: Process
    checkpoint: ProcessCheckpoint | None
    resolved: dict[Location, int]


class WorkerSession:
    """Runs jobs one after the other; keeps a few prepared targets between jobs."""

    def __init__(self, resolve: TargetResolver = Path, *, fresh: bool = False) -> None:
        self._resolve = resolve
        self.fresh = fresh
        self._cache: dict[tuple[str, str], _Prepared] = {}

    # -- targets ---------------------------------------------------------------------------
    def _load(self, job: Job) -> Process:
        path = self._resolve(job.target)
        if job.kind == "snapshot":
            if not path.is_file():
                raise BatchError(f"cannot read target {job.target}: No such file or directory")
            return Process.resume(path)
        return Process.load(read_target(path), Path(job.target).name)

    def _prepare(self, job: Job) -> _Prepared:
        key = (job.kind, job.target)
        if self.fresh:
            process = self._load(job)
            return _Prepared(process, None, {})
        prepared = self._cache.pop(key, None)
        if prepared is None:
            process = self._load(job)
            prepared = _Prepared(process, ProcessCheckpoint(process), {})
            while len(self._cache) >= CACHED_TARGETS:
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = prepared  # most recently used last
        return prepared

    # -- one job ---------------------------------------------------------------------------
    def run(self, job: Job) -> Result:
        """Run ``job`` (its input bytes, if any, in ``job.input_data``) and return its result."""
        started = time.perf_counter()
        try:
            prepared = self._prepare(job)
        except EmulatorMemError as exc:
            return failed(job.id, job.label, job.target, "error", str(exc), time.perf_counter() - started)
        process, checkpoint = prepared.process, prepared.checkpoint
        log: DirtyLog | None = None
        if checkpoint is None:  # fresh load: count dirtied pages the way a checkpoint does
            log = DirtyLog()
            process.mm.mmu.attach_log(log)
        try:
            if job.input is not None:
                _write_input(process, prepared.resolved, job.input, job.input_data or b"")
            outcome, ran = _run_limited(process, job)
            dirty = len(log.pages) if log is not None else checkpoint.dirty_pages if checkpoint else 0
            result = _result(job, process, outcome, ran, dirty, time.perf_counter() - started)
        except EmulatorMemError as exc:
            self._cache.pop((job.kind, job.target), None)
            return failed(job.id, job.label, job.target, "error", str(exc), time.perf_counter() - started)
        if checkpoint is not None:
            try:
                checkpoint.rollback()
            except EmulatorMemError:
                self._cache.pop((job.kind, job.target), None)
        return result


def _write_input(process: Process, resolved: dict[Location, int], spec: InputSpec, data: bytes) -> None:
    if spec.max_size is not None:
        data = data[: spec.max_size]
    address = _resolve(process, resolved, spec.at)
    if data:
        try:
            process.mm.write(address, data)
        except EmulatorMemError as exc:
            raise BatchError(f"the input ({len(data)} bytes) does not fit at {spec.at}: {exc}") from None
    if spec.length_at is not None:
        where = _resolve(process, resolved, spec.length_at)
        try:
            process.mm.write(where, struct.pack("<I", len(data)))
        except EmulatorMemError as exc:
            raise BatchError(f"cannot write the input length at {spec.length_at}: {exc}") from None
    elif spec.length_register is not None:
        name = spec.length_register.upper()
        if not process.mm.is_64bit and (name.startswith("R")):
            raise BatchError(f"register {spec.length_register} does not exist in a 32-bit process")
        process.uc.reg_write(getattr(X, f"UC_X86_REG_{name}"), len(data))


def _resolve(process: Process, resolved: dict[Location, int], where: Location) -> int:
    """A location's address in ``process`` (cached per prepared target)."""
    known = resolved.get(where)
    if known is not None:
        return known
    if where.address is not None:
        address = where.address
    else:
        module = (where.module or "").lower()
        image = next((i for b, i in sorted(process.mm.images.items())
                      if (i.name or "").lower() in (module, module + ".exe", module + ".dll")), None)
        if image is None:
            names = ", ".join(sorted(i.name or "?" for i in process.mm.images.values())) or "none"
            raise BatchError(f"no module {where.module!r} in the process (images: {names})")
        if where.symbol is not None:
            found = image.export_address(where.symbol)
            if found is None:
                raise BatchError(f"{image.name} exports no {where.symbol!r}")
            address = found
        else:
            address = image.base + (where.offset or 0)
    resolved[where] = address
    return address


def _run_limited(process: Process, job: Job) -> tuple[str | None, int]:
    """Run in slices until the guest ends or a limit is hit.

    Returns the limit's outcome (None when the guest ended) and the instructions this job
    ran — not the process's total, which includes what ran before the snapshot was taken.
    """
    limit = job.limits.max_instructions
    timeout = job.limits.timeout
    started = time.perf_counter()
    ran = 0
    while process.exit_code is None:
        budget = SLICE if limit is None else min(SLICE, limit - ran)
        if budget <= 0:
            return "instruction-limit", ran
        before = process.instructions
        process.run(budget, chunk=SLICE)
        ran += process.instructions - before
        if process.exit_code is None and timeout is not None and time.perf_counter() - started > timeout:
            return "timeout", ran
    return None, ran


def _result(job: Job, process: Process, limit: str | None, ran: int, dirty: int, wall: float) -> Result:
    stdout, total = printable_output(bytes(process.console.stdout), job.max_output)
    exc = process.exception
    info = None
    if exc is not None:
        info = ExceptionInfo(exc.code, exc.name, exc.address, exc.location, exc.instruction,
                             list(exc.information))
    if limit is not None:
        outcome = limit
    else:
        outcome = "exception" if exc is not None else "exited"
    return Result(job.id, job.label, job.target, outcome,  # type: ignore[arg-type]
                  process.exit_code, info, ran, stdout, total, dirty, wall)


def run_jobs(session: WorkerSession, jobs: Iterable[Job]) -> list[Result]:
    """Run several jobs in order (what one Ray task does)."""
    return [session.run(job) for job in jobs]
