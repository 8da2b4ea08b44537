"""The HTML report: what recording the history costs, and how fast a big map renders.

1. ``run`` with vs without ``--report`` (in-process, as ``emulator-mem run`` does it: load,
   run, and for the report also collect, render and write the file) on every sample and on
   a 10M-instruction loop (a PE built here: ``dec ecx; jnz`` five million times). Target:
   < 10% overhead. Medians of several repetitions, each pair measured back to back.
2. 100k allocations (a real MemoryManager: named and unnamed, reserved and committed,
   mixed protections) rendered in headless Chromium (Debian's ``chromium``, driven by
   ``tests/browser.py``): time from navigation to the first frame painted after the
   page's script has drawn the map, timeline and lists. Target: < 2 s.

    .venv/bin/python bench/bench_report.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc  # noqa: E402

from emulator_mem import MemoryManager  # noqa: E402
from emulator_mem.pe.writer import PEWriter  # noqa: E402
from emulator_mem.report.collect import collect, map_regions, totals  # noqa: E402
from emulator_mem.report.history import HistoryRecorder  # noqa: E402
from emulator_mem.report.model import RunReport  # noqa: E402
from emulator_mem.report.render import render_html  # noqa: E402
from emulator_mem.runner import Process  # noqa: E402

SAMPLES = ROOT / "samples" / "bin"
LOOP_ITERATIONS = 5_000_000  # two instructions each: 10M instructions
IMAGE_SCN_CNT_CODE, IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ = 0x20, 0x20000000, 0x40000000


def loop_image(iterations: int = LOOP_ITERATIONS) -> bytes:
    """A PE32 whose entry point runs ``mov ecx, N; l: dec ecx; jnz l; xor eax, eax; ret``."""
    code = b"\xb9" + iterations.to_bytes(4, "little") + b"\x49\x75\xfd" + b"\x31\xc0\xc3"
    writer = PEWriter(is_64bit=False)
    writer.add_section(".text", IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_MEM_READ, data=code)
    return writer.build()  # the entry point is the first code section


def one_run(image: bytes, name: str, mode: str, report_to: Path) -> float:
    """CPU seconds to load and run ``image`` in-process: ``plain``, ``record`` (the history
    recorder attached) or ``report`` (recorder, then collect, render and write the file).
    CPU time, not wall time: the machine is shared, and Unicorn runs on this thread."""
    start = time.process_time()
    recorder = HistoryRecorder() if mode != "plain" else None
    process = Process.load(image, name, observer=recorder)
    process.run()
    if mode == "report":
        report_to.write_text(render_html(collect(process, recorder, source=name)), encoding="utf-8")
    return time.process_time() - start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_run(path: Path, report_to: Path | None) -> float:
    """CPU seconds of the whole command, as a person types it: ``emulator-mem run FILE``."""
    command = [sys.executable, "-m", "emulator_mem.cli", "run", str(path)]
    if report_to is not None:
        command += ["--report", str(report_to)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = _children_cpu()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return _children_cpu() - start


def overhead(image: bytes, name: str, reps: int, out: Path, path: Path | None = None,
             cli_reps: int = 0) -> dict[str, Any]:
    """Medians of interleaved repetitions (drift on a shared machine hits all variants alike)."""
    times: dict[str, list[float]] = {"plain": [], "record": [], "report": []}
    one_run(image, name, "plain", out)  # warm the imports and caches once
    for i in range(reps):
        order = ("plain", "record", "report") if i % 2 == 0 else ("report", "record", "plain")
        for mode in order:
            times[mode].append(one_run(image, name, mode, out))
    med = {mode: statistics.median(t) for mode, t in times.items()}
    result: dict[str, Any] = {"name": name, "plain_s": med["plain"], "record_s": med["record"],
                              "report_s": med["report"], "record_ratio": med["record"] / med["plain"],
                              "ratio": med["report"] / med["plain"], "reps": reps}
    if path is not None and cli_reps:
        cli_plain, cli_report = [], []
        for i in range(cli_reps):
            if i % 2:
                cli_report.append(cli_run(path, out))
                cli_plain.append(cli_run(path, None))
            else:
                cli_plain.append(cli_run(path, None))
                cli_report.append(cli_run(path, out))
        result.update(cli_plain_s=statistics.median(cli_plain), cli_report_s=statistics.median(cli_report))
        result["cli_ratio"] = result["cli_report_s"] / result["cli_plain_s"]
    return result


def big_address_space(allocations: int) -> RunReport:
    """A real manager holding ``allocations`` allocations, as the report sees them.

    Bases are given explicitly (every other 64 KiB granule, so free gaps lie between them):
    searching for a free base is not what this measures.
    """
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    protects = (0x04, 0x02, 0x20, 0x04, 0x01)
    for i in range(allocations):
        size = 0x1000 * (1 + i % 7)
        name = f"buffer {i}" if i % 97 == 0 else None
        base = mm.allocate(size, protects[i % len(protects)], address=0x10000 + i * 0x20000,
                           reserve_only=i % 11 == 0, name=name)
        if i % 13 == 0 and i % 11:
            mm.protect(base, 0x1000, 0x104)  # a guard page now and then
    regions = map_regions(mm)
    return RunReport(title=f"{allocations:,} allocations", source="bench_report.py", bits=64,
                     origin="image", state="not started", lowest_address=mm.lowest_address,
                     highest_address=mm.highest_address, regions=regions, totals=totals(regions),
                     history="not recorded: a synthetic address space")


def chromium_available() -> bool:
    from browser import chromium_path

    return chromium_path() is not None


def browser_render(page: Path, reps: int) -> dict[str, Any]:
    from browser import Browser

    wall, script = [], []
    with Browser(1280, 900, timeout=60) as browser:
        for _ in range(reps):
            browser.page("Page.navigate", url="about:blank")
            browser.wait_event("Page.loadEventFired")
            start = time.perf_counter()
            browser.open(page)
            # the first frame painted after the script ran (two animation frames later)
            browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            wall.append(time.perf_counter() - start)
            script.append(float(browser.evaluate("document.body.dataset.renderMs")) / 1000)
            bars = int(browser.evaluate("document.querySelector('#map svg').dataset.bars"))
    return {"wall_s": statistics.median(wall), "script_s": statistics.median(script), "bars": bars,
            "html_bytes": page.stat().st_size, "reps": reps}


def run(quick: bool = False) -> dict[str, Any]:
    reps = 5 if quick else 11
    cli_reps = 3 if quick else 5
    out: dict[str, Any] = {"samples": [], "loop": None, "render": None}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.html"
        for exe in sorted(SAMPLES.glob("*.exe")):
            out["samples"].append(overhead(exe.read_bytes(), exe.name, reps, report, exe, cli_reps))
        loop = Path(tmp) / "loop10m.exe"
        loop.write_bytes(loop_image())
        out["loop"] = overhead(loop.read_bytes(), loop.name, 3 if quick else 5, report, loop, cli_reps)
        allocations = 20_000 if quick else 100_000
        t0 = time.perf_counter()
        big = big_address_space(allocations)
        page = Path(tmp) / "big.html"
        page.write_text(render_html(big), encoding="utf-8")
        built = time.perf_counter() - t0
        out["render"] = {"allocations": allocations, "regions": len(big.regions), "python_s": built,
                         **browser_render(page, 3)}
    for key in ("record_ratio", "ratio", "cli_ratio"):
        out[f"samples_median_{key}"] = statistics.median(s[key] for s in out["samples"])
    out["markdown"] = markdown(out)
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    lines = ["CPU time, medians of interleaved repetitions. "
             "In-process (load + run; *record*: the history recorder attached; *report*: also collect, "
             "render and write the HTML) and the whole command in a fresh process (`emulator-mem run FILE` "
             "vs `emulator-mem run FILE --report out.html`). Target: < 1.10x.", "",
             "| payload | run | +record | ratio | +report | ratio | command | `--report` | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in [*r["samples"], r["loop"]]:
        lines.append(f"| {s['name']} | {s['plain_s'] * 1e3:.1f} ms | {s['record_s'] * 1e3:.1f} ms | "
                     f"{s['record_ratio']:.3f}x | {s['report_s'] * 1e3:.1f} ms | {s['ratio']:.3f}x | "
                     f"{s['cli_plain_s'] * 1e3:.0f} ms | {s['cli_report_s'] * 1e3:.0f} ms | "
                     f"**{s['cli_ratio']:.3f}x** |")
    lines += ["", f"Medians over the samples: recording **{r['samples_median_record_ratio']:.3f}x**, "
              f"in-process report {r['samples_median_ratio']:.3f}x, whole command "
              f"**{r['samples_median_cli_ratio']:.3f}x**; 10M-instruction loop: recording "
              f"**{r['loop']['record_ratio']:.3f}x**, command **{r['loop']['cli_ratio']:.3f}x**.", ""]
    g = r["render"]
    lines.append(
        f"- {g['allocations']:,} allocations ({g['regions']:,} regions, "
        f"{g['html_bytes'] / 2**20:.1f} MiB of HTML,"
        f" {g['bars']:,} bars drawn): **{g['wall_s']:.2f} s** in headless Chromium from navigation to the "
        f"first frame after drawing (the page's script: {g['script_s']:.2f} s; target < 2 s); building and "
        f"rendering the file in Python: {g['python_s']:.1f} s.")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(args.quick)
    print("\n".join(result.pop("markdown")))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
