; vmem64 — PE32+ (x64): VirtualAlloc (reserve, then commit inside), VirtualQuery of each
; region, VirtualProtect, a VirtualFree that Windows refuses (GetLastError = 87) and the real
; release — every value printed is what kernel32 returns on Windows.
; bits: 64
; include: lib64
; import kernel32.dll: VirtualAlloc VirtualProtect VirtualQuery VirtualFree GetLastError ExitProcess
; exit: 0

section .text
start:
    push rbx
    push rsi
    sub rsp, 0x28
    xor ecx, ecx                            ; base = VirtualAlloc(NULL, 256 KiB, MEM_RESERVE, PAGE_NOACCESS)
    mov edx, 0x40000
    mov r8d, MEM_RESERVE
    mov r9d, PAGE_NOACCESS
    call qword ptr [rip + {IAT:VirtualAlloc}]
    mov rbx, rax
    lea rcx, [rip + {DATA:m_align}]
    mov edx, ebx
    and edx, 0xFFFF
    call print_kv
    lea rcx, [rbx + 0x1000]                 ; commit two pages inside the reservation
    mov edx, 0x2000
    mov r8d, MEM_COMMIT
    mov r9d, PAGE_READWRITE
    call qword ptr [rip + {IAT:VirtualAlloc}]
    sub rax, rbx
    lea rcx, [rip + {DATA:m_commit}]
    mov rdx, rax
    call print_kv
    mov dword ptr [rbx + 0x1000], 0xC0FFEE
    mov dword ptr [rbx + 0x2FFC], 0x1234
    mov rcx, rbx
    lea rdx, [rip + {DATA:m_q0}]
    call describe
    lea rcx, [rbx + 0x1000]
    lea rdx, [rip + {DATA:m_q1}]
    call describe
    lea rcx, [rbx + 0x3000]
    lea rdx, [rip + {DATA:m_q3}]
    call describe
    lea rcx, [rbx + 0x1000]                 ; VirtualProtect(base+0x1000, page, PAGE_READONLY, &old)
    mov edx, 0x1000
    mov r8d, PAGE_READONLY
    lea r9, [rip + {DATA:oldprot}]
    call qword ptr [rip + {IAT:VirtualProtect}]
    lea rcx, [rip + {DATA:m_prot}]
    mov edx, eax
    call print_kv
    lea rcx, [rip + {DATA:m_old}]
    mov edx, dword ptr [rip + {DATA:oldprot}]
    call print_kv
    lea rcx, [rbx + 0x1000]
    lea rdx, [rip + {DATA:m_q1}]
    call describe
    lea rcx, [rip + {DATA:m_value}]
    mov edx, dword ptr [rbx + 0x1000]       ; still readable
    call print_kv
    mov rcx, rbx                            ; MEM_RELEASE needs size 0: this one fails
    mov edx, 0x1000
    mov r8d, MEM_RELEASE
    call qword ptr [rip + {IAT:VirtualFree}]
    lea rcx, [rip + {DATA:m_bad}]
    mov edx, eax
    call print_kv
    call qword ptr [rip + {IAT:GetLastError}]
    lea rcx, [rip + {DATA:m_err}]
    mov edx, eax
    call print_kv
    mov rcx, rbx
    xor edx, edx
    mov r8d, MEM_RELEASE
    call qword ptr [rip + {IAT:VirtualFree}]
    lea rcx, [rip + {DATA:m_free}]
    mov edx, eax
    call print_kv
    mov rcx, rbx
    lea rdx, [rip + {DATA:mbi}]
    mov r8d, 48
    call qword ptr [rip + {IAT:VirtualQuery}]
    lea rcx, [rip + {DATA:m_state}]
    mov edx, dword ptr [rip + {DATA:mbi} + 32]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

; describe(rcx=address, rdx=title): VirtualQuery and print the region's fields
describe:
    push rbx
    push rsi
    sub rsp, 0x28
    mov rbx, rcx
    mov rcx, rdx
    call print_cstr
    mov rcx, rbx
    lea rdx, [rip + {DATA:mbi}]
    mov r8d, 48                             ; sizeof(MEMORY_BASIC_INFORMATION)
    call qword ptr [rip + {IAT:VirtualQuery}]
    lea rsi, [rip + {DATA:mbi}]
    lea rcx, [rip + {DATA:f_size}]
    mov rdx, qword ptr [rsi + 24]           ; RegionSize
    call print_kv
    lea rcx, [rip + {DATA:f_state}]
    mov edx, dword ptr [rsi + 32]           ; State
    call print_kv
    lea rcx, [rip + {DATA:f_protect}]
    mov edx, dword ptr [rsi + 36]           ; Protect
    call print_kv
    lea rcx, [rip + {DATA:f_type}]
    mov edx, dword ptr [rsi + 40]           ; Type
    call print_kv
    add rsp, 0x28
    pop rsi
    pop rbx
    ret

section .rdata
m_align: db "reserved 256 KiB; base mod 64 KiB: ", 0
m_commit: db "committed 2 pages at offset: ", 0
m_q0: db "VirtualQuery(base):", 10, 0
m_q1: db "VirtualQuery(base + 0x1000):", 10, 0
m_q3: db "VirtualQuery(base + 0x3000):", 10, 0
f_size: db "  RegionSize ", 0
f_state: db "  State      ", 0
f_protect: db "  Protect    ", 0
f_type: db "  Type       ", 0
m_prot: db "VirtualProtect(PAGE_READONLY) returned ", 0
m_old: db "old protection: ", 0
m_value: db "value read through the read-only page: ", 0
m_bad: db "VirtualFree(base, 0x1000, MEM_RELEASE) returned ", 0
m_err: db "GetLastError: ", 0
m_free: db "VirtualFree(base, 0, MEM_RELEASE) returned ", 0
m_state: db "State after release: ", 0

section .data
mbi: resb 48
oldprot: dd 0
