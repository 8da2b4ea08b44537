; stack32 — PE32 (x86): stack growth through the guard page. A 1000-deep recursion with
; 0x200-byte frames walks ~515 KiB down the 1 MiB reservation; every touch of the PAGE_GUARD
; page commits it, moves the guard one page down and lowers TEB.StackLimit (fs:[8]).
; bits: 32
; include: lib32
; import kernel32.dll: ExitProcess
; exit: 0

section .text
start:
    mov eax, dword ptr fs:[4]               ; NT_TIB.StackBase
    sub eax, dword ptr fs:[8]               ; NT_TIB.StackLimit
    push eax
    push {DATA:m_before}
    call print_kv
    mov esi, dword ptr fs:[8]
    push 1000
    call recurse
    push eax
    push {DATA:m_depth}
    call print_kv
    mov eax, dword ptr fs:[4]
    sub eax, dword ptr fs:[8]
    push eax
    push {DATA:m_after}
    call print_kv
    mov eax, dword ptr fs:[0x18]            ; NT_TIB.Self: the TEB's own address
    mov ecx, dword ptr [eax + 8]            ; ... so this is StackLimit again, via ds
    sub ecx, dword ptr fs:[8]
    push ecx
    push {DATA:m_self}
    call print_kv
    push 0
    call dword ptr [{IAT:ExitProcess}]

; recurse(n): n more levels below this one; returns the number of frames entered
recurse:
    push ebp
    mov ebp, esp
    sub esp, 0x200
    mov dword ptr [esp], 0xAAAAAAAA         ; touch the lowest byte of the frame
    mov eax, dword ptr [ebp + 8]
    test eax, eax
    jz .Lbottom
    dec eax
    push eax
    call recurse
    inc eax
    jmp .Lreturn
.Lbottom:
    mov eax, 1
.Lreturn:
    mov esp, ebp
    pop ebp
    ret 4

section .rdata
m_before: db "committed stack at entry: ", 0
m_depth: db "recursion depth reached: ", 0
m_after: db "committed stack after the recursion: ", 0
m_self: db "TEB.Self->StackLimit - fs:[8]: ", 0
