"""Did a chunk of emulation end on ``hlt``? (Unicorn does not say.)

In user mode ``hlt`` is a privileged instruction: Windows raises
STATUS_PRIVILEGED_INSTRUCTION at it. Unicorn runs at CPL 0, executes it, and stops
``emu_start`` as if the run were over, with the PC after the ``hlt`` — no hook fires and
no error is returned. So a chunk that stops with 0xF4 right before the PC is taken to have
executed a ``hlt``.

Known ambiguity: a chunk that used up its instruction count exactly behind an instruction
whose *last* byte is 0xF4 (``lea ecx, [ebp-0xc]`` is 8D 4D F4) looks the same, and Unicorn
exposes no instruction counter to tell them apart. Deciding by the bytes does not work
either: the bytes before a real ``hlt`` often decode as such an instruction too (``FF F4`` is
``push esp``, ``00 F4`` is ``add ah, dh``). The exact fix is to run the guest at CPL 3, where
qemu itself raises #GP for ``hlt`` (and for ``cli``/``sti``/``in``/``out``), which the
environment does not do yet.
"""

from __future__ import annotations

from ...manager import MemoryManager

HLT = 0xF4


def halted_at(mm: MemoryManager, pc: int) -> bool:
    """True when the run that stopped with the PC at ``pc`` ended on a ``hlt`` at ``pc - 1``."""
    return mm.try_read(pc - 1, 1) == bytes([HLT])
