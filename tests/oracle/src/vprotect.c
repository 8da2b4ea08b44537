/*
 * VirtualProtect on private memory: which protections are accepted (every PAGE_* value and
 * modifier), what the old protection is (the first page's), how a region splits, and the
 * failures for ranges that leave committed memory or cross allocations.
 * Addresses are relative to the allocation P the program made.
 */
#include "oracle.h"

#define RW PAGE_READWRITE

static char *P;

static void vp(const char *name, void *addr, SIZE_T size, DWORD prot)
{
    DWORD old = 0xcafe;
    BOOL ok;
    FRESH();
    ok = VirtualProtect(addr, size, prot, &old);
    e_ = ERR();
    say("%s %u err=%u old=%x\n", name, (DWORD)ok, e_, old);
}

static const struct { const char *name; DWORD prot; } bases[] = {
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
    { "noaccess_execute", PAGE_NOACCESS | PAGE_EXECUTE },
};

/*
 * Modifiers: PAGE_GUARD on every base protection. PAGE_NOCACHE and PAGE_WRITECOMBINE are
 * only checked on their own (invalid without a base protection): Wine 8.0 drops them from a
 * valid protection (ntdll's get_vprot_flags keeps protect & 0xff and PAGE_GUARD) and accepts
 * PAGE_NOACCESS | PAGE_GUARD, and no Wine test says what Windows does there, so those
 * combinations have no oracle and are left out.
 */
static const struct { const char *name; DWORD mod; } mods[] = {
    { "plain", 0 },
    { "guard", PAGE_GUARD },
};

static const struct { const char *name; DWORD prot; } alone[] = {
    { "guard", PAGE_GUARD },
    { "nocache", PAGE_NOCACHE },
    { "writecombine", PAGE_WRITECOMBINE },
    { "guard_nocache", PAGE_GUARD | PAGE_NOCACHE },
    { "nocache_writecombine", PAGE_NOCACHE | PAGE_WRITECOMBINE },
};

/* A page committed afresh with protection prot (decommit + commit resets modifiers). */
static BOOL recommit(char *page, DWORD prot)
{
    VirtualFree(page, 0x1000, MEM_DECOMMIT);
    return VirtualAlloc(page, 0x1000, MEM_COMMIT, prot) != NULL;
}

static void test_table(void)
{
    unsigned b, m;
    DWORD old;
    BOOL ok;
    for (b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
        for (m = 0; m < sizeof(mods) / sizeof(mods[0]); m++) {
            DWORD prot = bases[b].prot | mods[m].mod;
            if (bases[b].prot == PAGE_NOACCESS && mods[m].mod) continue;  /* see above */
            recommit(P, RW);
            old = 0xcafe;
            FRESH();
            ok = VirtualProtect(P, 0x1000, prot, &old);
            e_ = ERR();
            say("table.%s.%s %u err=%u old=%x now=%x\n", bases[b].name, mods[m].name, (DWORD)ok,
                e_, old, prot_of(P));
            if (ok) {
                /* and back: the old protection reported is the one just set */
                old = 0xcafe;
                FRESH();
                ok = VirtualProtect(P, 0x1000, RW, &old);
                e_ = ERR();
                say("table.%s.%s.back %u err=%u old=%x now=%x\n", bases[b].name, mods[m].name,
                    (DWORD)ok, e_, old, prot_of(P));
            }
        }
    }
}

/* Committed with each protection by VirtualAlloc, then changed: the old value. */
static void test_alone(void)
{
    unsigned m;
    for (m = 0; m < sizeof(alone) / sizeof(alone[0]); m++) {
        DWORD old = 0xcafe;
        BOOL ok;
        recommit(P, PAGE_READWRITE);
        FRESH();
        ok = VirtualProtect(P, 0x1000, alone[m].prot, &old);
        e_ = ERR();
        say("alone.%s %u err=%u old=%x now=%x\n", alone[m].name, (DWORD)ok, e_, old, prot_of(P));
    }
}

static void test_from(void)
{
    unsigned b;
    for (b = 1; b < 9; b++) {
        DWORD old = 0xcafe;
        BOOL ok;
        char *page = P + 0x1000;
        if (!recommit(page, bases[b].prot)) {
            say("from.%s commit_failed\n", bases[b].name);
            continue;
        }
        FRESH();
        ok = VirtualProtect(page, 0x1000, PAGE_READONLY, &old);
        e_ = ERR();
        say("from.%s %u err=%u old=%x now=%x\n", bases[b].name, (DWORD)ok, e_, old,
            prot_of(page));
    }
    recommit(P + 0x1000, RW);
}

static void test_split(void)
{
    set_base(P);
    vp("split.middle", P + 0x3000, 0x2000, PAGE_READONLY);
    query("split.q0", P);
    query("split.q1", P + 0x3000);
    query("split.q1_last", P + 0x4fff);
    query("split.q2", P + 0x5000);
    vp("split.unaligned", P + 0x6ff0, 0x20, PAGE_EXECUTE_READ);
    query("split.unaligned.q0", P + 0x6000);
    query("split.unaligned.q1", P + 0x7000);
    query("split.unaligned.q2", P + 0x9000);
    vp("split.size_one", P + 0xa800, 1, PAGE_NOACCESS);
    query("split.size_one.q", P + 0xa000);
    vp("split.size_zero", P + 0xc000, 0, PAGE_READONLY);
    query("split.size_zero.q", P + 0xc000);
    /* old protection of a mixed range is the first page's */
    vp("split.mixed_from_rw", P + 0x2000, 0x2000, PAGE_READWRITE);
    vp("split.mixed_from_ro", P + 0x4000, 0x4000, PAGE_READWRITE);
    vp("split.mixed_from_noaccess", P + 0xa000, 0x3000, PAGE_EXECUTE_READWRITE);
    query("split.mixed.q", P + 0x2000);
    vp("split.guard_first", P + 0xe000, 0x1000, PAGE_READWRITE | PAGE_GUARD);
    vp("split.guard_range", P + 0xe000, 0x2000, PAGE_READONLY);
    query("split.guard_range.q", P + 0xe000);
    vp("split.whole", P, 0x10000, PAGE_READWRITE);
    query("split.whole.q", P);
    vp("split.whole_plus_one", P, 0x10001, PAGE_READWRITE);
    vp("split.old_null", P, 0x1000, PAGE_READONLY);
    FRESH();
    { DWORD r_ = (DWORD)VirtualProtect(P, 0x1000, RW, NULL); DWORD e_ = ERR(); say("split.old_null_pointer %u err=%u\n", r_, e_); }
    query("split.old_null_pointer.q", P);
}

/* split.whole_plus_one and range.past_end/free/null/across_allocations follow Windows
   (STATUS_CONFLICTING_ADDRESSES, 487), not Wine 8.0 (87): see windows_overrides.txt */
static void test_ranges(void)
{
    char *r, *q;
    set_base(P);
    r = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, RW);
    VirtualAlloc(r + 0x2000, 0x2000, MEM_COMMIT, RW);
    set_base(r);
    vp("range.reserved", r, 0x1000, PAGE_READONLY);
    vp("range.committed", r + 0x2000, 0x2000, PAGE_READONLY);
    vp("range.into_reserved", r + 0x3000, 0x2000, PAGE_READONLY);
    vp("range.from_reserved", r + 0x1000, 0x2000, PAGE_READONLY);
    query("range.q", r + 0x2000);
    vp("range.past_end", r + 0xf000, 0x2000, PAGE_READONLY);
    VirtualFree(r, 0, MEM_RELEASE);
    vp("range.free", r, 0x1000, PAGE_READONLY);
    vp("range.null", NULL, 0x1000, PAGE_READONLY);

    /* two committed allocations side by side: one call may not cover both */
    q = VirtualAlloc(NULL, 0x20000, MEM_RESERVE, PAGE_NOACCESS);
    VirtualFree(q, 0, MEM_RELEASE);
    set_base(q);
    VirtualAlloc(q, 0x10000, MEM_RESERVE | MEM_COMMIT, RW);
    VirtualAlloc(q + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT, RW);
    vp("range.across_allocations", q + 0xf000, 0x2000, PAGE_READONLY);
    query("range.across_allocations.q0", q + 0xf000);
    query("range.across_allocations.q1", q + 0x10000);
    vp("range.last_page_first", q + 0xf000, 0x1000, PAGE_READONLY);
    VirtualFree(q, 0, MEM_RELEASE);
    VirtualFree(q + 0x10000, 0, MEM_RELEASE);
}

static void run(void)
{
    P = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, RW);
    say("alloc.ok %u\n", (DWORD)(P != NULL));
    test_table();
    test_alone();
    test_from();
    test_split();
    test_ranges();
}
