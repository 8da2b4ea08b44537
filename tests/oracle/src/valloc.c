/*
 * VirtualAlloc: argument checks and rounding rules.
 *
 * Addresses are relative to "X", a 1 MiB hole the program reserved and released at the
 * start: everything placed at an explicit address goes inside it, so the numbers do not
 * depend on where the system put anything else.
 */
#include "oracle.h"

#define RW PAGE_READWRITE

static char *X;

/* VirtualAlloc, printed as "name <address relative to X> err=<last error>". */
static void *va(const char *name, void *addr, SIZE_T size, DWORD type, DWORD prot)
{
    void *p;
    FRESH();
    p = VirtualAlloc(addr, size, type, prot);
    say("%s %r err=%u\n", name, (ULONG_PTR)p, ERR());
    return p;
}

/* The same for calls whose address is the system's choice: only success and last error. */
static void *va_any(const char *name, SIZE_T size, DWORD type, DWORD prot)
{
    void *p;
    FRESH();
    p = VirtualAlloc(NULL, size, type, prot);
    say("%s %s err=%u\n", name, p ? "ok" : "null", ERR());
    return p;
}

static void release(void *p)
{
    if (p) VirtualFree(p, 0, MEM_RELEASE);
}

static void test_sizes(void)
{
    char *p;
    set_base(0);
    va_any("size.zero_reserve", 0, MEM_RESERVE, PAGE_NOACCESS);
    va_any("size.zero_commit", 0, MEM_COMMIT, RW);
    va_any("size.zero_both", 0, MEM_RESERVE | MEM_COMMIT, RW);

    p = va_any("size.one", 1, MEM_RESERVE | MEM_COMMIT, RW);
    set_base(p);
    say("size.one.granule_offset %z\n", (ULONG_PTR)p & 0xffff);
    query("size.one.query", p);
    release(p);

    p = va_any("size.page_plus_one", 0x1001, MEM_RESERVE | MEM_COMMIT, RW);
    set_base(p);
    query("size.page_plus_one.query", p);
    release(p);

    p = va_any("size.reserve_fffc", 0xfffc, MEM_RESERVE, PAGE_NOACCESS);
    set_base(p);
    query("size.reserve_fffc.query", p);
    release(p);

    p = va_any("size.reserve_10001", 0x10001, MEM_RESERVE, PAGE_NOACCESS);
    set_base(p);
    query("size.reserve_10001.query", p);
    query("size.reserve_10001.query_last", p + 0x10fff);
    release(p);

    va_any("size.huge", (SIZE_T)1 << (sizeof(void *) == 8 ? 47 : 31), MEM_RESERVE, PAGE_NOACCESS);
    va_any("size.all_ones", ~(SIZE_T)0, MEM_RESERVE, PAGE_NOACCESS);
    va_any("size.all_ones_minus_page", ~(SIZE_T)0 - 0xfff, MEM_RESERVE, PAGE_NOACCESS);
}

static void test_types(void)
{
    static const struct { const char *name; DWORD type; } types[] = {
        { "type.zero", 0 },
        { "type.reserve", MEM_RESERVE },
        { "type.commit_reserve", MEM_COMMIT | MEM_RESERVE },
        { "type.decommit", MEM_DECOMMIT },
        { "type.release", MEM_RELEASE },
        { "type.free", MEM_FREE },
        { "type.private", MEM_PRIVATE },
        { "type.mapped", MEM_MAPPED },
        { "type.write_watch_alone", MEM_WRITE_WATCH },
        { "type.write_watch_commit", MEM_WRITE_WATCH | MEM_COMMIT },
        { "type.write_watch_reserve", MEM_WRITE_WATCH | MEM_RESERVE },
        { "type.top_down_alone", MEM_TOP_DOWN },
        { "type.top_down_commit", MEM_TOP_DOWN | MEM_COMMIT },
        { "type.physical_alone", MEM_PHYSICAL },
        { "type.physical_commit", MEM_PHYSICAL | MEM_RESERVE | MEM_COMMIT },
        { "type.bit_1", MEM_RESERVE | 1 },
        { "type.bit_800", MEM_RESERVE | 0x800 },
        { "type.bit_40000000", MEM_RESERVE | 0x40000000 },
    };
    unsigned i;
    set_base(0);
    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        release(va_any(types[i].name, 0x1000, types[i].type, RW));
}

/*
 * Not checked: PAGE_NOCACHE / PAGE_WRITECOMBINE combined with a valid protection, unknown
 * bits, PAGE_NOACCESS | PAGE_GUARD, and MEM_RESET combined with other types. Wine 8.0 does
 * not model them (ntdll's get_vprot_flags looks at protect & 0xff plus PAGE_GUARD only and
 * drops the rest; MEM_RESET is accepted with anything) and its tests do not cover them, so
 * there is no oracle for the Windows answer.
 */
static void test_protections(void)
{
    static const struct { const char *name; DWORD prot; } prots[] = {
        { "zero", 0 },
        { "noaccess", PAGE_NOACCESS },
        { "readonly", PAGE_READONLY },
        { "readwrite", PAGE_READWRITE },
        { "writecopy", PAGE_WRITECOPY },
        { "execute", PAGE_EXECUTE },
        { "execute_read", PAGE_EXECUTE_READ },
        { "execute_readwrite", PAGE_EXECUTE_READWRITE },
        { "execute_writecopy", PAGE_EXECUTE_WRITECOPY },
        { "readonly_readwrite", PAGE_READONLY | PAGE_READWRITE },
        { "execute_readonly", PAGE_EXECUTE | PAGE_READONLY },
        { "guard_alone", PAGE_GUARD },
        { "nocache_alone", PAGE_NOCACHE },
        { "writecombine_alone", PAGE_WRITECOMBINE },
        { "readwrite_guard", PAGE_READWRITE | PAGE_GUARD },
        { "execute_guard", PAGE_EXECUTE | PAGE_GUARD },
    };
    char name[64];
    unsigned i, n;
    char *p;
    set_base(0);
    for (i = 0; i < sizeof(prots) / sizeof(prots[0]); i++) {
        const char *kinds[2] = { "reserve", "commit" };
        DWORD types[2] = { MEM_RESERVE, MEM_RESERVE | MEM_COMMIT };
        unsigned k;
        for (k = 0; k < 2; k++) {
            const char *a = "prot.", *b = prots[i].name;
            n = 0;
            while (*a) name[n++] = *a++;
            while (*b) name[n++] = *b++;
            name[n++] = '.';
            for (b = kinds[k]; *b;) name[n++] = *b++;
            name[n] = 0;
            p = va_any(name, 0x1000, types[k], prots[i].prot);
            if (p) {
                MEMORY_BASIC_INFORMATION mbi;
                VirtualQuery(p, &mbi, sizeof(mbi));
                say("%s.query aprot=%x state=%x prot=%x\n", name, mbi.AllocationProtect,
                    mbi.State, mbi.Protect);
                release(p);
            }
        }
    }
}

/* Explicit addresses inside X: rounding of base and size, overlaps, the hole's edges. */
static void test_placement(void)
{
    char *p, *q;
    set_base(X);
    p = va("place.unaligned_reserve", X + 0x1234, 0x100, MEM_RESERVE, PAGE_NOACCESS);
    query("place.unaligned_reserve.query", X);
    release(p);

    p = va("place.unaligned_both", X + 0x21234, 0x100, MEM_RESERVE | MEM_COMMIT, RW);
    query("place.unaligned_both.query", X + 0x20000);
    query("place.unaligned_both.query_page", X + 0x21000);
    query_free("place.unaligned_both.query_after", X + 0x22000, 0xe000);
    release(p);

    p = va("place.straddle_reserve", X + 0x3f000, 0x2000, MEM_RESERVE | MEM_COMMIT, RW);
    query("place.straddle_reserve.query", X + 0x30000);
    query("place.straddle_reserve.query_mid", X + 0x3f800);
    release(p);

    p = va("place.again_first", X + 0x50000, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    va("place.again_same", X + 0x50000, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    va("place.again_overlap", X + 0x48000, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    va("place.again_inside", X + 0x54000, 0x1000, MEM_RESERVE, PAGE_NOACCESS);
    release(p);

    va("place.commit_free", X + 0x60000, 0x1000, MEM_COMMIT, RW);
    va("place.low", (void *)0x1000, 0x1000, MEM_RESERVE, PAGE_NOACCESS);
    va("place.null_page", (void *)0x10, 0x1000, MEM_RESERVE, PAGE_NOACCESS);

    /* MEM_TOP_DOWN with an explicit address: the address wins. */
    p = va("place.top_down_explicit", X + 0x70000, 0x1000, MEM_RESERVE | MEM_TOP_DOWN, RW);
    release(p);

    /* Two reservations side by side: commit must stay inside one of them. */
    p = va("place.pair_first", X + 0x80000, 0x10000, MEM_RESERVE, RW);
    q = va("place.pair_second", X + 0x90000, 0x10000, MEM_RESERVE, RW);
    va("place.pair_commit_across", X + 0x8f000, 0x2000, MEM_COMMIT, RW);
    query("place.pair_commit_across.query", X + 0x8f000);
    va("place.pair_commit_last", X + 0x8f000, 0x1000, MEM_COMMIT, RW);
    va("place.pair_commit_last_unaligned", X + 0x8fffe, 2, MEM_COMMIT, RW);
    query("place.pair_commit_last.query", X + 0x8f000);
    query("place.pair_second.query", X + 0x90000);
    release(p);
    /* the first is gone: committing across its old end into the second must still fail */
    va("place.pair_commit_from_free", X + 0x8f000, 0x2000, MEM_COMMIT, RW);
    release(q);

    /* A lone reservation followed by free space. */
    p = va("place.lone", X + 0xa0000, 0x4000, MEM_RESERVE, RW);
    va("place.lone_commit_past_end", X + 0xa3000, 0x2000, MEM_COMMIT, RW);
    va("place.lone_commit_end", X + 0xa3000, 0x1000, MEM_COMMIT, RW);
    query("place.lone.query_end", X + 0xa3000);
    query_free("place.lone.query_after", X + 0xa4000, 0xc000);
    release(p);
}

/* Reserve, then commit pieces; commit again; different protections per piece. */
static void test_pieces(void)
{
    char *p;
    set_base(X);
    p = va("piece.reserve", X + 0xb0000, 0x10000, MEM_RESERVE, PAGE_EXECUTE_READWRITE);
    va("piece.commit_mid", X + 0xb2000, 0x3000, MEM_COMMIT, PAGE_READONLY);
    va("piece.commit_unaligned", X + 0xb6ffe, 4, MEM_COMMIT, RW);
    va("piece.commit_zero_size", X + 0xb9000, 0, MEM_COMMIT, RW);
    query("piece.q0", X + 0xb0000);
    query("piece.q1", X + 0xb2000);
    query("piece.q2", X + 0xb5000);
    query("piece.q3", X + 0xb6000);
    query("piece.q4", X + 0xb8000);
    va("piece.recommit_same", X + 0xb2000, 0x1000, MEM_COMMIT, PAGE_READONLY);
    va("piece.recommit_other", X + 0xb3000, 0x1000, MEM_COMMIT, RW);
    query("piece.recommit.q1", X + 0xb2000);
    query("piece.recommit.q2", X + 0xb3000);
    query("piece.recommit.q3", X + 0xb4000);
    va("piece.commit_spanning", X + 0xb1000, 0x6000, MEM_COMMIT, PAGE_EXECUTE_READ);
    query("piece.spanning.q", X + 0xb1000);
    va("piece.commit_whole_null_size", X + 0xb0000, 0, MEM_COMMIT, RW);
    va("piece.commit_reserve_again", X + 0xb0000, 0x1000, MEM_COMMIT | MEM_RESERVE, RW);
    va("piece.reset", X + 0xb1000, 0x1000, MEM_RESET, PAGE_NOACCESS);
    va("piece.reset_unaligned", X + 0xb1010, 0x10, MEM_RESET, RW);
    va("piece.reset_reserved", X + 0xbf000, 0x1000, MEM_RESET, RW);
    query("piece.reset.q", X + 0xb1000);
    release(p);
}

static void test_top_down(void)
{
    char *low, *high;
    low = VirtualAlloc(NULL, 0x1000, MEM_RESERVE | MEM_COMMIT, RW);
    high = VirtualAlloc(NULL, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, RW);
    say("top_down.ok %u\n", (DWORD)(low && high));
    say("top_down.above_bottom_up %u\n", (DWORD)(high > low));
    say("top_down.granule_offset %z\n", (ULONG_PTR)high & 0xffff);
    say("top_down.above_hole %u\n", (DWORD)(high > X + 0x100000));
    set_base(high);
    query("top_down.query", high);
    release(low);
    release(high);
}

/*
 * x64 only: Wine's 32-bit processes live in a 4 GiB address space and accept explicit
 * addresses above lpMaximumApplicationAddress (0x7ffeffff), which a 32-bit Windows process
 * without /LARGEADDRESSAWARE cannot have, so Wine is no oracle for these lines on x86.
 */
static void test_address_limits(void)
{
    SYSTEM_INFO si;
    char *top;
    GetSystemInfo(&si);
    top = (char *)si.lpMaximumApplicationAddress;
    set_base(top + 1);
    /* the highest granule below the limit is normally in use (Windows: shared user data on
       32-bit; the top 64K is never allocatable), so only check the calls beyond it */
    va("limit.at_max_plus_one", top + 1, 0x1000, MEM_RESERVE, PAGE_NOACCESS);
    va("limit.straddle_max", top - 0xfff, 0x2000, MEM_RESERVE, PAGE_NOACCESS);
    va("limit.far_above", (char *)(ULONG_PTR)(sizeof(void *) == 8 ? 0x800000000000ull : 0x80000000u),
       0x1000, MEM_RESERVE, PAGE_NOACCESS);
}

static void run(void)
{
    X = VirtualAlloc(NULL, 0x100000, MEM_RESERVE, PAGE_NOACCESS);
    say("hole.ok %u\n", (DWORD)(X != NULL));
    VirtualFree(X, 0, MEM_RELEASE);
    test_placement();
    test_pieces();
    test_sizes();
    test_types();
    test_protections();
    test_top_down();
    if (sizeof(void *) == 8) test_address_limits();
}
