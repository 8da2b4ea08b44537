"""The process as API handlers and device imports see it, as a :class:`typing.Protocol`.

Handlers (``kernel32.py``, ``devices.py``, plugins' ``@api`` functions) run inside a
:class:`~emulator_mem.runner.process.Process`, which imports them to register them. If they
imported ``Process`` back, the runner would be one import circle; instead they are typed
against this protocol, which names what a handler may use — and ``Process`` satisfies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..api.win32 import Kernel32
from ..manager import MemoryManager
from .abi import Abi
from .console import Console
from .heap import ProcessHeap


@dataclass(slots=True)
class DeviceRecord:
    """An MMIO device mapped for a ``devices.dll`` import (re-attached after a restore)."""

    kind: str
    name: str
    base: int
    handle: Any = None


class GuestProcess(Protocol):
    """What an API handler may use of the process it runs in."""

    uc: Any  # unicorn.Uc (unicorn ships no type information)
    mm: MemoryManager
    k32: Kernel32
    abi: Abi
    console: Console
    heap: ProcessHeap | None
    devices: list[DeviceRecord]
    image_name: str

    def terminate(self, exit_code: int) -> None:
        """ExitProcess: record the exit code and stop the CPU."""
        ...
