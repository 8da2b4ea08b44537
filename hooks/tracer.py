"""An instruction trace: every executed instruction, disassembled by capstone, to a file.

Each line shows the address, ``module+offset`` (or the nearest symbol), the bytes and the
instruction; calls through an IAT slot or to an API stub are annotated with the function
(``; kernel32.dll!WriteFile``). Instruction bytes are read through ``mm.read`` (virtual
addresses), so code in views, aliases and unpacked buffers is shown as the guest runs it.

Symbols come from the images in ``mm.images`` (exports, IAT slots) plus the ``symbols``
option the runner passes (API stubs, entry point). Tracing is a global ``UC_HOOK_CODE``: a
Python call per instruction, tens of times slower than untraced emulation; restrict it with
``begin``/``end`` or stop after ``limit`` lines.

Options: ``path`` (default ``trace.txt``), ``begin``/``end`` (an address range to trace),
``limit`` (maximum lines).
"""

from __future__ import annotations

import bisect
from typing import IO, Any

from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs
from unicorn import UC_HOOK_CODE

from emulator_mem.manager import MemoryManager


def image_symbols(mm: MemoryManager) -> dict[int, str]:
    """Exports, IAT slots (``__imp_dll!func``) and entry points of every mapped image."""
    out: dict[int, str] = {}
    for base, image in mm.images.items():
        module = image.name or f"image_{base:x}"
        out.setdefault(image.entry_point, f"{module}!entry")
        for exp in image.exports:
            if exp.name and exp.forwarder is None:
                out[base + exp.rva] = f"{module}!{exp.name}"
        for imp in image.imports:
            label = imp.name if imp.name is not None else f"#{imp.ordinal}"
            out[base + imp.iat_rva] = f"__imp_{imp.dll}!{label}"
    return out


class Tracer:
    """The installed trace; ``remove()`` unhooks it and closes the file."""

    def __init__(self, uc: Any, mm: MemoryManager, out: IO[str], symbols: dict[int, str],
                 begin: int, end: int, limit: int | None) -> None:
        self.uc = uc
        self.mm = mm
        self.out = out
        self.symbols = symbols
        self._addresses = sorted(symbols)
        self.limit = limit
        self.lines = 0
        self.cs = Cs(CS_ARCH_X86, CS_MODE_64 if mm.is_64bit else CS_MODE_32)
        self.cs.detail = False
        self._hook = uc.hook_add(UC_HOOK_CODE, self._on_code, begin=begin, end=end)

    def where(self, address: int) -> str:
        """``module+0xoff`` for image addresses, else ``symbol+0xoff`` or the region name."""
        if address in self.symbols:
            return self.symbols[address]
        alloc = self.mm.allocation_at(address)
        if alloc is not None and alloc.base in self.mm.images:
            return f"{alloc.name or 'image'}+{address - alloc.base:#x}"
        i = bisect.bisect_right(self._addresses, address) - 1
        if i >= 0 and alloc is not None and alloc.base <= self._addresses[i]:
            sym = self._addresses[i]
            return f"{self.symbols[sym]}+{address - sym:#x}"
        return "" if alloc is None else (alloc.name or "")

    def _annotate(self, address: int, size: int, op_str: str, raw: bytes) -> str:
        """Name the call/jump target when it is an IAT slot or a symbol."""
        for token in op_str.replace("[", " ").replace("]", " ").replace(",", " ").split():
            if token.startswith("0x"):
                value = int(token, 16)
                if "rip" in op_str:
                    value += address + size
                if value in self.symbols:
                    return f"  ; {self.symbols[value]}"
        return ""

    def _on_code(self, uc: Any, address: int, size: int, _data: Any) -> None:
        if self.limit is not None and self.lines >= self.limit:
            return
        raw = self.mm.try_read(address, size) or b""
        text = "(unreadable)"
        note = ""
        for insn in self.cs.disasm(raw, address, 1):
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            note = self._annotate(address, size, insn.op_str, raw)
        width = 16 if self.mm.is_64bit else 8
        self.out.write(f"{address:0{width}x}  {self.where(address):<28} {raw.hex():<22} {text}{note}\n")
        self.lines += 1

    def remove(self) -> None:
        if self._hook is not None:
            self.uc.hook_del(self._hook)
            self._hook = None
        self.out.close()


def install(uc: Any, mm: MemoryManager, *, path: str = "trace.txt", symbols: dict[int, str] | None = None,
            begin: int = 1, end: int = 0, limit: int | None = None, **_: Any) -> Tracer:
    """Trace to ``path``; ``begin > end`` (the default) traces everything."""
    table = image_symbols(mm)
    table.update(symbols or {})
    out = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by remove()
    return Tracer(uc, mm, out, table, begin, end, limit)
