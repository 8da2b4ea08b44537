"""emulator-mem: a Windows virtual memory subsystem for the Unicorn CPU emulator.

``MemoryManager(uc)`` gives a Unicorn x86 CPU reserve/commit/protect/query semantics, guard
pages, views, images, MMIO and write watch through a software MMU; :mod:`emulator_mem.nt`
and :mod:`emulator_mem.win32` speak NTSTATUS and Win32 on top of it.
"""

from __future__ import annotations

from . import _compat
from .errors import (
    EmulatorMemError,
    ImageFormatError,
    MemoryAccessError,
    SnapshotError,
)
from .manager import MemoryManager
from .mmu.faults import Fault
from .space.address_space import RegionKind
from .space.records import AllocationInfo, MemoryBasicInformation, MemoryStats, RegionInfo
from .windows import constants

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

_compat.install()  # round-one import paths (emulator_mem.pe_writer, …) keep working
