"""qiling's allocator, driven through a real Windows ``Qiling`` instance.

``Qiling(code=b"\\xc3", archtype=X8664, ostype=WINDOWS, rootfs=<empty dir>)`` boots
without any Windows DLLs (shellcode mode loads no PE imports), so no Windows rootfs is
needed and the memory manager is the one a real run uses.

Variants:

* ``mem`` (default): ``ql.mem`` (``qiling.os.memory.QlMemoryManager``), the layer
  every qiling OS maps through:
  allocate = ``ql.mem.map_anywhere(64 KiB, minaddr=0x10000, align=64 KiB)`` (gap
  search over ``map_info`` + an ``is_available`` walk + ``uc.mem_map``);
  query = linear scan of ``ql.mem.map_info`` for the entry holding the address (the
  loop ``change_mapinfo`` itself uses; ``QlMemoryManager`` has no by-address query);
  protect = ``ql.mem.protect`` (``uc.mem_protect`` + ``change_mapinfo`` split);
  free = ``ql.mem.unmap``.
* ``mem_mm``: ``mem`` with emulator_mem's ``MemoryManager`` attached to qiling's ``Uc``
  right after qiling creates it (see :func:`attach_memory_manager`; qiling itself is
  unmodified): the same ``ql.mem`` calls, whose ``uc.mem_map``/``mem_protect``/
  ``mem_unmap`` now go through the manager (runs in the ``qiling_mm`` venv, which also
  has our package's dependencies).
* ``heap``: what qiling's Windows API hooks actually do: ``VirtualAlloc`` =
  ``ql.os.heap.alloc``, ``VirtualQuery`` = scan of ``ql.os.heap.chunks``,
  ``VirtualFree`` = ``ql.os.heap.free`` (marks the chunk unused, never unmaps).
  ``VirtualProtect`` is a no-op returning 1 in qiling, so protect is not measured
  (``protect_per_s`` is null).  The heap is 80 MiB, so it cannot hold more than 1280
  live 64 KiB allocations; past that ``alloc`` returns 0 and the run errors out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _harness import ALLOC_SIZE, PAGE_SIZE, dist_version, main
from qiling import Qiling
from qiling.const import QL_ARCH, QL_OS, QL_VERBOSE
from unicorn import UC_PROT_READ, UC_PROT_WRITE

_RW = UC_PROT_READ | UC_PROT_WRITE


def attach_memory_manager() -> None:
    """Make qiling's x86 ``Uc`` come with a ``MemoryManager`` attached from the start.

    qiling builds its CPU with ``Uc(...)`` in ``qiling.arch.x86``; that module-level name
    is pointed at a factory that creates the ``Uc`` and attaches the manager before qiling
    maps anything. Our package comes from this repository (the venv has its dependencies).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import qiling.arch.x86 as x86_arch
    from unicorn import Uc

    from emulator_mem import MemoryManager

    def managed_uc(arch: int, mode: int) -> Uc:
        uc = Uc(arch, mode)
        MemoryManager(uc)
        return uc

    x86_arch.Uc = managed_uc  # type: ignore[assignment]


def _boot() -> Qiling:
    # An empty directory is enough; keep one inside the peer's venv (git-ignored)
    # rather than a new temp dir per run, which os._exit would leave behind.
    rootfs = Path(sys.prefix) / "ql-empty-rootfs"
    rootfs.mkdir(exist_ok=True)
    return Qiling(
        code=b"\xc3",
        archtype=QL_ARCH.X8664,
        ostype=QL_OS.WINDOWS,
        rootfs=str(rootfs),
        verbose=QL_VERBOSE.DISABLED,
    )


class QilingMem:
    """``ql.mem`` map/protect/unmap."""

    def __init__(self) -> None:
        self.ql = _boot()
        self.mem = self.ql.mem

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        return int(
            self.mem.map_anywhere(size, minaddr=0x10000, align=ALLOC_SIZE, perms=_RW, info="[bench]")
        )

    def query(self, addr: int) -> object:
        for entry in self.mem.map_info:
            if entry[0] <= addr < entry[1]:
                return entry
        return None

    def protect(self, page: int, readonly: bool, size: int = PAGE_SIZE) -> None:
        self.mem.protect(page, size, UC_PROT_READ if readonly else _RW)

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        self.mem.unmap(base, size)

    def region_count(self) -> int:
        return sum(1 for _ in self.ql.uc.mem_regions())


class QilingHeap(QilingMem):
    """``ql.os.heap`` as the kernel32 Virtual* hooks use it."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = self.ql.os.heap

    def alloc(self, size: int = ALLOC_SIZE) -> int:
        base = int(self.heap.alloc(size))
        if not base:
            raise MemoryError(
                f"ql.os.heap exhausted at {len(self.heap.chunks)} chunks "
                f"(heap {self.heap.end_address - self.heap.start_address:#x} bytes)"
            )
        return base

    def query(self, addr: int) -> object:
        for chunk in self.heap.chunks:  # verbatim from hook_VirtualQuery
            if chunk.address <= addr < chunk.address + chunk.size:
                return chunk
        return None

    protect_unsupported = "qiling's kernel32 VirtualProtect hook is a no-op (returns 1)"

    def free(self, base: int, size: int = ALLOC_SIZE) -> None:
        if not self.heap.free(base):
            raise KeyError(hex(base))


def _managed() -> QilingMem:
    attach_memory_manager()
    return QilingMem()


def _versions() -> tuple[str, str]:
    return dist_version("qiling"), dist_version("unicorn")


def _note(args: argparse.Namespace) -> str:
    if args.variant == "heap":
        return "ql.os.heap as kernel32 VirtualAlloc/Query/Free hooks use it; VirtualProtect no-op"
    if args.variant == "mem_mm":
        return "ql.mem.map_anywhere/protect/unmap with emulator_mem's MemoryManager on qiling's Uc"
    return "ql.mem.map_anywhere/protect/unmap on a Windows Qiling booted from shellcode"


if __name__ == "__main__":
    main(
        "qiling",
        _versions,
        lambda a: {"heap": QilingHeap, "mem_mm": _managed}.get(a.variant, QilingMem)(),
        _note,
    )
