"""The batch runner on the real Ray engine, in local mode (``ray.init(num_cpus=2)``).

One Ray session serves the whole module (starting Ray costs seconds); the batch backend
uses a session that is already initialised and leaves it running, and the fixture shuts
it down and checks that Ray's processes are gone. Oracles: the local pool's results for
the same jobs, and the parser model in ``batch_helpers``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from emulator_mem.batch import Job, Limits, Result, run_batch
from samples import build
from samples.corpus import write_corpus
from tests.batch_helpers import CRASH, parse32_reference, parse32_snapshot, worker_killers
from tests.test_batch import SPEC

HELPERS = "tests.batch_helpers"


def _ray_processes() -> set[int]:
    """Live (non-zombie) processes whose command line is Ray's: raylet, GCS, workers."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (b"ray::" in cmdline or b"raylet" in cmdline or b"gcs_server" in cmdline
                             or b"ray/_private" in cmdline or b"ray/dashboard" in cmdline):
            found.add(int(entry))
    return found


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    before = _ray_processes()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ours = _ray_processes() - before
    yield
    ray.shutdown()
    deadline = time.monotonic() + 20
    while ours & _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ours & _ray_processes(), "Ray left processes behind"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-ray")


def _collect(jobs: list[Job], **options: object) -> dict[int, Result]:
    results: list[Result] = []
    run_batch(jobs, on_result=results.append, **options)  # type: ignore[arg-type]
    return {r.job: r for r in results}


def test_ray_gives_the_same_results_as_the_local_pool(ray_session: None, work: Path) -> None:
    snapshot = parse32_snapshot(work / "parse32.snap")
    corpus = write_corpus(work / "corpus", count=24, seed=15)
    jobs = [Job(i, str(snapshot), "snapshot", p.name, str(p), None, SPEC) for i, p in enumerate(corpus)]
    n = len(jobs)
    jobs += [Job(n, str(build.BIN / "hello64.exe")), Job(n + 1, str(build.BIN / "crash32.exe")),
             Job(n + 2, str(snapshot), "snapshot", "gone.bin", str(work / "gone.bin"), None, SPEC),
             Job(n + 3, str(work / "gone.snap"), "snapshot")]
    on_ray = _collect(jobs, backend="ray", workers=2)
    local = _collect(jobs, backend="local", workers=2)
    assert sorted(on_ray) == sorted(local) == list(range(len(jobs)))
    for i in range(len(jobs)):
        assert on_ray[i].comparable() == local[i].comparable()
    for i, path in enumerate(corpus):  # and both are right
        expected = parse32_reference(path.read_bytes())[0]
        assert on_ray[i].outcome == ("exception" if expected == CRASH else "exited")
    assert [on_ray[n + k].outcome for k in range(4)] == ["exited", "exception", "error", "error"]


def test_ray_survives_a_segfaulting_and_a_hung_worker(ray_session: None, work: Path) -> None:
    killers = worker_killers(work)
    order = ["ok", "segfault", "ok", "hang", "loop", "ok"]
    limits = Limits(timeout=0.5)
    jobs = [Job(i, killers[k], limits=limits) for i, k in enumerate(order)]
    results = _collect(jobs, backend="ray", workers=2, imports=[HELPERS], grace=3.0)
    assert sorted(results) == list(range(len(order)))
    assert results[1].outcome == "worker-crashed"
    assert results[3].outcome == "timeout" and "killed" in str(results[3].error)
    assert results[4].outcome == "timeout"
    assert all((results[i].outcome, results[i].exit_code) == ("exited", 0) for i in (0, 2, 5))
