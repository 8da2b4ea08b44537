; heap64 — PE32+ (x64): the process heap. GetProcessHeap equals PEB.ProcessHeap (gs:[0x60] is
; the PEB, +0x30 its ProcessHeap); HeapAlloc(HEAP_ZERO_MEMORY), HeapReAlloc keeps the contents
; and zeroes the growth, HeapSize, HeapFree; a freed block is reused.
; bits: 64
; include: lib64
; import kernel32.dll: GetProcessHeap HeapAlloc HeapReAlloc HeapSize HeapFree ExitProcess
; exit: 0

section .text
start:
    push rbx
    push rsi
    push rdi
    sub rsp, 0x30
    call qword ptr [rip + {IAT:GetProcessHeap}]
    mov rbx, rax
    mov rax, qword ptr gs:[0x60]            ; TEB.ProcessEnvironmentBlock
    cmp rbx, qword ptr [rax + 0x30]         ; PEB.ProcessHeap
    sete dl
    movzx edx, dl
    lea rcx, [rip + {DATA:m_same}]
    call print_kv
    mov rcx, rbx
    mov edx, HEAP_ZERO_MEMORY
    mov r8d, 100
    call qword ptr [rip + {IAT:HeapAlloc}]
    mov rsi, rax
    mov rcx, rsi
    mov edx, 100
    call checksum
    lea rcx, [rip + {DATA:m_zero}]
    mov edx, eax
    call print_kv
    xor ecx, ecx                            ; strcpy(p, message)
.Lcopy:
    lea rdx, [rip + {DATA:message}]
    mov al, byte ptr [rdx + rcx]
    mov byte ptr [rsi + rcx], al
    inc rcx
    test al, al
    jnz .Lcopy
    mov rcx, rbx                            ; q = HeapReAlloc(heap, HEAP_ZERO_MEMORY, p, 5000)
    mov edx, HEAP_ZERO_MEMORY
    mov r8, rsi
    mov r9d, 5000
    call qword ptr [rip + {IAT:HeapReAlloc}]
    mov rdi, rax
    lea rcx, [rip + {DATA:m_kept}]
    call print_cstr
    mov rcx, rdi
    call print_cstr
    lea rcx, [rdi + 100]
    mov edx, 4900
    call checksum
    lea rcx, [rip + {DATA:m_grown}]
    mov edx, eax
    call print_kv
    mov rcx, rbx
    xor edx, edx
    mov r8, rdi
    call qword ptr [rip + {IAT:HeapSize}]
    lea rcx, [rip + {DATA:m_size}]
    mov rdx, rax
    call print_kv
    mov rcx, rbx
    xor edx, edx
    mov r8, rdi
    call qword ptr [rip + {IAT:HeapFree}]
    lea rcx, [rip + {DATA:m_free}]
    mov edx, eax
    call print_kv
    mov rcx, rbx                            ; the freed block is handed out again
    xor edx, edx
    mov r8d, 4000
    call qword ptr [rip + {IAT:HeapAlloc}]
    cmp rax, rdi
    sete dl
    movzx edx, dl
    lea rcx, [rip + {DATA:m_reuse}]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

; checksum(rcx=ptr, rdx=len) -> eax = sum of the bytes
checksum:
    xor eax, eax
.Lsum:
    test rdx, rdx
    jz .Lsummed
    movzx r8d, byte ptr [rcx]
    add eax, r8d
    inc rcx
    dec rdx
    jmp .Lsum
.Lsummed:
    ret

section .rdata
message: db "kept across HeapReAlloc", 10, 0
m_same: db "GetProcessHeap() == PEB.ProcessHeap: ", 0
m_zero: db "sum of 100 bytes from HeapAlloc(HEAP_ZERO_MEMORY): ", 0
m_kept: db "after HeapReAlloc to 5000 bytes: ", 0
m_grown: db "sum of the 4900 new bytes: ", 0
m_size: db "HeapSize: ", 0
m_free: db "HeapFree returned ", 0
m_reuse: db "next HeapAlloc reuses the freed block: ", 0
