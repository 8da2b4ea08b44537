/*
 * Views of pagefile sections: which view accesses each section protection allows, the
 * protection the view gets, and which protections VirtualProtect and
 * VirtualAlloc(MEM_COMMIT) accept inside the view. One line per combination:
 *   map.<section>.<access>            ok|null err=... prot=... aprot=...
 *   protect.<section>.<access>.<new>  1|0 err=... old=... now=...
 *   commit.<section>.<access>.<new>   ok|null err=... now=...  (SEC_RESERVE sections)
 * PAGE_NOCACHE is left out of the new protections: Wine 8.0 ignores it (see vprotect.c).
 */
#include "oracle.h"

#define PAGES 9

static const struct { const char *name; DWORD prot; } sections[] = {
    { "readonly", PAGE_READONLY },
    { "readwrite", PAGE_READWRITE },
    { "writecopy", PAGE_WRITECOPY },
    { "execute", PAGE_EXECUTE },
    { "execute_read", PAGE_EXECUTE_READ },
    { "execute_readwrite", PAGE_EXECUTE_READWRITE },
    { "execute_writecopy", PAGE_EXECUTE_WRITECOPY },
};

static const struct { const char *name; DWORD access; } accesses[] = {
    { "none", 0 },
    { "read", FILE_MAP_READ },
    { "write", FILE_MAP_WRITE },
    { "read_write", FILE_MAP_READ | FILE_MAP_WRITE },
    { "copy", FILE_MAP_COPY },
    { "copy_read", FILE_MAP_COPY | FILE_MAP_READ },
    { "copy_write", FILE_MAP_COPY | FILE_MAP_WRITE },
    { "execute", FILE_MAP_EXECUTE },
    { "execute_read", FILE_MAP_EXECUTE | FILE_MAP_READ },
    { "execute_write", FILE_MAP_EXECUTE | FILE_MAP_WRITE },
    { "execute_copy", FILE_MAP_EXECUTE | FILE_MAP_COPY },
    { "execute_copy_read", FILE_MAP_EXECUTE | FILE_MAP_COPY | FILE_MAP_READ },
    { "all_access", FILE_MAP_ALL_ACCESS },
    { "all_access_execute", FILE_MAP_ALL_ACCESS | FILE_MAP_EXECUTE },
};

static const struct { const char *name; DWORD prot; } news[PAGES] = {
    { "noaccess", PAGE_NOACCESS },
    { "readonly", PAGE_READONLY },
    { "readwrite", PAGE_READWRITE },
    { "writecopy", PAGE_WRITECOPY },
    { "execute", PAGE_EXECUTE },
    { "execute_read", PAGE_EXECUTE_READ },
    { "execute_readwrite", PAGE_EXECUTE_READWRITE },
    { "execute_writecopy", PAGE_EXECUTE_WRITECOPY },
    { "readonly_guard", PAGE_READONLY | PAGE_GUARD },
};

static void test_commit_sections(void)
{
    unsigned s, a, n;
    for (s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
        HANDLE h;
        FRESH();
        h = CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, sections[s].prot, 0, PAGES * 0x1000, NULL);
        say("section.%s %s err=%u\n", sections[s].name, h ? "ok" : "null", ERR());
        if (!h) continue;
        for (a = 0; a < sizeof(accesses) / sizeof(accesses[0]); a++) {
            MEMORY_BASIC_INFORMATION mbi;
            char *v;
            FRESH();
            v = MapViewOfFile(h, accesses[a].access, 0, 0, 0);
            say("map.%s.%s %s err=%u", sections[s].name, accesses[a].name, v ? "ok" : "null", ERR());
            if (!v) { say("\n"); continue; }
            VirtualQuery(v, &mbi, sizeof(mbi));
            say(" prot=%x aprot=%x size=%z\n", mbi.Protect, mbi.AllocationProtect,
                (ULONG_PTR)mbi.RegionSize);
            for (n = 0; n < PAGES; n++) {
                char *page = v + n * 0x1000;
                DWORD old = 0xcafe;
                BOOL ok;
                FRESH();
                ok = VirtualProtect(page, 0x1000, news[n].prot, &old);
                e_ = ERR();
                say("protect.%s.%s.%s %u err=%u old=%x now=%x\n", sections[s].name,
                    accesses[a].name, news[n].name, (DWORD)ok, e_, old, prot_of(page));
            }
            UnmapViewOfFile(v);
        }
        CloseHandle(h);
    }
}

static void test_reserve_sections(void)
{
    unsigned s, a, n;
    for (s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
        for (a = 0; a < sizeof(accesses) / sizeof(accesses[0]); a++) {
            /* a fresh section each time: commits belong to the section, not the view */
            HANDLE h;
            char *v;
            FRESH();
            h = CreateFileMappingA(INVALID_HANDLE_VALUE, NULL, sections[s].prot | SEC_RESERVE, 0,
                                   PAGES * 0x1000, NULL);
            if (!a) say("rsection.%s %s err=%u\n", sections[s].name, h ? "ok" : "null", ERR());
            if (!h) break;
            FRESH();
            v = MapViewOfFile(h, accesses[a].access, 0, 0, 0);
            say("rmap.%s.%s %s err=%u\n", sections[s].name, accesses[a].name, v ? "ok" : "null",
                ERR());
            if (!v) { CloseHandle(h); continue; }
            for (n = 0; n < PAGES; n++) {
                char *page = v + n * 0x1000;
                void *p;
                FRESH();
                p = VirtualAlloc(page, 0x1000, MEM_COMMIT, news[n].prot);
                e_ = ERR();
                say("commit.%s.%s.%s %s err=%u now=%x\n", sections[s].name, accesses[a].name,
                    news[n].name, p == page ? "ok" : p ? "moved" : "null", e_, prot_of(page));
            }
            UnmapViewOfFile(v);
            CloseHandle(h);
        }
    }
}

static void run(void)
{
    test_commit_sections();
    test_reserve_sections();
}
