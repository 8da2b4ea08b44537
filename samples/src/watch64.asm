; watch64 — PE32+ (x64): write watch. Memory from VirtualAlloc(MEM_WRITE_WATCH) reports the
; pages written since the last reset through GetWriteWatch; WRITE_WATCH_FLAG_RESET starts over.
; bits: 64
; include: lib64
; import kernel32.dll: VirtualAlloc GetWriteWatch VirtualFree ExitProcess
; exit: 0

section .text
start:
    push rbx
    push rsi
    push rdi
    sub rsp, 0x30
    xor ecx, ecx
    mov edx, 0x10000
    mov r8d, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH
    mov r9d, PAGE_READWRITE
    call qword ptr [rip + {IAT:VirtualAlloc}]
    mov rbx, rax
    mov byte ptr [rbx + 0x1000], 1          ; pages 1, 3 and 4 are written...
    mov byte ptr [rbx + 0x3010], 2
    mov qword ptr [rbx + 0x4FF8], 3
    mov eax, dword ptr [rbx + 0x6000]       ; ...page 6 is only read
    lea rcx, [rip + {DATA:m_first}]
    call print_cstr
    call report
    mov byte ptr [rbx + 0x7000], 4
    lea rcx, [rip + {DATA:m_second}]
    call print_cstr
    call report
    mov rcx, rbx
    xor edx, edx
    mov r8d, MEM_RELEASE
    call qword ptr [rip + {IAT:VirtualFree}]
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

; report(): GetWriteWatch(WRITE_WATCH_FLAG_RESET, rbx, 64 KiB, ...) and the offsets it lists
report:
    push rsi
    push rdi
    sub rsp, 0x38
    mov qword ptr [rip + {DATA:count}], 16
    mov ecx, WRITE_WATCH_FLAG_RESET
    mov rdx, rbx
    mov r8d, 0x10000
    lea r9, [rip + {DATA:addresses}]
    lea rax, [rip + {DATA:count}]
    mov qword ptr [rsp + 0x20], rax         ; lpdwCount
    lea rax, [rip + {DATA:granularity}]
    mov qword ptr [rsp + 0x28], rax         ; lpdwGranularity
    call qword ptr [rip + {IAT:GetWriteWatch}]
    lea rcx, [rip + {DATA:m_result}]
    mov edx, eax
    call print_kv
    lea rcx, [rip + {DATA:m_gran}]
    mov edx, dword ptr [rip + {DATA:granularity}]
    call print_kv
    lea rcx, [rip + {DATA:m_count}]
    mov rdx, qword ptr [rip + {DATA:count}]
    call print_kv
    lea rsi, [rip + {DATA:addresses}]
    mov rdi, qword ptr [rip + {DATA:count}]
.Lnext:
    test rdi, rdi
    jz .Ldone
    lea rcx, [rip + {DATA:m_page}]
    mov rdx, qword ptr [rsi]
    sub rdx, rbx
    call print_kv
    add rsi, 8
    dec rdi
    jmp .Lnext
.Ldone:
    add rsp, 0x38
    pop rdi
    pop rsi
    ret

section .rdata
m_first: db "after writing pages 1, 3, 4 and reading page 6:", 10, 0
m_second: db "after the reset and one write to page 7:", 10, 0
m_result: db "  GetWriteWatch returned ", 0
m_gran: db "  granularity ", 0
m_count: db "  pages written: ", 0
m_page: db "    offset ", 0

section .data
count: dq 0
granularity: dd 0
addresses: resb 128
