/*
 * Vectored exception handlers and the faults of every kind of page (issue 14). For each
 * fault the handler prints ExceptionCode, ExceptionInformation[0] (0 read, 1 write,
 * 8 execute), ExceptionInformation[1] relative to the allocation, and the page's protection
 * and state as VirtualQuery sees them inside the handler; then it repairs the page (or
 * skips the two-byte faulting instruction) and execution continues; the state after the
 * handler is printed too. Cases: write to PAGE_READONLY, read of PAGE_NOACCESS, read and
 * write of a PAGE_GUARD page (the second touch passes), execute in PAGE_READWRITE, reserved
 * and free memory, a write that straddles two pages where only the second faults, rep movsb
 * across a guard page, a write to a FILE_MAP_READ view, RaiseException's parameters, and
 * handler order (first/last) and removal.
 */
#include "oracle.h"

enum fix { FIX_NONE, FIX_PROTECT, FIX_COMMIT, FIX_ALLOC, FIX_SKIP };

static volatile LONG calls;
static enum fix fix_kind;
static DWORD fix_prot;
static const char *case_name;
static char order[8];
static unsigned order_len;

/* Two-byte accesses (89 02 / 8b 02 in both modes), so a handler can skip them. */
#ifdef _WIN64
#define PTR_REG "rdx"
#else
#define PTR_REG "edx"
#endif

static void write32(void *p, DWORD v)
{
    __asm__ volatile("movl %%eax, (%%" PTR_REG ")" :: "d"(p), "a"(v) : "memory");
}

static DWORD read32(const void *p)
{
    DWORD v;
    __asm__ volatile("movl (%%" PTR_REG "), %%eax" : "=a"(v) : "d"(p) : "memory");
    return v;
}

static void describe(const char *when, const void *addr)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (!VirtualQuery(addr, &mbi, sizeof(mbi))) { say("%s %s query failed\n", case_name, when); return; }
    say("%s %s prot=%x state=%x\n", case_name, when, mbi.Protect, mbi.State);
}

static LONG CALLBACK veh(EXCEPTION_POINTERS *ep)
{
    EXCEPTION_RECORD *rec = ep->ExceptionRecord;
    void *addr;
    DWORD old;
    if (rec->ExceptionCode != EXCEPTION_ACCESS_VIOLATION && rec->ExceptionCode != EXCEPTION_GUARD_PAGE)
        return EXCEPTION_CONTINUE_SEARCH;
    calls++;
    addr = (void *)rec->ExceptionInformation[1];
    say("%s code=%x params=%u info0=%z addr=%r\n", case_name, rec->ExceptionCode,
        rec->NumberParameters, rec->ExceptionInformation[0], (ULONG_PTR)addr);
    describe("inside", addr);
    switch (fix_kind) {
    case FIX_PROTECT:
        VirtualProtect(addr, 1, fix_prot, &old);
        break;
    case FIX_COMMIT:
        VirtualAlloc(addr, 1, MEM_COMMIT, PAGE_READWRITE);
        break;
    case FIX_ALLOC:
        VirtualAlloc(addr, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        break;
    case FIX_SKIP:
#ifdef _WIN64
        ep->ContextRecord->Rip += 2;
#else
        ep->ContextRecord->Eip += 2;
#endif
        break;
    case FIX_NONE:
        break;
    }
    return EXCEPTION_CONTINUE_EXECUTION;
}

static void begin(const char *name, const void *base, enum fix kind, DWORD prot)
{
    case_name = name;
    set_base(base);
    fix_kind = kind;
    fix_prot = prot;
    calls = 0;
}

static char *fresh(DWORD prot)
{
    return VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, prot);
}

static void test_pages(void)
{
    char *p;
    DWORD old, v;
    void (*fn)(void);

    p = fresh(PAGE_READONLY);
    begin("readonly.write", p, FIX_PROTECT, PAGE_READWRITE);
    write32(p + 0x10, 0x1234);
    say("%s calls=%u value=%x\n", case_name, (DWORD)calls, read32(p + 0x10));
    describe("after", p + 0x10);
    VirtualFree(p, 0, MEM_RELEASE);

    p = fresh(PAGE_NOACCESS);
    begin("noaccess.read", p, FIX_PROTECT, PAGE_READONLY);
    v = read32(p + 0x2004);
    say("%s calls=%u value=%x\n", case_name, (DWORD)calls, v);
    describe("after", p + 0x2004);
    VirtualFree(p, 0, MEM_RELEASE);

    p = fresh(PAGE_READWRITE);
    VirtualProtect(p + 0x1000, 0x1000, PAGE_READWRITE | PAGE_GUARD, &old);
    begin("guard.read", p, FIX_NONE, 0);
    v = read32(p + 0x1ff8);
    v += read32(p + 0x1ff8);
    say("%s calls=%u value=%x (second touch passes)\n", case_name, (DWORD)calls, v);
    describe("after", p + 0x1ff8);
    VirtualProtect(p + 0x3000, 0x2000, PAGE_READWRITE | PAGE_GUARD, &old);
    begin("guard.write", p, FIX_NONE, 0);
    write32(p + 0x4000, 7);
    write32(p + 0x4000, 8);
    say("%s calls=%u value=%x\n", case_name, (DWORD)calls, read32(p + 0x4000));
    describe("after", p + 0x4000);
    describe("untouched guard page", p + 0x3000);
    VirtualFree(p, 0, MEM_RELEASE);

    p = fresh(PAGE_READWRITE);
    p[0x3000] = (char)0xc3;  /* ret */
    begin("execute.readwrite", p, FIX_PROTECT, PAGE_EXECUTE_READ);
    fn = (void (*)(void))(p + 0x3000);
    fn();
    say("%s calls=%u returned\n", case_name, (DWORD)calls);
    describe("after", p + 0x3000);
    VirtualFree(p, 0, MEM_RELEASE);

    p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    begin("reserved.write", p, FIX_COMMIT, 0);
    write32(p + 0x5100, 0x55);
    say("%s calls=%u value=%x\n", case_name, (DWORD)calls, read32(p + 0x5100));
    describe("after", p + 0x5100);
    VirtualFree(p, 0, MEM_RELEASE);

    p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    VirtualFree(p, 0, MEM_RELEASE);
    begin("free.read", p, FIX_ALLOC, 0);
    v = read32(p + 0x20);
    say("%s calls=%u value=%x\n", case_name, (DWORD)calls, v);
    describe("after", p + 0x20);
    VirtualFree(p, 0, MEM_RELEASE);

    p = fresh(PAGE_READWRITE);
    VirtualProtect(p + 0x1000, 0x1000, PAGE_READONLY, &old);
    begin("straddle.write", p, FIX_PROTECT, PAGE_READWRITE);
    write32(p + 0xffe, 0xaabbccdd);
    say("%s calls=%u low=%x high=%x\n", case_name, (DWORD)calls, (DWORD)(u8)p[0xffe],
        (DWORD)(u8)p[0x1001]);
    describe("after", p + 0x1000);
    VirtualFree(p, 0, MEM_RELEASE);
}

static void test_rep_movsb(void)
{
    char *p = fresh(PAGE_READWRITE), *dst, *src;
    SIZE_T n = 0x2000, i, same = 0;
    DWORD old;
    for (i = 0; i < 0x2000; i++) p[0x8000 + i] = (char)(i * 7);
    VirtualProtect(p + 0x2000, 0x1000, PAGE_READWRITE | PAGE_GUARD, &old);
    begin("rep_movsb.guard", p, FIX_NONE, 0);
    dst = p + 0x1800;
    src = p + 0x8000;
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) :: "memory");
    for (i = 0; i < 0x2000; i++) same += p[0x1800 + i] == (char)(i * 7);
    say("%s calls=%u left=%z copied_ok=%z dst_end=%r\n", case_name, (DWORD)calls, n, same,
        (ULONG_PTR)dst);
    describe("after", p + 0x2000);
    VirtualFree(p, 0, MEM_RELEASE);
}

static void test_view(void)
{
    HANDLE h = CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, 0, 0x2000, NULL);
    char *view = MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0);
    begin("view.map_read.write", view, FIX_SKIP, 0);
    write32(view + 0x1008, 0x77);
    say("%s calls=%u value=%x\n", case_name, (DWORD)calls, read32(view + 0x1008));
    describe("after", view + 0x1008);
    UnmapViewOfFile(view);
    CloseHandle(h);
}

static LONG CALLBACK first(EXCEPTION_POINTERS *ep)
{
    (void)ep;
    order[order_len++] = 'F';
    return EXCEPTION_CONTINUE_SEARCH;
}

static LONG CALLBACK last(EXCEPTION_POINTERS *ep)
{
    EXCEPTION_RECORD *rec = ep->ExceptionRecord;
    order[order_len++] = 'L';
    say("raise code=%x flags=%x params=%u p0=%z p1=%z\n", rec->ExceptionCode, rec->ExceptionFlags,
        rec->NumberParameters, rec->ExceptionInformation[0], rec->ExceptionInformation[1]);
    return EXCEPTION_CONTINUE_EXECUTION;
}

static void test_order(void *main_handler)
{
    ULONG_PTR args[2] = { 0x11, 0x22 };
    void *h1 = AddVectoredExceptionHandler(1, first);
    void *h2 = AddVectoredExceptionHandler(0, last);
    /* the main handler ignores this code; the list is: first, main, last */
    RaiseException(0xe0000042, 0, 2, args);
    order[order_len] = 0;
    say("order %s\n", order);
    say("remove first=%u\n", (DWORD)RemoveVectoredExceptionHandler(h1));
    say("remove last=%u\n", (DWORD)RemoveVectoredExceptionHandler(h2));
    say("remove first again=%u\n", (DWORD)RemoveVectoredExceptionHandler(h1));
    say("remove main=%u\n", (DWORD)RemoveVectoredExceptionHandler(main_handler));
}

static void run(void)
{
    void *h = AddVectoredExceptionHandler(1, veh);
    say("add %s\n", h ? "ok" : "null");
    test_pages();
    test_rep_movsb();
    test_view();
    test_order(h);
}
