; hello64 — PE32+ (x64): console output, GetSystemInfo, SetLastError/GetLastError; the entry
; point returns 7, which becomes the exit code (as BaseThreadInitThunk does with it).
; bits: 64
; include: lib64
; import kernel32.dll: GetSystemInfo SetLastError GetLastError
; exit: 7

section .text
start:
    push rbx
    sub rsp, 0x20
    lea rcx, [rip + {DATA:greeting}]
    call print_cstr
    lea rcx, [rip + {DATA:sysinfo}]
    call qword ptr [rip + {IAT:GetSystemInfo}]
    lea rbx, [rip + {DATA:sysinfo}]
    lea rcx, [rip + {DATA:m_arch}]
    movzx edx, word ptr [rbx]
    call print_kv
    lea rcx, [rip + {DATA:m_page}]
    mov edx, dword ptr [rbx + 4]
    call print_kv
    lea rcx, [rip + {DATA:m_gran}]
    mov edx, dword ptr [rbx + 40]
    call print_kv
    lea rcx, [rip + {DATA:m_max}]
    mov rdx, qword ptr [rbx + 16]
    call print_kv
    mov ecx, 1234
    call qword ptr [rip + {IAT:SetLastError}]
    call qword ptr [rip + {IAT:GetLastError}]
    lea rcx, [rip + {DATA:m_err}]
    mov edx, eax
    call print_kv
    mov eax, 7
    add rsp, 0x20
    pop rbx
    ret

section .rdata
greeting: db "Hello from a PE32+ guest under emulator-mem!", 10, 0
m_arch: db "processor architecture: ", 0
m_page: db "page size: ", 0
m_gran: db "allocation granularity: ", 0
m_max: db "highest user address: ", 0
m_err: db "GetLastError after SetLastError(1234): ", 0

section .data
sysinfo: resb 48
