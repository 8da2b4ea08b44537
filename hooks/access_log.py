"""Log the guest's reads and writes inside chosen virtual address ranges.

Memory hooks take virtual ranges and report virtual addresses whatever backs the pages
(:mod:`emulator_mem.ucapi.hooks`). Views of one section share their pages, so an access
through *another* view of a watched range is reported too, at the watched view's address.
Writes report the value written, reads the value in memory (read through ``mm.read``); MMIO
ranges show no read value, since reading a device has side effects.

Any memory hook makes Unicorn take its slow path for *every* access, so expect a large
slowdown while this plugin is installed.

Options: ``start`` and ``size`` (one range), ``ranges`` (a list of ``(start, size)``), or
``region`` (the name of an allocation, e.g. ``"process heap"``); ``path`` (default: the
host's standard error); ``reads``/``writes`` (default both on); ``limit`` (maximum lines).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE

from emulator_mem.errors import RunnerError
from emulator_mem.manager import MemoryManager
from emulator_mem.space import RegionKind


def virtual_pieces(mm: MemoryManager, start: int, size: int) -> list[tuple[int, int]]:
    """``(virtual, length)`` pieces of a range that lie in allocations."""
    pieces = []
    pos, end = start, start + size
    while pos < end:
        alloc = mm.allocation_at(pos)
        if alloc is None:
            mbi = mm.query(pos)
            pos = mbi.BaseAddress + mbi.RegionSize
            continue
        stop = min(end, alloc.end)
        pieces.append((pos, stop - pos))
        pos = stop
    return pieces


class AccessLog:
    """The installed log; ``remove()`` deletes its hooks."""

    def __init__(self, uc: Any, mm: MemoryManager, pieces: list[tuple[int, int]], out: IO[str],
                 kinds: int, limit: int | None, close: bool) -> None:
        self.uc = uc
        self.mm = mm
        self.pieces = pieces
        self.out = out
        self.limit = limit
        self.lines = 0
        self._close = close
        self._hooks = [uc.hook_add(kinds, self._on_access, begin=virt, end=virt + length - 1)
                       for virt, length in pieces]

    def _on_access(self, uc: Any, access: int, address: int, size: int, value: int, _data: Any) -> None:
        if self.limit is not None and self.lines >= self.limit:
            return
        virt = address
        alloc = self.mm.allocation_at(virt)
        if access == UC_MEM_WRITE:
            shown = f"{value & ((1 << (8 * size)) - 1):#x}"
        elif alloc is not None and alloc.kind is RegionKind.MMIO:
            shown = "(device)"
        else:
            data = self.mm.try_read(virt, size)
            shown = "?" if data is None else f"{int.from_bytes(data, 'little'):#x}"
        pc = int(uc.reg_read(_pc_reg(self.mm)))
        verb = "W" if access == UC_MEM_WRITE else "R"
        self.out.write(f"{verb} {virt:#x} size={size} value={shown} pc={pc:#x}\n")
        self.lines += 1

    def remove(self) -> None:
        for hook in self._hooks:
            self.uc.hook_del(hook)
        self._hooks = []
        if self._close:
            self.out.close()
        else:
            self.out.flush()


def _pc_reg(mm: MemoryManager) -> int:
    from unicorn.x86_const import UC_X86_REG_EIP, UC_X86_REG_RIP

    return int(UC_X86_REG_RIP if mm.is_64bit else UC_X86_REG_EIP)


def install(uc: Any, mm: MemoryManager, *, start: int | None = None, size: int | None = None,
            ranges: list[tuple[int, int]] | None = None, region: str | None = None,
            path: str | None = None, reads: int = 1, writes: int = 1, limit: int | None = None,
            **_: Any) -> AccessLog:
    """Watch the given virtual ranges; see the module docstring for the options."""
    wanted = list(ranges or [])
    if start is not None:
        wanted.append((start, size or 1))
    if region is not None:
        wanted += [(a.base, a.size) for a in mm.reserved_regions() if a.name == region]
        if not any(a.name == region for a in mm.reserved_regions()):
            raise RunnerError(f"access_log: no allocation named {region!r}")
    if not wanted:
        raise RunnerError("access_log needs start=/size=, ranges= or region=")
    pieces = [p for s, n in wanted for p in virtual_pieces(mm, s, n)]
    kinds = (UC_HOOK_MEM_READ if reads else 0) | (UC_HOOK_MEM_WRITE if writes else 0)
    if not kinds:
        raise RunnerError("access_log: nothing to log (reads=0 and writes=0)")
    out: IO[str] = sys.stderr if path is None else open(path, "w", encoding="utf-8")  # noqa: SIM115
    return AccessLog(uc, mm, pieces, out, kinds, limit, path is not None)
