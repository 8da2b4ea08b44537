"""The process runner: loading, the Windows-like process environment, API dispatch, unhandled
exceptions, stack growth and the instruction limit. Payloads are built on the fly with the
samples' build script; expected values are Windows literals.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import pytest
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_RAX

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem.errors import RunnerError, UnresolvedImportError  # noqa: E402
from emulator_mem.runner import ApiCall, Process, api  # noqa: E402
from emulator_mem.runner.api import REGISTRY  # noqa: E402
from samples import build  # noqa: E402

STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
STATUS_STACK_OVERFLOW = 0xC00000FD
STATUS_ILLEGAL_INSTRUCTION = 0xC000001D
STATUS_INTEGER_DIVIDE_BY_ZERO = 0xC0000094
STATUS_BREAKPOINT = 0x80000003
PAGE_READWRITE = 0x04
PAGE_GUARD = 0x100
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_PRIVATE = 0x20000


def payload(
    bits: int, code: str, *, imports: str = "ExitProcess", data: str = "", extra: str = "",
) -> Process:
    """Build a tiny PE from ``code`` and load it (not run)."""
    text = f"; bits: {bits}\n; import kernel32.dll: {imports}\n{extra}\nsection .text\n{code}\n"
    if data:
        text += f"section .data\n{data}\n"
    return Process.load(build.build_text(text, "test.asm"), "test.exe")


def exit32(code: int = 0) -> str:
    return f"push {code}\ncall dword ptr [{{IAT:ExitProcess}}]"


def exit64(code: int = 0) -> str:
    return f"mov ecx, {code}\ncall qword ptr [rip + {{IAT:ExitProcess}}]"


# -- loading and the environment ----------------------------------------------------------
def test_unresolved_import_names_dll_and_function() -> None:
    with pytest.raises(UnresolvedImportError, match=r"kernel32\.dll!FrobnicateW"):
        payload(32, exit32(), imports="ExitProcess FrobnicateW")


def test_unknown_device_import_is_unresolved() -> None:
    with pytest.raises(UnresolvedImportError, match=r"devices\.dll!FLUX"):
        payload(64, exit64(), extra="; import devices.dll: FLUX")


@pytest.mark.parametrize("bits", [32, 64])
def test_teb_and_peb_are_windows_shaped(bits: int) -> None:
    process = payload(bits, exit32() if bits == 32 else exit64())
    mm, env = process.mm, process.env
    assert env is not None and process.heap is not None
    fmt, ptr = ("<I", 4) if bits == 32 else ("<Q", 8)

    def field(base: int, offset: int) -> int:
        return int(struct.unpack(fmt, mm.read(base + offset, ptr))[0])

    teb_off = {"base": 0x4, "limit": 0x8, "self": 0x18, "peb": 0x30} if bits == 32 else \
        {"base": 0x8, "limit": 0x10, "self": 0x30, "peb": 0x60}
    peb_off = {"image": 0x8, "heap": 0x18} if bits == 32 else {"image": 0x10, "heap": 0x30}
    assert field(env.teb, teb_off["self"]) == env.teb
    assert field(env.teb, teb_off["peb"]) == env.peb
    assert field(env.peb, peb_off["image"]) == process.image_base
    assert field(env.peb, peb_off["heap"]) == process.heap.handle
    base, limit = field(env.teb, teb_off["base"]), field(env.teb, teb_off["limit"])
    assert base - limit == 0x1000
    # below the committed top: one PAGE_GUARD page, then reserved down to the 1 MiB base
    guard = mm.query(limit - 0x1000)
    assert (guard.State, guard.Protect, guard.Type) == (MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD, MEM_PRIVATE)
    assert mm.query(limit - 0x2000).State == MEM_RESERVE
    assert base - mm.query(limit).AllocationBase == 0x100000


def test_fs_points_at_the_teb_through_the_gdt() -> None:
    code = """
    mov eax, dword ptr fs:[0x18]
    mov ebx, dword ptr fs:[0x30]
    mov ecx, dword ptr [ebx + 8]
    push ecx
    call dword ptr [{IAT:ExitProcess}]
    """
    process = payload(32, code)
    assert process.run().exit_code == process.image_base
    assert process.env is not None
    assert process.uc.reg_read(UC_X86_REG_EAX) == process.env.teb


def test_entry_point_return_value_is_the_exit_code() -> None:
    assert payload(64, "mov eax, 0x2a\nret").run().exit_code == 0x2A
    assert payload(32, "mov eax, 0x2b\nret").run().exit_code == 0x2B


# -- API dispatch ----------------------------------------------------------------------------
def test_stdcall_arguments_are_popped_and_last_error_is_in_the_teb() -> None:
    code = """
    mov esi, esp
    push 0x57
    call dword ptr [{IAT:SetLastError}]
    call dword ptr [{IAT:GetLastError}]
    sub esi, esp
    mov ebx, eax
    mov ecx, dword ptr fs:[0x34]
    push esi
    call dword ptr [{IAT:ExitProcess}]
    """
    process = payload(32, code, imports="ExitProcess SetLastError GetLastError")
    assert process.run().exit_code == 0  # ESP is back where it was
    assert process.uc.reg_read(UC_X86_REG_EBX) == 0x57
    assert process.uc.reg_read(UC_X86_REG_ECX) == 0x57  # TEB.LastErrorValue


def test_x64_fifth_argument_comes_from_above_the_shadow_space() -> None:
    code = """
    sub rsp, 0x38
    mov rcx, 7
    lea rdx, [rip + {DATA:msg}]
    mov r8d, 5
    lea r9, [rip + {DATA:written}]
    mov qword ptr [rsp + 0x20], 0
    call qword ptr [rip + {IAT:WriteFile}]
    mov ecx, dword ptr [rip + {DATA:written}]
    call qword ptr [rip + {IAT:ExitProcess}]
    """
    process = payload(64, code, imports="ExitProcess WriteFile", data='msg: db "hello"\nwritten: dd 0')
    result = process.run()
    assert result.stdout == b"hello"
    assert result.exit_code == 5


def test_bad_buffer_fails_the_call_with_error_noaccess() -> None:
    code = """
    push 0
    push 0
    push 16
    push 0x10
    push 7
    call dword ptr [{IAT:WriteFile}]
    mov ebx, eax
    call dword ptr [{IAT:GetLastError}]
    push eax
    call dword ptr [{IAT:ExitProcess}]
    """
    process = payload(32, code, imports="ExitProcess WriteFile GetLastError")
    assert process.run().exit_code == 998  # ERROR_NOACCESS


def test_handlers_are_a_registry_anyone_can_extend() -> None:
    @api("testlib.dll", 2)
    def AddNumbers(call: ApiCall) -> int:
        a, b = call.args
        return a + b

    try:
        code = "push 40\npush 2\ncall dword ptr [{IAT:AddNumbers}]\npush eax\n" + exit32().split("\n")[1]
        process = payload(32, code, extra="; import testlib.dll: AddNumbers")
        assert process.run().exit_code == 42
    finally:
        del REGISTRY[("testlib.dll", "AddNumbers")]


def test_api_trace_lists_calls_and_results() -> None:
    process = payload(64, "mov ecx, 0x33\ncall qword ptr [rip + {IAT:SetLastError}]\n" + exit64(1),
                      imports="ExitProcess SetLastError")
    process.api_trace = io.StringIO()
    process.run()
    lines = process.api_trace.getvalue().splitlines()
    assert lines == ["[api] kernel32.dll!SetLastError(0x33)", "[api] kernel32.dll!ExitProcess(0x1)"]


# -- exceptions ------------------------------------------------------------------------------
def test_access_violation_report_reads_like_windows() -> None:
    process = payload(32, "mov eax, dword ptr [0x10]\n" + exit32())
    result = process.run()
    assert result.exit_code == STATUS_ACCESS_VIOLATION
    exc = result.exception
    assert exc is not None
    assert exc.information == [0, 0x10]
    assert exc.instruction == "mov eax, dword ptr [0x10]"
    assert exc.location == "test.exe+0x1000"
    text = exc.describe()
    assert "EXCEPTION_ACCESS_VIOLATION" in text
    assert "referenced memory at 0x00000010. The memory could not be read." in text
    assert "eip=00401000" in text


def test_executing_a_readwrite_page_is_a_dep_violation() -> None:
    code = """
    push 4
    push 0x3000
    push 0x1000
    push 0
    call dword ptr [{IAT:VirtualAlloc}]
    mov byte ptr [eax], 0xC3
    call eax
    """ + exit32()
    result = payload(32, code, imports="ExitProcess VirtualAlloc").run()
    assert result.exit_code == STATUS_ACCESS_VIOLATION
    assert result.exception is not None and result.exception.information[0] == 8
    assert "could not be executed" in result.exception.describe()


@pytest.mark.parametrize(("code", "status"), [
    ("ud2", STATUS_ILLEGAL_INSTRUCTION),
    ("xor ecx, ecx\nmov eax, 1\ndiv ecx", STATUS_INTEGER_DIVIDE_BY_ZERO),
    ("int3", STATUS_BREAKPOINT),
])
def test_cpu_exceptions_end_the_process_with_their_code(code: str, status: int) -> None:
    process = payload(64, code + "\n" + exit64())
    result = process.run()
    assert result.exit_code == status
    assert result.exception is not None and result.exception.address == process.entry_point + (
        len(build.assemble(code.splitlines()[:-1], 64, 0, {}, "t")) if code != "int3" else 0)


def test_guard_page_outside_the_stack_is_an_unhandled_guard_violation() -> None:
    code = """
    push 0x104
    push 0x3000
    push 0x1000
    push 0
    call dword ptr [{IAT:VirtualAlloc}]
    mov ecx, dword ptr [eax]
    """ + exit32()
    result = payload(32, code, imports="ExitProcess VirtualAlloc").run()
    assert result.exit_code == STATUS_GUARD_PAGE_VIOLATION


# -- the stack --------------------------------------------------------------------------------
def test_stack_grows_page_by_page_through_the_guard() -> None:
    code = """
    mov ecx, 0x40
    .Lpush:
    sub esp, 0x1000
    mov dword ptr [esp], ecx
    dec ecx
    jnz .Lpush
    mov eax, dword ptr fs:[4]
    sub eax, dword ptr fs:[8]
    push eax
    call dword ptr [{IAT:ExitProcess}]
    """
    process = payload(32, code)
    assert process.run().exit_code == 0x41000  # 0x40 pages below the first committed one
    env = process.env
    assert env is not None
    guard = process.mm.query(env.stack_base - 0x42000)
    assert guard.Protect == PAGE_READWRITE | PAGE_GUARD


@pytest.mark.parametrize("bits", [32, 64])
def test_unbounded_recursion_is_a_stack_overflow(bits: int) -> None:
    code = ".Lrec:\ncall .Lrec" if bits == 32 else ".Lrec:\nsub rsp, 0x100\ncall .Lrec"
    result = payload(bits, code).run()
    assert result.exit_code == STATUS_STACK_OVERFLOW
    assert result.exception is not None and result.exception.name == "EXCEPTION_STACK_OVERFLOW"


def test_skipping_the_guard_page_is_an_access_violation() -> None:
    code = "mov dword ptr [esp - 0x3000], 1\n" + exit32()  # below the guard: reserved memory
    assert payload(32, code).run().exit_code == STATUS_ACCESS_VIOLATION


# -- running ------------------------------------------------------------------------------------
def test_instruction_limit_stops_a_running_process_exactly() -> None:
    process = payload(64, ".Lspin:\ninc rax\njmp .Lspin")
    result = process.run(max_instructions=10_001, chunk=4096)
    assert result.limit_reached and result.exit_code is None
    assert result.instructions == 10_001
    assert process.uc.reg_read(UC_X86_REG_RAX) == 5001  # inc, jmp, inc, ... : 5001 incs
    more = process.run(max_instructions=1000)
    assert more.instructions == 11_001


def test_progress_is_reported_per_interval() -> None:
    seen: list[int] = []
    process = payload(64, ".Lspin:\njmp .Lspin")
    process.run(max_instructions=50_000, chunk=10_000, progress=lambda n, _t: seen.append(n),
                progress_every=20_000)
    assert seen == [20_000, 40_000]


@pytest.mark.parametrize(("name", "chunk"),
                         [("hello32", 1), ("heap64", 3), ("heap64", 7), ("section32", 1000)])
def test_chunk_boundaries_do_not_change_the_outcome(name: str, chunk: int) -> None:
    """Chunks stop at every instruction boundary, including right on an API stub."""
    result = Process.load_file(build.BIN / f"{name}.exe").run(chunk=chunk)
    assert result.exit_code == 0
    assert result.stdout == (build.EXPECTED / f"{name}.txt").read_bytes()


def test_dword_parameters_keep_only_their_defined_low_half() -> None:
    """x64 callers leave garbage above a DWORD argument (a 4-byte ``mov`` to its stack slot):
    the handler must see what the real callee reads. Pointer-sized ones stay whole."""
    spec = REGISTRY[("kernel32.dll", "CreateFileMappingA")]
    args = [0xFFFFFFFFFFFFFFFF, 0, 0xDEAD000000000004, 0x7700000000, 0x1234500003000, 0x140001000]
    assert spec.narrow(list(args)) == [args[0], 0, 4, 0, 0x3000, 0x140001000]
    with pytest.raises(RunnerError):
        api("test.dll", 2, dwords=(2,))
