"""Wine's ``test_mapping`` (dlls/kernel32/tests/virtual.c), every combination, ported.

For each section protection × each of the 32 view access masks × each new protection the
Wine test checks: whether CreateFileMapping, NtMapViewOfSection and MapViewOfFile succeed
(ERROR_ACCESS_DENIED when the handle lacks the rights the view needs), the view's
VirtualQuery (protection from kernelbase's FILE_MAP_* rule, RegionSize, AllocationProtect,
Type), then VirtualProtect to every protection (allowed when the view's access covers the
new protection's, else ERROR_INVALID_PARAMETER), VirtualAlloc(MEM_COMMIT) to every
protection (anonymous mappings: the same rule; file-backed views and images:
ERROR_ACCESS_DENIED), and, for file-backed views and images, what a copy-on-write page
reports once written. The helpers below are Wine's own (``page_prot_to_access``,
``is_compatible_protection``, ``map_prot_to_access``, ``file_access_to_prot``,
``is_compatible_access``, ``map_prot_no_write``, ``map_prot_written``), written out with
Windows literals; the expected view protections are the table's.

Configurations: anonymous (pagefile) mappings, mappings of a read-write file, and SEC_IMAGE
mappings of a DLL (Wine maps kernel32.dll; we map a DLL built by our PE writer whose header
page is followed by code, as in kernel32.dll). Not ported: the read-only *file handle* run
(our CreateFileMapping takes host paths, which carry no handle access rights).

``todo_wine`` lines (Wine knowingly differs) follow Windows and say so where they occur.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from snippets import Guest

from emulator_mem import MemoryManager, nt
from emulator_mem.pe.writer import SCN_CODE, SCN_DATA, PEWriter
from emulator_mem.win32 import Kernel32

# winnt.h / winerror.h values, written out
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE = 0x10
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_EXECUTE_WRITECOPY = 0x80
MEM_COMMIT = 0x1000
MEM_MAPPED = 0x40000
MEM_IMAGE = 0x1000000
SEC_COMMIT = 0x08000000
SEC_IMAGE = 0x01000000
SECTION_QUERY = 0x0001
SECTION_MAP_WRITE = 0x0002
SECTION_MAP_READ = 0x0004
SECTION_MAP_EXECUTE = 0x0008
FILE_MAP_COPY = 0x0001
FILE_MAP_WRITE = 0x0002
FILE_MAP_READ = 0x0004
FILE_MAP_EXECUTE = 0x0020
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
INVALID_HANDLE_VALUE = 0xFFFFFFFFFFFFFFFF
ViewShare = 1
PAGE = 0x1000

PAGE_PROT = [
    PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOPY,
    PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY,
]

#: Wine's ``view[]`` table: FILE_MAP_* access -> the view protection Windows gives it
VIEW = [
    (0, PAGE_NOACCESS),
    (FILE_MAP_COPY, PAGE_WRITECOPY),
    (FILE_MAP_WRITE, PAGE_READWRITE),
    (FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_READWRITE),
    (FILE_MAP_READ, PAGE_READONLY),
    (FILE_MAP_READ | FILE_MAP_COPY, PAGE_READONLY),
    (FILE_MAP_READ | FILE_MAP_WRITE, PAGE_READWRITE),
    (FILE_MAP_READ | FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_READWRITE),
    (SECTION_MAP_EXECUTE, PAGE_NOACCESS),
    (SECTION_MAP_EXECUTE | FILE_MAP_COPY, PAGE_NOACCESS),
    (SECTION_MAP_EXECUTE | FILE_MAP_WRITE, PAGE_READWRITE),
    (SECTION_MAP_EXECUTE | FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_READWRITE),
    (SECTION_MAP_EXECUTE | FILE_MAP_READ, PAGE_READONLY),
    (SECTION_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_COPY, PAGE_READONLY),
    (SECTION_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_WRITE, PAGE_READWRITE),
    (SECTION_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_READWRITE),
    (FILE_MAP_EXECUTE, PAGE_NOACCESS),
    (FILE_MAP_EXECUTE | FILE_MAP_COPY, PAGE_EXECUTE_WRITECOPY),
    (FILE_MAP_EXECUTE | FILE_MAP_WRITE, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | FILE_MAP_READ, PAGE_EXECUTE_READ),
    (FILE_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_COPY, PAGE_EXECUTE_READ),
    (FILE_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_WRITE, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE, PAGE_NOACCESS),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_COPY, PAGE_NOACCESS),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_WRITE, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_WRITE | FILE_MAP_COPY, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_READ, PAGE_EXECUTE_READ),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_COPY, PAGE_EXECUTE_READ),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_WRITE, PAGE_EXECUTE_READWRITE),
    (FILE_MAP_EXECUTE | SECTION_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_WRITE | FILE_MAP_COPY,
     PAGE_EXECUTE_READWRITE),
]


# -- Wine's helpers, verbatim in meaning ------------------------------------------------
ACCESS_READ, ACCESS_WRITE, ACCESS_EXECUTE = 1, 2, 4


def page_prot_to_access(prot: int) -> int:
    return {
        PAGE_READONLY: ACCESS_READ, PAGE_WRITECOPY: ACCESS_READ,
        PAGE_READWRITE: ACCESS_READ | ACCESS_WRITE,
        PAGE_EXECUTE: ACCESS_READ | ACCESS_EXECUTE, PAGE_EXECUTE_READ: ACCESS_READ | ACCESS_EXECUTE,
        PAGE_EXECUTE_WRITECOPY: ACCESS_READ | ACCESS_EXECUTE,
        PAGE_EXECUTE_READWRITE: ACCESS_READ | ACCESS_WRITE | ACCESS_EXECUTE,
    }.get(prot, 0)


def is_compatible_protection(view_prot: int, prot: int) -> bool:
    view_access, prot_access = page_prot_to_access(view_prot), page_prot_to_access(prot)
    return view_access & prot_access == prot_access


def map_prot_to_access(prot: int) -> int:
    return {
        PAGE_READWRITE: SECTION_MAP_READ | SECTION_MAP_WRITE | SECTION_QUERY,
        PAGE_EXECUTE_READWRITE: SECTION_MAP_READ | SECTION_MAP_WRITE | SECTION_MAP_EXECUTE | SECTION_QUERY,
        PAGE_READONLY: SECTION_MAP_READ | SECTION_QUERY, PAGE_WRITECOPY: SECTION_MAP_READ | SECTION_QUERY,
        PAGE_EXECUTE: SECTION_MAP_READ | SECTION_MAP_EXECUTE | SECTION_QUERY,
        PAGE_EXECUTE_READ: SECTION_MAP_READ | SECTION_MAP_EXECUTE | SECTION_QUERY,
        PAGE_EXECUTE_WRITECOPY: SECTION_MAP_READ | SECTION_MAP_EXECUTE | SECTION_QUERY,
    }.get(prot, 0)


def map_prot_no_write(prot: int) -> int:
    return {PAGE_READWRITE: PAGE_WRITECOPY, PAGE_EXECUTE_READWRITE: PAGE_EXECUTE_WRITECOPY}.get(prot, prot)


def map_prot_written(prot: int) -> int:
    return {PAGE_WRITECOPY: PAGE_READWRITE, PAGE_EXECUTE_WRITECOPY: PAGE_EXECUTE_READWRITE}.get(prot, prot)


def file_access_to_prot(access: int) -> int:
    execute = bool(access & FILE_MAP_EXECUTE)
    access &= ~FILE_MAP_EXECUTE
    if access == FILE_MAP_COPY:
        return PAGE_EXECUTE_WRITECOPY if execute else PAGE_WRITECOPY
    if access & FILE_MAP_WRITE:
        return PAGE_EXECUTE_READWRITE if execute else PAGE_READWRITE
    if access & FILE_MAP_READ:
        return PAGE_EXECUTE_READ if execute else PAGE_READONLY
    return PAGE_NOACCESS


def is_compatible_access(map_prot: int, view_access_mask: int) -> bool:
    access = map_prot_to_access(map_prot)
    view_access = map_prot_to_access(file_access_to_prot(view_access_mask)) or SECTION_MAP_READ
    return view_access & access == view_access


def test_view_table_is_kernelbase_rule() -> None:
    """The table's second column is ``file_access_to_prot`` of its first (a self-check of
    the port; the library's rule is checked through MapViewOfFile below)."""
    assert all(file_access_to_prot(access) == prot for access, prot in VIEW)


# -- the test ------------------------------------------------------------------------------
def query(k32: Kernel32, address: int) -> tuple[int, ...]:
    info = k32.VirtualQuery(address)
    assert info is not None
    return (info.BaseAddress, info.AllocationBase, info.AllocationProtect, info.RegionSize,
            info.State, info.Protect, info.Type)


def run_test_mapping(k32: Kernel32, hfile: int | Path, sec_flags: int) -> None:
    """Wine's ``test_mapping(hfile, sec_flags, FALSE)``, one ``ok()`` per assert."""
    mm = k32.mm
    guest = Guest(mm)
    anon_mapping = hfile == INVALID_HANDLE_VALUE
    image = bool(sec_flags & SEC_IMAGE)
    for map_prot in PAGE_PROT:
        if image and map_prot in (PAGE_READWRITE, PAGE_EXECUTE_READWRITE):
            # Wine: "SEC_IMAGE doesn't support write access" (its kernel32.dll handle is
            # opened without write access, so Windows refuses); host paths carry no handle
            # rights here, so these two are not part of the port.
            continue
        k32.SetLastError(0xDEADBEEF)
        hmap = k32.CreateFileMapping(hfile, map_prot | sec_flags, 0, 2 * PAGE)
        if map_prot == PAGE_NOACCESS:
            assert not hmap
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            # a trick to create a not accessible mapping
            trick = PAGE_WRITECOPY if image else PAGE_READONLY
            hmap = k32.CreateFileMapping(hfile, trick | sec_flags, 0, PAGE)
            assert hmap
            hmap2 = k32.DuplicateHandle(hmap, 0)
            assert hmap2
            assert k32.CloseHandle(hmap)
            hmap = hmap2
        if map_prot == PAGE_EXECUTE:
            assert not hmap
            assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            continue
        assert hmap, (hex(map_prot), k32.GetLastError())

        for access, view_prot in VIEW:
            status, nt_base, _ = nt.NtMapViewOfSection(
                mm, hmap, 0, 0, 0, 0, 0, ViewShare, 0, file_access_to_prot(access))
            nt_info = None
            if status < 0x80000000:
                nt_info = query(k32, nt_base)
                assert k32.UnmapViewOfFile(nt_base)
            else:
                nt_base = 0

            k32.SetLastError(0xDEADBEEF)
            base = k32.MapViewOfFile(hmap, access, 0, 0, 0)
            assert (not nt_base) == (not base), (hex(map_prot), hex(access))

            if not is_compatible_access(map_prot, access):
                assert not base, (hex(map_prot), hex(access))
                assert k32.GetLastError() == ERROR_ACCESS_DENIED
                continue
            assert base, (hex(map_prot), hex(access), k32.GetLastError())

            info = query(k32, base)
            got_base, alloc_base, alloc_prot, region, state, prot, kind = info
            assert got_base == base
            assert region == (PAGE if image else 2 * PAGE)
            assert prot == (PAGE_READONLY if image else view_prot), (hex(map_prot), hex(access), hex(prot))
            assert alloc_base == base
            assert alloc_prot == (PAGE_EXECUTE_WRITECOPY if image else prot)
            assert state == MEM_COMMIT
            assert kind == (MEM_IMAGE if image else MEM_MAPPED)
            if nt_info is not None:  # NtMapViewOfSection's view looked the same
                assert (nt_info[3], nt_info[5], nt_info[2], nt_info[4], nt_info[6]) == (
                    region, prot, alloc_prot, state, kind)

            prev_prot = prot
            for new in PAGE_PROT:
                actual = map_prot_no_write(new) if image else new
                k32.SetLastError(0xDEADBEEF)
                ok, old = k32.VirtualProtect(base, PAGE, new)
                if is_compatible_protection(alloc_prot, actual):
                    assert ok, (hex(map_prot), hex(view_prot), hex(new), k32.GetLastError())
                    assert old == prev_prot
                    prev_prot = actual
                    assert query(k32, base)[5] == actual, (hex(map_prot), hex(view_prot), hex(new))
                else:
                    assert not ok, (hex(map_prot), hex(view_prot), hex(new))
                    assert k32.GetLastError() == ERROR_INVALID_PARAMETER

            for new in PAGE_PROT:
                k32.SetLastError(0xDEADBEEF)
                ptr = k32.VirtualAlloc(base, PAGE, MEM_COMMIT, new)
                if anon_mapping:
                    if is_compatible_protection(view_prot, new):
                        assert ptr, (hex(map_prot), hex(view_prot), hex(new), k32.GetLastError())
                        assert query(k32, base)[5] == new
                    else:
                        assert not ptr, (hex(map_prot), hex(view_prot), hex(new))
                        assert k32.GetLastError() == ERROR_INVALID_PARAMETER
                else:
                    assert not ptr
                    assert k32.GetLastError() == ERROR_ACCESS_DENIED

            if not anon_mapping and is_compatible_protection(alloc_prot, PAGE_WRITECOPY):
                ok, old = k32.VirtualProtect(base, PAGE if image else 2 * PAGE, PAGE_WRITECOPY)
                assert ok
                guest.run(f"mov {guest.ptr}, {base}; mov dword ptr [{guest.ptr}], 0xdeadbeef")
                info = query(k32, base)
                assert info[5] == PAGE_READWRITE  # todo_wine: Windows resolves the copy
                assert info[3] == PAGE  # todo_wine_if(!SEC_IMAGE): the written page alone
                prev_prot, alloc_prot = info[5], info[2]
                if not image:
                    assert query(k32, base + PAGE)[5] == PAGE_WRITECOPY
                for new in PAGE_PROT:
                    actual = map_prot_no_write(new) if image else new
                    k32.SetLastError(0xDEADBEEF)
                    ok, old = k32.VirtualProtect(base, PAGE, new)
                    if is_compatible_protection(alloc_prot, actual):
                        assert ok, (hex(map_prot), hex(view_prot), hex(new))
                        assert old == prev_prot
                        # todo_wine_if(map_prot_written(new) != actual): a written page is
                        # private, so copy-on-write asked of it reads as its resolved twin
                        got = query(k32, base)[5]
                        assert got == map_prot_written(new), (hex(map_prot), hex(view_prot), hex(new))
                        prev_prot = got
                    else:
                        assert not ok, (hex(map_prot), hex(view_prot), hex(new))
                        assert k32.GetLastError() == ERROR_INVALID_PARAMETER
            assert k32.UnmapViewOfFile(base)
        assert k32.CloseHandle(hmap)


def test_mapping_anonymous(k32: Kernel32) -> None:
    run_test_mapping(k32, INVALID_HANDLE_VALUE, SEC_COMMIT)


def test_mapping_file(k32: Kernel32, tmp_path: Path) -> None:
    path = tmp_path / "map.tmp"
    path.write_bytes(bytes(2 * PAGE))
    run_test_mapping(k32, path, SEC_COMMIT)
    # "test that file was not modified": every write went to a copy-on-write page
    # (todo_wine: Wine writes it through; Windows does not)
    assert path.read_bytes()[:4] == bytes(4)


def build_dll(is_64bit: bool) -> bytes:
    """A small DLL laid out like kernel32.dll where the test looks: headers, then code."""
    w = PEWriter(is_64bit=is_64bit)
    text = w.add_section(".text", SCN_CODE, size=0x200)
    text.data = b"\xc3"
    data = w.add_section(".data", SCN_DATA, size=0x200)
    data.data = b"data"
    return w.build()


def test_mapping_image(k32: Kernel32, mm: MemoryManager, tmp_path: Path) -> None:
    path = tmp_path / "sample.dll"
    path.write_bytes(build_dll(mm.is_64bit))
    run_test_mapping(k32, path, SEC_IMAGE)


@pytest.mark.parametrize(("access", "protect"), [
    (FILE_MAP_READ | FILE_MAP_COPY, PAGE_READONLY),
    (FILE_MAP_EXECUTE, PAGE_NOACCESS),
    (FILE_MAP_EXECUTE | FILE_MAP_READ | FILE_MAP_COPY, PAGE_EXECUTE_READ),
])
def test_issue_examples(k32: Kernel32, access: int, protect: int) -> None:
    """The three mismatches the issue names, on a PAGE_EXECUTE_READWRITE mapping."""
    h = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_EXECUTE_READWRITE | SEC_COMMIT, 0, PAGE)
    base = k32.MapViewOfFile(h, access, 0, 0, 0)
    assert base
    assert query(k32, base)[5] == protect


def test_protect_inside_views(k32: Kernel32) -> None:
    """The issue's VirtualProtect / VirtualAlloc(MEM_COMMIT) cases: NOACCESS on a NOACCESS
    view, EXECUTE_WRITECOPY on an EXECUTE_READ view (both succeed on Windows)."""
    h = k32.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_EXECUTE_READWRITE | SEC_COMMIT, 0, PAGE)
    noaccess = k32.MapViewOfFile(h, 0, 0, 0, 0)
    assert query(k32, noaccess)[5] == PAGE_NOACCESS
    assert k32.VirtualProtect(noaccess, PAGE, PAGE_NOACCESS) == (True, PAGE_NOACCESS)
    assert k32.VirtualAlloc(noaccess, PAGE, MEM_COMMIT, PAGE_NOACCESS) == noaccess
    rx = k32.MapViewOfFile(h, FILE_MAP_EXECUTE | FILE_MAP_READ, 0, 0, 0)
    assert k32.VirtualProtect(rx, PAGE, PAGE_EXECUTE_WRITECOPY) == (True, PAGE_EXECUTE_READ)
    assert query(k32, rx)[5] == PAGE_EXECUTE_WRITECOPY
    assert k32.VirtualAlloc(rx, PAGE, MEM_COMMIT, PAGE_EXECUTE_WRITECOPY) == rx
    assert not k32.VirtualProtect(rx, PAGE, PAGE_READWRITE)[0]
    assert k32.GetLastError() == ERROR_INVALID_PARAMETER
