"""emulator-mem itself, driven through its kernel32 layer like the peers through theirs.

Runs in OUR venv (``.venv/bin/python``), with the package from this checkout, so the same
harness and workloads (``_harness``, ``_workloads``) measure us and the peers alike:

* allocate = ``Kernel32.VirtualAlloc(NULL, size, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE)``
  (``reserve``: ``MEM_RESERVE`` only; ``commit``: ``MEM_COMMIT`` at an address)
* query = ``Kernel32.VirtualQuery``
* protect = ``Kernel32.VirtualProtect`` (read-only and back)
* decommit / free = ``Kernel32.VirtualFree(MEM_DECOMMIT)`` / ``(MEM_RELEASE, size 0)``

Every call is checked (a 0/False result raises), so a benchmark cannot time failures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _harness import ALLOC_SIZE, PAGE_SIZE, main  # noqa: E402
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc  # noqa: E402

from emulator_mem import MemoryManager  # noqa: E402
from emulator_mem.api.win32 import Kernel32  # noqa: E402

MEM_COMMIT, MEM_RESERVE, MEM_DECOMMIT, MEM_RELEASE = 0x1000, 0x2000, 0x4000, 0x8000
PAGE_READONLY, PAGE_READWRITE = 0x02, 0x04


class EmulatorMem:
    """A 64-bit address space with the kernel32 Virtual* API on it."""

    def __init__(self) -> None:
        self.mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))
        self.k32 = Kernel32(self.mm)

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        base = self.k32.VirtualAlloc(0, size, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE)
        if not base:
            raise MemoryError(f"VirtualAlloc failed: {self.k32.GetLastError():#x}")
        return base

    def reserve(self, size: int) -> int:
        base = self.k32.VirtualAlloc(0, size, MEM_RESERVE, PAGE_READWRITE)
        if not base:
            raise MemoryError(f"VirtualAlloc(MEM_RESERVE) failed: {self.k32.GetLastError():#x}")
        return base

    def commit(self, addr: int, size: int) -> None:
        if not self.k32.VirtualAlloc(addr, size, MEM_COMMIT, PAGE_READWRITE):
            raise RuntimeError(f"commit failed: {self.k32.GetLastError():#x}")

    def decommit(self, addr: int, size: int) -> None:
        if not self.k32.VirtualFree(addr, size, MEM_DECOMMIT):
            raise RuntimeError(f"decommit failed: {self.k32.GetLastError():#x}")

    def query(self, addr: int) -> object:
        return self.k32.VirtualQuery(addr)

    def protect(self, page: int, readonly: bool, size: int = PAGE_SIZE) -> None:
        ok, _old = self.k32.VirtualProtect(page, size, PAGE_READONLY if readonly else PAGE_READWRITE)
        if not ok:
            raise RuntimeError(f"VirtualProtect failed: {self.k32.GetLastError():#x}")

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        if not self.k32.VirtualFree(base, 0, MEM_RELEASE):
            raise RuntimeError(f"VirtualFree failed: {self.k32.GetLastError():#x}")

    def region_count(self) -> int:
        return self.mm.stats().unicorn_regions


def _versions() -> tuple[str, str]:
    import unicorn

    return "this checkout", unicorn.__version__


if __name__ == "__main__":
    main(
        "emulator_mem",
        _versions,
        lambda _args: EmulatorMem(),
        "kernel32 VirtualAlloc/VirtualQuery/VirtualProtect/VirtualFree of emulator-mem",
    )
