/*
 * VirtualFree: MEM_RELEASE needs the allocation base and size 0; MEM_DECOMMIT takes any
 * page range inside one allocation; every other combination is refused.
 * Addresses are relative to a 1 MiB hole X reserved and released at the start.
 */
#include "oracle.h"

#define RW PAGE_READWRITE

static char *X;

static BOOL vf(const char *name, void *addr, SIZE_T size, DWORD type)
{
    BOOL ok;
    FRESH();
    ok = VirtualFree(addr, size, type);
    say("%s %u err=%u\n", name, (DWORD)ok, ERR());
    return ok;
}

static char *fresh(ULONG_PTR offset, SIZE_T size, DWORD type)
{
    return VirtualAlloc(X + offset, size, type, RW);
}

static void test_release(void)
{
    char *p;
    set_base(X);
    p = fresh(0x00000, 0x20000, MEM_RESERVE | MEM_COMMIT);
    vf("release.size_nonzero", p, 0x20000, MEM_RELEASE);
    vf("release.size_one", p, 1, MEM_RELEASE);
    vf("release.not_base", p + 0x1000, 0, MEM_RELEASE);
    vf("release.second_granule", p + 0x10000, 0, MEM_RELEASE);
    vf("release.with_decommit", p, 0, MEM_RELEASE | MEM_DECOMMIT);
    vf("release.with_bit", p, 0, MEM_RELEASE | 0x8);
    vf("release.type_zero", p, 0, 0);
    vf("release.type_reserve", p, 0, MEM_RESERVE);
    vf("release.type_commit", p, 0, MEM_COMMIT);
    query("release.still_there", p);
    /* the address is rounded down to its page first: base + 0x10 names the base */
    vf("release.base_unaligned", p + 0x10, 0, MEM_RELEASE);
    query_free("release.gone", p, 0x20000);
    /* release.twice and release.free_space follow Windows, not Wine (487, not 87): see
       windows_overrides.txt (ReactOS's NtAllocateVirtualMemory apitest) */
    vf("release.twice", p, 0, MEM_RELEASE);
    vf("release.free_space", X + 0x40000, 0, MEM_RELEASE);
    vf("release.null", NULL, 0, MEM_RELEASE);

    p = fresh(0x30000, 0x10000, MEM_RESERVE);
    vf("release.reserved_only_page_unaligned", p + 0x1010, 0, MEM_RELEASE);
    vf("release.reserved_only", p, 0, MEM_RELEASE);

    /* a reservation committed in pieces goes away as one */
    p = fresh(0x30000, 0x10000, MEM_RESERVE);
    fresh(0x31000, 0x1000, MEM_COMMIT);
    fresh(0x35000, 0x2000, MEM_COMMIT);
    vf("release.pieces", p, 0, MEM_RELEASE);
    query_free("release.pieces.gone", p + 0x5000, 0xb000);
}

static void test_decommit(void)
{
    char *p;
    set_base(X);
    p = fresh(0x50000, 0x10000, MEM_RESERVE | MEM_COMMIT);
    vf("decommit.middle", p + 0x3000, 0x2000, MEM_DECOMMIT);
    query("decommit.q0", p);
    query("decommit.q1", p + 0x3000);
    query("decommit.q2", p + 0x4fff);
    query("decommit.q3", p + 0x5000);
    vf("decommit.again", p + 0x3000, 0x2000, MEM_DECOMMIT);
    vf("decommit.unaligned", p + 0x6ff0, 0x20, MEM_DECOMMIT);
    query("decommit.unaligned.q", p + 0x6000);
    query("decommit.unaligned.q_next", p + 0x8000);
    vf("decommit.size_one", p + 0x9800, 1, MEM_DECOMMIT);
    query("decommit.size_one.q", p + 0x9000);
    vf("decommit.past_end", p + 0xf000, 0x2000, MEM_DECOMMIT);
    query("decommit.past_end.q", p + 0xf000);
    vf("decommit.size_zero_not_base", p + 0x1000, 0, MEM_DECOMMIT);
    query("decommit.size_zero_not_base.q", p + 0x1000);
    vf("decommit.size_zero_base", p, 0, MEM_DECOMMIT);
    query("decommit.size_zero_base.q", p);
    vf("decommit.whole_again", p, 0x10000, MEM_DECOMMIT);
    vf("decommit.free_space", X + 0x70000, 0x1000, MEM_DECOMMIT);  /* 487: windows_overrides.txt */
    vf("decommit.with_bit", p, 0x1000, MEM_DECOMMIT | 0x8);
    vf("decommit.release_after", p, 0, MEM_RELEASE);

    /* decommit of a range that crosses into the next allocation */
    p = fresh(0x80000, 0x10000, MEM_RESERVE | MEM_COMMIT);
    fresh(0x90000, 0x10000, MEM_RESERVE | MEM_COMMIT);
    vf("decommit.across_allocations", p + 0xf000, 0x2000, MEM_DECOMMIT);
    query("decommit.across_allocations.q0", p + 0xf000);
    query("decommit.across_allocations.q1", p + 0x10000);
    vf("decommit.release_first", p, 0, MEM_RELEASE);
    vf("decommit.release_second", p + 0x10000, 0, MEM_RELEASE);

    /* a reservation that was never committed */
    p = fresh(0xa0000, 0x10000, MEM_RESERVE);
    vf("decommit.reserved_only", p, 0x1000, MEM_DECOMMIT);
    vf("decommit.reserved_only_all", p, 0, MEM_DECOMMIT);
    query("decommit.reserved_only.q", p);
    vf("decommit.reserved_only_release", p, 0, MEM_RELEASE);
}

static void run(void)
{
    X = VirtualAlloc(NULL, 0x100000, MEM_RESERVE, PAGE_NOACCESS);
    say("hole.ok %u\n", (DWORD)(X != NULL));
    VirtualFree(X, 0, MEM_RELEASE);
    test_release();
    test_decommit();
}
