"""Shared test helper: run small assembled snippets as guest code.

Each snippet goes to a fresh, never reused code address, which keeps tests independent of
translated-code invalidation (tested on its own in test_host_view.py).
"""

from __future__ import annotations

import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UcError

from emulator_mem import MemoryManager
from emulator_mem.mmu.faults import Fault

PAGE_EXECUTE_READWRITE = 0x40


class Guest:
    """Assembles snippets into fresh code addresses and runs them."""

    def __init__(self, mm: MemoryManager) -> None:
        self.mm = mm
        self.ks = Ks(KS_ARCH_X86, KS_MODE_64 if mm.is_64bit else KS_MODE_32)
        self.ptr = "rdi" if mm.is_64bit else "edi"
        self._code = self._end = 0

    def _place(self, asm: str, at: int | None = None) -> tuple[int, int]:
        if at is None:
            if self._end - self._code < 0x200:
                self._code = self.mm.allocate(0x10000, PAGE_EXECUTE_READWRITE)
                self._end = self._code + 0x10000
            at = self._code
        insn = bytes(self.ks.asm(asm, at)[0])
        self.mm.write(at, insn)
        self._code = max(self._code, (at + len(insn) + 0x3F) & ~0x3F)
        return at, at + len(insn)

    def run(self, asm: str) -> None:
        start, end = self._place(asm)
        self.mm.uc.emu_start(start, end)

    def fault(self, asm: str) -> Fault:
        """Run a snippet that must fault; returns the recorded exception."""
        start, end = self._place(asm)
        with pytest.raises(UcError):
            self.mm.uc.emu_start(start, end)
        fault = self.mm.take_fault()
        assert fault is not None
        return fault
