"""What a region feature needs of the manager that owns it, as a :class:`typing.Protocol`.

Sections, MMIO, write watch and images each add a region kind to one address space, so
they need its shared services — range checks, inserting and releasing an allocation,
physical memory, the MMU — but not the manager's whole public surface. Naming exactly
those services here keeps this layer below :mod:`emulator_mem.manager` (which satisfies
the protocol structurally) and shows at a glance what a feature may touch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..mmu.physmem import PhysicalMemory
from ..mmu.tlb import MMU
from ..space.address_space import GRANULARITY, AddressSpace, Allocation


class RegionHost(Protocol):
    """The manager's services for region kinds (see :class:`~emulator_mem.manager.MemoryManager`)."""

    uc: Any  # unicorn.Uc (unicorn ships no type information)
    is_64bit: bool
    lowest_address: int
    highest_address: int
    space: AddressSpace
    phys: PhysicalMemory
    mmu: MMU
    #: called with every allocation about to be released (owners drop their records)
    on_release: list[Callable[[Allocation], None]]

    def find_free(self, size: int, *, min_address: int | None = None, max_address: int | None = None,
                  alignment: int = GRANULARITY, top_down: bool = False) -> int: ...

    def check_size(self, size: int) -> int: ...

    def check_range(self, address: int, size: int) -> None: ...

    def insert_allocation(self, alloc: Allocation, *, reserve_only: bool,
                          write_watch: bool = False) -> Allocation: ...

    def release_allocation(self, alloc: Allocation) -> None: ...

    def read(self, address: int, size: int) -> bytes: ...

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None: ...
