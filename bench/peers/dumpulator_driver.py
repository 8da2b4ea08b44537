"""dumpulator's allocator, driven through its own ``MemoryManager`` (no minidump).

``Dumpulator(...)`` needs a minidump of a real Windows process, which we neither have
nor want (its modules would dominate the address space).  The memory bookkeeping does
not need one: ``Dumpulator.__init__`` builds exactly
``MemoryManager(LazyPageManager(UnicornPageManager(uc)))`` and the ``Zw*VirtualMemory``
syscall handlers only call that object, so the driver builds the same stack on a bare
x86-64 ``Uc`` and makes the calls those handlers make:

* allocate = ``ZwAllocateVirtualMemory(MEM_COMMIT|MEM_RESERVE, base=0)``:
  ``find_free`` (walks the whole address space with ``query``) + ``reserve`` + ``commit``
* query = ``ZwQueryVirtualMemory(MemoryBasicInformation)``: ``memory.query``
* protect = ``ZwProtectVirtualMemory``: ``memory.protect`` on one page
* free = ``ZwFreeVirtualMemory(MEM_RELEASE, size=0)``: ``find_region`` + ``release``

Variants:

* ``eager`` (default): ``LazyPageManager.lazy = False``, so every commit is mapped in
  Unicorn at once (one region per allocation).  That is the state after the guest has
  touched its memory, and the only one comparable with the other peers.
* ``lazy``: dumpulator's default; commits stay Python-side until the first fault, so
  Unicorn holds no region at all and only the Python bookkeeping is measured.

An empty address space favours dumpulator: a real dump starts with hundreds of
regions that every ``find_free`` walks through.
"""

from __future__ import annotations

import argparse

from _harness import ALLOC_SIZE, PAGE_SIZE, dist_version, main
from dumpulator.dumpulator import LazyPageManager, UnicornPageManager
from dumpulator.memory import MemoryManager, MemoryProtect
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc


class DumpulatorMemory:
    """The ``Dumpulator.memory`` stack on a bare engine."""

    def __init__(self, lazy: bool) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        pages = LazyPageManager(UnicornPageManager(self.uc))
        pages.lazy = lazy
        self.memory = MemoryManager(pages)
        self.rw = MemoryProtect.PAGE_READWRITE
        self.ro = MemoryProtect.PAGE_READONLY

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        base = self.reserve(size)
        self.memory.commit(base, size)
        return base

    def reserve(self, size: int) -> int:
        """ZwAllocateVirtualMemory(MEM_RESERVE, base=0)."""
        base = self.memory.find_free(size)
        if base is None:
            raise MemoryError("dumpulator find_free found no room")
        self.memory.reserve(base, size, self.rw)
        return int(base)

    def commit(self, addr: int, size: int) -> None:
        self.memory.commit(addr, size, self.rw)

    def decommit(self, addr: int, size: int) -> None:
        self.memory.decommit(addr, size)

    def query(self, addr: int) -> object:
        return self.memory.query(addr)

    def protect(self, page: int, readonly: bool, size: int = PAGE_SIZE) -> None:
        self.memory.protect(page, size, self.ro if readonly else self.rw)

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        if self.memory.find_region(base) is None:
            raise KeyError(hex(base))
        self.memory.release(base, 0)

    def region_count(self) -> int:
        return sum(1 for _ in self.uc.mem_regions())


def _versions() -> tuple[str, str]:
    return dist_version("dumpulator"), dist_version("unicorn")


def _note(args: argparse.Namespace) -> str:
    mode = (
        "lazy (dumpulator default, nothing mapped in Unicorn)"
        if args.variant == "lazy"
        else (
            "eager (LazyPageManager.lazy=False: each commit mapped, as after the guest touched it)"
        )
    )
    return f"MemoryManager driven like the Zw*VirtualMemory handlers, no minidump; {mode}"


if __name__ == "__main__":
    main("dumpulator", _versions, lambda a: DumpulatorMemory(lazy=a.variant == "lazy"), _note)
