"""The batch runner on the local process pool: the rollback fast path gives exactly what
loading the snapshot afresh gives, the planted bug of ``samples/bin/parse32.exe`` is found
where an independent model of its parser says it is, and a batch survives a worker that
segfaults, a guest that spins, a worker that hangs, unreadable inputs and bad snapshots.

Oracles: fresh snapshot loads (for the rollback path), the parser model in
``batch_helpers`` (for which inputs crash), the samples' expected output files (for program
jobs) and Windows' STATUS_GUARD_PAGE_VIOLATION rules (first byte of the guard page, write).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator_mem.batch import (
    BatchError,
    InputSpec,
    Job,
    Limits,
    Location,
    Result,
    Summary,
    WorkerSession,
    make_jobs,
    run_batch,
)
from emulator_mem.batch.result import ExceptionInfo
from emulator_mem.runner import Process
from emulator_mem.runner.report import disassemble
from samples import build
from samples.corpus import write_corpus
from tests.batch_helpers import (
    CRASH,
    PARSE32,
    STATUS_GUARD_PAGE_VIOLATION,
    parse32_reference,
    parse32_snapshot,
    worker_killers,
)

ROOT = Path(__file__).resolve().parents[1]
HELPERS = "tests.batch_helpers"
PAGE_WRITECOPY = 0x08
SPEC = InputSpec(Location.parse("parse32.exe!input"), length_at=Location.parse("parse32.exe!input_len"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch")


@pytest.fixture(scope="module")
def snapshot(work: Path) -> Path:
    return parse32_snapshot(work / "parse32.snap")


@pytest.fixture(scope="module")
def corpus(work: Path) -> list[Path]:
    return write_corpus(work / "corpus", count=40, seed=15)


@pytest.fixture(scope="module")
def killers(work: Path) -> dict[str, str]:
    return worker_killers(work)


def snapshot_jobs(snapshot: Path, corpus: list[Path]) -> list[Job]:
    return [Job(i, str(snapshot), "snapshot", p.name, None, p.read_bytes(), SPEC)
            for i, p in enumerate(corpus)]


# -- the fast path -------------------------------------------------------------------------
def test_parse32_snapshot_is_taken_where_the_parser_reads_its_input(snapshot: Path) -> None:
    process = Process.resume(snapshot)
    input_address = process.mm.images[process.image_base].export_address("input")
    assert input_address is not None
    pc = process.abi.pc(process.uc)
    assert disassemble(process.mm, pc) == f"mov esi, {input_address:#x}"



def test_rollback_gives_the_results_of_fresh_snapshot_loads(snapshot: Path, corpus: list[Path]) -> None:
    jobs = snapshot_jobs(snapshot, corpus)
    jobs.insert(5, Job(len(jobs), str(snapshot), "snapshot", "empty", None, b"", SPEC))
    fast = WorkerSession()
    fresh = WorkerSession(fresh=True)
    rolled = [fast.run(job).comparable() for job in jobs]
    loaded = [fresh.run(job).comparable() for job in jobs]
    assert rolled == loaded
    # and the comparison is not between trivially equal runs: the corpus exercises every path
    outcomes = {(r["outcome"], r["exit_code"]) for r in rolled}
    assert ("exception", STATUS_GUARD_PAGE_VIOLATION) in outcomes and ("exited", 0) in outcomes
    assert {r["exit_code"] for r in rolled if r["outcome"] == "exited"} == {0, 1, 2, 3, 4}
    assert all(r["pages_dirtied"] > 0 for r in rolled)


def test_the_planted_bug_is_found_exactly_where_the_parser_model_says(
        snapshot: Path, corpus: list[Path]) -> None:
    session = WorkerSession()
    results = [session.run(job) for job in snapshot_jobs(snapshot, corpus)]
    for path, result in zip(corpus, results, strict=True):
        expected, stdout = parse32_reference(path.read_bytes())
        if expected == CRASH:
            exc = result.exception
            assert result.outcome == "exception" and exc is not None, path.name
            assert result.exit_code == exc.code == STATUS_GUARD_PAGE_VIOLATION
            assert exc.name == "EXCEPTION_GUARD_PAGE"
            access, address = exc.information
            assert access == 1 and address % 0x1000 == 0  # a write, to the guard page's first byte
            assert exc.location.startswith("parse32.exe+0x") and exc.instruction.startswith("mov byte ptr")
        else:
            assert (result.outcome, result.exit_code) == ("exited", expected), path.name
        assert result.stdout.encode() == stdout
    assert len({r.crash_key for r in results if r.crash_key}) == 1  # one bug, one crash site


def test_a_rolled_back_worker_does_not_leak_state_between_inputs(snapshot: Path, corpus: list[Path]) -> None:
    """The same input before and after a crashing one gives the same result."""
    session = WorkerSession()
    jobs = snapshot_jobs(snapshot, corpus)
    expected = [parse32_reference(p.read_bytes())[0] for p in corpus]
    crashing = next(j for j, e in zip(jobs, expected, strict=True) if e == CRASH)
    normal = next(j for j, e in zip(jobs, expected, strict=True) if e == 0)
    first = session.run(normal).comparable()
    assert session.run(crashing).outcome == "exception"
    assert session.run(normal).comparable() == first


@pytest.mark.parametrize("name", ["reprotect32", "guard64", "seh32", "heap64", "uart64", "stack32"])
def test_program_runs_repeat_exactly_after_rollback(name: str) -> None:
    """A PE target is loaded once and rolled back to its entry: vectored handlers, the heap,
    MMIO devices and the grown stack must all come back, or the second run would differ."""
    job = Job(0, str(build.BIN / f"{name}.exe"))
    fast = WorkerSession()
    first, second = fast.run(job).comparable(), fast.run(job).comparable()
    reference = WorkerSession(fresh=True).run(job).comparable()
    assert first == second == reference
    assert reference["outcome"] == "exited"
    assert reference["stdout"].encode() == (build.EXPECTED / f"{name}.txt").read_bytes()


# -- the local pool ------------------------------------------------------------------------
def test_local_pool_runs_program_jobs_like_single_runs() -> None:
    names = ["hello32", "crash32", "hello64", "heap64"]
    jobs = list(make_jobs([(str(build.BIN / f"{n}.exe"), "program") for n in names]))
    results: list[Result] = []
    summary = run_batch(jobs, workers=2, on_result=results.append)
    by_job = {r.job: r for r in results}
    assert sorted(by_job) == [0, 1, 2, 3] and summary.jobs == 4
    for job, name in enumerate(names):
        source = build.load_sample(name)
        assert by_job[job].exit_code == source.exit_code
        assert by_job[job].stdout.encode() == (build.EXPECTED / f"{name}.txt").read_bytes()
    crash = by_job[1]
    assert crash.outcome == "exception" and crash.exception is not None
    assert crash.exception.location.startswith("crash32.exe+")
    assert [b.location for b in summary.sorted_buckets()] == [crash.exception.location]


def test_unreadable_inputs_and_bad_snapshots_are_job_errors(work: Path, snapshot: Path) -> None:
    garbage = work / "garbage.snap"
    garbage.write_bytes(b"not a snapshot at all" * 10)
    good = work / "good.bin"
    good.write_bytes(b"EMR1\x01\x02hi\x00")
    jobs = [
        Job(0, str(snapshot), "snapshot", "missing.bin", str(work / "missing.bin"), None, SPEC),
        Job(1, str(garbage), "snapshot", "good.bin", str(good), None, SPEC),
        Job(2, str(work / "absent.snap"), "snapshot", "good.bin", str(good), None, SPEC),
        Job(3, str(snapshot), "snapshot", "good.bin", str(good), None,
            InputSpec(Location.parse("parse32.exe!no_such_export"))),
        Job(4, str(snapshot), "snapshot", "good.bin", str(good), None, SPEC),
    ]
    results = {r.job: r for r in _collect(jobs, workers=1)}
    assert [results[i].outcome for i in range(5)] == ["error"] * 4 + ["exited"]
    assert "cannot read input" in str(results[0].error)
    assert "snapshot" in str(results[1].error)
    assert "cannot read target" in str(results[2].error)
    assert "no_such_export" in str(results[3].error)
    assert results[4].stdout == "note: hi\n"


def test_a_segfaulting_worker_is_reported_and_the_batch_goes_on(killers: dict[str, str]) -> None:
    order = ["ok", "segfault", "ok", "ok", "segfault", "ok"]
    jobs = [Job(i, killers[k]) for i, k in enumerate(order)]
    results = {r.job: r for r in _collect(jobs, workers=1, imports=[HELPERS])}
    assert sorted(results) == list(range(len(order)))
    for i, kind in enumerate(order):
        if kind == "segfault":
            assert results[i].outcome == "worker-crashed"
            assert "SIGSEGV" in str(results[i].error)
        else:
            assert (results[i].outcome, results[i].exit_code) == ("exited", 0)


def test_a_crash_inside_a_chunk_is_pinned_on_its_job(killers: dict[str, str]) -> None:
    """Forty jobs go out in chunks of ten; the worker dies in the middle of one, so its jobs
    are run again one at a time and only the segfaulting job is blamed."""
    order = ["ok"] * 40
    order[13] = "segfault"
    jobs = [Job(i, killers[k]) for i, k in enumerate(order)]
    results = {r.job: r for r in _collect(jobs, workers=1, imports=[HELPERS])}
    assert sorted(results) == list(range(40))
    assert [i for i, r in results.items() if r.outcome != "exited"] == [13]
    assert results[13].outcome == "worker-crashed" and "SIGSEGV" in str(results[13].error)


def test_timeouts_in_the_guest_and_in_a_hung_worker(killers: dict[str, str]) -> None:
    limits = Limits(timeout=0.3)
    order = ["loop", "ok", "hang", "ok"]
    jobs = [Job(i, killers[k], limits=limits) for i, k in enumerate(order)]
    started = time.monotonic()
    results = {r.job: r for r in _collect(jobs, workers=1, imports=[HELPERS], grace=0.5)}
    assert time.monotonic() - started < 30
    assert results[0].outcome == "timeout" and results[0].instructions > 0  # the worker's own check
    assert results[2].outcome == "timeout" and "killed" in str(results[2].error)  # the driver's
    assert results[1].exit_code == results[3].exit_code == 0


def test_instruction_limit_is_an_outcome(killers: dict[str, str]) -> None:
    (result,) = _collect([Job(0, killers["loop"], limits=Limits(max_instructions=5000))], workers=1)
    assert (result.outcome, result.exit_code, result.instructions) == ("instruction-limit", None, 5000)


def _collect(jobs: list[Job], **options: object) -> list[Result]:
    results: list[Result] = []
    run_batch(jobs, on_result=results.append, **options)  # type: ignore[arg-type]
    return results


# -- job descriptions ----------------------------------------------------------------------
def test_locations_parse_or_raise() -> None:
    assert Location.parse("0x403000").address == 0x403000
    assert Location.parse("parse32.exe!input") == Location(module="parse32.exe", symbol="input")
    assert Location.parse("parse32.exe+0x3000") == Location(module="parse32.exe", offset=0x3000)
    for bad in ("", "input", "parse32.exe!", "0xZZ", "a+b"):
        with pytest.raises(BatchError):
            Location.parse(bad)
    with pytest.raises(BatchError):
        InputSpec(Location.parse("0x1000"), length_register="xmm0")
    with pytest.raises(BatchError):
        Job(0, "x.exe", input_data=b"data")  # input without a location


def test_summary_groups_crashes_by_code_and_location_rarest_first() -> None:
    def crash(job: int, code: int, where: str) -> Result:
        return Result(job, f"in{job}", "t.snap", "exception", code,
                      ExceptionInfo(code, "X", 0x1000, where, "nop"))

    summary = Summary()
    for result in [crash(3, 0xC0000005, "a.exe+0x10"), crash(1, 0xC0000005, "a.exe+0x10"),
                   crash(2, 0x80000001, "a.exe+0x20"), crash(4, 0xC0000005, "a.exe+0x30"),
                   crash(5, 0x80000001, "a.exe+0x20"), crash(6, 0x80000001, "a.exe+0x20"),
                   Result(7, "in7", "t.snap", "exited", 0), Result(8, "in8", "t.snap", "timeout")]:
        summary.add(result)
    buckets = summary.sorted_buckets()
    assert [(b.location, b.jobs, b.first_job) for b in buckets] == [
        ("a.exe+0x30", 1, 4), ("a.exe+0x10", 2, 1), ("a.exe+0x20", 3, 2)]
    assert summary.crashes == 6
    text = summary.format()
    assert text.index("a.exe+0x30") < text.index("a.exe+0x10") < text.index("timeout")


# -- the command ---------------------------------------------------------------------------
def _cli(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "emulator_mem.cli", "batch", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


def test_cli_snapshot_mode_finds_the_bug(work: Path, snapshot: Path, corpus: list[Path]) -> None:
    out = work / "r.jsonl"
    proc = _cli("--snapshot", str(snapshot), "--inputs", str(work / "corpus"),
                "--input-at", "parse32.exe!input", "--input-len-at", "parse32.exe!input_len",
                "--workers", "2", "--out", str(out))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["job"] for r in lines) == list(range(len(corpus)))
    crashes = sorted(r["input"] for r in lines if r["outcome"] == "exception")
    assert crashes == sorted(p.name for p in corpus if parse32_reference(p.read_bytes())[0] == CRASH)
    assert "EXCEPTION_GUARD_PAGE" in stderr and "unique crashes: 1" in stderr


def test_cli_program_mode_and_bad_usage(work: Path) -> None:
    proc = _cli(str(PARSE32), str(build.BIN / "crash32.exe"), "--workers", "1")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    results = sorted((json.loads(line) for line in stdout.splitlines()), key=lambda r: r["job"])
    assert [(r["outcome"], r["exit_code"]) for r in results] == [("exited", 0), ("exception", 0xC0000005)]
    assert results[0]["stdout"] == "note: demo\n"
    proc = _cli("--snapshot", "x.snap", "--inputs", str(work / "corpus"))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--input-at" in stderr


def test_ctrl_c_stops_cleanly_with_the_results_so_far(work: Path, killers: dict[str, str]) -> None:
    out = work / "interrupted.jsonl"
    proc = _cli(*[killers["loop"]] * 20, "--timeout", "0.5", "--workers", "1", "--out", str(out))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    lines = out.read_text().splitlines()
    assert 2 <= len(lines) < 20
    assert all(json.loads(line)["outcome"] == "timeout" for line in lines)
    assert "interrupted" in stderr


def test_after_its_jobs_a_worker_holds_exactly_a_fresh_load(snapshot: Path, corpus: list[Path]) -> None:
    """Every VirtualQuery answer of the rolled-back process is a fresh load's, including the
    input buffer's copy-on-write page that every input (crashing or not) wrote."""
    session = WorkerSession()
    jobs = snapshot_jobs(snapshot, corpus)[:12]
    jobs.append(Job(len(jobs), str(snapshot), "snapshot", "empty", None, b"", SPEC))
    outcomes = {session.run(job).outcome for job in jobs}
    assert outcomes == {"exited", "exception"}
    (prepared,) = session._cache.values()
    fresh = Process.resume(snapshot)
    buffer = fresh.mm.images[fresh.image_base].export_address("input")
    assert buffer is not None and fresh.mm.query(buffer).Protect == PAGE_WRITECOPY
    assert list(prepared.process.mm.regions()) == list(fresh.mm.regions())
    # and the empty input, last, ran against that same page: nothing was privatised for it
    assert session.run(jobs[-1]).comparable() == WorkerSession(fresh=True).run(jobs[-1]).comparable()
