; hello32 — PE32 (x86): console output through GetStdHandle + WriteFile, then ExitProcess(0).
; bits: 32
; include: lib32
; import kernel32.dll: ExitProcess
; exit: 0

section .text
start:
    push {DATA:greeting}
    call print_cstr
    push {DATA:second}
    call print_cstr
    push 0
    call dword ptr [{IAT:ExitProcess}]

section .rdata
greeting: db "Hello from a PE32 guest under emulator-mem!", 10, 0
second: db "Imports resolved to stubs; WriteFile reached the host console.", 10, 0
