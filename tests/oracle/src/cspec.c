/*
 * MSVC-style __try/__except/__finally on x64 (issue 14): functions whose unwind info names
 * __C_specific_handler (imported from kernel32, which forwards it to ntdll) with a SCOPE_TABLE,
 * as MSVC and mingw-w64's __try1 emit them. Written in assembly with GCC's .seh directives
 * because the oracle build has no unwind tables for C code. Cases: a filter that returns
 * EXCEPTION_EXECUTE_HANDLER (RtlUnwindEx to the __except block,
 * the __finally of the inner function runs on the way with AbnormalTermination = 1, and the
 * block runs with try_outer's own registers); a filter
 * that fixes CONTEXT and returns EXCEPTION_CONTINUE_EXECUTION; a filter that returns
 * EXCEPTION_CONTINUE_SEARCH to a vectored-less outer scope that handles it.
 */
#include "oracle.h"

#ifdef _WIN64
static volatile LONG mode;
static char *base_ptr;

LONG filter_c(EXCEPTION_POINTERS *ep, void *frame)
{
    EXCEPTION_RECORD *rec = ep->ExceptionRecord;
    (void)frame;
    say("filter mode=%u code=%x info0=%z addr=%r\n", (DWORD)mode, rec->ExceptionCode,
        rec->ExceptionInformation[0], rec->ExceptionInformation[1]);
    if (mode == 1) {
        ep->ContextRecord->Rip += 2;
        ep->ContextRecord->Rax = 0x600d;
        return EXCEPTION_CONTINUE_EXECUTION;
    }
    if (mode == 2) return EXCEPTION_CONTINUE_SEARCH;
    return EXCEPTION_EXECUTE_HANDLER;
}

LONG outer_filter_c(EXCEPTION_POINTERS *ep, void *frame)
{
    (void)frame;
    say("outer filter code=%x\n", ep->ExceptionRecord->ExceptionCode);
    return EXCEPTION_EXECUTE_HANDLER;
}

void finally_c(BOOLEAN abnormal, void *frame)
{
    (void)frame;
    say("finally abnormal=%u\n", (DWORD)abnormal);
}

DWORD try_outer(const char *p);
/*
 * try_outer(p):   __try { r = inner(p); } __except (outer_filter_c(...)) { r = code | 0x10000; }
 *                 and around that  __try { ... } __except (filter_c(...)) { r = code; }
 * inner(p):       __try { return *(DWORD *)(p + 0x40); } __finally { finally_c(); }
 */
__asm__(
    ".text\n"
    ".def inner; .scl 3; .type 32; .endef\n"
    ".seh_proc inner\n"
    "inner:\n"
    "    pushq %rdi\n"
    "    .seh_pushreg %rdi\n"
    "    subq $0x20, %rsp\n"
    "    .seh_stackalloc 0x20\n"
    "    .seh_endprologue\n"
    "    .seh_handler __C_specific_handler, @except, @unwind\n"
    "    .seh_handlerdata\n"
    "    .long 1\n"
    "    .rva .Linner_try, .Linner_end, finally_c\n"
    "    .long 0\n"
    "    .text\n"
    "    movq $0x1234, %rdi\n"
    ".Linner_try:\n"
    "    leaq 0x40(%rcx), %rdx\n"
    "    movl (%rdx), %eax\n"                /* 8b 02: faults */
    "    nop\n"
    ".Linner_end:\n"
    "    movl $1, %ecx\n"                    /* the normal way out runs the __finally too */
    "    xorl %edx, %edx\n"
    "    movl %eax, %edi\n"
    "    xorl %ecx, %ecx\n"
    "    call finally_c\n"
    "    movl %edi, %eax\n"
    "    addq $0x20, %rsp\n"
    "    popq %rdi\n"
    "    ret\n"
    ".seh_endproc\n"
    ".globl try_outer\n"
    ".def try_outer; .scl 2; .type 32; .endef\n"
    ".seh_proc try_outer\n"
    "try_outer:\n"
    "    pushq %rbx\n"
    "    .seh_pushreg %rbx\n"
    "    subq $0x20, %rsp\n"
    "    .seh_stackalloc 0x20\n"
    "    .seh_endprologue\n"
    "    .seh_handler __C_specific_handler, @except, @unwind\n"
    "    .seh_handlerdata\n"
    "    .long 2\n"
    "    .rva .Lout_try, .Lout_end, filter_c, .Lout_except\n"
    "    .rva .Lout_try, .Lout_end2, outer_filter_c, .Lout_except2\n"
    "    .text\n"
    "    movq $0x77, %rbx\n"
    ".Lout_try:\n"
    "    call inner\n"
    "    nop\n"
    ".Lout_end:\n"
    "    nop\n"
    ".Lout_end2:\n"
    "    jmp .Lout_done\n"
    ".Lout_except:\n"                        /* the __except block (Windows passes the code */
    "    movl %ebx, %eax\n"                  /* in RAX, Wine 0): RBX is try_outer's again */
    "    jmp .Lout_done\n"
    ".Lout_except2:\n"
    "    movl %ebx, %eax\n"
    "    orl $0x10000, %eax\n"
    ".Lout_done:\n"
    "    addq $0x20, %rsp\n"
    "    popq %rbx\n"
    "    ret\n"
    ".seh_endproc\n");

static void run(void)
{
    char *p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    DWORD r;
    base_ptr = p;
    set_base(p);
    mode = 0;
    r = try_outer(p);
    say("execute_handler result=%x\n", r);
    mode = 1;
    r = try_outer(p + 0x100);
    say("continue_execution result=%x\n", r);
    mode = 2;
    r = try_outer(p + 0x200);
    say("continue_search result=%x\n", r);
    VirtualFree(p, 0, MEM_RELEASE);
}
#else
static void run(void)
{
    say("x86 has no table-based SEH\n");
}
#endif
