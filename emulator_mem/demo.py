"""`make demo` until the sample runner lands: allocate, protect, fault on a guard page, map.

Shows the core in a dozen lines of guest code: a 32-bit guest writes through memory the
manager gave it, trips a PAGE_GUARD page (one-shot, as on Windows), resumes, then touches a
PAGE_NOACCESS page and stops with an access violation; finally the address space is printed.
"""

from __future__ import annotations

from keystone import KS_ARCH_X86, KS_MODE_32, Ks
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc, UcError
from unicorn.x86_const import UC_X86_REG_EIP

from . import MemoryManager
from . import constants as C
from .vmmap import format_map
from .win32 import Kernel32


def main() -> None:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    mm = MemoryManager(uc)
    k32 = Kernel32(mm)
    code = k32.VirtualAlloc(0, 0x1000, C.MEM_COMMIT | C.MEM_RESERVE, C.PAGE_READWRITE)
    data = k32.VirtualAlloc(0, 0x4000, C.MEM_COMMIT | C.MEM_RESERVE, C.PAGE_READWRITE)
    k32.VirtualProtect(data + 0x1000, 0x1000, C.PAGE_READWRITE | C.PAGE_GUARD)
    k32.VirtualProtect(data + 0x2000, 0x1000, C.PAGE_NOACCESS)
    asm = f"""
        mov edi, {data:#x}
        mov dword ptr [edi], 0x11111111
        mov dword ptr [edi + 0x1000], 0x22222222
        mov dword ptr [edi + 0x2000], 0x33333333
        nop
    """
    program = bytes(Ks(KS_ARCH_X86, KS_MODE_32).asm(asm, code)[0])
    mm.write(code, program)
    ok, old = k32.VirtualProtect(code, 0x1000, C.PAGE_EXECUTE_READ)
    print(f"code at {code:#x} (was {old:#x}, now PAGE_EXECUTE_READ), data at {data:#x}")
    end = code + len(program) - 1
    pc = code
    while True:
        try:
            uc.emu_start(pc, end)
            break
        except UcError:
            fault = mm.take_fault()
            if fault is None:
                raise
            pc = uc.reg_read(UC_X86_REG_EIP)
            print(f"  guest fault at eip={pc:#x}: {fault.describe()}")
            if not fault.is_guard_page:
                break
            print(f"  guard bit is gone: Protect={mm.query(fault.address).Protect:#x}; resuming")
    print(f"data[0] = {mm.read(data, 4).hex()}, data[0x1000] = {mm.read(data + 0x1000, 4).hex()}")
    print()
    print(format_map(mm))


if __name__ == "__main__":
    main()
