"""qiling, unmodified, with and without emulator_mem's MemoryManager on its ``Uc``.

Runs one x86-64 Linux shellcode through qiling twice — plain, then with the manager attached
to qiling's ``Uc`` right after qiling creates it (``qiling_driver.attach_memory_manager``) —
and prints one JSON line: qiling's own report (``ql.os.stats``: every system call with its
arguments and return value), what the guest wrote to stdout, the exit code, the final
registers and ``uc.mem_regions()`` of both runs, and whether they are identical.

The shellcode exercises qiling's memory path: ``mmap`` (qiling: ``ql.mem.map`` →
``uc.mem_map``), host writes (``ql.mem.write``), ``mprotect`` to RX (``uc.mem_protect``)
and a call into the new code, a partial ``munmap`` (``uc.mem_unmap`` splitting the
mapping), then ``write`` and ``exit``. No Linux root filesystem is needed for shellcode.
Runs in the ``qiling_mm`` venv (qiling 1.4.6 on Unicorn 2.1.4, plus our dependencies).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from qiling import Qiling
from qiling.const import QL_ARCH, QL_INTERCEPT, QL_OS, QL_VERBOSE

sys.path.insert(0, str(Path(__file__).resolve().parent))

MESSAGE = b"hello from qiling\n"

SHELLCODE = f"""
    mov rax, 9              /* mmap(0, 0x3000, RW, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) */
    xor rdi, rdi
    mov rsi, 0x3000
    mov rdx, 3
    mov r10, 0x22
    mov r8, -1
    xor r9, r9
    syscall
    mov rbx, rax
    mov rcx, {int.from_bytes(MESSAGE[:8], 'little'):#x}
    mov [rbx], rcx
    mov rcx, {int.from_bytes(MESSAGE[8:16], 'little'):#x}
    mov [rbx + 8], rcx
    mov word ptr [rbx + 16], {int.from_bytes(MESSAGE[16:], 'little'):#x}
    mov dword ptr [rbx + 0x1000], 0x00002ab8   /* mov eax, 42 */
    mov word ptr [rbx + 0x1004], 0xc300        /* ...; ret */
    mov rax, 10             /* mprotect(rbx + 0x1000, 0x1000, R|X) */
    lea rdi, [rbx + 0x1000]
    mov rsi, 0x1000
    mov rdx, 5
    syscall
    lea rax, [rbx + 0x1000]
    call rax
    mov r12, rax
    mov rax, 11             /* munmap(rbx + 0x2000, 0x1000) */
    lea rdi, [rbx + 0x2000]
    mov rsi, 0x1000
    syscall
    mov rax, 1              /* write(1, rbx, len) */
    mov rdi, 1
    mov rsi, rbx
    mov rdx, {len(MESSAGE)}
    syscall
    mov rax, 60             /* exit(r12) */
    mov rdi, r12
    syscall
"""


def run(managed: bool) -> dict[str, Any]:
    import qiling.arch.x86 as x86_arch

    original = x86_arch.Uc
    if managed:
        from qiling_driver import attach_memory_manager

        attach_memory_manager()
    try:
        code = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(SHELLCODE.replace("/*", "#").replace("*/", ""))[0])
        rootfs = Path(sys.prefix) / "ql-empty-rootfs"
        rootfs.mkdir(exist_ok=True)
        ql = Qiling(code=code, archtype=QL_ARCH.X8664, ostype=QL_OS.LINUX, rootfs=str(rootfs),
                    verbose=QL_VERBOSE.DISABLED)
        # shellcode mode skips the ELF loader step that sets the mmap base; set it from
        # qiling's own profile as that step would
        ql.loader.mmap_address = int(ql.profile.get("OS64", "mmap_address"), 0)
        written: list[str] = []

        def on_write(ql: Any, fd: int, buf: int, count: int, *_: Any) -> None:
            written.append(bytes(ql.mem.read(buf, count)).decode(errors="replace"))

        ql.os.set_syscall("write", on_write, QL_INTERCEPT.ENTER)
        ql.os.stdout = io.BytesIO()
        ql.run()
        stats = {name: [{k: v for k, v in call.items() if k != "position"} for call in calls]
                 for name, calls in ql.os.stats.syscalls.items()}
        regs = {r: int(ql.arch.regs.read(r)) for r in ("rax", "rbx", "r12", "rip", "rsp")}
        return {
            "managed": managed,
            # the class behind ql.uc.mem_map: UnicornMemory when the manager is attached
            "mem_map_owner": type(getattr(ql.uc.mem_map, "__self__", None)).__name__,
            "syscalls": json.loads(json.dumps(stats, default=str)),
            "stdout": written,
            "exit_code": getattr(ql.os, "exit_code", None),
            "regs": regs,
            "regions": [list(r) for r in ql.uc.mem_regions()],
        }
    finally:
        x86_arch.Uc = original


def main() -> None:
    plain = run(False)
    managed = run(True)
    same = {k: plain[k] == managed[k] for k in ("syscalls", "stdout", "exit_code", "regs", "regions")}
    attached = managed["mem_map_owner"] == "UnicornMemory"
    print(json.dumps({"same": all(same.values()), "attached": attached, "fields": same,
                      "plain": plain, "managed": managed}))


if __name__ == "__main__":
    main()
