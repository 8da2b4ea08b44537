; uart64 — PE32+ (x64): MMIO devices. The sample imports devices.dll!UART and devices.dll!TICKS;
; the runner maps those devices (hooks/devices.py, through mm.allocate_mmio) and writes their
; bases into the IAT slots, as the loader does for data imports. Bytes stored to the UART's
; transmit register reach the console through a Python callback; the tick counter counts reads.
; bits: 64
; include: lib64
; import devices.dll: UART TICKS
; import kernel32.dll: VirtualQuery ExitProcess
; exit: 0

section .text
start:
    push rbx
    push rsi
    sub rsp, 0x28
    mov rbx, qword ptr [rip + {IAT:UART}]   ; the UART's register window
    lea rsi, [rip + {DATA:message}]
.Lsend:
    test byte ptr [rbx + 5], 0x20           ; LSR.THRE: the transmitter takes a byte
    jz .Lsend
    movzx eax, byte ptr [rsi]
    test al, al
    jz .Lsent
    mov byte ptr [rbx], al                  ; THR
    inc rsi
    jmp .Lsend
.Lsent:
    mov rsi, qword ptr [rip + {IAT:TICKS}]
    mov eax, dword ptr [rsi]
    mov edx, dword ptr [rsi]
    mov ecx, dword ptr [rsi]
    sub edx, eax
    lea rcx, [rip + {DATA:m_ticks}]
    call print_kv
    mov rcx, rbx
    lea rdx, [rip + {DATA:mbi}]
    mov r8d, 48
    call qword ptr [rip + {IAT:VirtualQuery}]
    lea rcx, [rip + {DATA:m_type}]
    mov edx, dword ptr [rip + {DATA:mbi} + 40]
    call print_kv
    lea rcx, [rip + {DATA:m_prot}]
    mov edx, dword ptr [rip + {DATA:mbi} + 36]
    call print_kv
    xor ecx, ecx
    call qword ptr [rip + {IAT:ExitProcess}]

section .rdata
message: db "uart: hello from the guest, one MMIO store per byte", 10, 0
m_ticks: db "tick counter advanced between two reads by ", 0
m_type: db "VirtualQuery(UART).Type: ", 0
m_prot: db "VirtualQuery(UART).Protect: ", 0

section .data
mbi: resb 48
