; parse32 — PE32 (x86): a small record parser with a planted bug, the target of
; `emulator-mem batch`. The input is exported as `input` (4 KiB) and its length as
; `input_len`, so a harness can write both: "EMR1", then records of a tag byte, a length byte
; and that many data bytes. Tag 1 names the note (at most 31 bytes), tag 2 appends its data
; to the note body, tag 0 ends the input. The note body is the last 256 bytes of a committed
; page whose next page is PAGE_GUARD. The bug: an append checks its own length against the
; body's size, not what the body already holds, so appends adding up to more than 256 bytes
; write into the guard page: STATUS_GUARD_PAGE_VIOLATION (0x80000001), unhandled.
; Exit codes: 0 parsed, 1 bad magic, 2 truncated record, 3 too long, 4 unknown tag.
; The setup takes 15 instructions (stub returns included): `emulator-mem run --max-instructions
; 15 --snapshot-at 15` snapshots the parser right where it starts reading its input.
; bits: 32
; include: lib32
; import kernel32.dll: VirtualAlloc VirtualProtect ExitProcess
; export: input input_len
; exit: 0

section .text
start:
    push PAGE_READWRITE
    push MEM_COMMIT | MEM_RESERVE
    push 0x2000
    push 0
    call dword ptr [{IAT:VirtualAlloc}]
    mov ebx, eax                            ; ebx: the note page
    push {DATA:oldprot}
    push PAGE_READWRITE | PAGE_GUARD
    push 0x1000
    lea eax, [ebx + 0x1000]
    push eax
    call dword ptr [{IAT:VirtualProtect}]
    add ebx, 0x1000 - 256                   ; ebx: the note body, ending where the guard page starts
    mov esi, {DATA:input}                   ; esi: read position
    mov ecx, dword ptr [{DATA:input_len}]
    cmp ecx, {SIZE:input} + {SIZE:input_space}
    jbe .Llength_ok
    mov ecx, {SIZE:input} + {SIZE:input_space}
.Llength_ok:
    lea ebp, [esi + ecx]                    ; ebp: end of the input
    xor edi, edi                            ; edi: note bytes used
    cmp ecx, 4
    jb bad_magic
    cmp dword ptr [esi], 0x31524D45         ; "EMR1"
    jne bad_magic
    add esi, 4
next_record:
    cmp esi, ebp
    jae done                                ; no END record: the input just ends
    movzx eax, byte ptr [esi]               ; tag
    test eax, eax
    jz done
    lea edx, [esi + 2]
    cmp edx, ebp
    ja truncated
    movzx ecx, byte ptr [esi + 1]           ; length
    add edx, ecx
    cmp edx, ebp
    ja truncated
    add esi, 2                              ; esi: the record's data, ecx: its length
    cmp eax, 1
    je name_record
    cmp eax, 2
    je append_record
    push 4
    jmp reject

name_record:
    cmp ecx, 31
    ja too_long
    xor edx, edx
.Lname_copy:                                ; into the report line, after "note: "
    cmp edx, ecx
    jae .Lname_done
    mov al, byte ptr [esi + edx]
    mov byte ptr [{DATA:line} + 6 + edx], al
    inc edx
    jmp .Lname_copy
.Lname_done:
    mov word ptr [{DATA:line} + 6 + edx], 0x000A
    add esi, ecx
    jmp next_record

append_record:
    cmp ecx, 256                            ; THE BUG: must check edi + ecx, not ecx alone
    ja too_long
    xor edx, edx
.Lappend_copy:
    cmp edx, ecx
    jae .Lappend_done
    mov al, byte ptr [esi + edx]
    mov byte ptr [ebx + edi], al            ; byte 256 of the body is the guard page
    inc edi
    inc edx
    jmp .Lappend_copy
.Lappend_done:
    add esi, ecx
    jmp next_record

done:                                       ; one line, one WriteFile: "note: NAME"
    push {DATA:line}
    call print_cstr
    push 0
    call dword ptr [{IAT:ExitProcess}]

bad_magic:
    push 1
    jmp reject
truncated:
    push 2
    jmp reject
too_long:
    push 3
reject:                                     ; the exit code is on the stack already
    push {DATA:m_rejected}
    call print_cstr
    call dword ptr [{IAT:ExitProcess}]

section .data
; the default input (a run without a harness parses it), padded to 48 bytes so that
; input_space (16-byte aligned) follows it directly: together they are the 4 KiB buffer
input: db "EMR1", 1, 4, "demo", 2, 7, "hello, ", 2, 5, "world", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
input_space: resb 4048
input_len: dd 27
oldprot: dd 0
line: db "note: (none)", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0

section .rdata
m_rejected: db "input rejected", 10, 0
