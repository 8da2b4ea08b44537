"""speakeasy's allocator, driven through its ``MemoryManager`` methods.

A real ``Win32Emulator`` is built the cheapest way speakeasy offers:
``Speakeasy().load_shellcode(None, "x64", data=b"\\xc3")`` (no PE, no decoy modules
mapped yet: they are only loaded when the shellcode runs), and its memory-manager
methods (``speakeasy.memmgr.MemoryManager``, a base class of the emulator) are called
the way the kernel32 API handlers call them:

* allocate: ``emu.mem_map(64 KiB, perms=RW, tag="api.VirtualAlloc")``.  The real
  ``VirtualAlloc`` handler first calls ``get_valid_ranges`` itself and then
  ``mem_map(base=...)``, which calls it again, so through the API it costs ~2x this.
  ``get_valid_ranges`` rebuilds a list of every mapped *page* and scans it with set
  differences on every call.
* query: ``emu.get_address_map(addr)`` (what ``VirtualQuery`` does: linear scan).
* protect: what ``VirtualProtect`` does: linear scan of ``get_mem_maps()`` for the
  map, ``emu.mem_protect`` of the page, then ``mm.prot = new``.
* free: ``emu.mem_free(base)``.  Note speakeasy's ``VirtualFree`` handler only marks
  the map free and never unmaps; ``mem_free`` is the manager's real release path.

speakeasy pins Unicorn 1.0.x, whose region bookkeeping differs from 2.x.
"""

from __future__ import annotations

from _harness import ALLOC_SIZE, PAGE_SIZE, dist_version, main
from speakeasy import Speakeasy
from speakeasy.common import PERM_MEM_READ, PERM_MEM_RW


class SpeakeasyMemory:
    """A shellcode-initialised ``Win32Emulator`` used as a memory manager."""

    def __init__(self) -> None:
        self.se = Speakeasy()
        self.se.load_shellcode(None, "x64", data=b"\xc3")
        self.emu = self.se.emu

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        return int(self.emu.mem_map(size, perms=PERM_MEM_RW, tag="api.VirtualAlloc"))

    def query(self, addr: int) -> object:
        return self.emu.get_address_map(addr)

    def protect(self, page: int, readonly: bool, size: int = PAGE_SIZE) -> None:
        new = PERM_MEM_READ if readonly else PERM_MEM_RW
        for m in self.emu.get_mem_maps():  # verbatim from kernel32.VirtualProtect
            if m.get_base() <= page < m.get_base() + m.get_size():
                self.emu.mem_protect(page, size, new)
                m.prot = new
                return
        raise KeyError(hex(page))

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        self.emu.mem_free(base)

    def region_count(self) -> int:
        return sum(1 for _ in self.emu.emu_eng.mem_regions())


def _versions() -> tuple[str, str]:
    return dist_version("speakeasy-emulator"), dist_version("unicorn")


if __name__ == "__main__":
    main(
        "speakeasy",
        _versions,
        lambda _args: SpeakeasyMemory(),
        "Win32Emulator from load_shellcode; MemoryManager.mem_map/get_address_map/"
        "mem_protect/mem_free as the kernel32 handlers use them",
    )
