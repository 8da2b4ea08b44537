"""Differential harness: run one scenario on plain Unicorn and on Unicorn + MemoryManager.

Unicorn is the oracle. A scenario only uses Unicorn's own API through a :class:`Probe`, which
records every call's result or ``UcError`` code; hooks record their arguments in the same
log. After the scenario the probe adds the registers, ``mem_regions()`` and the bytes of every
region. Both runs must produce the same record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

from emulator_mem import MemoryManager

REGS_32 = ["EAX", "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "ESP", "EIP", "EFLAGS"]
REGS_64 = ["RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "RIP", "EFLAGS",
           "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"]
MODES = {"x86": UC_MODE_32, "x64": UC_MODE_64}


class Probe:
    """One run of a scenario: the Uc, a log of everything observable, helpers."""

    def __init__(self, mode: int, managed: bool) -> None:
        self.mode = mode
        self.uc = Uc(UC_ARCH_X86, mode)
        self.mm = MemoryManager(self.uc) if managed else None
        self.is_64bit = mode == UC_MODE_64
        self.ks = Ks(KS_ARCH_X86, KS_MODE_64 if self.is_64bit else KS_MODE_32)
        self.log: list[tuple[Any, ...]] = []

    # -- recording -----------------------------------------------------------------------
    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``uc.<name>(*args)``, logging its result or its UcError code."""
        try:
            result = getattr(self.uc, name)(*args, **kwargs)
        except UcError as exc:
            self.log.append((name, _comparable(name, args), "UcError", exc.errno))
            return None
        if name == "mem_regions":
            result = list(result)
        if isinstance(result, bytearray):
            result = bytes(result)
        if name in ("hook_add", "context_save"):
            self.log.append((name, args[:1]))  # handles and contexts differ by nature
        else:
            self.log.append((name, _comparable(name, args), result))
        return result

    def note(self, *what: Any) -> None:
        self.log.append(what)

    def hook(self, htype: int, action: Callable[..., Any] | None = None, begin: int = 1,
             end: int = 0, label: str = "") -> Any:
        """A memory hook that logs (label, access, address, size, value); ``action`` may map
        or re-protect and returns what the hook returns."""

        def callback(uc: Any, access: int, address: int, size: int, value: int, _ud: Any) -> Any:
            self.log.append(("hook", label or htype, access, address, size, value))
            return action(uc, access, address, size, value) if action is not None else False

        return self.call("hook_add", htype, callback, None, begin, end)

    def code_hook(self, action: Callable[..., Any] | None = None, begin: int = 1, end: int = 0) -> Any:
        def callback(uc: Any, address: int, size: int, _ud: Any) -> None:
            self.log.append(("code", address, size))
            if action is not None:
                action(uc, address, size)

        return self.call("hook_add", UC_HOOK_CODE, callback, None, begin, end)

    # -- helpers -------------------------------------------------------------------------
    def asm(self, source: str, address: int) -> bytes:
        """Assemble 32-bit style source; on x64, stack and branch registers widen and absolute
        memory operands go through r11 (keystone would make them RIP-relative)."""
        if self.is_64bit:
            out = []
            for insn in re.split(r"[;\n]", source):
                insn = re.sub(r"\b(push|pop|call|jmp)\s+e([a-z]{2})\b", r"\1 r\2", insn.strip())
                absolute = re.search(r"\[(0x[0-9a-fA-F]+)\]", insn)
                if absolute:
                    out.append(f"mov r11, {absolute.group(1)}")
                    insn = insn.replace(absolute.group(0), "[r11]")
                if insn:
                    out.append(insn)
            source = "; ".join(out)
        return bytes(self.ks.asm(source, address)[0])

    def place(self, address: int, source: str) -> int:
        """Assemble at ``address``, write it with uc.mem_write; returns the end address."""
        code = self.asm(source, address)
        self.call("mem_write", address, code)
        return address + len(code)

    def reg(self, name: str) -> int:
        return int(self.uc.reg_read(getattr(X, f"UC_X86_REG_{name}")))

    def set_reg(self, name: str, value: int) -> None:
        self.uc.reg_write(getattr(X, f"UC_X86_REG_{name}"), value)

    def sp(self) -> str:
        return "RSP" if self.is_64bit else "ESP"

    # -- the final state -------------------------------------------------------------------
    def finish(self) -> list[tuple[Any, ...]]:
        names = REGS_64 if self.is_64bit else REGS_32
        self.log.append(("regs", {n: self.reg(n) for n in names}))
        regions = list(self.uc.mem_regions())
        self.log.append(("regions", regions))
        for begin, end, _ in regions:
            if end - begin < 0x100000:
                self.log.append(("bytes", begin, bytes(self.uc.mem_read(begin, end - begin + 1))))
        return self.log


def _comparable(name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Arguments as a log entry: callbacks and host pointers differ between the two runs."""
    out = tuple("callback" if callable(a) else a for a in args)
    if name == "mem_map_ptr" and len(out) == 4:
        out = (*out[:3], "pointer" if out[3] else 0)
    return out


def _short(entry: tuple[Any, ...]) -> str:
    text = repr(entry)
    return text if len(text) < 400 else text[:400] + "..."


Scenario = Callable[[Probe], None]


def observe(scenario: Scenario, mode: int, managed: bool) -> list[tuple[Any, ...]]:
    probe = Probe(mode, managed)
    scenario(probe)
    return probe.finish()


def assert_same(scenario: Scenario, mode: int) -> list[tuple[Any, ...]]:
    """Run on both; compare entry by entry so a failure names the first difference."""
    plain = observe(scenario, mode, managed=False)
    managed = observe(scenario, mode, managed=True)
    for i, (want, got) in enumerate(zip(plain, managed, strict=False)):
        assert got == want, f"entry {i}: plain Unicorn {_short(want)}, with the manager {_short(got)}"
    assert len(managed) == len(plain), ([_short(e) for e in plain[len(managed):]],
                                        [_short(e) for e in managed[len(plain):]])
    return plain
