/*
 * x64 table-based SEH (issue 14): a language-specific handler named in a function's
 * unwind info (.pdata/.xdata, written by GCC's .seh_handler) catches an access violation
 * two frames below, reads the DISPATCHER_CONTEXT, moves CONTEXT.Rip past the two-byte
 * faulting load and returns ExceptionContinueExecution. (x86 programs print the same
 * lines from a vectored handler, so both bitnesses stay comparable.)
 */
#include "oracle.h"

extern IMAGE_DOS_HEADER __ImageBase;
static volatile LONG calls;
#ifdef _WIN64
static ULONG_PTR seen_frame;
#endif

#ifdef _WIN64
#define PTR_REG "rdx"
#else
#define PTR_REG "edx"
#endif

static __attribute__((noinline)) DWORD read32(const void *p)
{
    DWORD v;
    __asm__ volatile("movl (%%" PTR_REG "), %%eax" : "=a"(v) : "d"(p) : "memory");
    return v;
}

static DWORD outer(const char *p);

#ifdef _WIN64
DWORD guarded(const char *p);

EXCEPTION_DISPOSITION lang_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *ctx,
                                   DISPATCHER_CONTEXT *dc)
{
    calls++;
    seen_frame = (ULONG_PTR)frame;
    say("handler code=%x flags=%x info0=%z addr=%r\n", rec->ExceptionCode, rec->ExceptionFlags,
        rec->ExceptionInformation[0], rec->ExceptionInformation[1]);
    say("handler imagebase_ok=%u unwound_context=%u data=%x\n",
        (DWORD)(dc->ImageBase == (ULONG_PTR)&__ImageBase), (DWORD)(dc->ContextRecord != ctx && dc->ContextRecord->Rip > (ULONG_PTR)&__ImageBase),
        *(DWORD *)dc->HandlerData);
    say("handler controlpc-guarded=%z caller_rip-outer=%z caller_rsp-frame=%z rbx=%z\n",
        dc->ControlPc - (ULONG_PTR)guarded, dc->ContextRecord->Rip - (ULONG_PTR)outer,
        dc->ContextRecord->Rsp - (ULONG_PTR)frame, ctx->Rbx);
    ctx->Rip += 2;
    ctx->Rax = 0x5eed;
    return ExceptionContinueExecution;
}

/*
 * guarded(p) calls load_at_30(p), which faults; both are written in assembly with their
 * own unwind directives (the build uses -fno-asynchronous-unwind-tables): load_at_30 has
 * a prolog (push, stack allocation) and no handler, guarded names lang_handler with four
 * bytes of handler data. The dispatcher must unwind load_at_30 to find guarded's handler.
 */
DWORD guarded(const char *p);
__asm__(
    ".text\n"
    ".def load_at_30; .scl 3; .type 32; .endef\n"
    ".seh_proc load_at_30\n"
    "load_at_30:\n"
    "    pushq %rsi\n"
    "    .seh_pushreg %rsi\n"
    "    subq $0x30, %rsp\n"
    "    .seh_stackalloc 0x30\n"
    "    .seh_endprologue\n"
    "    leaq 0x30(%rcx), %rdx\n"
    "    movl (%rdx), %eax\n"            /* 8b 02: the faulting load */
    "    addq $0x30, %rsp\n"
    "    popq %rsi\n"
    "    ret\n"
    ".seh_endproc\n"
    ".globl guarded\n"
    ".def guarded; .scl 2; .type 32; .endef\n"
    ".seh_proc guarded\n"
    "guarded:\n"
    "    pushq %rbx\n"
    "    .seh_pushreg %rbx\n"
    "    subq $0x20, %rsp\n"
    "    .seh_stackalloc 0x20\n"
    "    .seh_endprologue\n"
    "    .seh_handler lang_handler, @except\n"
    "    .seh_handlerdata\n"
    "    .long 0x1234abcd\n"
    "    .text\n"
    "    movq $0x77, %rbx\n"
    "    call load_at_30\n"
    "    addl $1, %eax\n"
    "    addq $0x20, %rsp\n"
    "    popq %rbx\n"
    "    ret\n"
    ".seh_endproc\n");
#else
static LONG CALLBACK veh(EXCEPTION_POINTERS *ep)
{
    EXCEPTION_RECORD *rec = ep->ExceptionRecord;
    calls++;
    say("handler code=%x flags=%x info0=%z addr=%r\n", rec->ExceptionCode, rec->ExceptionFlags,
        rec->ExceptionInformation[0], rec->ExceptionInformation[1]);
    say("handler imagebase_ok=%u unwound_context=%u data=%x\n", 1u, 1u, 0x1234abcdu);
    say("handler rbx=%z\n", (ULONG_PTR)ep->ContextRecord->Ebx);
    ep->ContextRecord->Eip += 2;
    ep->ContextRecord->Eax = 0x5eed;
    return EXCEPTION_CONTINUE_EXECUTION;
}

static __attribute__((noinline)) DWORD guarded(const char *p)
{
    DWORD v;
    __asm__ volatile("movl $0x77, %%ebx" ::: "ebx");
    v = read32(p + 0x30);
    return v + 1;
}
#endif

static __attribute__((noinline, used)) DWORD outer(const char *p)
{
    return guarded(p) * 2;
}

static void run(void)
{
    char *p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    DWORD r;
#ifndef _WIN64
    AddVectoredExceptionHandler(1, veh);
#endif
    set_base(p);
    r = outer(p);
    say("result=%x calls=%u\n", r, (DWORD)calls);
    r = outer(p + 0x1000);
    say("result=%x calls=%u\n", r, (DWORD)calls);
    VirtualFree(p, 0, MEM_RELEASE);
}
