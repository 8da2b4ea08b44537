"""Whole-process snapshots: the runner's own state travels inside the snapshot file (as an
extra record) without touching the guest's address space; devices are re-attached with
their state; a snapshot without runner state is refused clearly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem import MemoryManager  # noqa: E402
from emulator_mem.errors import RunnerError  # noqa: E402
from emulator_mem.runner import Process  # noqa: E402
from emulator_mem.runner.persist import STATE_EXTRA, read_runner_state  # noqa: E402
from emulator_mem.snapshot import save_snapshot, snapshot_info  # noqa: E402
from samples import build  # noqa: E402


def test_runner_state_is_an_extra_of_the_file_not_guest_memory(tmp_path: Path) -> None:
    process = Process.load_file(build.BIN / "heap64.exe")
    process.run(max_instructions=2000)
    before = process.mm.reserved_regions()
    process.save(tmp_path / "p.snap")
    assert process.mm.reserved_regions() == before
    assert STATE_EXTRA in snapshot_info(tmp_path / "p.snap")["extras"]
    restored = Process.resume(tmp_path / "p.snap")
    assert restored.mm.reserved_regions() == before
    assert restored.instructions == process.instructions == 2000
    assert restored.image_name == "heap64.exe"


def test_resumed_process_has_the_same_registers_heap_and_last_error(tmp_path: Path) -> None:
    process = Process.load_file(build.BIN / "vmem64.exe")
    process.run(max_instructions=3000, chunk=100)
    process.save(tmp_path / "v.snap")
    restored = Process.resume(tmp_path / "v.snap")
    assert restored.abi.pc(restored.uc) == process.abi.pc(process.uc)
    assert restored.abi.sp(restored.uc) == process.abi.sp(process.uc)
    assert restored.k32.GetLastError() == process.k32.GetLastError()
    assert restored.heap is not None and process.heap is not None
    assert dict(restored.heap.blocks) == dict(process.heap.blocks)
    assert restored.console.stdout == process.console.stdout
    assert restored.run().exit_code == process.run().exit_code == 0
    assert restored.console.stdout == process.console.stdout


def test_devices_come_back_with_their_state(tmp_path: Path) -> None:
    process = Process.load_file(build.BIN / "uart64.exe")
    ticks = next(d for d in process.devices if d.kind == "ticks")
    ticks.handle.device.count = 41
    process.save(tmp_path / "u.snap")
    state = read_runner_state(tmp_path / "u.snap")
    assert [d["kind"] for d in state["devices"]] == ["uart", "ticks"]
    restored = Process.resume(tmp_path / "u.snap")
    again = next(d for d in restored.devices if d.kind == "ticks")
    assert again.base == ticks.base and again.handle.device.count == 41
    out = restored.run()
    assert out.stdout == (build.EXPECTED / "uart64.txt").read_bytes()
    assert again.handle.device.count == 44  # three reads


def test_a_plain_manager_snapshot_is_not_a_process(tmp_path: Path) -> None:
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_32))
    mm.allocate(0x1000, 0x04)
    save_snapshot(mm, tmp_path / "bare.snap")
    with pytest.raises(RunnerError, match="not written by the runner"):
        Process.resume(tmp_path / "bare.snap")
