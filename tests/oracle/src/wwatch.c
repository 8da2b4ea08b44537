/*
 * Write watch: MEM_WRITE_WATCH allocations, GetWriteWatch (with and without
 * WRITE_WATCH_FLAG_RESET, short result arrays, ranges, bad arguments) and ResetWriteWatch.
 * Pages are printed as offsets from the watched allocation W.
 */
#include "oracle.h"

#define RW PAGE_READWRITE

static char *W;

static void gww(const char *name, DWORD flags, void *base, SIZE_T size, ULONG_PTR max)
{
    void *pages[16];
    ULONG_PTR count = max, i;
    DWORD gran = 0xcafe;
    UINT ret;
    memset(pages, 0, sizeof(pages));
    FRESH();
    ret = GetWriteWatch(flags, base, size, pages, &count, &gran);
    say("%s ret=%x err=%u", name, ret, ERR());
    if (ret == 0) {
        say(" count=%z gran=%x pages=", (ULONG_PTR)count, gran);
        for (i = 0; i < count && i < 16; i++) say(i ? ",%r" : "%r", (ULONG_PTR)pages[i]);
    }
    say("\n");
}

static void rww(const char *name, void *base, SIZE_T size)
{
    UINT ret;
    FRESH();
    ret = ResetWriteWatch(base, size);
    say("%s ret=%x err=%u\n", name, ret, ERR());
}

static void touch(char *p) { *(volatile char *)p = 1; }

static void test_basic(void)
{
    set_base(W);
    gww("basic.fresh", 0, W, 0x10000, 16);
    touch(W + 0x1000);
    touch(W + 0x3fff);
    touch(W + 0x3000);
    touch(W + 0x9010);
    gww("basic.after_writes", 0, W, 0x10000, 16);
    gww("basic.still_there", 0, W, 0x10000, 16);
    gww("basic.short_array", 0, W, 0x10000, 2);
    gww("basic.zero_count", 0, W, 0x10000, 0);
    gww("basic.subrange", 0, W + 0x2000, 0x2000, 16);
    gww("basic.unaligned_range", 0, W + 0x1800, 0x1000, 16);
    gww("basic.reset_flag_short", WRITE_WATCH_FLAG_RESET, W, 0x10000, 1);
    gww("basic.after_reset_short", 0, W, 0x10000, 16);
    gww("basic.reset_flag", WRITE_WATCH_FLAG_RESET, W, 0x10000, 16);
    gww("basic.after_reset", 0, W, 0x10000, 16);
    touch(W + 0x5000);
    touch(W + 0x6000);
    touch(W + 0x7000);
    rww("basic.reset_one", W + 0x6000, 0x1000);
    gww("basic.after_reset_one", 0, W, 0x10000, 16);
    rww("basic.reset_unaligned", W + 0x7ff0, 0x20);
    gww("basic.after_reset_unaligned", 0, W, 0x10000, 16);
    rww("basic.reset_zero_size", W + 0x5000, 0);
    gww("basic.after_reset_zero_size", 0, W, 0x10000, 16);
    rww("basic.reset_all", W, 0x10000);
    gww("basic.after_reset_all", 0, W, 0x10000, 16);
    touch(W + 0xf000);
    /* writing the same page twice records it once; reads record nothing */
    touch(W + 0xf001);
    (void)*(volatile char *)(W + 0xe000);
    gww("basic.twice_and_read", 0, W, 0x10000, 16);
}

static void test_args(void)
{
    void *pages[4];
    ULONG_PTR count;
    DWORD gran;
    UINT ret;
    char *plain = VirtualAlloc(NULL, 0x2000, MEM_RESERVE | MEM_COMMIT, RW);
    set_base(W);
    gww("args.size_zero", 0, W, 0, 16);
    gww("args.past_end", 0, W + 0xf000, 0x2000, 16);
    gww("args.not_watched", 0, plain, 0x1000, 16);
    gww("args.bad_flags", 2, W, 0x1000, 16);
    gww("args.null_base", 0, NULL, 0x1000, 16);
    rww("args.reset_not_watched", plain, 0x1000);
    rww("args.reset_past_end", W + 0xf000, 0x2000);
    rww("args.reset_size_zero_base", W, 0);
    rww("args.reset_null", NULL, 0x1000);
    count = 4;
    FRESH();
    ret = GetWriteWatch(0, W, 0x10000, NULL, &count, &gran);
    say("args.null_pages ret=%x err=%u\n", ret, ERR());
    FRESH();
    ret = GetWriteWatch(0, W, 0x10000, pages, NULL, &gran);
    say("args.null_count ret=%x err=%u\n", ret, ERR());
    count = 4;
    FRESH();
    ret = GetWriteWatch(0, W, 0x10000, pages, &count, NULL);
    say("args.null_granularity ret=%x err=%u\n", ret, ERR());
    count = 0;
    FRESH();
    ret = GetWriteWatch(0, W, 0x10000, NULL, &count, &gran);
    say("args.null_pages_zero_count ret=%x err=%u\n", ret, ERR());
    VirtualFree(plain, 0, MEM_RELEASE);
}

static void test_lifecycle(void)
{
    char *r = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_WRITE_WATCH, RW);
    set_base(r);
    query("life.reserved.q", r);
    gww("life.reserved", 0, r, 0x10000, 16);
    VirtualAlloc(r + 0x4000, 0x2000, MEM_COMMIT, RW);
    gww("life.committed", 0, r, 0x10000, 16);
    touch(r + 0x4000);
    touch(r + 0x5000);
    gww("life.written", 0, r, 0x10000, 16);
    /* life.after_* follow Windows, not Wine 8.0: decommitted pages leave the write watch
       (todo_wine in Wine's test_write_watch; see windows_overrides.txt) */
    VirtualFree(r + 0x5000, 0x1000, MEM_DECOMMIT);
    gww("life.after_decommit", 0, r, 0x10000, 16);
    VirtualAlloc(r + 0x5000, 0x1000, MEM_COMMIT, RW);
    gww("life.after_recommit", 0, r, 0x10000, 16);
    {
        DWORD old;
        VirtualProtect(r + 0x4000, 0x1000, PAGE_READONLY, &old);
        gww("life.after_protect", 0, r, 0x10000, 16);
    }
    VirtualFree(r, 0, MEM_RELEASE);
    gww("life.after_release", 0, r, 0x10000, 16);
}

static void run(void)
{
    W = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, RW);
    say("alloc.ok %u\n", (DWORD)(W != NULL));
    test_basic();
    test_args();
    test_lifecycle();
}
