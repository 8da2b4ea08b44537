/*
 * VirtualQuery of every kind of region at its first byte, an unaligned address, a page in
 * the middle, the last byte and just past the end: committed and reserved private memory,
 * free space, a view of a pagefile section, the program's own image (found through
 * __ImageBase, which the linker defines at the image base) and KUSER_SHARED_DATA.
 * Windows answers with the page holding the address and the size from that page to the end
 * of the run of pages with the same state and protection.
 */
#include "oracle.h"

#define RW PAGE_READWRITE

extern IMAGE_DOS_HEADER __ImageBase;

static void walk(const char *kind, char *base, SIZE_T size)
{
    char name[64];
    static const char *const what[] = { "first", "unaligned", "mid", "mid_unaligned", "last" };
    SIZE_T at[5];
    unsigned i, n;
    at[0] = 0;
    at[1] = 0x10;
    at[2] = (size / 2) & ~(SIZE_T)0xfff;
    at[3] = at[2] + 0x123;
    at[4] = size - 1;
    for (i = 0; i < 5; i++) {
        const char *s;
        n = 0;
        for (s = kind; *s;) name[n++] = *s++;
        name[n++] = '.';
        for (s = what[i]; *s;) name[n++] = *s++;
        name[n] = 0;
        query(name, base + at[i]);
    }
}

static void test_private(void)
{
    char *p = VirtualAlloc(NULL, 0x5000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READ);
    set_base(p);
    walk("private", p, 0x5000);
    query_free("private.past_end", p + 0x5000, 0xb000);
    query_free("private.granule_last", p + 0xffff, 1);
    VirtualFree(p, 0, MEM_RELEASE);
}

static void test_reserved(void)
{
    char *p = VirtualAlloc(NULL, 0x30000, MEM_RESERVE, PAGE_READWRITE);
    VirtualAlloc(p + 0x10000, 0x3000, MEM_COMMIT, PAGE_READONLY);
    VirtualAlloc(p + 0x13000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    set_base(p);
    walk("reserved.head", p, 0x10000);
    walk("reserved.committed", p + 0x10000, 0x3000);
    query("reserved.guard", p + 0x13800);
    walk("reserved.tail", p + 0x14000, 0x1c000);
    query_free("reserved.past_end", p + 0x30000, 1);
    VirtualFree(p, 0, MEM_RELEASE);
}

static void test_free(void)
{
    char *p = VirtualAlloc(NULL, 0x40000, MEM_RESERVE, PAGE_NOACCESS);
    VirtualFree(p, 0, MEM_RELEASE);
    set_base(p);
    query_free("free.first", p, 0x40000);
    query_free("free.unaligned", p + 0x10, 0x40000 - 0x1000);
    query_free("free.mid", p + 0x21000, 0x1f000);
    query_free("free.last", p + 0x3ffff, 1);
    set_base(0);
    query_free("free.null", NULL, 0x1000);
    query_free("free.null_last", (void *)0xffff, 1);
}

static void test_view(void)
{
    HANDLE h = CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, 0, 0x5000, NULL);
    HANDLE r = CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE | SEC_RESERVE, 0,
                                  0x6000, NULL);
    char *v = MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0);
    char *w = MapViewOfFile(r, FILE_MAP_WRITE, 0, 0, 0);
    set_base(v);
    walk("view", v, 0x5000);
    query_free("view.past_end", v + 0x5000, 0xb000);
    set_base(w);
    VirtualAlloc(w + 0x2000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    walk("view_reserve", w, 0x6000);
    query("view_reserve.committed", w + 0x2abc);
    UnmapViewOfFile(v);
    UnmapViewOfFile(w);
    CloseHandle(h);
    CloseHandle(r);
}

/* .bss (our globals) and .idata (the IAT) are written WRITECOPY pages: Windows reports them
   READWRITE, Wine keeps WRITECOPY (todo_wine in its test_mapping), so image._bss.* and
   image._idata.* are recorded with the Windows values from windows_overrides.txt */
static void test_image(void)
{
    char *base = (char *)&__ImageBase;
    IMAGE_NT_HEADERS *nt = (IMAGE_NT_HEADERS *)(base + __ImageBase.e_lfanew);
    IMAGE_SECTION_HEADER *sec = IMAGE_FIRST_SECTION(nt);
    char name[40];
    unsigned i, k, n;
    set_base(base);
    say("image.sections %u\n", (DWORD)nt->FileHeader.NumberOfSections);
    walk("image.headers", base, 0x1000);
    for (i = 0; i < nt->FileHeader.NumberOfSections; i++) {
        SIZE_T size = (sec[i].Misc.VirtualSize + 0xfff) & ~0xfff;
        const char *s = "image.";
        n = 0;
        while (*s) name[n++] = *s++;
        for (k = 0; k < 8 && sec[i].Name[k]; k++)
            name[n++] = sec[i].Name[k] == '.' ? '_' : (char)sec[i].Name[k];
        name[n] = 0;
        walk(name, base + sec[i].VirtualAddress, size);
    }
}

static void test_args(void)
{
    MEMORY_BASIC_INFORMATION mbi[2];
    SYSTEM_INFO si;
    char *p = VirtualAlloc(NULL, 0x1000, MEM_RESERVE | MEM_COMMIT, RW);
    SIZE_T got;
    GetSystemInfo(&si);
    FRESH();
    got = VirtualQuery(p, mbi, sizeof(mbi[0]) - 1);
    say("args.short_buffer %z err=%u\n", (ULONG_PTR)got, ERR());
    FRESH();
    got = VirtualQuery(p, mbi, 0);
    say("args.zero_buffer %z err=%u\n", (ULONG_PTR)got, ERR());
    FRESH();
    got = VirtualQuery(p, mbi, sizeof(mbi));
    say("args.long_buffer %z err=%u\n", (ULONG_PTR)got, ERR());
    FRESH();
    got = VirtualQuery((char *)si.lpMaximumApplicationAddress + 1, mbi, sizeof(mbi[0]));
    say("args.above_max %z err=%u\n", (ULONG_PTR)got, ERR());
    FRESH();
    got = VirtualQuery((void *)~(ULONG_PTR)0, mbi, sizeof(mbi[0]));
    say("args.all_ones %z err=%u\n", (ULONG_PTR)got, ERR());
    set_base(si.lpMaximumApplicationAddress);
    query("args.max_address", si.lpMaximumApplicationAddress);
    VirtualFree(p, 0, MEM_RELEASE);
}

static void test_kuser(void)
{
    char *k = (char *)0x7ffe0000;
    set_base(k);
    query("kuser.first", k);
    query("kuser.last", k + 0xfff);
}

static void run(void)
{
    test_private();
    test_reserved();
    test_free();
    test_view();
    test_image();
    test_args();
    test_kuser();
}
