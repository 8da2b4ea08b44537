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
import time
from collections.abc import Callable

from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, UC_PROT_READ, UC_PROT_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_R8, UC_X86_REG_RCX, UC_X86_REG_RDI, UC_X86_REG_RSI

from emulator_mem import MemoryManager
from emulator_mem import constants as C

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
    t = time.perf_counter()
    uc.emu_start(CODE_V, CODE_V + len(code) - 1)
    return time.perf_counter() - t


def _bare(code: bytes, pages: int) -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE_V, 0x10000, UC_PROT_ALL)
    uc.mem_write(CODE_V, code)
    uc.mem_map(DATA_V, pages * PAGE, UC_PROT_READ | UC_PROT_WRITE)
    return uc


def _managed(code: bytes, pages: int) -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    mm = MemoryManager(uc)
    mm.allocate(0x10000, C.PAGE_EXECUTE_READ, address=CODE_V)
    mm.write(CODE_V, code)
    mm.allocate(pages * PAGE, C.PAGE_READWRITE, address=DATA_V)
    return uc


def guest(pages_list: tuple[int, ...], instructions: int, repeat: int) -> list[dict[str, float]]:
    """10M-instruction loop over N pages: cold = first run on a fresh CPU, warm = a rerun."""
    code = _code()
    iters = instructions // LOOP_INSNS
    rows = []
    for pages in pages_list:
        def cold(make: Callable[[bytes, int], Uc], pages: int = pages) -> float:
            return _run(make(code, pages), code, pages, iters)

        def warm(make: Callable[[bytes, int], Uc], pages: int = pages) -> float:
            uc = make(code, pages)
            _run(uc, code, pages, iters)
            return _run(uc, code, pages, iters)

        row = {
            "pages": pages,
            "bare_cold_s": median_of(lambda: cold(_bare), repeat),
            "mm_cold_s": median_of(lambda: cold(_managed), repeat),
            "bare_warm_s": median_of(lambda: warm(_bare), repeat),
            "mm_warm_s": median_of(lambda: warm(_managed), repeat),
        }
        row["cold_ratio"] = row["mm_cold_s"] / row["bare_cold_s"]
        row["warm_ratio"] = row["mm_warm_s"] / row["bare_warm_s"]
        rows.append(row)
    return rows


def run(quick: bool = False) -> dict[str, object]:
    live = (1000, 10000) if quick else (1000, 10000, 100000)
    book = bookkeeping(live, ops=500 if quick else 2000, repeat=3)
    first, last = book[0], book[-1]
    growth = {op: first[op] / last[op] for op in ("alloc", "query", "protect", "free")}
    exe = guest((16, 16384), 2_000_000 if quick else 10_000_000, repeat=3)
    return {"bookkeeping": book, "growth": growth, "guest": exe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke)")
    args = parser.parse_args()
    res = run(args.quick)
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
