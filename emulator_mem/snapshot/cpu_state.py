"""The x86 CPU context as named registers: what a snapshot stores instead of Unicorn's blob.

``uc.context_save()`` returns an opaque copy of qemu's ``CPUX86State``; its layout changes
between Unicorn releases, so a file holding it would not survive an upgrade. A snapshot
stores registers by *name* instead ("RAX", "GDTR", "FP3", "MSR_C0000080"…), each with a
fixed encoding, and this module knows which names exist in 32- and 64-bit mode, how to read
them and in which order to write them back so the result resumes identically:

* control registers and MSRs first (EFER decides what the rest means);
* descriptor-table registers (GDTR, IDTR, LDTR, TR) before segment selectors: in 32-bit
  protected mode Unicorn loads a selector by reading its descriptor from the GDT in guest
  memory, which is how the hidden segment bases (FS -> TEB) come back. Data segments are
  loaded before SS because SS sets the privilege level the later checks use. A *ring-3*
  SS (RPL 3, as the runner's guest has) cannot be restored this way: Unicorn's CPL follows
  SS's DPL and ``reg_write`` refuses an SS whose DPL differs from the current CPL, which is
  0 in a fresh CPU. Such an SS is left as it is; whoever owns the GDT switches to ring 3
  (the runner does it with an ``iret``, :meth:`ThreadEnvironment.enter_user_mode`);
* in 64-bit mode selectors are plain values and FS/GS bases are written directly;
* x87 (physical FP0-7 plus status, control and tag words, last-instruction pointers) and
  SSE/AVX (MXCSR, XMM, YMM) state; the instruction pointer last.

For the in-memory rollback the opaque context is fine (same process, same Unicorn) and far
cheaper; :mod:`emulator_mem.rollback` uses it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn import x86_const as X

from ..errors import SnapshotError

INT, MMR, FPR = 0, 1, 2  # value kinds: plain integer, (selector, base, limit, flags), (mantissa, exponent)
_MMR = struct.Struct("<HQII")
_FPR = struct.Struct("<QH")

#: MSRs that survive a snapshot (SDM vol. 4 numbers); FS/GS base are saved as registers
MSRS_64 = (0xC0000080, 0x174, 0x175, 0x176, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084,
           0xC0000102)
MSRS_32 = (0xC0000080, 0x174, 0x175, 0x176)


@dataclass(frozen=True, slots=True)
class RegSpec:
    """One saved register: its file name, Unicorn id (or MSR number), kind and width in bits."""

    name: str
    uc_id: int
    kind: int
    bits: int
    msr: bool = False

    @property
    def size(self) -> int:
        """Encoded size in bytes."""
        if self.kind == MMR:
            return _MMR.size
        if self.kind == FPR:
            return _FPR.size
        return self.bits // 8


def _regs(names: str, bits: int, kind: int = INT) -> list[RegSpec]:
    return [RegSpec(n, getattr(X, f"UC_X86_REG_{n}"), kind, bits) for n in names.split()]


def _table(is_64bit: bool) -> list[RegSpec]:
    """Registers in restore order (see the module docstring for why this order)."""
    word = 64 if is_64bit else 32
    msrs = MSRS_64 if is_64bit else MSRS_32
    specs = _regs("CR0 CR4 CR3 CR2" + (" CR8" if is_64bit else ""), word)
    specs += [RegSpec(f"MSR_{n:08X}", n, INT, 64, msr=True) for n in msrs]
    specs += _regs("GDTR IDTR LDTR TR", 0, MMR)
    specs += _regs("DR0 DR1 DR2 DR3 DR6 DR7", word)
    if is_64bit:
        specs += _regs("DS ES FS GS CS SS", 16) + _regs("FS_BASE GS_BASE", 64)
        specs += _regs("RAX RBX RCX RDX RSI RDI RBP RSP R8 R9 R10 R11 R12 R13 R14 R15 RFLAGS", 64)
    else:
        specs += _regs("DS ES FS GS CS SS", 16)
        specs += _regs("EAX EBX ECX EDX ESI EDI EBP ESP EFLAGS", 32)
    specs += _regs("FPCW FPSW FPTAG FOP FCS FDS", 16) + _regs("FIP FDP", 64)
    specs += _regs(" ".join(f"FP{i}" for i in range(8)), 0, FPR)
    nvec = 16 if is_64bit else 8
    specs += _regs("MXCSR", 32)
    specs += _regs(" ".join(f"XMM{i}" for i in range(nvec)), 128)
    specs += _regs(" ".join(f"YMM{i}" for i in range(nvec)), 256)
    specs += _regs("RIP" if is_64bit else "EIP", word)
    return specs


TABLE_32 = _table(False)
TABLE_64 = _table(True)
_SELECTORS = {"DS", "ES", "FS", "GS", "CS", "SS"}

RegValue = int | tuple[int, ...]


def table(is_64bit: bool) -> list[RegSpec]:
    return TABLE_64 if is_64bit else TABLE_32


def capture(uc: Uc, is_64bit: bool) -> dict[str, RegValue]:
    """Read every register of the mode's table: name -> int or tuple."""
    out: dict[str, RegValue] = {}
    for spec in table(is_64bit):
        if spec.msr:
            out[spec.name] = int(uc.msr_read(spec.uc_id))
        elif spec.kind == INT:
            out[spec.name] = int(uc.reg_read(spec.uc_id)) & ((1 << spec.bits) - 1)
        else:
            out[spec.name] = tuple(int(v) for v in uc.reg_read(spec.uc_id))
    return out


def encode(regs: dict[str, RegValue], is_64bit: bool) -> bytes:
    """``u16 count`` then per register ``u8 name length, name, value`` (fixed size per kind)."""
    specs = [s for s in table(is_64bit) if s.name in regs]
    parts = [struct.pack("<H", len(specs))]
    for spec in specs:
        value = regs[spec.name]
        name = spec.name.encode("ascii")
        parts.append(struct.pack("<B", len(name)) + name)
        if spec.kind == MMR and isinstance(value, tuple):
            parts.append(_MMR.pack(*value))
        elif spec.kind == FPR and isinstance(value, tuple):
            parts.append(_FPR.pack(*value))
        elif isinstance(value, int):
            parts.append(value.to_bytes(spec.size, "little"))
        else:
            raise SnapshotError(f"register {spec.name} has a value of the wrong shape")
    return b"".join(parts)


def decode(payload: bytes, is_64bit: bool) -> dict[str, RegValue]:
    """Parse and check a register record: exactly the mode's registers, each once."""
    specs = {s.name: s for s in table(is_64bit)}
    view = memoryview(payload)
    if len(view) < 2:
        raise SnapshotError("CPU record is truncated")
    (count,) = struct.unpack_from("<H", view, 0)
    pos = 2
    out: dict[str, RegValue] = {}
    for _ in range(count):
        if pos >= len(view):
            raise SnapshotError("CPU record is truncated")
        n = view[pos]
        raw_name = bytes(view[pos + 1 : pos + 1 + n])
        pos += 1 + n
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise SnapshotError("CPU record has a register name that is not ASCII") from None
        spec = specs.get(name)
        if spec is None:
            raise SnapshotError(f"CPU record names an unknown register {name!r}")
        if name in out:
            raise SnapshotError(f"CPU record lists {name} twice")
        raw = bytes(view[pos : pos + spec.size])
        if len(raw) != spec.size:
            raise SnapshotError("CPU record is truncated")
        pos += spec.size
        if spec.kind == MMR:
            out[name] = tuple(_MMR.unpack(raw))
        elif spec.kind == FPR:
            out[name] = tuple(_FPR.unpack(raw))
        else:
            out[name] = int.from_bytes(raw, "little")
    if pos != len(view):
        raise SnapshotError("CPU record has trailing bytes")
    missing = specs.keys() - out.keys()
    if missing:
        raise SnapshotError(f"CPU record lacks {', '.join(sorted(missing))}")
    return out


def restore(uc: Uc, is_64bit: bool, regs: dict[str, RegValue]) -> None:
    """Write ``regs`` back in table order; may raise ``UcError`` (a selector the GDT refuses).

    A 32-bit selector equal to the current one and null is left alone: writing a null CS
    would load an empty descriptor and throw the CPU out of 32-bit code, while a fresh CPU
    already has exactly that null selector with working flat segments. A 32-bit ring-3 SS
    that the CPU refuses is left alone too (see the module docstring).
    """
    for spec in table(is_64bit):
        value = regs[spec.name]
        if spec.msr:
            uc.msr_write(spec.uc_id, value)
            continue
        if spec.name in _SELECTORS and not is_64bit:
            if value == 0 and int(uc.reg_read(spec.uc_id)) & 0xFFFF == 0:
                continue
            if spec.name == "SS" and isinstance(value, int) and value & 3 == 3:
                try:
                    uc.reg_write(spec.uc_id, value)
                except UcError:  # a CPU at CPL 0: its owner enters ring 3 itself
                    pass
                continue
        uc.reg_write(spec.uc_id, value)
