"""Refused accesses the way plain Unicorn reports them: its error codes, its hooks.

The fill hook (:mod:`emulator_mem.mmu.tlb`) refuses a translation the guest may not use, and
qemu then stops the run with ``UC_ERR_EXCEPTION``. Plain Unicorn instead says *what* went wrong
(``UC_ERR_READ_UNMAPPED``, ``UC_ERR_WRITE_PROT`` …), and before that calls the
``UC_HOOK_MEM_*_UNMAPPED`` / ``_PROT`` hooks with the exact address, size and value, retrying
the access when one returns True (the lazy-mapping idiom). Two pieces reproduce that:

* :func:`uc_error` — the code plain Unicorn would give a refusal; the ``emu_start`` wrapper
  raises it instead of ``UC_ERR_EXCEPTION`` when nothing watches the address.
* **holes** — when a memory hook does watch the address, the fill hook does not refuse: it
  translates the page into a *hole* of guest-physical space, where Unicorn's own
  ``load_helper``/``store_helper`` take over exactly as in plain Unicorn. The *unmapped hole*
  has no memory at all (the ``*_UNMAPPED`` path); the *protection hole* is an MMIO range
  with no permissions (the ``*_PROT`` path), whose callbacks complete an access a hook let
  through by reading or writing the real page. Hole addresses are the virtual address plus a
  constant, so hooks get the exact address back (:meth:`Holes.to_virtual`). When a hook maps
  or re-protects the page it changes the layout, the TLB is flushed, and Unicorn's retry
  refills the entry from the real page table.

Nothing here runs on the TLB-fill hot path: only refusals get this far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unicorn import (
    UC_ERR_FETCH_PROT,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_PROT,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_PROT,
    UC_ERR_WRITE_UNMAPPED,
    UC_PROT_NONE,
    Uc,
)

from . import raw

UC_MEM_READ = 16
UC_MEM_WRITE = 17
UC_MEM_FETCH = 18
NEED = {UC_MEM_READ: 1, UC_MEM_WRITE: 2, UC_MEM_FETCH: 4}  # access -> UC_PROT bit

_UNMAPPED = {UC_MEM_READ: UC_ERR_READ_UNMAPPED, UC_MEM_WRITE: UC_ERR_WRITE_UNMAPPED,
             UC_MEM_FETCH: UC_ERR_FETCH_UNMAPPED}
_PROT = {UC_MEM_READ: UC_ERR_READ_PROT, UC_MEM_WRITE: UC_ERR_WRITE_PROT,
         UC_MEM_FETCH: UC_ERR_FETCH_PROT}

#: guest-physical bases of the two holes, far above the identity and alias areas
UNMAPPED_HOLE = 0x4000_0000_0000_0000
PROT_HOLE = 0x5000_0000_0000_0000


def uc_error(access: int, mapped: bool) -> int:
    """Plain Unicorn's error for a refused access: *_PROT on a mapped page, else *_UNMAPPED.

    "Mapped" is Unicorn's notion: a committed page (NOACCESS and guard pages included);
    free and reserved-only pages are unmapped.
    """
    return int((_PROT if mapped else _UNMAPPED).get(access, UC_ERR_READ_UNMAPPED))


class Holes:
    """Which virtual ranges Unicorn-style memory hooks watch, and the hole translations."""

    def __init__(self, uc: Uc, is_64bit: bool) -> None:
        self.uc = uc
        self.is_64bit = is_64bit
        #: virtual address bits a hole keeps (64-bit guests: canonical 48-bit addresses)
        self.span = 1 << (48 if is_64bit else 32)
        #: access type -> [begin, end] ranges (inclusive, virtual) some hook watches;
        #: begin > end means every address, as in ``uc.hook_add``
        self.watched: dict[int, list[tuple[int, int]]] = {a: [] for a in NEED}
        #: host access to virtual memory ignoring protection (the manager's read/write)
        self.read_memory: Callable[[int, int], bytes | None] = lambda address, size: None
        self.write_memory: Callable[[int, bytes], object] = lambda address, data: None
        self._prot_mapped = False

    # -- which accesses go to a hole -------------------------------------------------------
    def watch(self, accesses: list[int], begin: int, end: int) -> None:
        for access in accesses:
            self.watched[access].append((begin, end))

    def unwatch(self, accesses: list[int], begin: int, end: int) -> None:
        for access in accesses:
            ranges = self.watched[access]
            if (begin, end) in ranges:
                ranges.remove((begin, end))

    def wants(self, vaddr: int, access: int) -> bool:
        for begin, end in self.watched.get(access, ()):
            if begin > end or begin <= vaddr + 0xFFF and vaddr <= end:
                return True
        return False

    def map(self, vaddr: int, access: int, mapped: bool, entry: Any) -> bool:
        """Point the TLB entry of ``vaddr`` into a hole (Unicorn takes it from there)."""
        if mapped and not self._prot_mapped:
            self._map_prot_hole()
        base = PROT_HOLE if mapped else UNMAPPED_HOLE
        entry.paddr = base + (vaddr & (self.span - 1))
        entry.perms = NEED.get(access, 1)
        return True

    def to_virtual(self, paddr: int) -> int | None:
        """The virtual address behind a hole address (None: not in a hole)."""
        for base in (UNMAPPED_HOLE, PROT_HOLE):
            if base <= paddr < base + self.span:
                vaddr = paddr - base
                if self.is_64bit and vaddr >> 47:
                    vaddr |= 0xFFFF << 48  # back to the canonical (sign-extended) form
                return vaddr
        return None

    # -- the protection hole: an MMIO range with no permissions ------------------------------
    def _map_prot_hole(self) -> None:
        raw.mmio_map(self.uc, PROT_HOLE, self.span, self._read, None, self._write, None)
        raw.mem_protect(self.uc, PROT_HOLE, self.span, UC_PROT_NONE)
        self._prot_mapped = True

    def _read(self, _uc: Any, offset: int, size: int, _ud: Any) -> int:
        """A *_PROT hook returned True: the access reads the page anyway, as in Unicorn."""
        vaddr = self.to_virtual(PROT_HOLE + offset)
        data = None if vaddr is None else self.read_memory(vaddr, size)
        return int.from_bytes(data or bytes(size), "little")

    def _write(self, _uc: Any, offset: int, size: int, value: int, _ud: Any) -> None:
        vaddr = self.to_virtual(PROT_HOLE + offset)
        if vaddr is not None:
            self.write_memory(vaddr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
