; unpack32 — PE32 (x86): the unpacker pattern. VirtualAlloc RW memory, XOR-decode a payload
; into it, VirtualProtect it to PAGE_EXECUTE_READ (DEP: code never runs from RW pages), call it.
; bits: 32
; include: lib32
; import kernel32.dll: VirtualAlloc VirtualProtect VirtualQuery VirtualFree ExitProcess
; exit: 0

section .text
start:
    push {DATA:m_start}
    call print_cstr
    push PAGE_READWRITE
    push MEM_COMMIT | MEM_RESERVE
    push {SIZE:payload}
    push 0
    call dword ptr [{IAT:VirtualAlloc}]
    mov edi, eax
    mov esi, {DATA:payload}
    xor ecx, ecx
.Ldecode:
    mov al, byte ptr [esi + ecx]
    xor al, 0x5A
    mov byte ptr [edi + ecx], al
    inc ecx
    cmp ecx, {SIZE:payload}
    jb .Ldecode
    push ecx
    push {DATA:m_decoded}
    call print_kv
    push {DATA:oldprot}
    push PAGE_EXECUTE_READ
    push {SIZE:payload}
    push edi
    call dword ptr [{IAT:VirtualProtect}]
    push dword ptr [{DATA:oldprot}]
    push {DATA:m_old}
    call print_kv
    push 28                                 ; sizeof(MEMORY_BASIC_INFORMATION)
    push {DATA:mbi}
    push edi
    call dword ptr [{IAT:VirtualQuery}]
    push dword ptr [{DATA:mbi} + 20]        ; Protect
    push {DATA:m_now}
    call print_kv
    mov ebx, print_cstr                     ; the payload prints through this pointer
    call edi
    push eax
    push {DATA:m_ret}
    call print_kv
    push MEM_RELEASE
    push 0
    push edi
    call dword ptr [{IAT:VirtualFree}]
    push eax
    push {DATA:m_free}
    call print_kv
    push 0
    call dword ptr [{IAT:ExitProcess}]

section .packed payload 0x5A
    call .Lprint                            ; pushes the message address: print_cstr's argument
p_msg: db "  [payload] decoded code running from VirtualAlloc'd memory", 10, 0
.Lprint:
    call ebx
    mov eax, 0x600DC0DE
    ret

section .rdata
m_start: db "unpacking...", 10, 0
m_decoded: db "decoded bytes: ", 0
m_old: db "VirtualProtect(PAGE_EXECUTE_READ), old protection: ", 0
m_now: db "protection now: ", 0
m_ret: db "payload returned ", 0
m_free: db "VirtualFree(MEM_RELEASE) returned ", 0

section .data
oldprot: dd 0
mbi: resb 28
