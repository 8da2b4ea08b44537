"""Snapshot benchmark: save/restore throughput, rollback vs full restore, peak host memory.

Not a test: prints ratios measured in one run on this machine. Targets from the snapshot
issue:

* save and restore of 64 MiB and 512 MiB of committed memory at >= 50% of the floor, the
  plain ``uc.mem_read`` / ``uc.mem_write`` of the same bytes on a bare Unicorn;
* rollback with 1% of the pages dirty >= 20x faster than a full restore (load_snapshot);
* peak extra host memory during save and load <= 1.2x the committed size.

The data is random but compressible, as real memory is: one random 4 KiB block repeated
through each MiB. The write floor is the first ``uc.mem_write`` into freshly mapped memory,
which is what a restore costs: a load builds the new physical memory in fresh host pages
(that is what makes it all-or-nothing: the live pages are untouched until the whole file
proved good), so it pays the same page faults — fewer, in fact, through one
MADV_POPULATE_WRITE per run. Rewriting memory that is already resident is a memcpy and is
printed alongside for comparison. Peak memory is the RSS high-water mark (reset through
``/proc/self/clear_refs``) over the RSS before the operation, and separately tracemalloc's
peak of the Python heap.

    .venv/bin/python bench/bench_snapshot.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from emulator_mem import MemoryManager
from emulator_mem.snapshot import load_snapshot, save_snapshot

MiB = 1 << 20
PAGE = 0x1000
PAGE_READWRITE = 0x04


def compressible(size: int) -> list[bytes]:
    """One MiB per item: a random 4 KiB block repeated (every page differs from zero)."""
    return [os.urandom(PAGE) * (MiB // PAGE) for _ in range(size // MiB)]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def peak_extra(fn: Callable[[], Any]) -> tuple[float, int, int]:
    """(seconds, RSS high-water minus RSS before, tracemalloc peak) of one call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        rss_ok = True
    except OSError:
        rss_ok = False
    before = _status("VmRSS")
    tracemalloc.start()
    t = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = _status("VmHWM") - before if rss_ok else -1
    return elapsed, rss, heap_peak


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def floor(size: int, data: list[bytes]) -> tuple[float, float, float]:
    """Bytes/s on a bare Unicorn: uc.mem_write into freshly mapped memory (cold: what a
    restore that maps its regions costs), uc.mem_write again (warm: pages already resident)
    and uc.mem_read."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    base = 0x10000000
    uc.mem_map(base, size)
    step = 16 * MiB

    def write() -> None:
        for i, block in enumerate(data):
            uc.mem_write(base + i * MiB, block)

    def read() -> None:
        for off in range(0, size, step):
            uc.mem_read(base + off, step)

    cold_s = timed(write)
    warm_s = min(timed(write) for _ in range(2))
    read_s = min(timed(read) for _ in range(2))
    uc.mem_unmap(base, size)
    return size / cold_s, size / warm_s, size / read_s


def manager_with(size: int, data: list[bytes]) -> tuple[MemoryManager, int]:
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
    base = mm.allocate(size, PAGE_READWRITE)
    for i, block in enumerate(data):
        mm.write(base + i * MiB, block)
    return mm, base


def throughput(size: int, workdir: str) -> dict[str, float]:
    data = compressible(size)
    write_floor, warm_floor, read_floor = floor(size, data)
    mm, _ = manager_with(size, data)
    del data
    path = os.path.join(workdir, f"bench{size // MiB}.snap")
    # memory and time in separate runs: tracemalloc slows the allocations it watches
    _, save_rss, save_heap = peak_extra(lambda: save_snapshot(mm, path))
    _, load_rss, load_heap = peak_extra(lambda: load_snapshot(mm, path))
    save_s = min(timed(lambda: save_snapshot(mm, path)) for _ in range(2))
    load_s = min(timed(lambda: load_snapshot(mm, path)) for _ in range(2))
    out = {
        "committed_mib": size / MiB,
        "file_mib": os.path.getsize(path) / MiB,
        "save_mb_s": size / save_s / 1e6,
        "load_mb_s": size / load_s / 1e6,
        "floor_read_mb_s": read_floor / 1e6,
        "floor_write_mb_s": write_floor / 1e6,
        "floor_warm_write_mb_s": warm_floor / 1e6,
        "save_vs_floor": (size / save_s) / read_floor,
        "load_vs_floor": (size / load_s) / write_floor,
        "load_vs_warm_floor": (size / load_s) / warm_floor,
        "save_peak_rss_ratio": save_rss / size,
        "load_peak_rss_ratio": load_rss / size,
        "save_peak_heap_ratio": save_heap / size,
        "load_peak_heap_ratio": load_heap / size,
    }
    os.unlink(path)
    mm.phys.close()
    return out


def rollback_vs_restore(size: int, workdir: str, repeat: int) -> dict[str, float]:
    """1% of the pages dirtied, then rollback; against load_snapshot of the same state."""
    mm, base = manager_with(size, compressible(size))
    path = os.path.join(workdir, "rollback.snap")
    save_snapshot(mm, path)
    cp = mm.checkpoint()
    pages = size // PAGE
    dirty = [base + i * PAGE for i in range(0, pages, 100)]  # every 100th page: 1%

    def one_rollback() -> float:
        for address in dirty:
            mm.write(address, b"\xff" * 64)
        t = time.perf_counter()
        mm.rollback(cp)
        return time.perf_counter() - t

    rollback_s = statistics.median(one_rollback() for _ in range(repeat))

    def one_restore() -> float:
        t = time.perf_counter()
        load_snapshot(mm, path)
        return time.perf_counter() - t

    restore_s = statistics.median(one_restore() for _ in range(max(3, repeat // 4)))
    os.unlink(path)
    mm.phys.close()
    return {
        "dirty_pages": len(dirty),
        "rollback_ms": rollback_s * 1e3,
        "full_restore_ms": restore_s * 1e3,
        "rollback_speedup": restore_s / rollback_s,
    }


def markdown(results: dict[str, Any]) -> list[str]:
    """The results as a Markdown table (``bench/run_all.py`` puts it in RESULTS.md)."""
    lines = [
        "| committed | file | save MB/s (x uc.mem_read) | load MB/s (x fresh uc.mem_write) "
        "| load vs resident rewrite | peak extra RSS save / load |",
        "|---|---|---|---|---|---|",
    ]
    for key, v in results.items():
        if key in ("rollback", "markdown"):
            continue
        lines.append(
            f"| {key} | {v['file_mib']:.2f} MiB | {v['save_mb_s']:.0f} ({v['save_vs_floor']:.2f}x) "
            f"| {v['load_mb_s']:.0f} ({v['load_vs_floor']:.2f}x) | {v['load_vs_warm_floor']:.2f}x "
            f"| {v['save_peak_rss_ratio']:.2f}x / {v['load_peak_rss_ratio']:.2f}x |")
    r = results["rollback"]
    lines += ["", f"Rollback with {r['dirty_pages']} dirty pages (1% of 64 MiB): {r['rollback_ms']:.2f} ms; "
              f"full restore {r['full_restore_ms']:.1f} ms: {r['rollback_speedup']:.0f}x faster "
              "(target >= 20x). Targets: save/load >= 0.5x the floor, peak extra memory <= 1.2x committed."]
    return lines


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [64 * MiB] if quick else [64 * MiB, 512 * MiB]
    with tempfile.TemporaryDirectory() as workdir:
        results: dict[str, Any] = {f"{s // MiB}MiB": throughput(s, workdir) for s in sizes}
        results["rollback"] = rollback_vs_restore(64 * MiB, workdir, 5 if quick else 15)
    results["markdown"] = markdown(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="64 MiB only, fewer repetitions")
    args = parser.parse_args()
    t = time.perf_counter()
    results = run(args.quick)
    for key, value in results.items():
        if key == "markdown":
            continue
        if key == "rollback":
            print(f"rollback, {value['dirty_pages']} dirty pages (1%) of 64 MiB: "
                  f"{value['rollback_ms']:.2f} ms vs full restore {value['full_restore_ms']:.1f} ms "
                  f"-> {value['rollback_speedup']:.0f}x faster (target >= 20x)")
            continue
        print(f"{key} committed (file {value['file_mib']:.2f} MiB):")
        print(f"  save {value['save_mb_s']:.0f} MB/s vs uc.mem_read {value['floor_read_mb_s']:.0f} MB/s "
              f"-> {value['save_vs_floor']:.2f}x the floor (target >= 0.5)")
        print(f"  load {value['load_mb_s']:.0f} MB/s vs uc.mem_write into fresh memory "
              f"{value['floor_write_mb_s']:.0f} MB/s -> {value['load_vs_floor']:.2f}x the floor "
              "(target >= 0.5)")
        print(f"       (vs rewriting already-resident memory {value['floor_warm_write_mb_s']:.0f} MB/s: "
              f"{value['load_vs_warm_floor']:.2f}x; a load always fills fresh pages, see the docstring)")
        print(f"  peak extra RSS: save {value['save_peak_rss_ratio']:.2f}x, load "
              f"{value['load_peak_rss_ratio']:.2f}x committed (target <= 1.2); Python heap peak: save "
              f"{value['save_peak_heap_ratio']:.3f}x, load {value['load_peak_heap_ratio']:.3f}x")
    print(f"total {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
