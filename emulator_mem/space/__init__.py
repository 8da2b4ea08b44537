"""The address space as pure bookkeeping: allocations, their run-length encoded pages, the
free-range index, and the records ``VirtualQuery`` returns.

No Unicorn here, so the Windows rules of reserve/commit/protect/query can be tested (and
model-checked) in isolation. Imports only :mod:`emulator_mem.windows` and the errors.
"""

from __future__ import annotations

from .address_space import (
    GRANULARITY,
    PAGE_SHIFT,
    PAGE_SIZE,
    AddressSpace,
    Allocation,
    RegionKind,
    page_round_down,
    page_round_up,
)

__all__ = [
    "GRANULARITY",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "AddressSpace",
    "Allocation",
    "RegionKind",
    "page_round_down",
    "page_round_up",
]
