"""Which NTSTATUS a general-protection fault (#GP, vector 13) of user code becomes.

The guest runs at CPL 3 with IOPL 0, as on Windows (:mod:`..environment`), so qemu raises
#GP for the instructions user mode may not execute and the runner's interrupt hook gets
vector 13 with the PC on the instruction. Windows' trap handler then looks at the
instruction: a privileged one is STATUS_PRIVILEGED_INSTRUCTION with no parameters,
anything else (a bad selector, say) STATUS_ACCESS_VIOLATION reading the highest address
(ReactOS ``KiTrap0DHandler``; Wine's ``is_privileged_instr`` decides the same way, and
under Wine ``hlt``/``cli``/``sti``/``in``/``out`` give 0xC0000096 and ``mov ds, ax`` with a
ring-0 selector 0xC0000005 [0, 0xFFFFFFFF]).

Privileged means the instructions Intel's SDM (vol. 3, 5.9) restricts to CPL 0 and those
that need CPL <= IOPL (5.8.2 / 19.5): ``hlt``, ``cli``/``sti``, ``in``/``out``/``ins``/
``outs``, descriptor-table and task loads, moves to or from control and debug registers,
``clts``, ``invd``/``wbinvd``/``invlpg``, ``rdmsr``/``wrmsr``, ``rdpmc``, ``swapgs``,
``sysexit``/``sysret``. They are told apart by decoding the instruction at the PC (capstone),
which is exact: the CPU stopped *on* it, so there is no guessing about where it begins.

Not exact: ``in``/``out``/``ins``/``outs``. Unicorn removed qemu's I/O permission check
(``gen_check_io`` returns at once: "allow all I/O instructions"), so they run at CPL 3 and
IOPL 0 as if allowed, where Windows raises STATUS_PRIVILEGED_INSTRUCTION. An
``UC_HOOK_INSN`` hook for IN/OUT would see them with an exact PC, but cannot stop the
instruction (or the rest of its block) before it completes.

Before the guest ran at CPL 3, Unicorn (at CPL 0) executed ``hlt`` and ended ``emu_start``
as if its instruction count were used up, and the runner had to guess "hlt" from a 0xF4
byte before the PC — wrong whenever a chunk ended behind an instruction whose last byte is
0xF4 (``lea ecx, [ebp-0xc]`` is 8D 4D F4).
"""

from __future__ import annotations

import re
from functools import cache

from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

from ...manager import MemoryManager
from ...space.address_space import PAGE_SIZE
from ...windows import constants as C

#: capstone mnemonics (without prefixes such as ``rep``) of the instructions above
PRIVILEGED = frozenset({
    "hlt", "cli", "sti", "in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd",
    "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "invd", "wbinvd", "wbnoinvd", "invlpg",
    "invpcid", "rdmsr", "wrmsr", "rdpmc", "swapgs", "sysexit", "sysret",
})
_CONTROL_OR_DEBUG = re.compile(r"\b[cd]r\d+\b")  # mov to or from CRn / DRn
MAX_INSTRUCTION = 15


@cache
def _decoder(is_64bit: bool) -> Cs:
    return Cs(CS_ARCH_X86, CS_MODE_64 if is_64bit else CS_MODE_32)


def is_privileged(code: bytes, is_64bit: bool) -> bool:
    """True when the first instruction of ``code`` is one user mode may not execute."""
    for insn in _decoder(is_64bit).disasm(code, 0, 1):
        mnemonic = insn.mnemonic.split()[-1]
        if mnemonic in PRIVILEGED:
            return True
        return mnemonic == "mov" and _CONTROL_OR_DEBUG.search(insn.op_str) is not None
    return False


def general_protection(mm: MemoryManager, pc: int) -> tuple[int, list[int]]:
    """The exception code and parameters Windows raises for a #GP of user code at ``pc``."""
    code = mm.try_read(pc, MAX_INSTRUCTION)
    if code is None:  # the instruction may end right before an unreadable page
        code = mm.try_read(pc, min(MAX_INSTRUCTION, PAGE_SIZE - pc % PAGE_SIZE))
    if code is not None and is_privileged(code, mm.is_64bit):
        return C.STATUS_PRIVILEGED_INSTRUCTION, []
    highest = (1 << 64) - 1 if mm.is_64bit else 0xFFFFFFFF
    return C.STATUS_ACCESS_VIOLATION, [0, highest]
