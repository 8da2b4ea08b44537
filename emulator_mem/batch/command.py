"""``emulator-mem batch``: the command-line face of :func:`emulator_mem.batch.run_batch`.

    emulator-mem batch samples/bin/*.exe --workers 2 --out results.jsonl
    emulator-mem batch --snapshot s.snap --inputs corpus/ --input-at parse32.exe!input \\
        [--input-len-at parse32.exe!input_len | --input-len-reg ecx] --out r.jsonl [--backend ray]

Results go to ``--out`` (or standard output), one JSON line per job, flushed as each
arrives, so an interrupted batch keeps everything finished so far. The progress bar and the
summary go to standard error. Exit status: 0 when every job ran (whatever the guest did:
finding crashes is the point), 1 when some job could not run (``error``) or killed its
worker, 2 when the batch could not start, 130 after Ctrl-C.

Lives here, not in ``cli.py``, so the command module stays a thin dispatcher; ``cli.py``
passes its number parser in rather than being imported from below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import IO, Any

from ..errors import BatchError
from . import BACKENDS, run_batch
from .jobs import DEFAULT_MAX_OUTPUT, InputSpec, Limits, Location, TargetKind, make_jobs
from .result import FAILED, Result
from .summary import ProgressBar, Summary

EXIT_OK, EXIT_JOBS_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def add_parser(sub: Any, number: Callable[[str], int]) -> None:
    """Register ``batch`` on the ``emulator-mem`` subcommand parser."""
    p = sub.add_parser(
        "batch", help="run many jobs: PE files, or a snapshot with many inputs",
        description="Run many emulations on a local process pool or on Ray; one JSON line per job.")
    p.add_argument("programs", nargs="*", metavar="PROGRAM", help="PE files: one job each (or one per input)")
    p.add_argument("--snapshot", action="append", default=[], metavar="S",
                   help="a process snapshot (emulator-mem run --snapshot-at N --snapshot-out S); repeatable")
    p.add_argument("--inputs", action="append", default=[], metavar="DIR|FILE",
                   help="input files, or directories of them (walked in sorted order); repeatable")
    p.add_argument("--input-at", metavar="LOC",
                   help="where each input is written: 0xADDRESS, module!export or module+0xOFFSET")
    p.add_argument("--input-len-at", metavar="LOC", help="also write the input's length here (a DWORD)")
    p.add_argument("--input-len-reg", metavar="REG", help="or put the input's length in this register")
    p.add_argument("--input-max", type=number, metavar="N", help="cut inputs to N bytes")
    p.add_argument("--max-instructions", type=number, metavar="N", help="stop each job after N instructions")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop each job after this much wall time")
    p.add_argument("--workers", type=number, metavar="N",
                   help="worker processes / Ray actors (default: CPUs)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local process pool (default) or ray")
    p.add_argument("--ray-address", metavar="auto|HOST:PORT",
                   help="join this Ray cluster (default: a private local Ray)")
    p.add_argument("--out", metavar="FILE", help="results file, JSON lines (default: standard output)")
    p.add_argument("--max-output", type=number, default=DEFAULT_MAX_OUTPUT, metavar="BYTES",
                   help=f"console output kept per result (default {DEFAULT_MAX_OUTPUT})")
    p.add_argument("--fresh", action="store_true",
                   help="load the target afresh for every job instead of rolling back (slow; for checking)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE in every worker first (e.g. to register @api handlers); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.set_defaults(func=cmd_batch)


def _input_spec(args: argparse.Namespace) -> InputSpec | None:
    if args.input_at is None:
        if args.input_len_at or args.input_len_reg or args.input_max is not None:
            raise BatchError("--input-len-at, --input-len-reg and --input-max need --input-at")
        return None
    return InputSpec(
        Location.parse(args.input_at),
        Location.parse(args.input_len_at) if args.input_len_at else None,
        args.input_len_reg, args.input_max)


def cmd_batch(args: argparse.Namespace) -> int:
    targets: list[tuple[str, TargetKind]] = [(p, "program") for p in args.programs]
    targets += [(s, "snapshot") for s in args.snapshot]
    if not targets:
        raise BatchError("batch needs PE files or --snapshot S")
    spec = _input_spec(args)
    if args.inputs and spec is None:
        raise BatchError("--inputs needs --input-at (where the input goes in guest memory)")
    jobs = list(make_jobs(targets, args.inputs, input_spec=spec,
                          limits=Limits(args.max_instructions, args.timeout), max_output=args.max_output))
    out: IO[str] = sys.stdout if args.out is None else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    progress = ProgressBar(len(jobs), enabled=False if args.no_progress else None)
    failures = 0
    live = Summary()

    def on_result(result: Result) -> None:
        nonlocal failures
        out.write(result.to_json() + "\n")
        out.flush()
        failures += result.outcome in FAILED
        live.add(result)
        progress.update(live)

    summary: Summary | None = None
    try:
        summary = run_batch(jobs, backend=args.backend, workers=args.workers, fresh=args.fresh,
                            imports=args.imports, ray_address=args.ray_address, on_result=on_result)
    except KeyboardInterrupt:
        pass
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    if summary is None:  # interrupted outside the pool's own handling
        live.interrupted = True
        live.finish()
        summary = live
    sys.stdout.flush()
    print(summary.format(), file=sys.stderr)
    if args.out is not None:
        print(f"results: {args.out}", file=sys.stderr)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_JOBS_FAILED if failures else EXIT_OK
