; guard64 — PE32+ (x64): finding a guard page with a vectored exception handler. Sixteen
; committed pages, one of them PAGE_READWRITE|PAGE_GUARD, are read one by one while a VEH
; handler counts STATUS_GUARD_PAGE_VIOLATION hits, keeps the record's ExceptionInformation
; and the page's protection as VirtualQuery shows it inside the handler (the guard bit is
; already gone: 4), and returns EXCEPTION_CONTINUE_EXECUTION, which re-runs the read. A
; second scan finds nothing (PAGE_GUARD is one-shot); the handler is then removed.
; bits: 64
; include: lib64
; import kernel32.dll: VirtualAlloc VirtualProtect VirtualQuery ExitProcess
; import kernel32.dll: AddVectoredExceptionHandler RemoveVectoredExceptionHandler
; exit: 0

section .text
start:
    push rbx
    push rsi
    push rdi
    sub rsp, 0x30
    xor ecx, ecx                            ; base = VirtualAlloc(NULL, 64 KiB, reserve+commit, RW)
    mov edx, 0x10000
    mov r8d, 0x3000
    mov r9d, PAGE_READWRITE
    call qword ptr [rip + {IAT:VirtualAlloc}]
    mov rbx, rax
    mov qword ptr [rip + {DATA:base}], rax
    lea rcx, [rbx + 0x5000]                 ; page 5 becomes a guard page
    mov edx, 0x1000
    mov r8d, 0x104                          ; PAGE_READWRITE | PAGE_GUARD
    lea r9, [rsp + 0x28]
    call qword ptr [rip + {IAT:VirtualProtect}]
    mov ecx, 1                              ; first in the list
    lea rdx, [rip + veh_handler]
    call qword ptr [rip + {IAT:AddVectoredExceptionHandler}]
    mov rdi, rax                            ; the handle
    xor esi, esi                            ; scan twice
.Lpass:
    xor ecx, ecx
.Lscan:
    mov al, byte ptr [rbx + rcx + 0x18]     ; one read per page, 0x18 bytes in
    add ecx, 0x1000
    cmp ecx, 0x10000
    jb .Lscan
    lea rcx, [rip + {DATA:m_hits}]
    mov edx, dword ptr [rip + {DATA:hits}]
    call print_kv
    inc esi
    cmp esi, 2
    jb .Lpass
    lea rcx, [rip + {DATA:m_code}]
    mov edx, dword ptr [rip + {DATA:code}]
    call print_kv
    lea rcx, [rip + {DATA:m_info0}]
    mov rdx, qword ptr [rip + {DATA:info0}]
    call print_kv
    lea rcx, [rip + {DATA:m_info1}]
    mov rdx, qword ptr [rip + {DATA:info1}]
    sub rdx, rbx
    call print_kv
    lea rcx, [rip + {DATA:m_prot}]
    mov edx, dword ptr [rip + {DATA:prot}]
    call print_kv
    mov rcx, rdi
    call qword ptr [rip + {IAT:RemoveVectoredExceptionHandler}]
    lea rcx, [rip + {DATA:m_removed}]
    mov edx, eax
    call print_kv
    mov rcx, rdi                            ; a second removal finds nothing: 0
    call qword ptr [rip + {IAT:RemoveVectoredExceptionHandler}]
    lea rcx, [rip + {DATA:m_again}]
    mov edx, eax
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

; LONG CALLBACK veh_handler(EXCEPTION_POINTERS *rcx)
veh_handler:
    push rbx
    sub rsp, 0x50                           ; shadow space + a MEMORY_BASIC_INFORMATION at +0x20
    mov rbx, qword ptr [rcx]                ; ExceptionRecord
    mov edx, dword ptr [rbx]                ; ExceptionCode
    cmp edx, 0x80000001                     ; STATUS_GUARD_PAGE_VIOLATION?
    jne .Lsearch
    inc dword ptr [rip + {DATA:hits}]
    mov dword ptr [rip + {DATA:code}], edx
    mov rax, qword ptr [rbx + 0x20]         ; ExceptionInformation[0]: 0 read, 1 write, 8 execute
    mov qword ptr [rip + {DATA:info0}], rax
    mov rcx, qword ptr [rbx + 0x28]         ; ExceptionInformation[1]: the address
    mov qword ptr [rip + {DATA:info1}], rcx
    lea rdx, [rsp + 0x20]
    mov r8d, 48
    call qword ptr [rip + {IAT:VirtualQuery}]
    mov eax, dword ptr [rsp + 0x20 + 0x24]  ; MEMORY_BASIC_INFORMATION.Protect
    mov dword ptr [rip + {DATA:prot}], eax
    mov eax, 0xFFFFFFFF                     ; EXCEPTION_CONTINUE_EXECUTION
    jmp .Ldone
.Lsearch:
    xor eax, eax                            ; EXCEPTION_CONTINUE_SEARCH
.Ldone:
    add rsp, 0x50
    pop rbx
    ret

section .data
base: dq 0
info0: dq 0
info1: dq 0
hits: dd 0
code: dd 0
prot: dd 0

section .rdata
m_hits: db "guard page hits after a scan: ", 0
m_code: db "ExceptionCode: ", 0
m_info0: db "ExceptionInformation[0]: ", 0
m_info1: db "ExceptionInformation[1] - base: ", 0
m_prot: db "Protect inside the handler: ", 0
m_removed: db "RemoveVectoredExceptionHandler: ", 0
m_again: db "removed again: ", 0
