"""Per-peer virtualenvs and runner for the peer-emulator allocator benchmark.

Why separate virtualenvs: dumpulator, speakeasy and qiling each pin their own Unicorn
(2.0.1, 1.0.2 and 2.1.4 at the pinned versions below), which cannot coexist with each
other or with ours in one environment.  Each peer therefore gets
``.venv-bench/<env>/`` (created on first use with ``python -m venv`` + ``pip install``,
reused afterwards) and its driver, ``bench/peers/<peer>_driver.py``, runs there as a
subprocess that prints one JSON line.  ``bare_unicorn`` runs in our own ``.venv`` so
it measures the Unicorn that ``emulator_mem`` uses.

A peer that does not install or import is skipped, not fatal: the reason is written to
``.venv-bench/<env>/bench-status.json`` (so the failing install is not retried on every
run; pass ``retry_failed=True`` / ``--retry-failed`` to try again) and returned in the
result dict as ``"skipped"``.

Peer versions are pinned so numbers stay comparable between runs; bump them
deliberately.  ``.venv-bench/`` is kept out of git by a ``.gitignore`` written inside
it (the repository's own ``.gitignore`` only covers ``.venv/``).

Time: each driver stops by itself within ``budget`` seconds (see
``bench/peers/_harness.py``; setup gets half of it).  With the default 40 s per run
the full matrix (4 peers x N in 1000, 10000, 100000) took ~2 minutes on 2 cores that
other jobs were also using (load ~3): no peer can build 10^4 live 64 KiB allocations
in 20 s, so those runs end at their setup share, and the 10^5 runs end within a second
or two, as soon as the measured rate proves them hopeless.  The one-time installs
(~1 minute) are not part of that.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENV_ROOT = REPO / ".venv-bench"
DRIVERS = REPO / "bench" / "peers"
OUR_PYTHON = REPO / ".venv" / "bin" / "python"

# Per run.  Setup gets half (dumpulator needs ~8-15 s for 1k live on a busy 2-core
# machine).  12 runs (4 peers x 3 sizes) x 40 s would be 8 minutes, but runs that
# cannot finish setup stop at their 20 s setup share or, when the measured rate proves
# it hopeless (every peer at 10^5), within seconds: the full matrix takes ~2 minutes.
DEFAULT_BUDGET = 40.0
# Frees come last and are not replaced, so K should stay well below N for the free rate
# to be measured at ~N live; 200 also lets the slowest complete phase (Unicorn 2.1's
# partial protect, ~25 round trips/s at 1k live) finish inside the budget.
DEFAULT_OPS = 200
# Startup (imports: qiling ~0.5 s), the final region count and the last op of a phase
# (a single speakeasy alloc takes ~0.4 s at 1k live) can overrun the driver's budget.
_GRACE_S = 60.0
_INSTALL_TIMEOUT_S = 900.0
_IMPORT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PeerSpec:
    """How to get and run one peer (or one variant of a peer's driver)."""

    name: str
    env: str | None  # directory under .venv-bench; None = our own .venv
    requirement: str  # pip requirement(s), pinned, separated by spaces
    imports: tuple[str, ...]  # must import for the env to count as usable
    driver: str
    variant: str = ""


_PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec("bare_unicorn", None, "", ("unicorn",), "bare_unicorn_driver.py"),
        # ourselves through the same harness and workloads (kernel32 layer, this checkout)
        PeerSpec("emulator_mem", None, "", ("unicorn", "sortedcontainers"),
                 "emulator_mem_driver.py"),
        PeerSpec(
            "dumpulator",
            "dumpulator",
            "dumpulator==0.2.6",
            ("dumpulator.memory", "dumpulator.dumpulator"),
            "dumpulator_driver.py",
        ),
        PeerSpec(
            "speakeasy",
            "speakeasy",
            "speakeasy-emulator==1.5.11",
            ("speakeasy", "speakeasy.memmgr"),
            "speakeasy_driver.py",
        ),
        PeerSpec("qiling", "qiling", "qiling==1.4.6", ("qiling",), "qiling_driver.py"),
    )
}
# Secondary views of the same peers (see each driver's docstring); not in the default
# table because they answer narrower questions.
_VARIANTS: dict[str, PeerSpec] = {
    "bare_unicorn_dict": PeerSpec(
        "bare_unicorn_dict", None, "", ("unicorn",), "bare_unicorn_driver.py", "dict"
    ),
    "dumpulator_lazy": PeerSpec(
        "dumpulator_lazy",
        "dumpulator",
        _PEERS["dumpulator"].requirement,
        _PEERS["dumpulator"].imports,
        "dumpulator_driver.py",
        "lazy",
    ),
    # qiling with emulator_mem's MemoryManager attached to its Uc (issue 17): its own venv,
    # because our package needs two pure dependencies qiling's env lacks
    "qiling_mm": PeerSpec(
        "qiling_mm",
        "qiling_mm",
        "qiling==1.4.6 sortedcontainers>=2.4 zstandard>=0.22",
        ("qiling", "sortedcontainers", "zstandard"),
        "qiling_driver.py",
        "mem_mm",
    ),
    "qiling_heap": PeerSpec(
        "qiling_heap",
        "qiling",
        _PEERS["qiling"].requirement,
        _PEERS["qiling"].imports,
        "qiling_driver.py",
        "heap",
    ),
}
ALL_SPECS: dict[str, PeerSpec] = {**_PEERS, **_VARIANTS}


@dataclass(frozen=True)
class EnvStatus:
    """Outcome of preparing a peer's environment."""

    ok: bool
    python: Path
    reason: str = ""


def _spec(peer: str) -> PeerSpec:
    try:
        return ALL_SPECS[peer]
    except KeyError:
        raise ValueError(f"unknown peer {peer!r}; known: {', '.join(ALL_SPECS)}") from None


def _tail(text: str, lines: int = 4) -> str:
    """Last meaningful lines of pip/python output (pip's index warnings are noise)."""
    kept = [ln for ln in text.strip().splitlines() if ln.strip() and "WARNING:" not in ln]
    return " | ".join(kept[-lines:])


@contextlib.contextmanager
def _env_lock(env: str) -> Iterator[None]:
    """Serialise creation of one env between concurrent benchmark processes."""
    ENV_ROOT.mkdir(parents=True, exist_ok=True)
    gitignore = ENV_ROOT / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("# created by bench/peer_envs.py: never commit peer venvs\n*\n")
    with open(ENV_ROOT / f".{env}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_imports(python: Path, modules: Sequence[str]) -> str:
    """Empty string if ``modules`` import under ``python``, else the reason."""
    code = "".join(f"import {m}\n" for m in modules)
    try:
        proc = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=_IMPORT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"import check failed: {exc}"
    return "" if proc.returncode == 0 else f"import failed: {_tail(proc.stderr)}"


def ensure_env(peer: str, *, retry_failed: bool = False) -> EnvStatus:
    """Create (first use) or reuse the virtualenv of ``peer``; never raises for peers.

    The outcome is cached in ``bench-status.json`` keyed by the pinned requirement, so
    a bumped pin reinstalls and a known-broken peer is skipped without a slow retry.
    """
    spec = _spec(peer)
    if spec.env is None:
        python = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
        reason = _check_imports(python, spec.imports)
        return EnvStatus(not reason, python, reason)

    env_dir = ENV_ROOT / spec.env
    python = env_dir / "bin" / "python"
    status_file = env_dir / "bench-status.json"
    with _env_lock(spec.env):
        if status_file.exists() and python.exists():
            try:
                cached = json.loads(status_file.read_text())
            except (OSError, ValueError):
                cached = {}
            if cached.get("requirement") == spec.requirement:
                if cached.get("ok"):
                    return EnvStatus(True, python)
                if not retry_failed:
                    return EnvStatus(False, python, str(cached.get("reason", "unknown")))

        reason = _install(env_dir, python, spec)
        if not reason:
            reason = _check_imports(python, spec.imports)
        env_dir.mkdir(parents=True, exist_ok=True)
        status_file.write_text(
            json.dumps(
                {
                    "requirement": spec.requirement,
                    "ok": not reason,
                    "reason": reason,
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
                indent=1,
            )
        )
        return EnvStatus(not reason, python, reason)


def _install(env_dir: Path, python: Path, spec: PeerSpec) -> str:
    """Fresh venv + pip install of the pinned requirement; '' on success, else why."""
    if env_dir.exists():
        shutil.rmtree(env_dir)  # a half-made or stale env: start clean
    base_python = getattr(sys, "_base_executable", sys.executable)
    steps = [
        ("venv", [base_python, "-m", "venv", str(env_dir)]),
        (
            "pip install",
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *spec.requirement.split(),
            ],
        ),
    ]
    for what, cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{what} failed: {exc}"
        if proc.returncode != 0:
            return f"{what} failed (exit {proc.returncode}): {_tail(proc.stderr or proc.stdout)}"
    return ""


def peer_status(peer: str) -> dict[str, Any]:
    """Recorded install outcome of ``peer`` without installing anything."""
    spec = _spec(peer)
    if spec.env is None:
        return {"ok": True, "requirement": "(our .venv)"}
    status_file = ENV_ROOT / spec.env / "bench-status.json"
    if not status_file.exists():
        return {"ok": None, "reason": "not installed yet"}
    data: dict[str, Any] = json.loads(status_file.read_text())
    return data


def available_peers(*, include_variants: bool = False, install: bool = True) -> list[str]:
    """Peers whose environment is usable, creating missing environments if ``install``.

    Without ``install`` only peers already recorded as installed (and ``bare_unicorn``)
    are listed, which is instant.  Skip reasons of the others: ``peer_status``.
    """
    names = list(ALL_SPECS if include_variants else _PEERS)
    if install:
        return [p for p in names if ensure_env(p).ok]
    return [p for p in names if peer_status(p).get("ok")]


def run_peer(
    peer: str, live: int, ops: int, budget: float, *, retry_failed: bool = False,
    workload: str = "64k",
) -> dict[str, Any]:
    """Run ``peer``'s driver once and return its JSON result (plus ``wall_s``).

    Never raises for a peer problem: an uninstallable peer, a crashing driver or a
    driver that overruns ``budget`` by more than the grace period comes back as a dict
    with ``"skipped"`` or ``"error"`` so a benchmark table can still be printed.
    """
    spec = _spec(peer)
    base: dict[str, Any] = {"peer": peer, "live": live}
    env = ensure_env(peer, retry_failed=retry_failed)
    if not env.ok:
        return {**base, "skipped": f"peer unavailable: {env.reason}"}

    cmd = [
        str(env.python),
        str(DRIVERS / spec.driver),
        "--live",
        str(live),
        "--ops",
        str(ops),
        "--budget",
        str(budget),
    ]
    if spec.variant:
        cmd += ["--variant", spec.variant]
    if workload != "64k":
        cmd += ["--workload", workload]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=budget + _GRACE_S, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return {
            **base,
            "skipped": f"driver overran budget {budget}s + {_GRACE_S}s grace",
            "wall_s": round(time.perf_counter() - t0, 2),
        }
    wall = round(time.perf_counter() - t0, 2)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {
            **base,
            "error": f"driver exit {proc.returncode}, no JSON: {_tail(proc.stderr or proc.stdout)}",
            "wall_s": wall,
        }
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError as exc:
        return {**base, "error": f"bad driver JSON: {exc}", "wall_s": wall}
    result["peer"] = peer  # variant-qualified name
    result.setdefault("live", live)
    result["wall_s"] = wall
    return result


# --- table --------------------------------------------------------------------------

_RATES = ("alloc_per_s", "query_per_s", "protect_per_s", "free_per_s")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return str(v)


def _status(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    if "skipped" in r:
        extra = ""
        if "live_reached" in r:
            extra = f" (reached {r['live_reached']} live in {r.get('setup_s')} s)"
        return f"skipped: {r['skipped']}{extra}"
    flags = []
    if r.get("truncated"):
        flags.append("truncated")
    if r.get("protect_skipped"):
        flags.append("protect n/a")
    return ", ".join(flags) or "ok"


def _complete(r: dict[str, Any]) -> bool:
    return "error" not in r and "skipped" not in r


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Fixed-width table of results, then each rate as a ratio to bare_unicorn's.

    For a run whose setup did not finish, alloc/s is shown as ``rate@live_reached``:
    it was measured at that live count, not at the target, and no ratio is formed
    from it (rates at different live counts are not comparable).
    """
    head = (
        "peer", "version", "unicorn", "live", "setup_s", "alloc/s", "query/s",
        "protect/s", "free/s", "regions", "status",
    )  # fmt: skip
    rows = [head]
    for r in results:
        alloc = _fmt(r.get("alloc_per_s"))
        if "live_reached" in r:
            alloc += f"@{r['live_reached']}"
        rows.append(
            (
                r["peer"],
                _fmt(r.get("version")),
                _fmt(r.get("unicorn_version")),
                _fmt(r["live"]),
                _fmt(r.get("setup_s")),
                alloc,
                *(_fmt(r.get(k)) for k in _RATES[1:]),
                _fmt(r.get("regions")),
                _status(r),
            )  # fmt: skip
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    out = [
        "  ".join(
            c.rjust(w) if i >= 3 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))
        )
        + "  "
        + row[-1]
        for row in rows
    ]

    bare = {r["live"]: r for r in results if r["peer"] == "bare_unicorn" and _complete(r)}
    ratio_rows = []
    for r in results:
        ref = bare.get(r["live"])
        if r["peer"] == "bare_unicorn" or ref is None or not _complete(r):
            continue
        cells = []
        for k in _RATES:
            a, b = r.get(k), ref.get(k)
            cells.append(f"{a / b:.3g}x" if a and b else "-")
        ratio_rows.append(
            f"{r['peer']:<18} {r['live']:>7}  " + "  ".join(f"{c:>10}" for c in cells)
        )
    if ratio_rows:
        out += [
            "",
            "rate / bare_unicorn rate, same live count, completed runs only (>1x = faster):",
            f"{'peer':<18} {'live':>7}  " + "  ".join(f"{k[:-6]:>10}" for k in _RATES),
            *ratio_rows,
        ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the peer matrix and print the table (``python bench/peer_envs.py``)."""
    ap = argparse.ArgumentParser(description="peer emulator allocator benchmark")
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated live counts")
    ap.add_argument("--ops", type=int, default=DEFAULT_OPS)
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds per run")
    ap.add_argument(
        "--peers",
        default="",
        help="comma-separated; default: the 4 main peers; 'all' adds the variants "
        + ", ".join(_VARIANTS),
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs in parallel (>1 halves wall time on 2 cores but the runs "
        "then perturb each other's timings)",
    )
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--retry-failed", action="store_true", help="retry failed installs")
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.peers == "all":
        peers = list(ALL_SPECS)
    elif args.peers:
        peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    else:
        peers = list(_PEERS)
    for p in peers:
        _spec(p)

    t0 = time.perf_counter()
    for p in peers:  # install first, so install time is not mixed into run times
        st = ensure_env(p, retry_failed=args.retry_failed)
        print(f"# {p}: {'ready' if st.ok else 'SKIP ' + st.reason}", file=sys.stderr)
    t_install = time.perf_counter() - t0

    jobs = [(p, n) for n in sizes for p in peers]
    t1 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda j: run_peer(j[0], j[1], args.ops, args.budget), jobs))
    t_run = time.perf_counter() - t1

    print(format_table(results))
    print(
        f"\n# env setup {t_install:.1f} s, {len(jobs)} runs {t_run:.1f} s "
        f"(budget {args.budget:g} s/run, ops {args.ops}, jobs {args.jobs})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
