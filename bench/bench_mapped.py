"""Benchmarks for mapped regions: MMIO dispatch and write-watch first-touch cost.

Not a test; ratios measured in one run (median of several repetitions):

* MMIO: guest loads/stores per second to a manager MMIO region vs the same loop against a
  raw ``uc.mmio_map`` range on bare Unicorn (target: within 1.5x);
* write watch: a guest loop writing every page of a 16 MiB region, watched vs unwatched —
  the first pass shows the first-touch cost per page (one TLB write miss each), later passes
  the steady state (target ≤ 1.05x).

    .venv/bin/python bench/bench_mapped.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_RCX, UC_X86_REG_RDI, UC_X86_REG_RSI

from emulator_mem import MemoryManager
from emulator_mem import constants as C

CODE = 0x400000
MMIO_LOOP = """
top:
  mov dword ptr [rdi], ecx
  mov eax, dword ptr [rdi + 4]
  dec rcx
  jnz top
  nop
"""
WRITE_LOOP = """
outer:
  mov rdx, rdi
  mov r8, rsi
inner:
  mov qword ptr [rdx], rcx
  add rdx, 0x1000
  dec r8
  jnz inner
  dec rcx
  jnz outer
  nop
"""


def _asm(src: str) -> bytes:
    return bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(src, CODE)[0])


def _timed(uc: Uc, code: bytes) -> float:
    t = time.process_time()  # CPU time: the machine is shared, wall time carries the neighbours
    uc.emu_start(CODE, CODE + len(code) - 1)
    return time.process_time() - t


def mmio(accesses: int, repeat: int) -> dict[str, float]:
    code = _asm(MMIO_LOOP)
    iters = accesses // 2
    regs = {"value": 0}

    def read(offset: int, size: int) -> int:
        return regs["value"]

    def write(offset: int, size: int, value: int) -> None:
        regs["value"] = value

    def raw() -> float:
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(CODE, 0x10000, UC_PROT_ALL)
        uc.mem_write(CODE, code)
        uc.mmio_map(0x10000000, 0x1000, lambda u, o, s, d: read(o, s), None,
                    lambda u, o, s, v, d: write(o, s, v), None)
        uc.reg_write(UC_X86_REG_RDI, 0x10000000)
        uc.reg_write(UC_X86_REG_RCX, iters)
        return _timed(uc, code)

    def managed() -> float:
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        mm = MemoryManager(uc)
        mm.allocate(0x10000, C.PAGE_EXECUTE_READ, address=CODE)
        mm.write(CODE, code)
        dev = mm.allocate_mmio(None, 0x1000, read, write)
        uc.reg_write(UC_X86_REG_RDI, dev)
        uc.reg_write(UC_X86_REG_RCX, iters)
        return _timed(uc, code)

    t_raw = statistics.median(raw() for _ in range(repeat))
    t_mm = statistics.median(managed() for _ in range(repeat))
    return {"accesses": accesses, "raw_per_s": accesses / t_raw, "mm_per_s": accesses / t_mm,
            "ratio": t_mm / t_raw}


def write_watch(mib: int, passes: int, repeat: int) -> dict[str, float]:
    code = _asm(WRITE_LOOP)
    pages = mib * 256

    def setup(watch: bool) -> tuple[Uc, MemoryManager, int]:
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        mm = MemoryManager(uc)
        mm.allocate(0x10000, C.PAGE_EXECUTE_READ, address=CODE)
        mm.write(CODE, code)
        buf = mm.allocate(mib << 20, C.PAGE_READWRITE, write_watch=watch)
        mm.read(buf, 1)
        return uc, mm, buf

    def one(watch: bool) -> tuple[float, float]:
        uc, mm, buf = setup(watch)
        uc.reg_write(UC_X86_REG_RDI, buf)
        uc.reg_write(UC_X86_REG_RSI, pages)
        uc.reg_write(UC_X86_REG_RCX, 1)
        first = _timed(uc, code)
        uc.reg_write(UC_X86_REG_RCX, 2)
        _timed(uc, code)  # let the TLB finish growing (see mmu.py) before timing steady state
        uc.reg_write(UC_X86_REG_RCX, passes)
        steady = _timed(uc, code)
        if watch and len(mm.get_write_watch(buf, mib << 20)) != pages:
            raise RuntimeError("write watch missed pages")
        return first, steady

    plain: list[tuple[float, float]] = []
    watched: list[tuple[float, float]] = []
    for _ in range(repeat):  # interleaved, so a change in the machine's load hits both alike
        plain.append(one(False))
        watched.append(one(True))
    p_first = statistics.median(f for f, _ in plain)
    w_first = statistics.median(f for f, _ in watched)
    p_steady = statistics.median(s for _, s in plain)
    w_steady = statistics.median(s for _, s in watched)
    return {
        "mib": mib,
        "first_touch_us_per_page_watched": w_first / pages * 1e6,
        "first_touch_us_per_page_plain": p_first / pages * 1e6,
        "first_touch_extra_us_per_page": (w_first - p_first) / pages * 1e6,
        "steady_ratio": w_steady / p_steady,
    }


def run(quick: bool = False) -> dict[str, dict[str, float]]:
    return {
        "mmio": mmio(100_000 if quick else 400_000, 3),
        "write_watch": write_watch(4 if quick else 16, 50 if quick else 2000, 5),
    }


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    res = run(parser.parse_args().quick)
    m, w = res["mmio"], res["write_watch"]
    print(f"MMIO: manager {m['mm_per_s']:,.0f} accesses/s vs raw uc.mmio_map {m['raw_per_s']:,.0f}/s "
          f"= {m['ratio']:.2f}x the time (target <= 1.5x)")
    print(f"write watch on {w['mib']} MiB: first touch {w['first_touch_us_per_page_watched']:.2f} us/page "
          f"(unwatched {w['first_touch_us_per_page_plain']:.2f}); steady state {w['steady_ratio']:.3f}x "
          f"unwatched (target <= 1.05x)")


if __name__ == "__main__":
    main()
