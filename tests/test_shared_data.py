"""KUSER_SHARED_DATA at 0x7FFE0000 in runner processes.

Oracles: the Windows layout (ntddk.h / Wine's wdm.h offsets, written out here as literals),
Windows' VirtualQuery of the page (one committed PAGE_READONLY MEM_PRIVATE page), the CPUID
the guest itself executes on Unicorn's CPU (ProcessorFeatures must agree with it), and
GetTickCount's formula ``(TickCountQuad * TickCountMultiplier) >> 24``.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem.runner import Process  # noqa: E402
from emulator_mem.runner.shared_data import processor_feature_present, tick_count  # noqa: E402
from samples import build  # noqa: E402

KUSER = 0x7FFE0000
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_FREE = 0x10000
MEM_PRIVATE = 0x20000
MEM_TOP_DOWN = 0x100000
STATUS_ACCESS_VIOLATION = 0xC0000005


def payload(bits: int, code: str, imports: str = "ExitProcess") -> Process:
    text = f"; bits: {bits}\n; import kernel32.dll: {imports}\nsection .text\n{code}\n"
    return Process.load(build.build_text(text, "test.asm"), "test.exe")


def dword(process: Process, offset: int) -> int:
    return int(struct.unpack("<I", process.mm.read(KUSER + offset, 4))[0])


@pytest.mark.parametrize("bits", [32, 64])
def test_page_is_one_readonly_private_page(bits: int) -> None:
    process = payload(bits, "mov eax, 0\nret")
    info = process.k32.VirtualQuery(KUSER + 0x123)
    assert info is not None
    assert (info.BaseAddress, info.AllocationBase, info.AllocationProtect, info.RegionSize,
            info.State, info.Protect, info.Type) == (
        KUSER, KUSER, PAGE_READONLY, 0x1000, MEM_COMMIT, PAGE_READONLY, MEM_PRIVATE)


@pytest.mark.parametrize("bits", [32, 64])
def test_guest_reads_the_version_and_cannot_write(bits: int) -> None:
    # NtMajorVersion (0x26C) * 256 + NtMinorVersion (0x270) + NtProductType (0x264) * 65536
    src = "rcx" if bits == 64 else "ecx"
    code = f"""
    mov {src}, {KUSER}
    mov eax, dword ptr [{src} + 0x26c]
    shl eax, 8
    add eax, dword ptr [{src} + 0x270]
    mov edx, dword ptr [{src} + 0x264]
    shl edx, 16
    add eax, edx
    ret
    """
    assert payload(bits, code).run().exit_code == 10 << 8 | 0 | 1 << 16
    result = payload(bits, f"mov {src}, {KUSER}\nmov dword ptr [{src}], 1\nret").run()
    assert result.exit_code == STATUS_ACCESS_VIOLATION
    assert result.exception is not None and result.exception.information == [1, KUSER]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize(("feature", "leaf", "reg", "bit"), [
    (3, 1, "edx", 23),  # PF_MMX_INSTRUCTIONS_AVAILABLE
    (6, 1, "edx", 25),  # PF_XMMI_INSTRUCTIONS_AVAILABLE (SSE)
    (10, 1, "edx", 26),  # PF_XMMI64_INSTRUCTIONS_AVAILABLE (SSE2)
    (13, 1, "ecx", 0),  # PF_SSE3_INSTRUCTIONS_AVAILABLE
    (14, 1, "ecx", 13),  # PF_COMPARE_EXCHANGE128
    (36, 1, "ecx", 9),  # PF_SSSE3_INSTRUCTIONS_AVAILABLE
    (38, 1, "ecx", 20),  # PF_SSE4_2_INSTRUCTIONS_AVAILABLE
    (39, 1, "ecx", 28),  # PF_AVX_INSTRUCTIONS_AVAILABLE
    (12, 0x80000001, "edx", 20),  # PF_NX_ENABLED
])
def test_processor_features_agree_with_the_guests_cpuid(
    bits: int, feature: int, leaf: int, reg: str, bit: int
) -> None:
    """The guest executes CPUID itself; the page's byte must say the same."""
    code = f"""
    push {'rbx' if bits == 64 else 'ebx'}
    mov eax, {leaf}
    xor ecx, ecx
    cpuid
    mov eax, {reg}
    shr eax, {bit}
    and eax, 1
    pop {'rbx' if bits == 64 else 'ebx'}
    ret
    """
    process = payload(bits, code)
    has = process.run().exit_code
    assert has in (0, 1)
    assert process.mm.read(KUSER + 0x274 + feature, 1)[0] == has
    assert processor_feature_present(process.mm, feature) is bool(has)
    assert processor_feature_present(process.mm, 23) is True  # PF_FASTFAIL_AVAILABLE
    assert processor_feature_present(process.mm, 64) is False  # out of range


def clock_loop(bits: int, iterations: int) -> str:
    """Guest code: InterruptTime's low dword after a loop minus before it, in eax."""
    src = "rsi" if bits == 64 else "esi"
    return f"""
    mov {src}, {KUSER}
    mov edi, dword ptr [{src} + 8]
    mov ecx, {iterations}
again:
    dec ecx
    jnz again
    mov eax, dword ptr [{src} + 8]
    sub eax, edi
    ret
    """


@pytest.mark.parametrize("bits", [32, 64])
def test_the_clock_does_not_depend_on_how_the_run_is_cut_into_chunks(bits: int) -> None:
    """A run in short chunks (as while a report is recorded) reads what a plain run reads:
    time steps every 1,000,000 instructions (10 ms), whatever the chunk size."""
    seen = {chunk: payload(bits, clock_loop(bits, 1_100_000)).run(chunk=chunk).exit_code
            for chunk in (1_000_000, 4096, 1000)}  # 2.2M instructions in the loop
    assert set(seen.values()) == {2 * 1_000_000 * 10 // 100}, seen  # two 10 ms steps, in 100 ns


@pytest.mark.parametrize("bits", [32, 64])
def test_time_advances_with_the_guest(bits: int) -> None:
    """InterruptTime (0x8, 100 ns units) read twice by the guest around a loop: it moves,
    and SystemTime (0x14) moves with it; GetTickCount's formula gives milliseconds."""
    process = payload(bits, clock_loop(bits, 600_000))
    assert dword(process, 0x4) == 0x0FA00000  # TickCountMultiplier
    start_interrupt = dword(process, 0x8)
    start_system = dword(process, 0x14)
    result = process.run(chunk=1000)
    elapsed = result.exit_code
    assert elapsed is not None and 0 < elapsed < 0x10000000
    interrupt = dword(process, 0x8) - start_interrupt
    system = dword(process, 0x14) - start_system
    assert interrupt == system > 0
    quad = struct.unpack("<Q", process.mm.read(KUSER + 0x320, 8))[0]
    ms = struct.unpack("<Q", process.mm.read(KUSER + 0x8, 8))[0] // 10_000
    assert tick_count(process.mm) == quad * 0x0FA00000 >> 24
    assert ms - 16 <= tick_count(process.mm) <= ms  # whole 15.625 ms ticks


def test_32bit_top_down_lands_below_the_page() -> None:
    process = payload(32, "mov eax, 0\nret")
    k32 = process.k32
    got = k32.VirtualAlloc(0, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
    assert got and got + 0x1000 <= KUSER
    # and it is the highest free granule: every granule above it up to the page is taken
    for granule in range(got + 0x10000, KUSER, 0x10000):
        assert process.mm.query(granule).State != MEM_FREE
    assert process.mm.query(KUSER).State == MEM_COMMIT
