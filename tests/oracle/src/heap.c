/*
 * The process heap: GetProcessHeap, HeapAlloc (zeroing, alignment, zero-size and 2 MiB
 * blocks), HeapReAlloc (grow, shrink, in place, zeroing), HeapSize and HeapFree.
 * Windows serves blocks above its threshold (~512 KiB on x86, 1 MiB on x64) from their own
 * virtual allocation, released again by HeapFree.
 */
#include "oracle.h"

static HANDLE H;

static DWORD all_zero(const unsigned char *p, SIZE_T n)
{
    SIZE_T i;
    for (i = 0; i < n; i++) if (p[i]) return 0;
    return 1;
}

static void test_basic(void)
{
    unsigned char *p, *q, *r;
    SIZE_T i;
    DWORD e;
    say("heap.handle_nonnull %u\n", (DWORD)(H != NULL));
    say("heap.handle_stable %u\n", (DWORD)(GetProcessHeap() == H));

    FRESH();
    p = HeapAlloc(H, 0, 0);
    e = ERR();
    say("alloc.zero_size %s err=%u size=%z\n", p ? "ok" : "null", e, (ULONG_PTR)HeapSize(H, 0, p));
    HeapFree(H, 0, p);

    p = HeapAlloc(H, HEAP_ZERO_MEMORY, 100);
    say("alloc.zeroed %u size=%z align8=%z align16=%z\n", all_zero(p, 100),
        (ULONG_PTR)HeapSize(H, 0, p), (ULONG_PTR)p & 7, (ULONG_PTR)p & (sizeof(void *) * 2 - 1));
    for (i = 0; i < 100; i++) p[i] = (unsigned char)i;

    FRESH();
    q = HeapReAlloc(H, 0, p, 5000);
    e = ERR();
    say("realloc.grow %s err=%u size=%z\n", q ? "ok" : "null", e, (ULONG_PTR)HeapSize(H, 0, q));
    for (i = 0; i < 100 && q[i] == (unsigned char)i; i++) {}
    say("realloc.grow_kept %z\n", (ULONG_PTR)i);

    FRESH();
    r = HeapReAlloc(H, HEAP_ZERO_MEMORY, q, 9000);
    e = ERR();
    say("realloc.grow_zero %s err=%u size=%z new_zero=%u\n", r ? "ok" : "null", e,
        (ULONG_PTR)HeapSize(H, 0, r), all_zero(r + 5000, 4000));

    FRESH();
    q = HeapReAlloc(H, HEAP_REALLOC_IN_PLACE_ONLY, r, 64);
    e = ERR();
    say("realloc.shrink_in_place same=%u err=%u size=%z\n", (DWORD)(q == r), e,
        (ULONG_PTR)HeapSize(H, 0, r));
    for (i = 0; i < 64 && r[i] == (unsigned char)i; i++) {}
    say("realloc.shrink_kept %z\n", (ULONG_PTR)i);

    FRESH();
    q = HeapReAlloc(H, 0, r, 0);
    e = ERR();
    say("realloc.to_zero %s err=%u size=%z\n", q ? "ok" : "null", e, (ULONG_PTR)HeapSize(H, 0, q));

    FRESH();
    { DWORD r_ = (DWORD)HeapFree(H, 0, q); DWORD e_ = ERR(); say("free.ok %u err=%u\n", r_, e_); }
    FRESH();
    { DWORD r_ = (DWORD)HeapFree(H, 0, NULL); DWORD e_ = ERR(); say("free.null %u err=%u\n", r_, e_); }
}

static void test_many(void)
{
    unsigned char *blocks[64];
    unsigned i, j;
    DWORD distinct = 1, zeroed = 1, sizes = 1;
    for (i = 0; i < 64; i++) {
        blocks[i] = HeapAlloc(H, HEAP_ZERO_MEMORY, 24 + i);
        if (!blocks[i] || !all_zero(blocks[i], 24 + i)) zeroed = 0;
        if (HeapSize(H, 0, blocks[i]) != 24 + i) sizes = 0;
        memset(blocks[i], 0xa5, 24 + i);
    }
    for (i = 0; i < 64; i++)
        for (j = 0; j < 64; j++)
            if (i != j && blocks[i] <= blocks[j] && blocks[j] < blocks[i] + 24 + i) distinct = 0;
    say("many.zeroed %u\n", zeroed);
    say("many.sizes %u\n", sizes);
    say("many.disjoint %u\n", distinct);
    for (i = 0; i < 64; i += 2) HeapFree(H, 0, blocks[i]);
    for (i = 1; i < 64; i += 2) {
        for (j = 0; j < 24 + i && blocks[i][j] == 0xa5; j++) {}
        if (j != 24 + i) distinct = 0;
        HeapFree(H, 0, blocks[i]);
    }
    say("many.survive_neighbour_free %u\n", distinct);
}

static void test_big(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    unsigned char *p, *q;
    SIZE_T size = 0x200000;
    DWORD e;
    FRESH();
    p = HeapAlloc(H, 0, size);
    say("big.alloc %s err=%u\n", p ? "ok" : "null", ERR());
    if (!p) return;
    say("big.size %z\n", (ULONG_PTR)HeapSize(H, 0, p));
    p[0] = 1;
    p[size - 1] = 2;
    VirtualQuery(p, &mbi, sizeof(mbi));
    say("big.query state=%x prot=%x type=%x own_allocation=%u covers=%u\n", mbi.State, mbi.Protect,
        mbi.Type, (DWORD)((unsigned char *)mbi.AllocationBase <= p && p - (unsigned char *)mbi.AllocationBase < 0x1000),
        (DWORD)((unsigned char *)mbi.BaseAddress + mbi.RegionSize >= p + size));
    FRESH();
    q = HeapAlloc(H, HEAP_ZERO_MEMORY, size);
    e = ERR();
    say("big.second %s err=%u zeroed=%u\n", q ? "ok" : "null", e, q ? all_zero(q, size) : 0);
    FRESH();
    p = HeapReAlloc(H, 0, p, size * 2);
    e = ERR();
    say("big.grow %s err=%u size=%z kept=%u\n", p ? "ok" : "null", e,
        (ULONG_PTR)HeapSize(H, 0, p), p ? (DWORD)(p[0] == 1 && p[size - 1] == 2) : 0);
    FRESH();
    { DWORD r_ = (DWORD)HeapFree(H, 0, p); DWORD e_ = ERR(); say("big.free %u err=%u\n", r_, e_); }
    VirtualQuery(q, &mbi, sizeof(mbi));
    HeapFree(H, 0, q);
    {
        MEMORY_BASIC_INFORMATION after;
        VirtualQuery(mbi.AllocationBase, &after, sizeof(after));
        say("big.free_releases state=%x\n", after.State);
    }
    FRESH();
    /* more than the user address space (128 TiB / 2 GiB): fails whatever the commit limit */
    p = HeapAlloc(H, 0, sizeof(void *) == 8 ? (SIZE_T)1 << 47 : 0x80000000u);
    say("big.too_big %s\n", p ? "ok" : "null");
}

static void run(void)
{
    H = GetProcessHeap();
    test_basic();
    test_many();
    test_big();
}
