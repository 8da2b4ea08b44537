/*
 * Shared by every oracle program: a freestanding runtime (no C library) of a few lines.
 *
 * The programs are built with -nostdlib -ffreestanding and link only kernel32, so they run
 * the same under Wine, under Windows and under emulator-mem's runner, which implements a
 * subset of kernel32. Everything a C runtime would give us is here: memset/memcpy (which
 * GCC may call on its own for struct copies), a tiny printf and the entry point.
 *
 * Output convention: one line per check, "group.check value", never an absolute address.
 * Pointers are printed relative to a base the program chose (REL), sizes in hex, error
 * codes in decimal as read after SetLastError(0xdeadbeef) (3735928559 = left untouched).
 */
#ifndef ORACLE_H
#define ORACLE_H

#include <stdarg.h>
#include <windows.h>

typedef unsigned char u8;

void *memset(void *dst, int c, size_t n)
{
    volatile u8 *d = dst;
    while (n--) *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    volatile u8 *d = dst;
    const u8 *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

static char out_buf[256];
static unsigned out_len;

static void out_flush(void)
{
    DWORD written;
    if (out_len)
        WriteFile(GetStdHandle(STD_OUTPUT_HANDLE), out_buf, out_len, &written, NULL);
    out_len = 0;
}

static void out_char(char c)
{
    if (out_len == sizeof(out_buf)) out_flush();
    out_buf[out_len++] = c;
    if (c == '\n') out_flush();
}

static void out_str(const char *s)
{
    while (*s) out_char(*s++);
}

static void out_hex(ULONG64 v)
{
    char tmp[17];
    int n = 0;
    out_str("0x");
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (n) out_char(tmp[--n]);
}

static void out_dec(ULONG64 v)
{
    char tmp[21];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) out_char(tmp[--n]);
}

/*
 * say(): %s string, %u DWORD decimal, %x DWORD hex, %z SIZE_T/ULONG_PTR hex,
 * %r a pointer relative to the current base (set_base): "+0x2000", "-0x1000" or "null".
 */
static ULONG_PTR rel_base;

static void set_base(const void *base) { rel_base = (ULONG_PTR)base; }

static void out_rel(ULONG_PTR p)
{
    if (!p) { out_str("null"); return; }
    if (p >= rel_base) { out_char('+'); out_hex(p - rel_base); }
    else { out_char('-'); out_hex(rel_base - p); }
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') { out_char(*fmt); continue; }
        switch (*++fmt) {
        case 's': out_str(va_arg(ap, const char *)); break;
        case 'u': out_dec(va_arg(ap, DWORD)); break;
        case 'x': out_hex(va_arg(ap, DWORD)); break;
        case 'z': out_hex(va_arg(ap, ULONG_PTR)); break;
        case 'r': out_rel(va_arg(ap, ULONG_PTR)); break;
        default: out_char('%'); out_char(*fmt); break;
        }
    }
    va_end(ap);
}

/* The last error a call left, read right after it; the call's result goes through *ret. */
#define FRESH() SetLastError(0xdeadbeef)
#define ERR() GetLastError()
static DWORD e_ __attribute__((unused));  /* the last error of the call just made, read before anything else runs */

/* One VirtualQuery, printed as one line relative to the current base. */
static void query(const char *name, const void *addr)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    memset(&mbi, 0xcc, sizeof(mbi));
    FRESH();
    got = VirtualQuery(addr, &mbi, sizeof(mbi));
    if (!got) { say("%s fail err=%u\n", name, ERR()); return; }
    say("%s base=%r alloc=%r aprot=%x size=%z state=%x prot=%x type=%x\n", name,
        (ULONG_PTR)mbi.BaseAddress, (ULONG_PTR)mbi.AllocationBase, mbi.AllocationProtect,
        (ULONG_PTR)mbi.RegionSize, mbi.State, mbi.Protect, mbi.Type);
}

/* The same for a free region: its size depends on the neighbours, so only a lower bound. */
static void query_free(const char *name, const void *addr, SIZE_T at_least)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    memset(&mbi, 0xcc, sizeof(mbi));
    FRESH();
    got = VirtualQuery(addr, &mbi, sizeof(mbi));
    if (!got) { say("%s fail err=%u\n", name, ERR()); return; }
    say("%s base=%r alloc=%r aprot=%x size>=%z %u state=%x prot=%x type=%x\n", name,
        (ULONG_PTR)mbi.BaseAddress, (ULONG_PTR)mbi.AllocationBase, mbi.AllocationProtect,
        (ULONG_PTR)at_least, (DWORD)(mbi.RegionSize >= at_least), mbi.State, mbi.Protect,
        mbi.Type);
}

/* The protection VirtualQuery reports for one address (0xffffffff if the query fails). */
static DWORD prot_of(const void *addr)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (!VirtualQuery(addr, &mbi, sizeof(mbi))) return 0xffffffff;
    return mbi.Protect;
}

static void run(void);

/* The entry point: no C runtime, so no argc/argv and no atexit; ExitProcess ends us. */
void __stdcall oracle_entry(void)
{
    run();
    out_flush();
    ExitProcess(0);
}

#endif
