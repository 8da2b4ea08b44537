"""Many runs: a program or a snapshot times many inputs, on local processes or on Ray.

The top layer of the package: it uses the runner (:class:`~emulator_mem.runner.Process`),
snapshots and the memory manager's checkpoints, and nothing imports it.

    from emulator_mem.batch import InputSpec, Location, Limits, make_jobs, run_batch

    jobs = make_jobs([("s.snap", "snapshot")], ["corpus/"],
                     input_spec=InputSpec(Location.parse("parse32.exe!input"),
                                          length_at=Location.parse("parse32.exe!input_len")),
                     limits=Limits(max_instructions=1_000_000, timeout=10))
    summary = run_batch(jobs, workers=2, on_result=lambda r: print(r.to_json()))
    print(summary.format())

Modules: :mod:`.jobs` (what to run), :mod:`.result` (one JSON line per job),
:mod:`.rewind` (checkpoint/rollback of a whole process: the fast path), :mod:`.worker` (the
code every worker runs), :mod:`.feed` (dispatch shared by the backends), :mod:`.pool` (the
local process pool), :mod:`.ray_pool` (Ray actors), :mod:`.summary` (progress and report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized

from ..errors import BatchError
from .feed import DEFAULT_GRACE, JobFeed
from .jobs import InputSpec, Job, Limits, Location, corpus_files, make_jobs
from .pool import LocalPool
from .ray_pool import RayPool  # imports Ray only when a RayPool is made
from .result import ExceptionInfo, Result
from .summary import ProgressBar, Summary
from .worker import WorkerSession, import_modules

BACKENDS = ("local", "ray")


def run_batch(
    jobs: Iterable[Job],
    *,
    backend: str = "local",
    workers: int | None = None,
    fresh: bool = False,
    imports: Iterable[str] = (),
    ray_address: str | None = None,
    grace: float = DEFAULT_GRACE,
    on_result: Callable[[Result], None] | None = None,
) -> Summary:
    """Run ``jobs`` and return the summary; ``on_result`` sees each result as it arrives.

    ``fresh`` loads the target afresh for every job instead of rolling back (slower; the
    reference for the fast path). ``imports`` are modules every worker imports first (to
    register ``@api`` handlers). Ctrl-C (KeyboardInterrupt) stops the batch: the results
    delivered so far stand and the summary says ``interrupted``.
    """
    if backend not in BACKENDS:
        raise BatchError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    modules = tuple(imports)
    import_modules(modules)  # fail here, once, rather than in every worker
    total = len(jobs) if isinstance(jobs, Sized) else None
    pool: LocalPool | RayPool
    if backend == "ray":
        pool = RayPool(workers, fresh=fresh, imports=modules, address=ray_address, grace=grace)
    else:
        if ray_address is not None:
            raise BatchError("--ray-address needs --backend ray")
        pool = LocalPool(workers, fresh=fresh, imports=modules, grace=grace)
    summary = Summary(pool.name, workers if workers is not None else getattr(pool, "workers", None))

    def emit(result: Result) -> None:
        summary.add(result)
        if on_result is not None:
            on_result(result)

    try:
        pool.run(JobFeed(jobs, emit), emit, total)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.startup_seconds = getattr(pool, "startup_seconds", 0.0)
    summary.finish()
    return summary


__all__ = [
    "BACKENDS", "BatchError", "ExceptionInfo", "InputSpec", "Job", "Limits", "LocalPool", "Location",
    "ProgressBar", "RayPool", "Result", "Summary", "WorkerSession", "corpus_files", "make_jobs", "run_batch",
]
