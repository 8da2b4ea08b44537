"""What the Unicorn API façade needs from the memory manager (a Protocol, so this package
never imports :mod:`emulator_mem.manager`, which installs it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from unicorn import Uc

from ..mmu.physmem import PhysicalMemory
from ..mmu.tlb import MMU
from ..space.address_space import AddressSpace, Allocation


class Manager(Protocol):
    uc: Uc
    is_64bit: bool
    space: AddressSpace
    phys: PhysicalMemory
    mmu: MMU
    on_release: list[Callable[[Allocation], None]]

    def read(self, address: int, size: int) -> bytes: ...
    def write(self, address: int, data: bytes | bytearray | memoryview) -> None: ...
    def try_read(self, address: int, size: int) -> bytes | None: ...
    def try_write(self, address: int, data: bytes | bytearray | memoryview) -> bool: ...
    def release(self, address: int, size: int = 0) -> int: ...
    def unmap_view(self, address: int) -> None: ...
    def protect(self, address: int, size: int, protect: int) -> int: ...
    def _page_protect(self, alloc: Allocation, protect: int) -> int: ...
    def insert_allocation(self, alloc: Allocation, *, reserve_only: bool,
                          write_watch: bool = False) -> Allocation: ...
