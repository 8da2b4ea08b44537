; section32 — PE32 (x86): one section object, two views. CreateFileMappingA makes a named,
; pagefile-backed 64 KiB section; MapViewOfFile maps it twice (FILE_MAP_WRITE and FILE_MAP_READ);
; a string written through the first view is read back through the second.
; bits: 32
; include: lib32
; import kernel32.dll: CreateFileMappingA MapViewOfFile UnmapViewOfFile CloseHandle VirtualQuery ExitProcess
; exit: 0

section .text
start:
    push {DATA:name}                        ; lpName
    push 0x10000                            ; dwMaximumSizeLow
    push 0                                  ; dwMaximumSizeHigh
    push PAGE_READWRITE
    push 0                                  ; lpFileMappingAttributes
    push -1                                 ; INVALID_HANDLE_VALUE: backed by the pagefile
    call dword ptr [{IAT:CreateFileMappingA}]
    mov ebx, eax
    test eax, eax
    setnz al
    movzx eax, al
    push eax
    push {DATA:m_handle}
    call print_kv
    push 0                                  ; dwNumberOfBytesToMap: all of it
    push 0
    push 0
    push FILE_MAP_WRITE
    push ebx
    call dword ptr [{IAT:MapViewOfFile}]
    mov esi, eax
    push 0
    push 0
    push 0
    push FILE_MAP_READ
    push ebx
    call dword ptr [{IAT:MapViewOfFile}]
    mov edi, eax
    mov eax, esi
    sub eax, edi
    setnz al
    movzx eax, al
    push eax
    push {DATA:m_two}
    call print_kv
    xor ecx, ecx                            ; copy the message into the writable view
.Lcopy:
    mov al, byte ptr [{DATA:message} + ecx]
    mov byte ptr [esi + ecx], al
    inc ecx
    test al, al
    jnz .Lcopy
    push {DATA:m_read}
    call print_cstr
    push edi
    call print_cstr
    mov byte ptr [esi + 0x8000], 0x5A       ; a write deep inside the section
    movzx eax, byte ptr [edi + 0x8000]
    push eax
    push {DATA:m_deep}
    call print_kv
    push 28
    push {DATA:mbi}
    push edi
    call dword ptr [{IAT:VirtualQuery}]
    push dword ptr [{DATA:mbi} + 24]        ; Type
    push {DATA:m_type}
    call print_kv
    push dword ptr [{DATA:mbi} + 20]        ; Protect
    push {DATA:m_prot}
    call print_kv
    push esi
    call dword ptr [{IAT:UnmapViewOfFile}]
    push eax
    push {DATA:m_unmap}
    call print_kv
    push edi
    call dword ptr [{IAT:UnmapViewOfFile}]
    push ebx
    call dword ptr [{IAT:CloseHandle}]
    push eax
    push {DATA:m_close}
    call print_kv
    push 0
    call dword ptr [{IAT:ExitProcess}]

section .rdata
name: db "Local\\emulator-mem-demo", 0
message: db "written through view 1, read through view 2", 10, 0
m_handle: db "CreateFileMappingA returned a handle: ", 0
m_two: db "two views at different addresses: ", 0
m_read: db "view 2 says: ", 0
m_deep: db "byte 0x8000 seen through view 2: ", 0
m_type: db "VirtualQuery(view 2).Type: ", 0
m_prot: db "VirtualQuery(view 2).Protect: ", 0
m_unmap: db "UnmapViewOfFile(view 1) returned ", 0
m_close: db "CloseHandle returned ", 0

section .data
mbi: resb 28
