"""Guest exception dispatch: CONTEXT layouts, nesting, unwinding, stack growth, filters,
snapshots taken inside a handler.

Each program below is a small PE (assembled like the samples) that prints what its handlers
see. The expected lines were recorded by running the very same binaries under Wine
(wine 8, ``WINEDEBUG=-all``), which implements the dispatcher independently — they are
Windows' answers written as literals, not values computed by this package. Where Wine is
not the oracle (the end of a process that has no stack left for the exception frame) the
test says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem.runner import Process  # noqa: E402
from emulator_mem.runner.persist import read_runner_state  # noqa: E402
from samples import build  # noqa: E402

SHOW32 = """
; show(ecx = label, eax = value): print_kv, keeps ebx, esi, edi, ebp
show:
    push eax
    push ecx
    call print_kv
    ret
"""


def source(bits: int, imports: str, code: str, data: str = "", rdata: str = "") -> str:
    lib = "lib64" if bits == 64 else "lib32"
    text = (f"; test — PE32: exceptions\n; bits: {bits}\n; include: {lib}\n"
            f"; import kernel32.dll: {imports}\n\nsection .text\n{code}\n")
    if bits == 32:
        text += SHOW32
    if data:
        text += f"section .data\n{data}\n"
    if rdata:
        text += f"section .rdata\n{rdata}\n"
    return text


def load(text: str) -> Process:
    return Process.load(build.build_text(text, "test.asm"), "test.exe")


def run(text: str) -> tuple[list[str], int | None, Process]:
    process = load(text)
    result = process.run(max_instructions=5_000_000)
    return result.stdout.decode().splitlines(), result.exit_code, process


# -- CONTEXT as Windows lays it out ------------------------------------------------------------
CONTEXT32 = source(32, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    mov eax, veh
    push eax
    push 1
    call dword ptr [{IAT:AddVectoredExceptionHandler}]
    fld1                                    ; ST(0) = 1.0
    mov ecx, 0x55667788
    movd xmm1, ecx
    mov ebx, 0x11111111
    mov esi, 0x22222222
    mov edi, 0x33333333
    mov eax, 0x44444444
    mov dword ptr [{DATA:saved_esp}], esp
fault:
    mov dword ptr [eax], eax                ; 0x44444444 is free memory: access violation
    mov ecx, {DATA:m_after}
    call show                               ; EAX as the handler set it
    mov ecx, {DATA:m_ebx}
    mov eax, ebx
    call show
    push 0
    call dword ptr [{IAT:ExitProcess}]

veh:
    push ebx
    push esi
    mov ebx, dword ptr [esp + 12]
    mov esi, dword ptr [ebx + 4]            ; CONTEXT
    mov ebx, dword ptr [ebx]                ; EXCEPTION_RECORD
    mov ecx, {DATA:m_code}
    mov eax, dword ptr [ebx]
    call show
    mov ecx, {DATA:m_info}
    mov eax, dword ptr [ebx + 0x18]
    call show
    mov ecx, {DATA:m_flags}
    mov eax, dword ptr [esi]
    and eax, 0x1000F                        ; CONTEXT_i386 | CONTROL | INTEGER | SEGMENTS | FLOATING_POINT
    call show
    mov ecx, {DATA:m_ebx}
    mov eax, dword ptr [esi + 0xA4]
    call show
    mov ecx, {DATA:m_esi}
    mov eax, dword ptr [esi + 0xA0]
    call show
    mov ecx, {DATA:m_edi}
    mov eax, dword ptr [esi + 0x9C]
    call show
    mov ecx, {DATA:m_eax}
    mov eax, dword ptr [esi + 0xB0]
    call show
    mov ecx, {DATA:m_eip}
    mov eax, dword ptr [esi + 0xB8]
    sub eax, fault
    call show
    mov ecx, {DATA:m_esp}
    mov eax, dword ptr [esi + 0xC4]
    sub eax, dword ptr [{DATA:saved_esp}]
    call show
    mov ecx, {DATA:m_st0}
    movzx eax, word ptr [esi + 0x1C + 0x1C + 8]     ; FloatSave.RegisterArea: ST(0)'s exponent
    call show
    mov ecx, {DATA:m_fx}
    mov eax, dword ptr [esi + 0xCC + 160 + 16]      ; ExtendedRegisters (FXSAVE): XMM1
    call show
    mov ecx, {DATA:m_fxst}
    movzx eax, word ptr [esi + 0xCC + 32 + 8]       ; FXSAVE ST(0) exponent
    call show
    mov ecx, {DATA:m_fcw}
    movzx eax, word ptr [esi + 0x1C]                ; FloatSave.ControlWord (low word)
    call show
    mov ecx, {DATA:m_tag}
    movzx eax, word ptr [esi + 0x1C + 8]            ; FloatSave.TagWord: only ST(0) in use
    call show
    mov ecx, {DATA:m_fxtag}
    movzx eax, byte ptr [esi + 0xCC + 4]            ; FXSAVE abridged tag
    call show
    mov ecx, {DATA:m_mxcsr}
    mov eax, dword ptr [esi + 0xCC + 24]            ; FXSAVE MxCsr
    call show
    mov dword ptr [esi + 0xB0], 0x99        ; CONTEXT.Eax
    mov dword ptr [esi + 0xA4], 0x77        ; CONTEXT.Ebx
    add dword ptr [esi + 0xB8], 2           ; CONTEXT.Eip: past `mov [eax], eax` (2 bytes)
    mov eax, 0xFFFFFFFF
    pop esi
    pop ebx
    ret 4
""", data="saved_esp: dd 0", rdata="""
m_code: db "ExceptionCode: ", 0
m_info: db "ExceptionInformation[1]: ", 0
m_flags: db "ContextFlags & 0x1000f: ", 0
m_ebx: db "Ebx: ", 0
m_esi: db "Esi: ", 0
m_edi: db "Edi: ", 0
m_eax: db "Eax: ", 0
m_eip: db "Eip - fault: ", 0
m_esp: db "Esp - esp at the fault: ", 0
m_st0: db "FloatSave ST(0) exponent: ", 0
m_fx: db "ExtendedRegisters XMM1: ", 0
m_fxst: db "ExtendedRegisters ST(0) exponent: ", 0
m_fcw: db "FloatSave.ControlWord: ", 0
m_tag: db "FloatSave.TagWord: ", 0
m_fxtag: db "ExtendedRegisters abridged tag: ", 0
m_mxcsr: db "ExtendedRegisters MxCsr: ", 0
m_after: db "eax after continuing: ", 0
""")


def test_x86_context_layout_and_continue_from_the_edited_context() -> None:
    lines, code, _ = run(CONTEXT32)
    assert lines == [
        "ExceptionCode: 0xc0000005",
        "ExceptionInformation[1]: 0x44444444",
        "ContextFlags & 0x1000f: 0x1000f",
        "Ebx: 0x11111111",
        "Esi: 0x22222222",
        "Edi: 0x33333333",
        "Eax: 0x44444444",
        "Eip - fault: 0x0",
        "Esp - esp at the fault: 0x0",
        "FloatSave ST(0) exponent: 0x3fff",
        "ExtendedRegisters XMM1: 0x55667788",
        "ExtendedRegisters ST(0) exponent: 0x3fff",
        "FloatSave.ControlWord: 0x27f",
        "FloatSave.TagWord: 0x3fff",
        "ExtendedRegisters abridged tag: 0x80",
        "ExtendedRegisters MxCsr: 0x1f80",
        "eax after continuing: 0x99",
        "Ebx: 0x77",
    ]
    assert code == 0


CONTEXT64 = source(64, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    push rbx
    push r12
    push r15
    sub rsp, 0x20
    mov ecx, 1
    lea rdx, [rip + veh]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    mov rax, 0x0123456789ABCDEF
    movq xmm6, rax
    mov rbx, 0x1111111122222222
    mov r12, 0x3333333344444444
    mov r15, 0x5555555566666666
    mov qword ptr [rip + {DATA:saved_rsp}], rsp
    xor eax, eax
fault:
    mov qword ptr [rax + 0x10], rbx         ; write to NULL + 0x10
    lea rcx, [rip + {DATA:m_after}]
    mov rdx, rax
    call print_kv
    lea rcx, [rip + {DATA:m_xmm}]
    movq rdx, xmm6
    call print_kv
    lea rcx, [rip + {DATA:m_r12}]
    mov rdx, r12
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

veh:
    push rbx
    push rsi
    sub rsp, 0x28
    mov rsi, qword ptr [rcx + 8]            ; CONTEXT
    mov rbx, qword ptr [rcx]                ; EXCEPTION_RECORD
    lea rcx, [rip + {DATA:m_code}]
    mov edx, dword ptr [rbx]
    call print_kv
    lea rcx, [rip + {DATA:m_info0}]
    mov rdx, qword ptr [rbx + 0x20]
    call print_kv
    lea rcx, [rip + {DATA:m_info1}]
    mov rdx, qword ptr [rbx + 0x28]
    call print_kv
    lea rcx, [rip + {DATA:m_flags}]
    mov edx, dword ptr [rsi + 0x30]
    and edx, 0x10000F
    call print_kv
    lea rcx, [rip + {DATA:m_rbx}]
    mov rdx, qword ptr [rsi + 0x90]
    call print_kv
    lea rcx, [rip + {DATA:m_r12}]
    mov rdx, qword ptr [rsi + 0xD8]
    call print_kv
    lea rcx, [rip + {DATA:m_r15}]
    mov rdx, qword ptr [rsi + 0xF0]
    call print_kv
    lea rcx, [rip + {DATA:m_rip}]
    mov rdx, qword ptr [rsi + 0xF8]
    lea rax, [rip + fault]
    sub rdx, rax
    call print_kv
    lea rcx, [rip + {DATA:m_rsp}]
    mov rdx, qword ptr [rsi + 0x98]
    sub rdx, qword ptr [rip + {DATA:saved_rsp}]
    call print_kv
    lea rcx, [rip + {DATA:m_mxcsr}]
    mov edx, dword ptr [rsi + 0x34]
    call print_kv
    lea rcx, [rip + {DATA:m_xmm}]
    mov rdx, qword ptr [rsi + 0x100 + 160 + 6 * 16]  ; FltSave.XmmRegisters[6]
    call print_kv
    lea rcx, [rip + {DATA:m_fcw}]
    movzx edx, word ptr [rsi + 0x100]       ; FltSave.ControlWord
    call print_kv
    lea rcx, [rip + {DATA:m_fmx}]
    mov edx, dword ptr [rsi + 0x100 + 24]   ; FltSave.MxCsr
    call print_kv
    mov qword ptr [rsi + 0x78], 0x99        ; CONTEXT.Rax
    mov qword ptr [rsi + 0xD8], 0x12        ; CONTEXT.R12
    mov qword ptr [rsi + 0x100 + 160 + 6 * 16], 0x42
    add qword ptr [rsi + 0xF8], 4           ; CONTEXT.Rip: past the 4-byte store
    mov eax, 0xFFFFFFFF
    add rsp, 0x28
    pop rsi
    pop rbx
    ret
""", data="saved_rsp: dq 0", rdata="""
m_code: db "ExceptionCode: ", 0
m_info0: db "ExceptionInformation[0]: ", 0
m_info1: db "ExceptionInformation[1]: ", 0
m_flags: db "ContextFlags & 0x10000f: ", 0
m_rbx: db "Rbx: ", 0
m_r12: db "R12: ", 0
m_r15: db "R15: ", 0
m_rip: db "Rip - fault: ", 0
m_rsp: db "Rsp - rsp at the fault: ", 0
m_mxcsr: db "MxCsr: ", 0
m_fcw: db "FltSave.ControlWord: ", 0
m_fmx: db "FltSave.MxCsr: ", 0
m_xmm: db "Xmm6 (low half): ", 0
m_after: db "rax after continuing: ", 0
""")


def test_x64_context_layout_and_continue_from_the_edited_context() -> None:
    lines, code, _ = run(CONTEXT64)
    assert lines == [
        "ExceptionCode: 0xc0000005",
        "ExceptionInformation[0]: 0x1",
        "ExceptionInformation[1]: 0x10",
        "ContextFlags & 0x10000f: 0x10000f",
        "Rbx: 0x1111111122222222",
        "R12: 0x3333333344444444",
        "R15: 0x5555555566666666",
        "Rip - fault: 0x0",
        "Rsp - rsp at the fault: 0x0",
        "MxCsr: 0x1f80",
        "Xmm6 (low half): 0x123456789abcdef",
        "FltSave.ControlWord: 0x27f",
        "FltSave.MxCsr: 0x1f80",
        "rax after continuing: 0x99",
        "Xmm6 (low half): 0x42",
        "R12: 0x12",
    ]
    assert code == 0


# -- nesting, unwinding, non-continuable exceptions (x86 SEH) ----------------------------------
NESTED32 = source(32, "ExitProcess", r"""
start:
    mov eax, handler
    push eax
    push dword ptr fs:[0]
    mov dword ptr fs:[0], esp
    xor eax, eax
fault:
    mov eax, dword ptr [eax]                ; NULL read; the handler faults too, once
    pop dword ptr fs:[0]
    add esp, 4
    mov ecx, {DATA:m_calls}
    mov eax, dword ptr [{DATA:calls}]
    call show
    mov ecx, {DATA:m_first}
    mov eax, dword ptr [{DATA:flags1}]
    call show
    mov ecx, {DATA:m_second}
    mov eax, dword ptr [{DATA:flags2}]
    call show
    mov ecx, {DATA:m_code2}
    mov eax, dword ptr [{DATA:code2}]
    call show
    push 0
    call dword ptr [{IAT:ExitProcess}]

handler:
    inc dword ptr [{DATA:calls}]
    mov eax, dword ptr [esp + 4]            ; EXCEPTION_RECORD
    mov ecx, dword ptr [eax + 4]
    cmp dword ptr [{DATA:calls}], 1
    jne .Lnested
    mov dword ptr [{DATA:flags1}], ecx
    mov eax, 0x10
inner_fault:
    mov dword ptr [eax], eax                ; write to 0x10 inside the handler: nested exception
    mov eax, dword ptr [esp + 12]           ; CONTEXT of the first exception
    add dword ptr [eax + 0xB8], 2           ; past `mov eax, [eax]`
    xor eax, eax                            ; ExceptionContinueExecution
    ret
.Lnested:
    mov dword ptr [{DATA:flags2}], ecx
    mov ecx, dword ptr [eax]
    mov dword ptr [{DATA:code2}], ecx
    mov eax, dword ptr [esp + 12]
    add dword ptr [eax + 0xB8], 2           ; past `mov [eax], eax`
    xor eax, eax
    ret
""", data="calls: dd 0\nflags1: dd 0\nflags2: dd 0\ncode2: dd 0", rdata="""
m_calls: db "handler calls: ", 0
m_first: db "ExceptionFlags, first call: ", 0
m_second: db "ExceptionFlags, nested call: ", 0
m_code2: db "nested ExceptionCode: ", 0
""")


def test_a_fault_inside_a_frame_handler_is_a_nested_exception() -> None:
    lines, code, process = run(NESTED32)
    assert lines == [
        "handler calls: 0x2",
        "ExceptionFlags, first call: 0x0",
        "ExceptionFlags, nested call: 0x10",  # EXCEPTION_NESTED_CALL
        "nested ExceptionCode: 0xc0000005",
    ]
    assert code == 0
    assert process.exceptions.active == []


NONCONTINUABLE32 = source(32, "ExitProcess RaiseException", r"""
start:
    mov eax, handler
    push eax
    push dword ptr fs:[0]
    mov dword ptr fs:[0], esp
    push 0
    push 0
    push 1                                  ; EXCEPTION_NONCONTINUABLE
    push 0xE0000002
    call dword ptr [{IAT:RaiseException}]
    push 0
    call dword ptr [{IAT:ExitProcess}]

handler:
    mov eax, dword ptr [esp + 4]
    mov ecx, {DATA:m_code}
    push eax
    mov eax, dword ptr [eax]
    call show
    pop eax
    mov ecx, {DATA:m_flags}
    push eax
    mov eax, dword ptr [eax + 4]
    call show
    pop eax
    mov ecx, {DATA:m_chained}
    push eax
    mov eax, dword ptr [eax + 8]            ; ExceptionRecord: the record it is about
    test eax, eax
    jz .Lshow
    mov eax, dword ptr [eax]
.Lshow:
    call show
    pop eax
    cmp dword ptr [eax], 0xC0000025
    je .Lsearch
    xor eax, eax                            ; ExceptionContinueExecution: refused for this one
    ret
.Lsearch:
    mov eax, 1                              ; ExceptionContinueSearch: nobody else handles it
    ret
""", rdata="""
m_code: db "ExceptionCode: ", 0
m_flags: db "ExceptionFlags: ", 0
m_chained: db "chained record's code: ", 0
""")


def test_continuing_a_noncontinuable_exception_raises_another() -> None:
    """Wine agrees on every line but the chained record: it leaves ExceptionRecord NULL,
    where Windows' RtlDispatchException (ReactOS sdk/lib/rtl/i386/except.c, the NT design)
    sets ``ExceptionRecord2.ExceptionRecord = ExceptionRecord``."""
    lines, code, process = run(NONCONTINUABLE32)
    assert lines == [
        "ExceptionCode: 0xe0000002",
        "ExceptionFlags: 0x1",
        "chained record's code: 0x0",
        "ExceptionCode: 0xc0000025",  # STATUS_NONCONTINUABLE_EXCEPTION
        "ExceptionFlags: 0x1",
        "chained record's code: 0xe0000002",
    ]
    assert code == 0xC0000025
    assert process.exception is not None and process.exception.code == 0xC0000025


# -- breakpoints, hlt, the unhandled filter -------------------------------------------------------
TRAPS32 = source(32, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    mov eax, veh
    push eax
    push 1
    call dword ptr [{IAT:AddVectoredExceptionHandler}]
bp:
    int3
    mov ecx, {DATA:m_after}
    mov eax, 1
    call show
priv:
    hlt
    mov ecx, {DATA:m_after}
    mov eax, 2
    call show
    push 0
    call dword ptr [{IAT:ExitProcess}]

veh:
    push ebx
    push esi
    mov ebx, dword ptr [esp + 12]
    mov esi, dword ptr [ebx + 4]
    mov ebx, dword ptr [ebx]
    mov ecx, {DATA:m_code}
    mov eax, dword ptr [ebx]
    call show
    mov ecx, {DATA:m_params}
    mov eax, dword ptr [ebx + 0x10]
    call show
    mov ecx, {DATA:m_address}
    mov eax, dword ptr [ebx + 0x0C]
    sub eax, start
    call show
    mov ecx, {DATA:m_eip}
    mov eax, dword ptr [esi + 0xB8]
    sub eax, start
    call show
    inc dword ptr [esi + 0xB8]              ; both are one byte long
    mov eax, 0xFFFFFFFF
    pop esi
    pop ebx
    ret 4
""", rdata="""
m_code: db "ExceptionCode: ", 0
m_params: db "NumberParameters: ", 0
m_address: db "ExceptionAddress - start: ", 0
m_eip: db "Eip - start: ", 0
m_after: db "continued: ", 0
""")


def test_int3_and_hlt_reach_the_handlers_at_their_own_address() -> None:
    lines, code, _ = run(TRAPS32)
    assert lines == [
        "ExceptionCode: 0x80000003",
        "NumberParameters: 0x1",
        "ExceptionAddress - start: 0xe",
        "Eip - start: 0xe",
        "continued: 0x1",
        "ExceptionCode: 0xc0000096",
        "NumberParameters: 0x0",
        "ExceptionAddress - start: 0x1e",
        "Eip - start: 0x1e",
        "continued: 0x2",
    ]
    assert code == 0


# A loop whose instructions end in 0xF4, the opcode of ``hlt``: ``lea ecx, [ebp - 0xc]`` is
# 8D 4D F4 and ``mov [ebp - 0xc], esi`` is 89 75 F4. Run one instruction per ``emu_start``,
# every chunk ends right behind each of them; the process must still add 40 + 39 + … + 1.
F4_TAILS32 = source(32, "ExitProcess", r"""
start:
    push ebp
    mov ebp, esp
    sub esp, 0x10
    xor edi, edi
    mov esi, 40
.Lloop:
    lea ecx, [ebp - 0xc]
    mov dword ptr [ebp - 0xc], esi
    add edi, dword ptr [ecx]
    dec esi
    jnz .Lloop
    push edi
    call dword ptr [{IAT:ExitProcess}]
""")

F4_TAILS64 = source(64, "ExitProcess", r"""
start:
    push rbp
    mov rbp, rsp
    sub rsp, 0x30
    xor edi, edi
    mov esi, 40
.Lloop:
    lea rcx, [rbp - 0xc]
    mov dword ptr [rbp - 0xc], esi
    add edi, dword ptr [rcx]
    dec esi
    jnz .Lloop
    mov ecx, edi
    call qword ptr [rip + {IAT:ExitProcess}]
""")


def test_a_chunk_ending_behind_an_f4_byte_is_not_a_hlt() -> None:
    """Unicorn stops ``emu_start`` after a ``hlt`` at CPL 0 exactly as after a used-up count;
    the runner must not take the second for the first (every chunk size up to the loop's)."""
    for text in (F4_TAILS32, F4_TAILS64):
        for chunk in (1, 2, 3, 5, 7):
            process = load(text)
            result = process.run(max_instructions=10_000, chunk=chunk)
            assert (result.exit_code, result.exception) == (820, None), (process.mm.is_64bit, chunk)
            assert not result.limit_reached


# Windows raises STATUS_PRIVILEGED_INSTRUCTION for hlt, cli and sti in user mode (IOPL 0), at
# the instruction; a #GP of an ordinary instruction is an access violation. (``in``/``out``
# too on Windows, but Unicorn never checks I/O permission: see exceptions/traps.py.)
PRIVILEGED64 = source(64, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    sub rsp, 0x28
    mov ecx, 1
    lea rdx, [rip + veh]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    hlt
    cli
    sti
    lea rcx, [rip + {DATA:m_count}]
    mov edx, dword ptr [rip + {DATA:count}]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

veh:
    push rbx
    push rsi
    sub rsp, 0x28
    mov rsi, qword ptr [rcx + 8]            ; CONTEXT
    mov rbx, qword ptr [rcx]                ; EXCEPTION_RECORD
    lea rcx, [rip + {DATA:m_code}]
    mov edx, dword ptr [rbx]
    call print_kv
    lea rcx, [rip + {DATA:m_address}]
    mov rdx, qword ptr [rbx + 0x10]
    lea rax, [rip + start]
    sub rdx, rax
    call print_kv
    lea rcx, [rip + {DATA:m_params}]
    mov edx, dword ptr [rbx + 0x18]
    call print_kv
    lea rcx, [rip + {DATA:m_cs}]
    movzx edx, word ptr [rsi + 0x38]        ; CONTEXT.SegCs
    call print_kv
    lea rcx, [rip + {DATA:m_ss}]
    movzx edx, word ptr [rsi + 0x42]        ; CONTEXT.SegSs
    call print_kv
    inc dword ptr [rip + {DATA:count}]
    inc qword ptr [rsi + 0xF8]              ; CONTEXT.Rip: each of them is one byte long
    mov eax, 0xFFFFFFFF
    add rsp, 0x28
    pop rsi
    pop rbx
    ret
""", data="count: dd 0", rdata="""
m_code: db "ExceptionCode: ", 0
m_address: db "ExceptionAddress - start: ", 0
m_params: db "NumberParameters: ", 0
m_cs: db "SegCs: ", 0
m_ss: db "SegSs: ", 0
m_count: db "handled: ", 0
""")


def test_privileged_instructions_reach_the_handlers_in_64_bit_code() -> None:
    lines, code, process = run(PRIVILEGED64)
    expected = []
    for offset in (0x16, 0x17, 0x18):  # hlt, cli, sti (Wine prints the same lines)
        expected += ["ExceptionCode: 0xc0000096", f"ExceptionAddress - start: {offset:#x}",
                     "NumberParameters: 0x0", "SegCs: 0x33", "SegSs: 0x2b"]  # KGDT64_R3_CODE/DATA | 3
    assert lines == [*expected, "handled: 0x3"]
    assert code == 0


def test_the_guest_runs_at_cpl_3_with_windows_selectors_also_after_resume(tmp_path: Path) -> None:
    """x86: CS = KGDT_R3_CODE | 3, SS = KGDT_R3_DATA | 3. A snapshot comes back in ring 3 too:
    taken before the ``hlt``, the resumed process must still see it trap."""
    from unicorn import x86_const as X

    plain, _, process = run(TRAPS32)
    assert (process.uc.reg_read(X.UC_X86_REG_CS), process.uc.reg_read(X.UC_X86_REG_SS)) == (0x1B, 0x23)
    snap = tmp_path / "traps.snap"
    load(TRAPS32).run(snapshot_at=3, snapshot_to=snap, max_instructions=3)
    resumed = Process.resume(snap)
    assert (resumed.uc.reg_read(X.UC_X86_REG_CS), resumed.uc.reg_read(X.UC_X86_REG_SS)) == (0x1B, 0x23)
    result = resumed.run(max_instructions=100_000)
    assert result.stdout.decode().splitlines() == plain
    assert result.exit_code == 0


# Every division by zero is its own STATUS_INTEGER_DIVIDE_BY_ZERO (qemu, left alone, would make
# the second a double fault and stop the run at the third).
DIVIDE32 = source(32, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    mov eax, veh
    push eax
    push 1
    call dword ptr [{IAT:AddVectoredExceptionHandler}]
    xor ecx, ecx
    div ecx
    div ecx
    hlt
    div ecx
    mov ecx, {DATA:m_count}
    mov eax, dword ptr [{DATA:count}]
    call show
    push 0
    call dword ptr [{IAT:ExitProcess}]

veh:
    push ebx
    push esi
    mov ebx, dword ptr [esp + 12]
    mov esi, dword ptr [ebx + 4]            ; CONTEXT
    mov ebx, dword ptr [ebx]                ; EXCEPTION_RECORD
    mov ecx, {DATA:m_code}
    mov eax, dword ptr [ebx]
    call show
    inc dword ptr [{DATA:count}]
    mov eax, dword ptr [esi + 0xB8]         ; CONTEXT.Eip: skip `div ecx` (2 bytes) or `hlt` (1)
    cmp byte ptr [eax], 0xF4
    setne cl
    movzx ecx, cl
    lea eax, [eax + ecx + 1]
    mov dword ptr [esi + 0xB8], eax
    mov eax, 0xFFFFFFFF
    pop esi
    pop ebx
    ret 4
""", data="count: dd 0", rdata="""
m_code: db "ExceptionCode: ", 0
m_count: db "handled: ", 0
""")


def test_repeated_divide_errors_and_general_protection_faults_are_each_delivered() -> None:
    lines, code, _ = run(DIVIDE32)
    assert lines == ["ExceptionCode: 0xc0000094", "ExceptionCode: 0xc0000094",
                     "ExceptionCode: 0xc0000096", "ExceptionCode: 0xc0000094", "handled: 0x4"]
    assert code == 0


GP32 = source(32, "ExitProcess", r"""
start:
    mov eax, 0x10                           ; Windows' ring-0 data selector
    mov ds, eax
    push 0
    call dword ptr [{IAT:ExitProcess}]
""")


def test_a_general_protection_fault_of_an_ordinary_instruction_is_an_access_violation() -> None:
    process = load(GP32)
    result = process.run(max_instructions=1_000)
    assert result.exit_code == 0xC0000005
    assert result.exception is not None
    assert result.exception.information == [0, 0xFFFFFFFF]
    assert result.exception.instruction.startswith("mov ds")


FILTER64 = source(64, "ExitProcess SetUnhandledExceptionFilter", r"""
start:
    sub rsp, 0x28
    lea rcx, [rip + filter]
    call qword ptr [rip + {IAT:SetUnhandledExceptionFilter}]
    xor eax, eax
    mov byte ptr [rax + 1], 1               ; nobody handles this one; the filter ends the process
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

filter:
    sub rsp, 0x28
    lea rcx, [rip + {DATA:m_filter}]
    mov rdx, qword ptr [rcx]
    mov rdx, 1
    call print_kv
    mov eax, 1                              ; EXCEPTION_EXECUTE_HANDLER
    add rsp, 0x28
    ret
""", rdata="""
m_filter: db "filter called: ", 0
""")


def test_a_filter_returning_execute_handler_ends_the_process_quietly() -> None:
    lines, code, process = run(FILTER64)
    assert lines == ["filter called: 0x1"]
    assert code == 0xC0000005
    assert process.exception is None  # no unhandled-exception report: the filter handled it


# -- the stack ----------------------------------------------------------------------------------
STACK64 = source(64, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    sub rsp, 0x28
    mov ecx, 1
    lea rdx, [rip + veh]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    mov ecx, 3000                           ; 3000 x 160 bytes: far below the committed stack
    call recurse
    lea rcx, [rip + {DATA:m_depth}]
    mov rdx, rax
    call print_kv
    lea rcx, [rip + {DATA:m_calls}]
    mov edx, dword ptr [rip + {DATA:calls}]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

recurse:
    sub rsp, 0x98
    mov qword ptr [rsp], rcx                ; touch the new frame
    xor eax, eax
    dec rcx
    jz .Lbottom
    call recurse
.Lbottom:
    inc rax
    add rsp, 0x98
    ret

veh:
    inc dword ptr [rip + {DATA:calls}]
    xor eax, eax
    ret
""", data="calls: dd 0", rdata="""
m_depth: db "depth: ", 0
m_calls: db "vectored handler calls: ", 0
""")


def test_stack_guard_pages_grow_the_stack_without_reaching_handlers() -> None:
    lines, code, process = run(STACK64)
    assert lines == ["depth: 0xbb8", "vectored handler calls: 0x0"]
    assert code == 0
    assert process.env is not None and process.env.stack_limit <= process.env.stack_base - 3000 * 0xA0


NO_STACK32 = source(32, "ExitProcess AddVectoredExceptionHandler", r"""
start:
    mov eax, veh
    push eax
    push 1
    call dword ptr [{IAT:AddVectoredExceptionHandler}]
    mov esp, 0x100                          ; no memory under the stack pointer
    mov dword ptr [0], 1                    ; the exception cannot be delivered
    push 0
    call dword ptr [{IAT:ExitProcess}]

veh:
    mov eax, 0xFFFFFFFF
    ret 4
""")


def test_an_exception_that_cannot_be_delivered_ends_the_process() -> None:
    """Windows' kernel cannot copy the exception frame to the user stack and terminates the
    process (KiDispatchException); no handler runs. Not checked under Wine, whose signal
    handler aborts differently."""
    lines, code, process = run(NO_STACK32)
    assert code == 0xC0000005
    assert process.exception is not None and process.exception.information == [1, 0]
    assert process.exceptions.active == []


# -- snapshots inside a handler -------------------------------------------------------------------
SLOW_HANDLER64 = source(64, "ExitProcess AddVectoredExceptionHandler VirtualAlloc", r"""
start:
    push rbx
    sub rsp, 0x20
    mov ecx, 1
    lea rdx, [rip + veh]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    xor ecx, ecx                            ; one PAGE_NOACCESS page
    mov edx, 0x1000
    mov r8d, 0x3000
    mov r9d, 0x01
    call qword ptr [rip + {IAT:VirtualAlloc}]
    mov rbx, rax
    mov eax, dword ptr [rbx + 0x20]         ; the handler skips this read, slowly
    lea rcx, [rip + {DATA:m_done}]
    mov edx, dword ptr [rip + {DATA:spins}]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

veh:
    sub rsp, 0x28
    mov rdx, qword ptr [rcx + 8]
    add qword ptr [rdx + 0xF8], 3           ; CONTEXT.Rip past `mov eax, [rbx + 0x20]`
    mov ecx, 20000
.Lspin:
    inc dword ptr [rip + {DATA:spins}]
    dec ecx
    jnz .Lspin
    lea rcx, [rip + {DATA:m_handler}]
    mov edx, 1
    call print_kv
    mov eax, 0xFFFFFFFF
    add rsp, 0x28
    ret
""", data="spins: dd 0", rdata="""
m_handler: db "in the handler: ", 0
m_done: db "continued after ", 0
""")


def test_a_snapshot_taken_inside_a_handler_resumes_in_a_fresh_process(tmp_path: Path) -> None:
    plain, code, _ = run(SLOW_HANDLER64)
    assert plain == ["in the handler: 0x1", "continued after 0x4e20"]
    snap = tmp_path / "inside.snap"
    process = load(SLOW_HANDLER64)
    process.run(snapshot_at=30_000, snapshot_to=snap, chunk=1000)  # inside the 60k-instruction spin
    state = read_runner_state(snap)
    assert len(state["exceptions"]["active"]) == 1
    assert state["exceptions"]["active"][0]["code"] == 0xC0000005
    resumed = Process.resume(snap)
    assert resumed.exceptions.active and resumed.exceptions.vectored
    result = resumed.run()
    assert result.stdout.decode().splitlines() == plain
    assert result.exit_code == 0 and resumed.exceptions.active == []


REMOVE64 = source(64, "ExitProcess AddVectoredExceptionHandler RemoveVectoredExceptionHandler", r"""
start:
    push rbx
    sub rsp, 0x20
    mov ecx, 1
    lea rdx, [rip + second]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    mov qword ptr [rip + {DATA:h_second}], rax
    mov ecx, 1                              ; first in the list: runs before `second`
    lea rdx, [rip + first]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    xor ecx, ecx
    lea rdx, [rip + third]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    xor eax, eax
    mov eax, dword ptr [rax]                ; NULL read
    lea rcx, [rip + {DATA:m_calls}]
    mov rdx, qword ptr [rip + {DATA:calls}]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

first:                                      ; removes `second` while the exception is dispatched
    sub rsp, 0x28
    mov rax, qword ptr [rip + {DATA:calls}]
    shl rax, 4
    or rax, 1
    mov qword ptr [rip + {DATA:calls}], rax
    mov rcx, qword ptr [rip + {DATA:h_second}]
    call qword ptr [rip + {IAT:RemoveVectoredExceptionHandler}]
    xor eax, eax                            ; EXCEPTION_CONTINUE_SEARCH
    add rsp, 0x28
    ret

second:
    mov rax, qword ptr [rip + {DATA:calls}]
    shl rax, 4
    or rax, 2
    mov qword ptr [rip + {DATA:calls}], rax
    xor eax, eax
    ret

third:
    mov rax, qword ptr [rip + {DATA:calls}]
    shl rax, 4
    or rax, 3
    mov qword ptr [rip + {DATA:calls}], rax
    mov rdx, qword ptr [rcx + 8]
    add qword ptr [rdx + 0xF8], 2           ; past `mov eax, [rax]`
    mov eax, 0xFFFFFFFF
    ret
""", data="calls: dq 0\nh_second: dq 0", rdata='m_calls: db "handlers called, in order: ", 0')


def test_a_vectored_handler_removed_during_dispatch_is_not_called() -> None:
    lines, code, _ = run(REMOVE64)
    assert lines == ["handlers called, in order: 0x13"]  # first, then third (Wine agrees)
    assert code == 0


def test_privileged_instructions_are_told_apart_by_decoding() -> None:
    """What Windows' #GP handler calls privileged (bytes as assembled, both modes)."""
    from emulator_mem.runner.exceptions.traps import is_privileged

    privileged = ["f4", "fa", "fb", "ec", "ee", "f36c", "0f20c0", "0f22d8", "0f21c0", "0f30",
                  "0f32", "0f33", "0f0115" + "00000000", "0f00d8", "0f09", "0f0138"]
    ordinary = ["8d4df4", "8975f4", "fff4", "00f4", "0fa2", "8ed8", "cd2e", ""]
    for bits in (32, 64):
        assert all(is_privileged(bytes.fromhex(h), bits == 64) for h in privileged), bits
        assert not any(is_privileged(bytes.fromhex(h), bits == 64) for h in ordinary), bits
