; crash32 — PE32 (x86): an unhandled access violation. After printing a line, the sample
; writes to its own .rdata section (PAGE_READONLY in the image); the runner reports the
; exception as Windows does and the exit code is STATUS_ACCESS_VIOLATION (0xC0000005).
; bits: 32
; include: lib32
; import kernel32.dll: ExitProcess
; exit: 0xC0000005

section .text
start:
    push {DATA:message}
    call print_cstr
    mov eax, 0x1234
    mov dword ptr [{DATA:table} + 4], eax   ; .rdata is read-only: access violation
    push 0
    call dword ptr [{IAT:ExitProcess}]

section .rdata
message: db "about to write to a read-only page...", 10, 0
table: dd 1, 2, 3
