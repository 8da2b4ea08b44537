"""MMIO devices for guests: a UART that prints what the guest sends, and a tick counter.

Each device is an MMIO region (``mm.allocate_mmio``): VirtualQuery reports it committed,
MEM_MAPPED, PAGE_READWRITE, and every guest load or store in it calls the device in Python.

``uart`` — a 16550 subset, byte registers at offsets from the base:
  * +0 THR (write): transmit a byte; it goes straight to ``output`` (the process console
    under the runner, else the host's standard output). RBR (read) returns 0: no input.
  * +5 LSR (read): 0x60 — THR empty and transmitter idle, always ready to send.
  * other registers read 0 and ignore writes.

``ticks`` — a free-running counter: a 32-bit read at +0 returns the count of reads so far
(deterministic, so runs and snapshots replay identically); a write sets the counter.

How a payload gets a device: import it from the fake ``devices.dll`` (``devices.dll!UART``,
``devices.dll!TICKS``). The runner maps one device of that kind when it links the image
and stores the device's base in the import's IAT slot, as the loader does for a data
import, so the payload reads the slot to find its registers. ``--hook devices:device=uart``
maps one for any payload (at ``address`` if given, else the lowest free 64 KiB) and prints
where. The MMIO region is named after the kind; snapshots re-attach devices by that name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from emulator_mem.errors import RunnerError
from emulator_mem.manager import MemoryManager

Output = Callable[[bytes], None]
DEVICE_KINDS = ("uart", "ticks")
REGION_SIZE = 0x1000
UART_THR = 0
UART_LSR = 5
LSR_READY = 0x60


def _host_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


class Uart:
    """The transmit side of a 16550: bytes written to THR go to ``output``."""

    kind = "uart"

    def __init__(self, output: Output | None = None) -> None:
        self.output = output or _host_stdout
        self.sent = 0

    def read(self, offset: int, size: int) -> int:
        return LSR_READY if offset == UART_LSR else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == UART_THR:
            self.sent += 1
            self.output(bytes([value & 0xFF]))

    def state(self) -> dict[str, Any]:
        return {"sent": self.sent}

    def restore(self, state: dict[str, Any]) -> None:
        self.sent = int(state.get("sent", 0))


class TickCounter:
    """A counter that advances by one on every read of its register."""

    kind = "ticks"

    def __init__(self, output: Output | None = None) -> None:
        self.count = 0

    def read(self, offset: int, size: int) -> int:
        if offset != 0:
            return 0
        value = self.count
        self.count += 1
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.count = value & 0xFFFFFFFF

    def state(self) -> dict[str, Any]:
        return {"count": self.count}

    def restore(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))


Device = Uart | TickCounter


def make_device(kind: str, *, output: Output | None = None) -> Device:
    """A new, unmapped device of ``kind`` ("uart" or "ticks")."""
    if kind == "uart":
        return Uart(output)
    if kind == "ticks":
        return TickCounter(output)
    raise RunnerError(f"no device kind {kind!r} (have {', '.join(DEVICE_KINDS)})")


class DeviceHandle:
    """A mapped device: ``base``, ``device``, and ``remove()`` to unmap it."""

    def __init__(self, mm: MemoryManager, device: Device, base: int) -> None:
        self.mm = mm
        self.device = device
        self.base = base

    def remove(self) -> None:
        if self.mm.allocation_at(self.base) is not None:
            self.mm.release(self.base)


def install(uc: Any, mm: MemoryManager, *, device: str = "uart", address: int | None = None,
            output: Output | None = None, **_: Any) -> DeviceHandle:
    """Map a ``device`` at ``address`` (None: the lowest free 64 KiB) and return its handle."""
    dev = make_device(device, output=output)
    base = mm.allocate_mmio(address, REGION_SIZE, dev.read, dev.write, name=dev.kind)
    return DeviceHandle(mm, dev, base)


def adopt(mm: MemoryManager, device: Device, base: int) -> DeviceHandle:
    """A handle for a device whose region a snapshot restored (callbacks already attached)."""
    return DeviceHandle(mm, device, base)
