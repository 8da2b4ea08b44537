"""Shared by the batch tests, and imported by batch *workers* (``imports=["tests.batch_helpers"]``).

Importing it registers ``batchtest.dll``: two API handlers that misbehave the way a worker
really can — ``Segfault`` dereferences NULL in C (the worker process dies of SIGSEGV) and
``Hang`` never returns (a worker stuck outside guest code). Payloads that import them are
built on the fly with the samples' build script.

It also holds a reference model of ``samples/src/parse32.asm``, written from that source's
description of its input format, to predict each corpus input's outcome independently of
the emulator.
"""

from __future__ import annotations

import ctypes
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem.runner import ApiCall, Process, api  # noqa: E402
from samples import build  # noqa: E402

PARSE32 = build.BIN / "parse32.exe"
SETUP_INSTRUCTIONS = 15  # parse32's VirtualAlloc/VirtualProtect prologue, stubs included
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
CRASH = "crash"


@api("batchtest.dll", argc=0)
def Segfault(call: ApiCall) -> int | None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from this deliberate crash
    ctypes.string_at(0)  # a NULL read in C: SIGSEGV, the process is gone
    return 0


@api("batchtest.dll", argc=0)
def Hang(call: ApiCall) -> int | None:
    time.sleep(3600)
    return 0


def program(tmp: Path, name: str, code: str, imports: str = "") -> str:
    """A 32-bit PE whose entry point runs ``code`` then ExitProcess(0); returns its path."""
    extra = f"; import batchtest.dll: {imports}\n" if imports else ""
    text = (f"; bits: 32\n; import kernel32.dll: ExitProcess\n{extra}\nsection .text\n{code}\n"
            "push 0\ncall dword ptr [{IAT:ExitProcess}]\n")
    path = tmp / f"{name}.exe"
    path.write_bytes(build.build_text(text, f"{name}.asm"))
    return str(path)


def worker_killers(tmp: Path) -> dict[str, str]:
    """PE files: ``ok`` exits 0, ``segfault`` kills its worker, ``hang`` hangs it, ``loop``
    spins in guest code forever."""
    return {
        "ok": program(tmp, "ok", "nop"),
        "segfault": program(tmp, "segfault", "call dword ptr [{IAT:Segfault}]", "Segfault"),
        "hang": program(tmp, "hang", "call dword ptr [{IAT:Hang}]", "Hang"),
        "loop": program(tmp, "loop", "spin:\njmp spin"),
    }


def parse32_snapshot(path: Path) -> Path:
    """parse32 stopped right before it reads its input, saved as a process snapshot."""
    process = Process.load_file(PARSE32)
    process.run(SETUP_INSTRUCTIONS)
    process.save(path)
    return path


def parse32_reference(data: bytes) -> tuple[int | str, bytes]:
    """(exit code or CRASH, console output) as parse32.asm's header describes its parser."""
    data = data[:4096]
    rejected = b"input rejected\n"
    if len(data) < 4 or data[:4] != b"EMR1":
        return 1, rejected
    pos, used, name = 4, 0, b"(none)"
    while pos < len(data) and data[pos] != 0:
        tag = data[pos]
        if pos + 2 > len(data) or pos + 2 + data[pos + 1] > len(data):
            return 2, rejected
        body = data[pos + 2 : pos + 2 + data[pos + 1]]
        pos += 2 + len(body)
        if tag == 1:
            if len(body) > 31:
                return 3, rejected
            name = body
        elif tag == 2:
            if used + len(body) > 256:  # the planted bug: the body ends at a guard page
                return CRASH, b""
            used += len(body)
        else:
            return 4, rejected
    return 0, b"note: " + name + b"\n"
