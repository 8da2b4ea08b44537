"""``emulator-mem``: run x86 payloads as Windows processes, map their memory, snapshot them.

    emulator-mem run FILE [--max-instructions N] [--trace] [--hook NAME[:k=v,...]]...
                          [--snapshot-at N --snapshot-out F] [--progress-every N]
                          [--report OUT.html]
    emulator-mem run --resume F [same options]
    emulator-mem vmmap FILE|SNAPSHOT [--json] [--free] [--run] [--max-instructions N]
                                     [--html OUT.html]
    emulator-mem snapshot info FILE [--json]
    emulator-mem batch PROGRAM... | --snapshot S --inputs DIR --input-at LOC [--workers N]
                       [--backend local|ray] [--out results.jsonl]   (see emulator_mem.batch.command)

``run`` prints the payload's console output as it is written, then how the process ended
(an unhandled exception is reported like Windows reports it) on standard output; API
tracing (``--trace``), progress and snapshot notices go to standard error. Exit status: 0
when the guest exited with code 0, 1 for any other guest exit code or exception, 3 when the
instruction limit stopped it, 2 when emulator-mem itself failed (bad file, missing import…).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .batch import command as batch_command
from .errors import EmulatorMemError
from .report import vmmap
from .report.collect import collect, exit_line
from .report.history import HistoryRecorder
from .report.render import render_html
from .runner import Process, RunResult
from .runner.persist import read_runner_state
from .runner.plugins import parse_spec
from .snapshot.file import snapshot_info

EXIT_OK, EXIT_GUEST_FAILED, EXIT_ERROR, EXIT_LIMIT = 0, 1, 2, 3
DEFAULT_PROGRESS = 50_000_000


def _stdout_sink(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _stderr_sink(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9}


def _int(text: str) -> int:
    """Decimal or 0x-hex, with ``_``/``,`` separators and a k/M/G suffix (``10M``, ``5_000``)."""
    clean = text.replace(",", "").replace("_", "")
    scale = _SUFFIXES.get(clean[-1:].lower(), 1) if not clean.lower().startswith("0x") else 1
    if scale != 1:
        clean = clean[:-1]
    try:
        value = int(clean, 0) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _is_snapshot(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(2) != b"MZ"
    except OSError as exc:
        raise EmulatorMemError(f"cannot read {path}: {exc}") from exc


# -- run -----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    if (args.snapshot_at is None) != (args.snapshot_out is None):
        print("emulator-mem: --snapshot-at and --snapshot-out go together", file=sys.stderr)
        return EXIT_ERROR
    for out in (args.report, args.snapshot_out):
        if out is not None:
            _check_writable(out)
    recorder = HistoryRecorder() if args.report else None
    if args.resume is not None:
        process = Process.resume(args.resume, stdout=_stdout_sink, stderr=_stderr_sink)
        if recorder is not None:  # the history starts here: a snapshot does not keep one
            process.observer = recorder
            recorder.attach(process)
    elif args.file is not None:
        process = Process.load_file(args.file, stdout=_stdout_sink, stderr=_stderr_sink, observer=recorder)
    else:
        print("emulator-mem: run needs FILE or --resume SNAPSHOT", file=sys.stderr)
        return EXIT_ERROR
    if args.trace:
        process.api_trace = sys.stderr
    for spec in args.hook:
        name, options = parse_spec(spec)
        handle = process.install_hook(name, **options)
        base = getattr(handle, "base", None)
        where = f" at {base:#x}" if isinstance(base, int) else ""
        print(f"[emulator-mem] hook {name} installed{where}", file=sys.stderr)

    def progress(total: int, seconds: float) -> None:
        print(f"[emulator-mem] {total:,} instructions, {seconds:.1f} s", file=sys.stderr, flush=True)

    try:
        result = process.run(
            args.max_instructions, snapshot_at=args.snapshot_at, snapshot_to=args.snapshot_out,
            progress=progress if args.progress_every else None,
            progress_every=args.progress_every or DEFAULT_PROGRESS,
        )
    finally:
        for handle in reversed(process.plugins):
            handle.remove()
    if result.snapshot is not None:
        print(f"[emulator-mem] snapshot written to {result.snapshot} after {args.snapshot_at:,} "
              "instructions", file=sys.stderr)
    status = _report(result)
    if args.report:
        source = args.file if args.file is not None else args.resume
        _write_report(args.report, render_html(collect(process, recorder, source=str(source))))
    return status


def _check_writable(path: str | Path) -> None:
    """Refuse an output path that cannot be written *before* the run, not after it: a long
    run whose report or snapshot is then lost to a typo in a directory name wastes the run."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise EmulatorMemError(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        raise EmulatorMemError(f"cannot write {path}: no directory {parent}")
    if not os.access(target if target.exists() else parent, os.W_OK):
        raise EmulatorMemError(f"cannot write {path}: permission denied")


def _write_report(path: str, page: str) -> None:
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise EmulatorMemError(f"cannot write {path}: {exc}") from exc
    print(f"[emulator-mem] report written to {path}", file=sys.stderr)


def _report(result: RunResult) -> int:
    out = sys.stdout
    if result.stdout and not result.stdout.endswith(b"\n"):
        out.write("\n")
    if result.exception is not None:
        out.write(result.exception.describe() + "\n")
    out.write(exit_line(result.exit_code, result.instructions) + "\n")
    out.flush()
    if result.exit_code is None:
        return EXIT_LIMIT
    return EXIT_OK if result.exit_code == 0 else EXIT_GUEST_FAILED


# -- vmmap ---------------------------------------------------------------------------------
def cmd_vmmap(args: argparse.Namespace) -> int:
    path = Path(args.target)
    recorder: HistoryRecorder | None = None
    if args.html:
        _check_writable(args.html)
    if _is_snapshot(path):
        process = Process.resume(path)
        origin, history = "snapshot", "not recorded: the process was loaded from a snapshot"
    else:
        ran = args.run or args.max_instructions is not None
        recorder = HistoryRecorder() if args.html and ran else None
        process = Process.load_file(path, observer=recorder)
        origin, history = "image", "not recorded: the image was mapped, not run (add --run)"
        if ran:
            process.run(args.max_instructions)
    mm = process.mm
    if args.html:
        shown = "run" if recorder is not None else origin
        report = collect(process, recorder, source=str(path), origin=shown, history=history)
        _write_report(args.html, render_html(report))
        return EXIT_OK
    if args.json:
        doc: dict[str, Any] = {
            "source": str(path), "origin": origin, "bits": 64 if mm.is_64bit else 32,
            "image": {"name": process.image_name, "base": process.image_base,
                      "entry_point": process.entry_point},
            "exit_code": process.exit_code,
            "regions": vmmap.detailed_rows(mm, args.free),
            "summary": vmmap.summary(mm),
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if process.exit_code is not None:
        state = "exited"
    else:
        state = "running" if process.instructions else "not started"
    bits = 64 if mm.is_64bit else 32
    print(f"{process.image_name} ({bits}-bit, image base {process.image_base:#x}, {origin}, {state})")
    print(vmmap.format_detailed(mm, args.free))
    return EXIT_OK


# -- snapshot info -------------------------------------------------------------------------
def cmd_snapshot_info(args: argparse.Namespace) -> int:
    info = snapshot_info(args.file)
    try:
        state: dict[str, Any] | None = read_runner_state(args.file)
    except EmulatorMemError:
        state = None
    if args.json:
        json.dump({"snapshot": info, "runner": state}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"snapshot {args.file}")
    for key, value in info.items():
        if key == "instruction_pointer" and isinstance(value, int):
            value = f"{value:#x}"
        elif isinstance(value, int) and not isinstance(value, bool) and key.endswith(("bytes", "size")):
            value = f"{value:,}"
        print(f"  {key + ':':<22} {value}")
    if state is None:
        print("  (no runner state: not a process snapshot)")
        return EXIT_OK
    import base64

    stdout = base64.b64decode(state["console"]["stdout"])
    image = state["image"]
    print("runner")
    print(f"  {'image:':<22} {image['name']} at {image['base']:#x} (entry {image['entry']:#x})")
    print(f"  {'instructions:':<22} {state['instructions']:,}")
    exit_code = state["exit_code"]
    print(f"  {'state:':<22} {'running' if exit_code is None else f'exited with {exit_code:#x}'}")
    print(f"  {'api stubs:':<22} {sum(1 for s in state['stubs']['slots'] if s) - 1}")
    devices = ", ".join(f"{d['kind']} at {d['base']:#x}" for d in state["devices"]) or "none"
    print(f"  {'devices:':<22} {devices}")
    print(f"  {'console output:':<22} {len(stdout):,} bytes so far")
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emulator-mem", description="Run x86 Windows payloads over an emulated Windows memory manager.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a PE file (or resume a snapshot) and show its output")
    run.add_argument("file", nargs="?", help="PE32/PE32+ file (optional with --resume)")
    run.add_argument("--max-instructions", type=_int, metavar="N", help="stop after N instructions")
    run.add_argument("--trace", action="store_true", help="log every API call to stderr")
    run.add_argument("--hook", action="append", default=[], metavar="NAME[:k=v,...]",
                     help="install a plugin from hooks/ (tracer, access_log, devices); repeatable")
    run.add_argument("--snapshot-at", type=_int, metavar="N", help="save a snapshot after N instructions")
    run.add_argument("--snapshot-out", metavar="F", help="where --snapshot-at writes the snapshot")
    run.add_argument("--resume", metavar="F", help="continue the process saved in snapshot F")
    run.add_argument("--progress-every", type=_int, default=DEFAULT_PROGRESS, metavar="N",
                     help=f"report progress every N instructions (0: never; default {DEFAULT_PROGRESS:,})")
    run.add_argument("--report", metavar="OUT.html",
                     help="record the memory history and write an HTML report (map, timeline, totals)")
    run.set_defaults(func=cmd_run)

    vm = sub.add_parser("vmmap", help="print the address space of a PE file or a snapshot")
    vm.add_argument("target", help="PE file (mapped, not run, unless --run) or snapshot")
    vm.add_argument("--json", action="store_true", help="machine-readable output")
    vm.add_argument("--free", action="store_true", help="include free regions")
    vm.add_argument("--run", action="store_true", help="run the PE to its end first")
    vm.add_argument("--max-instructions", type=_int, metavar="N", help="run the PE for N instructions first")
    vm.add_argument("--html", metavar="OUT.html",
                    help="write the map as a self-contained HTML page (with the history when run)")
    vm.set_defaults(func=cmd_vmmap)

    snap = sub.add_parser("snapshot", help="inspect snapshot files")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    info = snap_sub.add_parser("info", help="summary of a snapshot")
    info.add_argument("file")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_snapshot_info)

    batch_command.add_parser(sub, _int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EmulatorMemError as exc:
        sys.stdout.flush()
        print(f"emulator-mem: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into head
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
