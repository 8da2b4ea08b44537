"""emulator-mem: a Windows virtual memory subsystem for the Unicorn CPU emulator.

``MemoryManager(uc)`` gives a Unicorn x86 CPU reserve/commit/protect/query semantics, guard
pages, views, images, MMIO and write watch through a software MMU; :mod:`emulator_mem.nt`
and :mod:`emulator_mem.win32` speak NTSTATUS and Win32 on top of it.
"""

from __future__ import annotations

from . import constants
from .errors import (
    EmulatorMemError,
    ImageFormatError,
    MemoryAccessError,
    SnapshotError,
)
from .faults import Fault
from .manager import MemoryManager
from .records import AllocationInfo, MemoryBasicInformation, MemoryStats, RegionInfo
from .space import RegionKind

__all__ = [
    "AllocationInfo",
    "EmulatorMemError",
    "Fault",
    "ImageFormatError",
    "MemoryAccessError",
    "MemoryBasicInformation",
    "MemoryManager",
    "MemoryStats",
    "RegionInfo",
    "RegionKind",
    "SnapshotError",
    "constants",
    "nt",
]

from . import nt  # noqa: E402  (the NT layer imports the manager)
