"""The hook plugins in hooks/ (tracer, access_log, devices) and how the runner finds them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem import MemoryManager  # noqa: E402
from emulator_mem.errors import RunnerError  # noqa: E402
from emulator_mem.runner import Process  # noqa: E402
from emulator_mem.runner.plugins import install_plugin, load_plugin, parse_spec  # noqa: E402
from emulator_mem.win32 import Kernel32  # noqa: E402
from samples import build  # noqa: E402

PAGE_READWRITE = 0x04
PAGE_EXECUTE_READ = 0x20
FILE_MAP_WRITE = 0x02
FILE_MAP_READ = 0x04
MEM_MAPPED = 0x40000


def run32(mm: MemoryManager, asm: str) -> None:
    """Assemble ``asm`` into fresh executable memory and run it to its end."""
    code = bytes(Ks(KS_ARCH_X86, KS_MODE_32).asm(asm, 0)[0])
    base = mm.allocate(0x1000, PAGE_READWRITE)
    mm.write(base, code)
    mm.protect(base, 0x1000, PAGE_EXECUTE_READ)
    mm.uc.emu_start(base, base + len(code))


# -- loading -------------------------------------------------------------------------------
def test_plugins_load_by_name_path_and_search_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_plugin("tracer").__name__ == "hooks.tracer"
    own = tmp_path / "counting.py"
    own.write_text("class H:\n    def remove(self):\n        pass\n"
                   "def install(uc, mm, **options):\n    return H()\n")
    assert callable(load_plugin(str(own)).install)
    monkeypatch.setenv("EMULATOR_MEM_HOOKS", str(tmp_path))
    assert load_plugin("counting").install is not None
    with pytest.raises(RunnerError, match="no hook plugin named 'nope'"):
        load_plugin("nope")


def test_hook_specs_parse_options() -> None:
    assert parse_spec("tracer") == ("tracer", {})
    assert parse_spec("access_log:start=0x1000,size=16,path=x.txt") == (
        "access_log", {"start": 0x1000, "size": 16, "path": "x.txt"})
    with pytest.raises(RunnerError):
        parse_spec("tracer:oops")


# -- tracer --------------------------------------------------------------------------------
def test_tracer_writes_symbolised_disassembly(tmp_path: Path) -> None:
    process = Process.load_file(build.BIN / "hello32.exe")
    trace = tmp_path / "trace.txt"
    handle = process.install_hook("tracer", path=str(trace))
    assert process.run().exit_code == 0
    handle.remove()
    lines = trace.read_text().splitlines()
    assert lines[0].startswith("00401000  hello32.exe!entry")
    assert lines[0].endswith("push 0x402000")
    assert any("call dword ptr [0x403000]  ; __imp_kernel32.dll!ExitProcess" in line for line in lines)
    assert any(" kernel32.dll!WriteFile " in line and line.endswith("ret 0x14") for line in lines)
    # ExitProcess stops the CPU inside the stub hook, before later hooks see the stub
    assert lines[-1].endswith("call dword ptr [0x403000]  ; __imp_kernel32.dll!ExitProcess")


def test_tracer_limit_and_removal(tmp_path: Path) -> None:
    process = Process.load_file(build.BIN / "hello64.exe")
    trace = tmp_path / "trace.txt"
    handle = process.install_hook("tracer", path=str(trace), limit=5)
    process.run(max_instructions=50)
    handle.remove()
    assert len(trace.read_text().splitlines()) == 5
    assert "rip + 0x" in trace.read_text()  # 64-bit: RIP-relative operands


# -- access log ----------------------------------------------------------------------------
def test_access_log_reports_heap_writes_at_virtual_addresses(tmp_path: Path) -> None:
    process = Process.load_file(build.BIN / "heap64.exe")
    log = tmp_path / "log.txt"
    handle = process.install_hook("access_log", region="process heap", path=str(log), reads=0)
    process.run()
    handle.remove()
    heap = process.heap
    assert heap is not None
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("W ") for line in lines)
    addresses = [int(line.split()[1], 16) for line in lines]
    assert all(heap.base <= a < heap.base + heap.reserve for a in addresses)
    assert "value=0x6b" in log.read_text()  # 'k' of "kept across HeapReAlloc"


def test_access_log_maps_a_second_view_back_to_its_virtual_address(tmp_path: Path) -> None:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    mm = MemoryManager(uc)
    k32 = Kernel32(mm)
    section = k32.CreateFileMapping(0xFFFFFFFF, PAGE_READWRITE, 0, 0x10000)
    first = k32.MapViewOfFile(section, FILE_MAP_WRITE, 0, 0, 0)
    second = k32.MapViewOfFile(section, FILE_MAP_READ, 0, 0, 0)
    assert mm.query(second).Type == MEM_MAPPED
    log = tmp_path / "log.txt"
    handle = install_plugin("access_log", uc, mm, start=second, size=0x100, path=str(log))
    run32(mm, f"mov dword ptr [{first:#x} + 8], 0x11223344\nmov eax, dword ptr [{second:#x} + 8]")
    handle.remove()
    lines = [line.split()[:4] for line in log.read_text().splitlines()]
    # hooks see physical pages: the write through the *first* view hits the same page
    assert lines == [["W", f"{second + 8:#x}", "size=4", "value=0x11223344"],
                     ["R", f"{second + 8:#x}", "size=4", "value=0x11223344"]]


# -- devices -------------------------------------------------------------------------------
def test_uart_and_tick_counter_over_mmio() -> None:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    mm = MemoryManager(uc)
    sent: list[bytes] = []
    uart = install_plugin("devices", uc, mm, device="uart", output=sent.append)
    ticks = install_plugin("devices", uc, mm, device="ticks", address=0x7FFD0000)
    assert ticks.base == 0x7FFD0000  # type: ignore[attr-defined]
    base = uart.base  # type: ignore[attr-defined]
    run32(mm, f"""
        mov edi, {base:#x}
        movzx ebx, byte ptr [edi + 5]
        mov byte ptr [edi], 0x48
        mov byte ptr [edi], 0x69
        mov esi, 0x7FFD0000
        mov eax, dword ptr [esi]
        mov ecx, dword ptr [esi]
    """)
    assert b"".join(sent) == b"Hi"
    from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX

    assert uc.reg_read(UC_X86_REG_EBX) == 0x60  # LSR: ready
    assert (uc.reg_read(UC_X86_REG_EAX), uc.reg_read(UC_X86_REG_ECX)) == (0, 1)
    mbi = mm.query(base)
    assert (mbi.Type, mbi.Protect) == (MEM_MAPPED, PAGE_READWRITE)
    uart.remove()
    ticks.remove()
    assert mm.allocation_at(base) is None


def test_unknown_device_kind_is_refused() -> None:
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_32))
    with pytest.raises(RunnerError, match="no device kind 'dma'"):
        install_plugin("devices", mm.uc, mm, device="dma")
