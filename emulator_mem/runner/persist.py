"""Snapshots of a whole process: :mod:`emulator_mem.snapshot` plus the runner's own state.

``save_snapshot``/``load_snapshot`` restore memory and registers. What else a process needs
is small: where the TEB/PEB/stack/heap/stubs are, which function each stub slot stands for,
the MMIO devices and their state, the console output so far, the instruction count and exit
state, and the exception dispatcher's (vectored handlers, the unhandled filter, dispatches
in progress — a snapshot taken inside a handler resumes there). The heap needs nothing
extra (its headers are in guest memory, :mod:`.heap`), the last error lives in
TEB.LastErrorValue, and the console handles are constants.

That state travels in the snapshot file itself, as the JSON *extra* named
``"emulator-mem.runner"`` (``save_snapshot(..., extras=)``): covered by the file's checksum,
readable without loading the memory (:func:`read_runner_state`), and invisible to the guest.

MMIO devices are re-attached by name, as the snapshot module requires: the state lists the
devices, one object of each kind is created from ``hooks/devices.py`` and passed as
``devices={kind: (read, write)}`` to ``load_snapshot``; then each gets its saved state back
and is adopted at its restored address.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc

from ..errors import RunnerError
from ..manager import MemoryManager
from ..snapshot.file import load_snapshot, save_snapshot, snapshot_extras
from .api import ApiSpec
from .console import Console, Sink
from .devices import device_objects
from .environment import ThreadEnvironment
from .exceptions import ExceptionDispatcher
from .guest import DeviceRecord, GuestProcess
from .heap import ProcessHeap
from .report import GuestException
from .stubs import EXIT_SPEC, StubTable


class SavedProcess(GuestProcess, Protocol):
    """The runner state a snapshot carries besides guest memory (a loaded ``Process``)."""

    image_base: int
    entry_point: int
    env: ThreadEnvironment | None
    stubs: StubTable | None
    instructions: int
    exit_code: int | None
    exception: GuestException | None
    exceptions: ExceptionDispatcher

    def dispatch(self, spec: ApiSpec) -> None:
        """Run the handler of the stub the CPU reached (installed on the stub hook)."""
        ...


P = TypeVar("P", bound=SavedProcess)

STATE_EXTRA = "emulator-mem.runner"
#: 2: the guest runs at CPL 3 (a GDT in both modes, ring-3 CS/SS); version 1 ran it at CPL 0
STATE_VERSION = 2


# -- the state record ----------------------------------------------------------------------
def runner_state(process: SavedProcess) -> dict[str, Any]:
    """Everything the runner keeps outside guest memory, as JSON-ready data."""
    if process.env is None or process.heap is None or process.stubs is None:
        raise RunnerError("only a loaded process can be saved")
    return {
        "version": STATE_VERSION,
        "bits": 64 if process.mm.is_64bit else 32,
        "image": {"name": process.image_name, "base": process.image_base, "entry": process.entry_point},
        "environment": process.env.to_json(),
        "heap": process.heap.handle,
        "stubs": process.stubs.to_json(),
        "devices": [
            {"kind": d.kind, "name": d.name, "base": d.base,
             "state": d.handle.device.state() if d.handle is not None else {}}
            for d in process.devices
        ],
        "console": {"stdout": base64.b64encode(bytes(process.console.stdout)).decode(),
                    "stderr": base64.b64encode(bytes(process.console.stderr)).decode()},
        "instructions": process.instructions,
        "exit_code": process.exit_code,
        "exception": None if process.exception is None else process.exception.to_json(),
        "exceptions": process.exceptions.to_json(),
    }


def _decode_state(extras: dict[str, bytes]) -> dict[str, Any]:
    raw = extras.get(STATE_EXTRA)
    if raw is None:
        raise RunnerError("this snapshot was not written by the runner (no runner state)")
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise RunnerError(f"the runner state in this snapshot is damaged: {exc}") from None
    if not isinstance(state, dict):
        raise RunnerError("unsupported runner state version")
    if state.get("version") != STATE_VERSION:
        raise RunnerError(f"unsupported runner state version {state.get('version')!r} (this runner "
                          f"writes and reads {STATE_VERSION}; version 1 ran the guest at CPL 0)")
    return state


# -- save / load ---------------------------------------------------------------------------
def save_process(process: SavedProcess, path: str | Path) -> None:
    state = json.dumps(runner_state(process), sort_keys=True).encode()
    save_snapshot(process.mm, path, extras={STATE_EXTRA: state})


def load_process(cls: Callable[[Uc, MemoryManager, Console], P], path: str | Path, *,
                 stdout: Sink | None = None, stderr: Sink | None = None) -> P:
    """A new process (new CPU, new manager) restored from ``path``."""
    state = read_runner_state(path)
    uc = Uc(UC_ARCH_X86, UC_MODE_64 if state["bits"] == 64 else UC_MODE_32)
    mm = MemoryManager(uc)
    console = Console(stdout, stderr)
    process = cls(uc, mm, console)
    module, devices = device_objects(console, [d["kind"] for d in state["devices"]])
    extras = load_snapshot(mm, path, devices={k: (d.read, d.write) for k, d in devices.items()})
    restore_state(process, _decode_state(extras), module, devices)
    return process


def restore_state(process: SavedProcess, state: dict[str, Any], module: Any, devices: dict[str, Any]) -> None:
    """Rebuild the runner's side of ``process`` from a state record (memory already loaded)."""
    mm = process.mm
    image = state["image"]
    process.image_name, process.image_base, process.entry_point = image["name"], image["base"], image["entry"]
    process.env = ThreadEnvironment.from_json(state["environment"])
    process.heap = ProcessHeap.attach(mm, int(state["heap"]))
    process.stubs = StubTable.from_json(state["stubs"], EXIT_SPEC)
    process.stubs.install(process.uc, process.dispatch)
    for record in state["devices"]:
        device = devices.get(record["kind"])
        if device is None or module is None:
            raise RunnerError(f"the snapshot uses a {record['kind']!r} device that hooks/devices.py lacks")
        device.restore(record["state"])
        handle = module.adopt(mm, device, int(record["base"]))
        process.devices.append(DeviceRecord(record["kind"], record["name"], int(record["base"]), handle))
    process.console.stdout[:] = base64.b64decode(state["console"]["stdout"])
    process.console.stderr[:] = base64.b64decode(state["console"]["stderr"])
    process.instructions = int(state["instructions"])
    process.exit_code = state["exit_code"]
    exc = state["exception"]
    if exc is not None:
        process.exception = GuestException(
            exc["code"], exc["address"], list(exc["information"]), exc["instruction"],
            exc["location"], dict(exc["registers"]), mm.is_64bit)
    process.exceptions.restore(state.get("exceptions", {}))
    process.k32.SetLastError(process.env.load_last_error(mm))
    process.env.enter_user_mode(process.uc, mm)  # the snapshot left the CPU at CPL 0


def read_runner_state(path: str | Path) -> dict[str, Any]:
    """The runner state stored in a snapshot (the file is fully checked; memory is not loaded)."""
    return _decode_state(snapshot_extras(path))
