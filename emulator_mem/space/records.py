"""Plain records the manager returns (MEMORY_BASIC_INFORMATION and friends)."""

from __future__ import annotations

from dataclasses import dataclass

from .address_space import RegionKind


@dataclass(slots=True, frozen=True)
class MemoryBasicInformation:
    """What VirtualQuery fills in, field for field (winnt.h names)."""

    BaseAddress: int
    AllocationBase: int
    AllocationProtect: int
    RegionSize: int
    State: int
    Protect: int
    Type: int


@dataclass(slots=True, frozen=True)
class RegionInfo:
    """The seed's ``region_info``: the region around an address and its allocation."""

    start: int
    length: int
    allocation_base: int
    allocation_length: int
    is_reserved: bool
    is_committed: bool
    protect: int
    initial_protect: int
    kind: RegionKind | None


@dataclass(slots=True, frozen=True)
class AllocationInfo:
    """One reservation as ``reserved_regions()`` lists it."""

    base: int
    size: int
    allocation_protect: int
    kind: RegionKind
    committed: int
    name: str | None


@dataclass(slots=True, frozen=True)
class MemoryStats:
    """The seed's ``compute_memory_stats``: bytes reserved and committed."""

    reserved_memory: int
    committed_memory: int
    allocations: int
    unicorn_regions: int
