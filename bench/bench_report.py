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
import statistics
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


def one_run(image: bytes, name: str, report_to: Path | None) -> float:
    """Seconds for ``emulator-mem run`` of ``image`` (with ``--report report_to`` if given)."""
    start = time.perf_counter()
    recorder = HistoryRecorder() if report_to is not None else None
    process = Process.load(image, name, observer=recorder)
    process.run()
    if report_to is not None:
        report_to.write_text(render_html(collect(process, recorder, source=name)), encoding="utf-8")
    return time.perf_counter() - start


def overhead(image: bytes, name: str, reps: int, out: Path) -> dict[str, Any]:
    one_run(image, name, None)  # warm the imports and caches once
    plain, recorded = [], []
    for i in range(reps):  # alternate, so drift on a shared machine hits both alike
        if i % 2:
            recorded.append(one_run(image, name, out))
            plain.append(one_run(image, name, None))
        else:
            plain.append(one_run(image, name, None))
            recorded.append(one_run(image, name, out))
    p, r = statistics.median(plain), statistics.median(recorded)
    return {"name": name, "plain_s": p, "report_s": r, "ratio": r / p, "reps": reps}


def big_address_space(allocations: int) -> RunReport:
    """A real manager holding ``allocations`` allocations, as the report sees them."""
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    protects = (0x04, 0x02, 0x20, 0x04, 0x01)
    for i in range(allocations):
        size = 0x1000 * (1 + i % 7)
        name = f"buffer {i}" if i % 97 == 0 else None
        base = mm.allocate(size, protects[i % len(protects)], reserve_only=i % 11 == 0, name=name)
        if i % 13 == 0 and i % 11:
            mm.protect(base, 0x1000, 0x104)  # a guard page now and then
    regions = map_regions(mm)
    return RunReport(title=f"{allocations:,} allocations", source="bench_report.py", bits=64,
                     origin="image", state="not started", lowest_address=mm.lowest_address,
                     highest_address=mm.highest_address, regions=regions, totals=totals(regions),
                     history="not recorded: a synthetic address space")


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
    reps = 3 if quick else 7
    out: dict[str, Any] = {"samples": [], "loop": None, "render": None}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.html"
        for exe in sorted(SAMPLES.glob("*.exe")):
            out["samples"].append(overhead(exe.read_bytes(), exe.name, reps, report))
        loop_reps = 3 if quick else 5
        out["loop"] = overhead(loop_image(), "loop10m.exe", loop_reps, report)
        allocations = 20_000 if quick else 100_000
        t0 = time.perf_counter()
        big = big_address_space(allocations)
        page = Path(tmp) / "big.html"
        page.write_text(render_html(big), encoding="utf-8")
        built = time.perf_counter() - t0
        out["render"] = {"allocations": allocations, "regions": len(big.regions), "python_s": built,
                         **browser_render(page, 3)}
    ratios = [s["ratio"] for s in out["samples"]]
    out["samples_median_ratio"] = statistics.median(ratios)
    out["markdown"] = markdown(out)
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    lines = ["| payload | `run` | `run --report` | ratio |", "|---|---|---|---|"]
    for s in [*r["samples"], r["loop"]]:
        lines.append(f"| {s['name']} | {s['plain_s'] * 1e3:.1f} ms | {s['report_s'] * 1e3:.1f} ms | "
                     f"{s['ratio']:.3f}x |")
    lines += ["", f"Median over the samples: **{r['samples_median_ratio']:.3f}x**; "
              f"10M-instruction loop: **{r['loop']['ratio']:.3f}x** (target: < 1.10x).", ""]
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
