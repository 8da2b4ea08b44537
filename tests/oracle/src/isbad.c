/*
 * IsBadReadPtr / IsBadWritePtr over every kind of page: committed with each protection,
 * reserved, free, ranges that run off committed memory, the image's own sections.
 */
#include "oracle.h"

extern IMAGE_DOS_HEADER __ImageBase;

static void both(const char *name, const void *p, UINT_PTR size)
{
    BOOL r, w;
    r = IsBadReadPtr(p, size);
    w = IsBadWritePtr((void *)p, size);
    say("%s read=%u write=%u\n", name, (DWORD)r, (DWORD)w);
}

static char data_var[16] = { 1 };
static const char rdata_var[16] = { 2 };

static void run(void)
{
    static const struct { const char *name, *name_byte; DWORD prot; } prots[] = {
        { "prot.noaccess", "prot.noaccess.byte", PAGE_NOACCESS },
        { "prot.readonly", "prot.readonly.byte", PAGE_READONLY },
        { "prot.readwrite", "prot.readwrite.byte", PAGE_READWRITE },
        { "prot.execute", "prot.execute.byte", PAGE_EXECUTE },
        { "prot.execute_read", "prot.execute_read.byte", PAGE_EXECUTE_READ },
        { "prot.execute_readwrite", "prot.execute_readwrite.byte", PAGE_EXECUTE_READWRITE },
    };
    char *p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    char *hole;
    unsigned i;
    DWORD old;
    VirtualAlloc(p, 0x8000, MEM_COMMIT, PAGE_READWRITE);
    for (i = 0; i < sizeof(prots) / sizeof(prots[0]); i++) {
        char *page = p + 0x1000 * (i + 1);
        VirtualProtect(page, 0x1000, prots[i].prot, &old);
        both(prots[i].name, page, 0x1000);
        both(prots[i].name_byte, page + 0x800, 1);
    }
    both("null.zero", NULL, 0);
    both("null.one", NULL, 1);
    both("low.one", (void *)0x1000, 1);
    both("committed.zero", p, 0);
    both("committed.page", p, 0x1000);
    both("committed.across_ro", p, 0x2001);
    both("committed.into_reserved", p + 0x7000, 0x1001);
    both("committed.last_byte", p + 0x7fff, 1);
    both("reserved.one", p + 0x8000, 1);
    both("reserved.zero", p + 0x8000, 0);
    both("size.huge", p, ~(UINT_PTR)0);
    both("size.wrap", p + 0x10, ~(UINT_PTR)0 - 0x8);
    VirtualFree(p, 0, MEM_RELEASE);
    both("free.one", p, 1);

    /* two committed allocations side by side read as one range */
    hole = VirtualAlloc(NULL, 0x20000, MEM_RESERVE, PAGE_NOACCESS);
    VirtualFree(hole, 0, MEM_RELEASE);
    VirtualAlloc(hole, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    VirtualAlloc(hole + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    both("adjacent.across", hole + 0xf000, 0x2000);
    VirtualFree(hole, 0, MEM_RELEASE);
    VirtualFree(hole + 0x10000, 0, MEM_RELEASE);

    both("image.headers", &__ImageBase, 0x200);
    both("image.code", (const void *)run, 0x10);
    both("image.data", data_var, sizeof(data_var));
    both("image.rdata", rdata_var, sizeof(rdata_var));
    say("image.data_intact %x %x\n", (DWORD)data_var[0], (DWORD)rdata_var[0]);

    /* Guard pages are left out: Windows' probes catch STATUS_GUARD_PAGE_VIOLATION and
       report the page bad, Wine 8.0's IsBadReadPtr lets it through and the program dies,
       so there is no oracle to record. */
}
