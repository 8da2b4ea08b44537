; seh32 — PE32 (x86): structured exception handling through the fs:[0] chain. (1) A frame
; handler catches an access violation (a write to .rdata), reads the EXCEPTION_RECORD,
; points CONTEXT.Eip past the faulting instruction and returns ExceptionContinueExecution.
; (2) `hlt` in user mode raises STATUS_PRIVILEGED_INSTRUCTION, caught the same way.
; (3) Two frames: the inner handler declines (ExceptionContinueSearch); the outer one does
; not return: it calls RtlUnwind, which calls the inner handler again with
; EXCEPTION_UNWINDING and unlinks it, then resumes at a recovery label with the stack of its
; frame — what MSVC's __except does.
; bits: 32
; include: lib32
; import kernel32.dll: RtlUnwind ExitProcess
; exit: 0

section .text
start:
    push ebx
    push esi
    push edi
    push ebp
    mov eax, dword ptr fs:[0]
    mov dword ptr [{DATA:chain}], eax
; -- 1: catch a write to a read-only page and continue after it
    mov dword ptr [{DATA:resume}], after_write
    mov ecx, catch_and_skip
    push ecx                                ; EXCEPTION_REGISTRATION_RECORD: Handler
    push dword ptr fs:[0]                   ; Next
    mov dword ptr fs:[0], esp
    mov eax, 0x1234
fault_write:
    mov dword ptr [{DATA:table} + 4], eax   ; .rdata is PAGE_READONLY
after_write:
    pop dword ptr fs:[0]
    add esp, 4
    push {DATA:m_resumed}
    call print_cstr
    push {DATA:m_code}
    push dword ptr [{DATA:code}]
    call print_kv_swapped
    push {DATA:m_info0}
    push dword ptr [{DATA:info0}]
    call print_kv_swapped
    mov eax, dword ptr [{DATA:info1}]
    sub eax, {DATA:table}
    push {DATA:m_info1}
    push eax
    call print_kv_swapped
    mov eax, dword ptr [{DATA:address}]
    sub eax, fault_write
    push {DATA:m_address}
    push eax
    call print_kv_swapped
    push {DATA:m_table1}
    push dword ptr [{DATA:table} + 4]
    call print_kv_swapped
; -- 2: hlt
    mov dword ptr [{DATA:resume}], after_hlt
    mov ecx, catch_and_skip
    push ecx
    push dword ptr fs:[0]
    mov dword ptr fs:[0], esp
fault_hlt:
    hlt
after_hlt:
    pop dword ptr fs:[0]
    add esp, 4
    push {DATA:m_code}
    push dword ptr [{DATA:code}]
    call print_kv_swapped
    push {DATA:m_nparams}
    push dword ptr [{DATA:nparams}]
    call print_kv_swapped
    mov eax, dword ptr [{DATA:address}]
    sub eax, fault_hlt
    push {DATA:m_address}
    push eax
    call print_kv_swapped
; -- 3: two frames, the outer one unwinds and recovers
    mov ecx, outer_handler
    push ecx
    push dword ptr fs:[0]
    mov dword ptr fs:[0], esp
    mov dword ptr [{DATA:outer_frame}], esp
    mov ecx, inner_handler
    push ecx
    push dword ptr fs:[0]
    mov dword ptr fs:[0], esp
    xor eax, eax
    mov eax, dword ptr [eax + 8]            ; read NULL+8: access violation
    push {DATA:m_not_reached}
    call print_cstr
recovered:
    mov eax, dword ptr fs:[0]
    sub eax, dword ptr [{DATA:outer_frame}] ; 0: the inner frame was unlinked by the unwind
    push {DATA:m_head}
    push eax
    call print_kv_swapped
    pop dword ptr fs:[0]
    add esp, 4
    push {DATA:m_outer}
    push dword ptr [{DATA:outer_code}]
    call print_kv_swapped
    push {DATA:m_inner}
    push dword ptr [{DATA:inner_calls}]
    call print_kv_swapped
    push {DATA:m_flags}
    push dword ptr [{DATA:inner_flags}]
    call print_kv_swapped
    mov eax, dword ptr fs:[0]
    sub eax, dword ptr [{DATA:chain}]
    push {DATA:m_chain}
    push eax
    call print_kv_swapped
    pop ebp
    pop edi
    pop esi
    pop ebx
    push 0
    call dword ptr [{IAT:ExitProcess}]

; print_kv_swapped(value, label): print_kv with the arguments pushed label first
print_kv_swapped:
    push dword ptr [esp + 4]
    push dword ptr [esp + 12]
    call print_kv
    ret 8

; EXCEPTION_DISPOSITION __cdecl catch_and_skip(record, frame, context, dispatcher_context)
catch_and_skip:
    mov eax, dword ptr [esp + 4]            ; EXCEPTION_RECORD
    mov ecx, dword ptr [eax]
    mov dword ptr [{DATA:code}], ecx        ; ExceptionCode
    mov ecx, dword ptr [eax + 0x0C]
    mov dword ptr [{DATA:address}], ecx     ; ExceptionAddress
    mov ecx, dword ptr [eax + 0x10]
    mov dword ptr [{DATA:nparams}], ecx     ; NumberParameters
    mov ecx, dword ptr [eax + 0x14]
    mov dword ptr [{DATA:info0}], ecx       ; ExceptionInformation[0]
    mov ecx, dword ptr [eax + 0x18]
    mov dword ptr [{DATA:info1}], ecx       ; ExceptionInformation[1]
    mov eax, dword ptr [esp + 12]           ; CONTEXT
    mov ecx, dword ptr [{DATA:resume}]
    mov dword ptr [eax + 0xB8], ecx         ; CONTEXT.Eip: past the faulting instruction
    xor eax, eax                            ; ExceptionContinueExecution
    ret

inner_handler:
    inc dword ptr [{DATA:inner_calls}]
    mov eax, dword ptr [esp + 4]
    mov ecx, dword ptr [eax + 4]
    mov dword ptr [{DATA:inner_flags}], ecx ; ExceptionFlags of the last call
    mov eax, 1                              ; ExceptionContinueSearch
    ret

outer_handler:
    mov eax, dword ptr [esp + 4]
    test dword ptr [eax + 4], 6             ; EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND
    jnz .Lsearch
    mov ecx, dword ptr [eax]
    mov dword ptr [{DATA:outer_code}], ecx
    mov ecx, recovered
    push 0                                  ; ReturnValue
    push eax                                ; ExceptionRecord
    push ecx                                ; TargetIp
    push dword ptr [esp + 20]               ; TargetFrame: this handler's frame
    call dword ptr [{IAT:RtlUnwind}]
    mov esp, dword ptr [{DATA:outer_frame}] ; the __except block runs on the frame's stack
    jmp recovered
.Lsearch:
    mov eax, 1
    ret

section .data
chain: dd 0
resume: dd 0
code: dd 0
address: dd 0
nparams: dd 0
info0: dd 0
info1: dd 0
outer_frame: dd 0
outer_code: dd 0
inner_calls: dd 0
inner_flags: dd 0

section .rdata
table: dd 1, 2, 3
m_resumed: db "resumed after the faulting write", 10, 0
m_code: db "ExceptionCode: ", 0
m_info0: db "ExceptionInformation[0]: ", 0
m_info1: db "ExceptionInformation[1] - &table: ", 0
m_address: db "ExceptionAddress - faulting instruction: ", 0
m_table1: db "table[1] (unchanged): ", 0
m_nparams: db "NumberParameters: ", 0
m_not_reached: db "NOT REACHED", 10, 0
m_head: db "fs:[0] - outer frame after RtlUnwind: ", 0
m_outer: db "outer handler saw: ", 0
m_inner: db "inner handler calls (search, unwind): ", 0
m_flags: db "inner handler's last ExceptionFlags: ", 0
m_chain: db "fs:[0] - original chain head at the end: ", 0
