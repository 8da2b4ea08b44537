"""The ``emulator-mem`` command line: run (output, exit status, limit, snapshot, resume),
vmmap (text and JSON, of images and snapshots) and snapshot info."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem.cli import main  # noqa: E402
from samples import build  # noqa: E402


def exe(name: str) -> str:
    return str(build.BIN / f"{name}.exe")


def test_run_prints_output_and_exit_code(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", exe("hello64")]) == 1  # exit code 7 is a failure for the shell
    out, _ = capfd.readouterr()
    assert out.startswith((build.EXPECTED / "hello64.txt").read_text())
    assert out.endswith("--- process exited with code 0x00000007 (7)\n")


def test_run_reports_an_access_violation(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", exe("crash32")]) == 1
    out, _ = capfd.readouterr()
    assert ("Unhandled exception 0xc0000005 (EXCEPTION_ACCESS_VIOLATION) at 0x0040100f "
            "in crash32.exe+0x100f") in out
    assert "The memory could not be written." in out
    assert out.endswith("--- process exited with code 0xc0000005 EXCEPTION_ACCESS_VIOLATION\n")


def test_run_with_an_instruction_limit(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", exe("stack32"), "--max-instructions", "1_000"]) == 3
    out, _ = capfd.readouterr()
    assert "stopped by the instruction limit after 1,000 instructions" in out


def test_run_trace_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", exe("hello32"), "--trace"]) == 0
    out, err = capfd.readouterr()
    assert "[api] kernel32.dll!GetStdHandle(0xfffffff5) = 0x7" in err
    assert "[api]" not in out


def test_snapshot_then_resume_then_inspect(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    snap = str(tmp_path / "s.snap")
    assert main(["run", exe("section32"), "--snapshot-at", "1000", "--snapshot-out", snap]) == 0
    full, err = capfd.readouterr()
    assert f"snapshot written to {snap} after 1,000 instructions" in err
    assert main(["run", "--resume", snap]) == 0
    resumed, _ = capfd.readouterr()
    assert resumed and full.endswith(resumed)
    assert main(["snapshot", "info", snap]) == 0
    info, _ = capfd.readouterr()
    assert "mode:                  32" in info
    assert "image:                 section32.exe at 0x400000" in info
    assert "instructions:          1,000" in info
    assert main(["snapshot", "info", snap, "--json"]) == 0
    doc = json.loads(capfd.readouterr()[0])
    assert doc["snapshot"]["images"] == ["section32.exe"] and doc["runner"]["exit_code"] is None


def test_vmmap_of_an_image_and_of_a_snapshot(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["vmmap", exe("uart64"), "--run"]) == 0
    text, _ = capfd.readouterr()
    assert text.splitlines()[0] == "uart64.exe (64-bit, image base 0x140000000, image, exited)"
    assert "uart64.exe .text" in text and "stack (thread 0)" in text and " uart" in text
    assert "RW+G" in text  # the stack's guard page
    assert text.splitlines()[-1].startswith("Total")
    snap = str(tmp_path / "u.snap")
    assert main(["run", exe("watch64"), "--snapshot-at", "500", "--snapshot-out", snap]) == 0
    capfd.readouterr()
    assert main(["vmmap", snap, "--json"]) == 0
    doc = json.loads(capfd.readouterr()[0])
    assert doc["origin"] == "snapshot" and doc["bits"] == 64
    details = {r["details"] for r in doc["regions"]}
    assert {"TEB", "PEB", "process heap", "api stubs"} <= details
    assert "runner state" not in details
    assert doc["summary"]["image"]["committed"] == doc["summary"]["image"]["reserved"]


def test_errors_are_reported_not_raised(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.exe"
    bad.write_bytes(b"MZ" + bytes(100))
    assert main(["run", str(bad)]) == 2
    assert "emulator-mem: error:" in capfd.readouterr()[1]
    assert main(["run"]) == 2
    assert main(["run", exe("hello32"), "--hook", "no_such_plugin"]) == 2
    assert "no hook plugin named 'no_such_plugin'" in capfd.readouterr()[1]


def test_an_unwritable_output_path_is_refused_before_the_run(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-dir" / "r.html"
    assert main(["run", exe("hello64"), "--report", str(missing)]) == 2
    out, err = capfd.readouterr()
    assert out == ""  # the guest never ran: its output and exit line are absent
    assert f"cannot write {missing}: no directory" in err
    assert main(["run", exe("hello64"), "--snapshot-at", "10", "--snapshot-out", str(tmp_path)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and "it is a directory" in err
    assert main(["vmmap", exe("hello64"), "--html", str(missing)]) == 2
    assert "no directory" in capfd.readouterr()[1]
    assert not missing.parent.exists()
