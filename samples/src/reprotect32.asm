; reprotect32 — PE32 (x86): a vectored handler that repairs the fault. A write to a
; PAGE_READONLY page reaches the handler, which VirtualProtects the page PAGE_READWRITE and
; returns EXCEPTION_CONTINUE_EXECUTION: the write is re-run and lands. Then RaiseException
; with two arguments: the handler sees them and declines (EXCEPTION_CONTINUE_SEARCH), there
; is no frame handler, and the filter of SetUnhandledExceptionFilter continues execution,
; so RaiseException returns to its caller.
; bits: 32
; include: lib32
; import kernel32.dll: VirtualAlloc VirtualProtect VirtualQuery ExitProcess RaiseException
; import kernel32.dll: AddVectoredExceptionHandler SetUnhandledExceptionFilter
; exit: 0

section .text
start:
    push ebx
    push 0x02                               ; PAGE_READONLY
    push 0x3000                             ; MEM_COMMIT | MEM_RESERVE
    push 0x2000
    push 0
    call dword ptr [{IAT:VirtualAlloc}]
    mov ebx, eax
    mov dword ptr [{DATA:page}], eax
    mov eax, veh_handler
    push eax
    push 0                                  ; last in the list
    call dword ptr [{IAT:AddVectoredExceptionHandler}]
    mov eax, unhandled_filter
    push eax
    call dword ptr [{IAT:SetUnhandledExceptionFilter}]
    push {DATA:m_previous}
    push eax                                ; the previous filter: none
    call print_kv_swapped
    mov dword ptr [ebx + 0x1234], 0xC0DE    ; PAGE_READONLY: the handler makes it writable
    push {DATA:m_value}
    push dword ptr [ebx + 0x1234]
    call print_kv_swapped
    push {DATA:m_faults}
    push dword ptr [{DATA:faults}]
    call print_kv_swapped
    push 28                                 ; VirtualQuery(page, &mbi, sizeof mbi)
    push {DATA:mbi}
    lea eax, [ebx + 0x1000]
    push eax
    call dword ptr [{IAT:VirtualQuery}]
    push {DATA:m_protect}
    push dword ptr [{DATA:mbi} + 20]        ; MEMORY_BASIC_INFORMATION.Protect
    call print_kv_swapped
    push {DATA:m_size}
    push dword ptr [{DATA:mbi} + 12]        ; RegionSize: only the written page changed
    call print_kv_swapped
    push {DATA:args}                        ; RaiseException(0xE0000001, 0, 2, args)
    push 2
    push 0
    push 0xE0000001
    call dword ptr [{IAT:RaiseException}]
    push {DATA:m_returned}
    call print_cstr
    push {DATA:m_raised}
    push dword ptr [{DATA:raised_code}]
    call print_kv_swapped
    push {DATA:m_nparams}
    push dword ptr [{DATA:raised_count}]
    call print_kv_swapped
    push {DATA:m_arg1}
    push dword ptr [{DATA:raised_arg1}]
    call print_kv_swapped
    push {DATA:m_filter}
    push dword ptr [{DATA:filter_calls}]
    call print_kv_swapped
    pop ebx
    push 0
    call dword ptr [{IAT:ExitProcess}]

print_kv_swapped:
    push dword ptr [esp + 4]
    push dword ptr [esp + 12]
    call print_kv
    ret 8

; LONG CALLBACK veh_handler(EXCEPTION_POINTERS *)
veh_handler:
    push ebx
    mov eax, dword ptr [esp + 8]
    mov ebx, dword ptr [eax]                ; ExceptionRecord
    cmp dword ptr [ebx], 0xC0000005
    jne .Lother
    inc dword ptr [{DATA:faults}]
    mov eax, dword ptr [ebx + 0x18]         ; ExceptionInformation[1]: the address written
    push {DATA:old}
    push 0x04                               ; PAGE_READWRITE
    push 1
    push eax
    call dword ptr [{IAT:VirtualProtect}]
    mov eax, 0xFFFFFFFF                     ; EXCEPTION_CONTINUE_EXECUTION
    pop ebx
    ret 4
.Lother:
    mov eax, dword ptr [ebx]
    mov dword ptr [{DATA:raised_code}], eax
    mov eax, dword ptr [ebx + 0x10]
    mov dword ptr [{DATA:raised_count}], eax
    mov eax, dword ptr [ebx + 0x18]
    mov dword ptr [{DATA:raised_arg1}], eax
    xor eax, eax                            ; EXCEPTION_CONTINUE_SEARCH
    pop ebx
    ret 4

; LONG WINAPI unhandled_filter(EXCEPTION_POINTERS *)
unhandled_filter:
    inc dword ptr [{DATA:filter_calls}]
    mov eax, 0xFFFFFFFF                     ; EXCEPTION_CONTINUE_EXECUTION
    ret 4

section .data
page: dd 0
old: dd 0
faults: dd 0
raised_code: dd 0
raised_count: dd 0
raised_arg1: dd 0
filter_calls: dd 0
mbi: resb 28
args: dd 0x11111111, 0x22222222

section .rdata
m_previous: db "previous unhandled filter: ", 0
m_value: db "value written after the handler: ", 0
m_faults: db "access violations handled: ", 0
m_protect: db "Protect of the written page after the handler: ", 0
m_size: db "RegionSize: ", 0
m_returned: db "RaiseException returned", 10, 0
m_raised: db "vectored handler saw code: ", 0
m_nparams: db "NumberParameters: ", 0
m_arg1: db "ExceptionInformation[1]: ", 0
m_filter: db "unhandled filter calls: ", 0
