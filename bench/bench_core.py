"""Core benchmark: bookkeeping ops/s vs live allocations, and guest speed vs bare Unicorn.

Not a test: prints ratios measured in one run on this machine (shared and noisy, so every
figure is the median of several repetitions). Targets from the core issue:
per-op cost at 100k live allocations ≤ 1.3x that at 1k; Unicorn regions at 100k ≤ 64;
warm guest execution ≤ 1.0x bare Unicorn.

    .venv/bin/python bench/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, UC_PROT_READ, UC_PROT_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_R8, UC_X86_REG_RCX, UC_X86_REG_RDI, UC_X86_REG_RSI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

from emulator_mem import MemoryManager  # noqa: E402
from emulator_mem import constants as C  # noqa: E402

PAGE = 0x1000
LOOP = """
  mov rdx, rdi
  xor r9, r9
top:
  mov rax, [rdx]
  add rax, 1
  mov [rdx], rax
  add rdx, rsi
  inc r9
  cmp r9, r8
  jb cont
  mov rdx, rdi
  xor r9, r9
cont:
  dec rcx
  jnz top
  nop
"""
LOOP_INSNS = 9  # instructions per iteration on the common path


def median_of(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


# -- bookkeeping -------------------------------------------------------------------------
def bookkeeping(live_counts: tuple[int, ...], ops: int, repeat: int) -> list[dict[str, float]]:
    """Allocate up to N live 64 KiB allocations, then time alloc/query/protect/free batches."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mm = MemoryManager(uc)
    rng = random.Random(1)
    bases: list[int] = []
    rows = []
    for n in live_counts:
        while len(bases) < n:
            bases.append(mm.allocate(0x10000, C.PAGE_READWRITE))
        k = min(ops, n // 2)

        def batch(k: int = k) -> dict[str, float]:
            idx = rng.sample(range(len(bases)), k)
            picked = [bases[i] for i in idx]
            t0 = time.perf_counter()
            for b in picked:
                mm.query(b + 0x2000)
            t1 = time.perf_counter()
            for b in picked:
                mm.protect(b + 0x1000, 0x1000, C.PAGE_READONLY)
                mm.protect(b + 0x1000, 0x1000, C.PAGE_READWRITE)
            t2 = time.perf_counter()
            for b in picked:
                mm.release(b)
            t3 = time.perf_counter()
            for i in idx:
                bases[i] = mm.allocate(0x10000, C.PAGE_READWRITE)
            t4 = time.perf_counter()
            return {"query": k / (t1 - t0), "protect": 2 * k / (t2 - t1),
                    "free": k / (t3 - t2), "alloc": k / (t4 - t3)}

        runs = [batch() for _ in range(repeat)]
        row = {op: statistics.median(r[op] for r in runs) for op in runs[0]}
        row["live"] = n
        row["unicorn_regions"] = mm.stats().unicorn_regions
        rows.append(row)
    return rows


# -- guest execution ---------------------------------------------------------------------
CODE_V = 0x400000
DATA_V = 0x10000000


def _code() -> bytes:
    return bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(LOOP, CODE_V)[0])


def _run(uc: Uc, code: bytes, pages: int, iters: int) -> float:
    uc.reg_write(UC_X86_REG_RDI, DATA_V)
    uc.reg_write(UC_X86_REG_RSI, PAGE)
    uc.reg_write(UC_X86_REG_R8, pages)
    uc.reg_write(UC_X86_REG_RCX, iters)
    # CPU time of this process, not wall time: the guest runs on this thread only, and on
    # a shared machine wall time mostly measures the neighbours
    t = time.process_time()
    uc.emu_start(CODE_V, CODE_V + len(code) - 1)
    return time.process_time() - t


def _bare(code: bytes, pages: int) -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE_V, 0x10000, UC_PROT_ALL)
    uc.mem_write(CODE_V, code)
    uc.mem_map(DATA_V, pages * PAGE, UC_PROT_READ | UC_PROT_WRITE)
    return uc


def _managed(code: bytes, pages: int) -> Uc:
    return _manager(code, pages).uc


def _manager(code: bytes, pages: int) -> MemoryManager:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mm = MemoryManager(uc)
    mm.allocate(0x10000, C.PAGE_EXECUTE_READ, address=CODE_V)
    mm.write(CODE_V, code)
    mm.allocate(pages * PAGE, C.PAGE_READWRITE, address=DATA_V)
    return mm


def guest(pages_list: tuple[int, ...], instructions: int, repeat: int) -> list[dict[str, float]]:
    """10M-instruction loop over N pages, manager attached vs bare Unicorn.

    cold = first run on a fresh CPU; warm = a rerun; after rollback = the first run after
    ``mm.rollback()`` to a checkpoint taken before the first run (bare: ``context_restore``
    and the data rewritten with ``mem_write``, untimed, then the run). Misses per page and
    the time they add per miss, ``(cold - warm) / misses``, come from the manager's MMU.
    """
    code = _code()
    iters = instructions // LOOP_INSNS
    rows = []
    for pages in pages_list:
        def cold_bare(pages: int = pages) -> float:
            return _run(_bare(code, pages), code, pages, iters)

        misses: dict[str, list[int]] = {"cold": [], "refills": [], "rollback": []}

        def cold_mm(pages: int = pages, misses: dict[str, list[int]] = misses) -> float:
            mm = _manager(code, pages)
            t = _run(mm.uc, code, pages, iters)
            misses["cold"].append(mm.mmu.misses)
            misses["refills"].append(mm.mmu.refills)
            return t

        def warm(make: Callable[[bytes, int], Uc], pages: int = pages) -> float:
            uc = make(code, pages)
            _run(uc, code, pages, iters)
            return _run(uc, code, pages, iters)

        def rollback_bare(pages: int = pages) -> float:
            uc = _bare(code, pages)
            ctx = uc.context_save()
            _run(uc, code, pages, iters)
            uc.context_restore(ctx)
            uc.mem_write(DATA_V, bytes(pages * PAGE))
            return _run(uc, code, pages, iters)

        def rollback_mm(pages: int = pages, misses: dict[str, list[int]] = misses) -> float:
            mm = _manager(code, pages)
            cp = mm.checkpoint()
            _run(mm.uc, code, pages, iters)
            mm.rollback(cp)
            before = mm.mmu.misses
            t = _run(mm.uc, code, pages, iters)
            misses["rollback"].append(mm.mmu.misses - before)
            return t

        row: dict[str, float] = {
            "pages": pages,
            "bare_cold_s": median_of(cold_bare, repeat),
            "mm_cold_s": median_of(cold_mm, repeat),
            "bare_warm_s": median_of(lambda: warm(_bare), repeat),
            "mm_warm_s": median_of(lambda: warm(_managed), repeat),
            "bare_rollback_s": median_of(rollback_bare, repeat),
            "mm_rollback_s": median_of(rollback_mm, repeat),
        }
        row["cold_ratio"] = row["mm_cold_s"] / row["bare_cold_s"]
        row["warm_ratio"] = row["mm_warm_s"] / row["bare_warm_s"]
        row["rollback_ratio"] = row["mm_rollback_s"] / row["bare_rollback_s"]
        cold_misses = statistics.median(misses["cold"])
        row["misses_per_page"] = cold_misses / pages
        row["slow_fills_per_page"] = (cold_misses - statistics.median(misses["refills"])) / pages
        row["us_per_miss"] = (row["mm_cold_s"] - row["mm_warm_s"]) / cold_misses * 1e6
        rb_misses = statistics.median(misses["rollback"])
        row["rollback_misses_per_page"] = rb_misses / pages
        row["rollback_us_per_miss"] = (
            (row["mm_rollback_s"] - row["mm_warm_s"]) / rb_misses * 1e6 if rb_misses else 0.0
        )
        rows.append(row)
    return rows


def run(quick: bool = False, bookkeeping_too: bool = True) -> dict[str, object]:
    """``bookkeeping_too=False``: guest execution only (``run_all`` measures the allocation
    workloads, the 64 KiB one included, through ``peers/emulator_mem_driver.py``)."""
    out: dict[str, object] = {}
    if bookkeeping_too:
        live = (1000, 10000) if quick else (1000, 10000, 100000)
        book = bookkeeping(live, ops=500 if quick else 2000, repeat=3)
        first, last = book[0], book[-1]
        out["bookkeeping"] = book
        out["growth"] = {op: first[op] / last[op] for op in ("alloc", "query", "protect", "free")}
    out["guest"] = guest((16, 16384), 2_000_000 if quick else 10_000_000, repeat=3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke)")
    parser.add_argument("--guest", action="store_true", help="guest execution only")
    args = parser.parse_args()
    res = run(args.quick, bookkeeping_too=not args.guest)
    for g in res["guest"]:  # type: ignore[attr-defined]
        print(f"  {g['pages']:>6} pages: cold {g['cold_ratio']:.2f}x, after rollback "
              f"{g['rollback_ratio']:.2f}x, warm {g['warm_ratio']:.2f}x; misses/page cold "
              f"{g['misses_per_page']:.2f} (slow {g['slow_fills_per_page']:.2f}), "
              f"{g['us_per_miss']:.2f} us/miss; after rollback "
              f"{g['rollback_misses_per_page']:.2f}/page, {g['rollback_us_per_miss']:.2f} us/miss")
    if args.guest:
        return
    print("bookkeeping (ops/s, median of 3 batches; 64 KiB allocations)")
    print(f"{'live':>8} {'alloc':>9} {'query':>9} {'protect':>9} {'free':>9} {'uc regions':>11}")
    for r in res["bookkeeping"]:  # type: ignore[attr-defined]
        print(f"{r['live']:>8} {r['alloc']:>9.0f} {r['query']:>9.0f} {r['protect']:>9.0f} "
              f"{r['free']:>9.0f} {r['unicorn_regions']:>11}")
    print("per-op cost growth, largest vs 1k live (target <= 1.3x):",
          ", ".join(f"{k} {v:.2f}x" for k, v in res["growth"].items()))  # type: ignore[attr-defined]
    print("guest loop, manager vs bare Unicorn (target warm <= 1.0x)")
    for g in res["guest"]:  # type: ignore[attr-defined]
        print(f"  {g['pages']:>6} pages: cold {g['mm_cold_s']*1e3:7.1f} ms vs {g['bare_cold_s']*1e3:7.1f} ms "
              f"= {g['cold_ratio']:.2f}x | warm {g['mm_warm_s']*1e3:7.1f} ms vs "
              f"{g['bare_warm_s']*1e3:7.1f} ms = {g['warm_ratio']:.2f}x")


if __name__ == "__main__":
    main()
