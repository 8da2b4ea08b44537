"""Baseline: Unicorn with no manager at all, one ``mem_map`` per allocation.

Runs in OUR venv (``.venv/bin/python``), i.e. the Unicorn version ``emulator_mem``
itself uses, so it isolates what Unicorn's own region bookkeeping costs before any
Python manager adds to it.  It is what a naive user (and every peer) pays at minimum.

* allocate: ``uc.mem_map`` of 64 KiB at the next free 64K-aligned address (a bump
  pointer: nothing is reused in this scenario, and allocations are adjacent like a
  fresh Windows process's).
* query: ``--variant scan`` (default) walks ``uc.mem_regions()`` until the region
  holding the address, which is what code that keeps no bookkeeping of its own does
  and which costs O(regions) inside Unicorn (``uc_mem_regions`` copies the whole
  array every call).  ``--variant dict`` looks the base up in a Python dict instead:
  the floor any Python-side manager can reach, for reference.
* protect: ``uc.mem_protect`` of one page inside an allocation, which splits the
  Unicorn region in three (Unicorn never merges them back, so the region count grows).
* free: ``uc.mem_unmap`` of the whole 64 KiB (spanning the split pieces).
"""

from __future__ import annotations

import argparse

from _harness import ALLOC_SIZE, PAGE_SIZE, dist_version, main
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_READ, UC_PROT_WRITE, Uc

_BASE = 0x10000000
_RW = UC_PROT_READ | UC_PROT_WRITE


class BareUnicorn:
    """One Unicorn region per allocation, nothing else."""

    def __init__(self, use_dict: bool) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.next = _BASE
        self.allocs: dict[int, int] = {}
        self.use_dict = use_dict

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        base = self.next
        self.uc.mem_map(base, size, _RW)
        self.allocs[base] = size
        self.next += -(-size // ALLOC_SIZE) * ALLOC_SIZE  # 64 KiB aligned, like VirtualAlloc
        return base

    def query(self, addr: int) -> object:
        return self._query_dict(addr) if self.use_dict else self._query_scan(addr)

    def _query_scan(self, addr: int) -> object:
        for begin, end, perms in self.uc.mem_regions():
            if begin <= addr <= end:
                return (begin, end, perms)
        return None

    def _query_dict(self, addr: int) -> object:
        base = addr & ~(ALLOC_SIZE - 1)
        return (base, self.allocs[base]) if base in self.allocs else None

    def protect(self, page: int, readonly: bool, size: int = PAGE_SIZE) -> None:
        self.uc.mem_protect(page, size, UC_PROT_READ if readonly else _RW)

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        self.uc.mem_unmap(base, size)
        del self.allocs[base]

    def region_count(self) -> int:
        return sum(1 for _ in self.uc.mem_regions())


def _versions() -> tuple[str, str]:
    import unicorn

    return "-", getattr(unicorn, "__version__", dist_version("unicorn"))


def _note(args: argparse.Namespace) -> str:
    if args.variant == "dict":
        return "query = dict lookup of the 64K base (floor for a Python-side manager)"
    return "query = linear scan of uc.mem_regions() (naive; no bookkeeping of its own)"


if __name__ == "__main__":
    main(
        "bare_unicorn",
        _versions,
        lambda args: BareUnicorn(use_dict=args.variant == "dict"),
        _note,
    )
