"""Section objects and views: CreateFileMapping/MapViewOfFile and their NT twins.

Independent tests of the spec, with Windows as the oracle (Wine's kernel32 ``virtual.c``
test_MapViewOfFile / test_NtMapViewOfSection and ReactOS' NtMapViewOfSection apitest, whose
assertions hold on real Windows). Every view of a section shares its bytes (guest, other
views, host); FILE_MAP_COPY views are copy-on-write; SEC_RESERVE views start reserved; the
section protection limits the views; a view outlives its handle; views are released only
by unmapping; named sections; 64 KiB view offsets; file-backed sections; handle errors; the
section's memory goes away with its last handle and view. Expected values are Windows
literals; 32- and 64-bit guests both run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from snippets import Guest as SnippetGuest
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_ESP, UC_X86_REG_RSP

from emulator_mem import MemoryBasicInformation, MemoryManager, RegionKind
from emulator_mem.api.nt_sections import (
    NtClose,
    NtCreateSection,
    NtMapViewOfSection,
    NtOpenSection,
    NtUnmapViewOfSection,
)
from emulator_mem.api.win32_sections import FileMappingApi
from emulator_mem.errors import EmulatorMemError
from emulator_mem.nt import RtlNtStatusToDosError

try:
    from emulator_mem.win32 import Kernel32
except ImportError:  # pragma: no cover - win32 is being written concurrently
    Kernel32 = None  # type: ignore[assignment,misc]

# winnt.h / ntstatus.h / winerror.h values, written out
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE = 0x10
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_EXECUTE_WRITECOPY = 0x80
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_DECOMMIT = 0x4000
MEM_RELEASE = 0x8000
MEM_FREE = 0x10000
MEM_MAPPED = 0x40000
SEC_COMMIT = 0x8000000
SEC_RESERVE = 0x4000000
FILE_MAP_COPY = 0x0001
FILE_MAP_WRITE = 0x0002
FILE_MAP_READ = 0x0004
FILE_MAP_EXECUTE = 0x0020
SECTION_QUERY = 0x0001
SECTION_MAP_WRITE = 0x0002
SECTION_MAP_READ = 0x0004
SECTION_ALL_ACCESS = 0x000F001F
INVALID_HANDLE_VALUE = 0xFFFFFFFFFFFFFFFF
ViewShare = 1
STATUS_SUCCESS = 0
STATUS_OBJECT_NAME_EXISTS = 0x40000000
STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_CONFLICTING_ADDRESSES = 0xC0000018
STATUS_NOT_MAPPED_VIEW = 0xC0000019
STATUS_UNABLE_TO_DELETE_SECTION = 0xC000001B
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_SECTION_PROTECTION = 0xC000004E
STATUS_MAPPED_ALIGNMENT = 0xC0000220
ERROR_SUCCESS = 0
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_PARAMETER = 87
ERROR_ALREADY_EXISTS = 183
ERROR_INVALID_ADDRESS = 487
ERROR_MAPPED_ALIGNMENT = 1132


if Kernel32 is not None and issubclass(Kernel32, FileMappingApi):
    K = Kernel32
else:  # pragma: no cover - until FileMappingApi is mixed into Kernel32

    class K(FileMappingApi):  # type: ignore[no-redef]
        """The minimum FileMappingApi needs from Kernel32: a manager and a last error."""

        def __init__(self, mm: MemoryManager) -> None:
            self.mm = mm
            self._last_error = 0

        def SetLastError(self, code: int) -> None:  # noqa: N802
            self._last_error = code & 0xFFFFFFFF

        def GetLastError(self) -> int:  # noqa: N802
            return self._last_error

        def _fail(self, status: int) -> None:
            self._last_error = RtlNtStatusToDosError(status)


@pytest.fixture
def k(mm: MemoryManager) -> K:
    return K(mm)


class Guest(SnippetGuest):
    """The shared snippet runner plus this file's helpers."""

    def store(self, address: int, value: int) -> None:
        self.run(f"mov {self.ptr}, {address}; mov dword ptr [{self.ptr}], {value}")

    def load(self, address: int) -> int:
        self.run(f"mov {self.ptr}, {address}; mov eax, dword ptr [{self.ptr}]")
        return int(self.mm.uc.reg_read(UC_X86_REG_EAX)) & 0xFFFFFFFF


def vq(k: K, address: int) -> MemoryBasicInformation:
    """VirtualQuery through kernel32; it must succeed."""
    mbi = k.VirtualQuery(address)
    assert mbi is not None, k.GetLastError()
    return mbi


def dword(mm: MemoryManager, address: int) -> int:
    return int.from_bytes(mm.read(address, 4), "little")


def unicorn_regions(mm: MemoryManager) -> int:
    return sum(1 for _ in mm.uc.mem_regions())


def anonymous(k: K, size: int, protect: int = PAGE_READWRITE, name: str | None = None) -> int:
    handle = k.CreateFileMapping(INVALID_HANDLE_VALUE, protect, size >> 32, size & 0xFFFFFFFF, name)
    assert handle, k.GetLastError()
    return handle


# --------------------------------------------------------------------------------------
# shared bytes
# --------------------------------------------------------------------------------------
def test_guest_write_through_one_view_is_seen_everywhere(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x20000)
    v1 = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    v2 = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    v3 = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0x10000, 0x10000)
    assert v1 and v2 and v3 and len({v1, v2, v3}) == 3
    g = Guest(mm)
    g.store(v1 + 0x10008, 0x11223344)
    assert g.load(v2 + 0x10008) == 0x11223344
    assert g.load(v3 + 0x8) == 0x11223344
    assert dword(mm, v1 + 0x10008) == dword(mm, v2 + 0x10008) == dword(mm, v3 + 8) == 0x11223344
    g.store(v3 + 0xFFFC, 0x55667788)  # through the offset view, back into the first
    assert g.load(v1 + 0x1FFFC) == 0x55667788
    assert dword(mm, v2 + 0x1FFFC) == 0x55667788


def test_host_write_through_one_view_is_seen_by_the_guest_in_another(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x1000)
    v1 = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    v2 = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    g = Guest(mm)
    assert g.load(v2 + 0x100) == 0  # the guest TLB has the page now
    mm.write(v1 + 0x100, (0xCAFEF00D).to_bytes(4, "little"))
    assert g.load(v2 + 0x100) == 0xCAFEF00D


def test_views_are_mem_mapped_with_the_view_protection(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x3000)
    expected = {FILE_MAP_WRITE: PAGE_READWRITE, FILE_MAP_READ: PAGE_READONLY, FILE_MAP_COPY: PAGE_WRITECOPY,
                FILE_MAP_WRITE | FILE_MAP_READ: PAGE_READWRITE}
    for access, protect in expected.items():
        view = k.MapViewOfFile(h, access, 0, 0, 0)
        assert view and view % 0x10000 == 0
        mbi = vq(k, view + 0x1800)
        assert mbi.BaseAddress == view + 0x1000  # the page holding the address (Windows)
        assert mbi.AllocationBase == view
        assert mbi.AllocationProtect == protect
        assert mbi.RegionSize == 0x2000  # from that page to the end of the view
        assert mbi.State == MEM_COMMIT
        assert mbi.Protect == protect
        assert mbi.Type == MEM_MAPPED
        assert mm.region_kind(view) is RegionKind.MAPPED
        assert k.UnmapViewOfFile(view)
        assert mm.query(view).State == MEM_FREE


def test_read_only_view_refuses_guest_writes(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x1000)
    ro = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    g = Guest(mm)
    fault = g.fault(f"mov {g.ptr}, {ro}; mov dword ptr [{g.ptr}+4], 1")
    assert (fault.status, fault.address, fault.access) == (STATUS_ACCESS_VIOLATION, ro + 4, 1)
    assert mm.read(ro, 8) == bytes(8)


# --------------------------------------------------------------------------------------
# FILE_MAP_COPY
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["guest", "host"])
def test_copy_view_is_copy_on_write(k: K, mm: MemoryManager, writer: str) -> None:
    h = anonymous(k, 0x3000)
    shared = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    other = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    cow = k.MapViewOfFile(h, FILE_MAP_COPY, 0, 0, 0)
    g = Guest(mm)
    mm.write(shared, b"A" * 0x3000)
    assert g.load(cow + 0x1000) == 0x41414141  # read first: still shared, still PAGE_WRITECOPY
    assert vq(k, cow).Protect == PAGE_WRITECOPY
    if writer == "guest":
        g.store(cow + 0x1010, 0x42424242)
    else:
        mm.write(cow + 0x1010, b"BBBB")
    # only that page became private and PAGE_READWRITE
    regions = [(m.BaseAddress - cow, m.RegionSize, m.Protect, m.State, m.AllocationProtect, m.Type)
               for m in (mm.query(cow), mm.query(cow + 0x1000), mm.query(cow + 0x2000))]
    assert regions == [
        (0x0000, 0x1000, PAGE_WRITECOPY, MEM_COMMIT, PAGE_WRITECOPY, MEM_MAPPED),
        (0x1000, 0x1000, PAGE_READWRITE, MEM_COMMIT, PAGE_WRITECOPY, MEM_MAPPED),
        (0x2000, 0x1000, PAGE_WRITECOPY, MEM_COMMIT, PAGE_WRITECOPY, MEM_MAPPED),
    ]
    assert g.load(cow + 0x1010) == 0x42424242 and mm.read(cow + 0x1010, 4) == b"BBBB"
    # the other views don't see it
    assert g.load(other + 0x1010) == 0x41414141
    assert mm.read(shared + 0x1010, 4) == b"AAAA"
    # and the private page no longer follows the section; untouched pages still do
    g.store(shared + 0x1014, 0x43434343)
    g.store(shared + 0x2000, 0x44444444)
    assert mm.read(cow + 0x1014, 4) == b"AAAA"
    assert g.load(cow + 0x1014) == 0x41414141
    assert g.load(cow + 0x2000) == 0x44444444
    assert mm.read(other + 0x1014, 4) == b"CCCC"


def test_copy_view_of_read_only_section(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x1000, PAGE_READONLY)
    ro = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    cow = k.MapViewOfFile(h, FILE_MAP_COPY, 0, 0, 0)
    assert ro and cow
    assert vq(k, cow).Protect == PAGE_WRITECOPY
    Guest(mm).store(cow, 0x1234)
    assert vq(k, cow).Protect == PAGE_READWRITE
    assert dword(mm, cow) == 0x1234 and dword(mm, ro) == 0


# --------------------------------------------------------------------------------------
# SEC_RESERVE
# --------------------------------------------------------------------------------------
def test_sec_reserve_views_start_reserved(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x100000, PAGE_READWRITE | SEC_RESERVE)
    view = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    mbi = vq(k, view)
    assert (mbi.BaseAddress, mbi.AllocationBase, mbi.RegionSize) == (view, view, 0x100000)
    assert (mbi.State, mbi.Protect, mbi.AllocationProtect, mbi.Type) == \
        (MEM_RESERVE, 0, PAGE_READWRITE, MEM_MAPPED)
    g = Guest(mm)
    fault = g.fault(f"mov {g.ptr}, {view + 0x20}; mov eax, dword ptr [{g.ptr}]")
    assert (fault.status, fault.address, fault.access) == (STATUS_ACCESS_VIOLATION, view + 0x20, 0)
    # commit inside the view (VirtualAlloc MEM_COMMIT), Wine's PAGE_READONLY case
    assert k.VirtualAlloc(view, 0x10000, MEM_COMMIT, PAGE_READONLY) == view
    mbi = vq(k, view)
    assert (mbi.BaseAddress, mbi.RegionSize, mbi.State, mbi.Protect) == \
        (view, 0x10000, MEM_COMMIT, PAGE_READONLY)
    assert (mbi.AllocationProtect, mbi.Type) == (PAGE_READWRITE, MEM_MAPPED)
    assert vq(k, view + 0x10000).State == MEM_RESERVE
    # and with mm.commit; the guest may then use the page
    assert mm.commit(view + 0x20000, 0x1000, PAGE_READWRITE) == view + 0x20000
    g.store(view + 0x20010, 0x77)
    assert dword(mm, view + 0x20010) == 0x77
    # decommitting a view is refused (ReactOS apitest: STATUS_UNABLE_TO_DELETE_SECTION)
    assert not k.VirtualFree(view, 0x10000, MEM_DECOMMIT)
    assert k.GetLastError() == ERROR_INVALID_PARAMETER
    with pytest.raises(EmulatorMemError) as info:
        mm.decommit(view + 0x20000, 0x1000)
    assert info.value.status == STATUS_UNABLE_TO_DELETE_SECTION


def test_sec_reserve_commit_through_one_view_commits_the_section(k: K, mm: MemoryManager) -> None:
    """Wine test_MapViewOfFile: "the VirtualAlloc above affects the mapping, not just the
    virtual memory in this process" — the second view shows the pages committed, with its
    own view protection, and shares their bytes."""
    h = anonymous(k, 0x100000, PAGE_READWRITE | SEC_RESERVE)
    ptr = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    ptr2 = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    assert vq(k, ptr2).State == MEM_RESERVE
    assert k.VirtualAlloc(ptr, 0x10000, MEM_COMMIT, PAGE_READONLY) == ptr
    mbi = vq(k, ptr2)
    assert (mbi.BaseAddress, mbi.AllocationBase, mbi.AllocationProtect) == (ptr2, ptr2, PAGE_READWRITE)
    assert mbi.RegionSize == 0x10000
    assert mbi.State == MEM_COMMIT
    assert mbi.Protect == PAGE_READWRITE
    assert mbi.Type == MEM_MAPPED
    mm.write(ptr2 + 0x40, b"seen")
    assert mm.read(ptr + 0x40, 4) == b"seen"


def test_sec_reserve_commit_is_kept_by_the_section_for_later_views(k: K, mm: MemoryManager) -> None:
    """The commit belongs to the section (its pages), not to the view that asked: a view
    mapped afterwards — even after every earlier view is gone — sees those pages committed
    and their bytes."""
    h = anonymous(k, 0x40000, PAGE_READWRITE | SEC_RESERVE)
    first = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    assert k.VirtualAlloc(first, 0x2000, MEM_COMMIT, PAGE_READWRITE) == first
    mm.write(first + 0x1000, b"data")
    later = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    mbi = vq(k, later)
    assert (mbi.BaseAddress, mbi.RegionSize, mbi.State, mbi.Protect) == \
        (later, 0x2000, MEM_COMMIT, PAGE_READONLY)
    assert mm.read(later + 0x1000, 4) == b"data"
    assert vq(k, later + 0x2000).State == MEM_RESERVE
    assert k.UnmapViewOfFile(first) and k.UnmapViewOfFile(later)
    again = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)  # the handle kept the section alive
    assert vq(k, again).State == MEM_COMMIT
    assert mm.read(again + 0x1000, 4) == b"data"


# --------------------------------------------------------------------------------------
# the section protection limits the views
# --------------------------------------------------------------------------------------
def test_read_only_mapping_refuses_a_writable_view(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x1000, PAGE_READONLY)
    before = list(mm.regions())
    k.SetLastError(0xDEADBEEF)
    assert k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0) == 0
    assert k.GetLastError() == ERROR_ACCESS_DENIED
    assert list(mm.regions()) == before
    view = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    assert view and vq(k, view).Protect == PAGE_READONLY


def test_nt_map_view_with_limited_handle_access_is_denied(mm: MemoryManager) -> None:
    status, handle = NtCreateSection(mm, SECTION_QUERY | SECTION_MAP_READ, 0x1000, PAGE_READWRITE, SEC_COMMIT)
    assert status == STATUS_SUCCESS and handle
    status, base, _ = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READWRITE)
    assert status == STATUS_ACCESS_DENIED and base == 0
    status, base, _ = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READONLY)
    assert status == STATUS_SUCCESS and base


def test_nt_map_view_incompatible_protect_with_write_access(mm: MemoryManager) -> None:
    """The handle grants SECTION_MAP_WRITE, the section is PAGE_READONLY: the protection check."""
    access = SECTION_QUERY | SECTION_MAP_READ | SECTION_MAP_WRITE
    status, handle = NtCreateSection(mm, access, 0x1000, PAGE_READONLY, SEC_COMMIT)
    assert status == STATUS_SUCCESS
    before = list(mm.regions())
    status, _, _ = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READWRITE)
    assert status == STATUS_SECTION_PROTECTION
    assert list(mm.regions()) == before


@pytest.mark.parametrize(
    ("section_protect", "view_protect"),
    [(PAGE_READWRITE, PAGE_EXECUTE_READWRITE), (PAGE_READONLY, PAGE_READWRITE)],
)
def test_nt_map_view_incompatible_protect_all_access(
    mm: MemoryManager, section_protect: int, view_protect: int
) -> None:
    """ReactOS apitest NtMapViewOfSection (passes on Windows): a SECTION_ALL_ACCESS handle to
    a PAGE_READWRITE section mapped PAGE_EXECUTE_READWRITE gives STATUS_SECTION_PROTECTION.
    The access mask is SECTION_ALL_ACCESS, so the refusal must come from the protection."""
    status, handle = NtCreateSection(mm, SECTION_ALL_ACCESS, 0x1000, section_protect, SEC_COMMIT)
    assert status == STATUS_SUCCESS
    status, _, _ = NtMapViewOfSection(mm, handle, 0, 0, 0, 0, 0, ViewShare, 0, view_protect)
    assert status == STATUS_SECTION_PROTECTION


def test_view_protection_changes_stay_within_the_view_protection(k: K, mm: MemoryManager) -> None:
    """Wine test_CreateFileMapping_protection: VirtualProtect inside a FILE_MAP_READ view
    accepts only PAGE_READONLY/PAGE_WRITECOPY; a writable view may drop and regain write."""
    h = anonymous(k, 0x2000, PAGE_READWRITE)
    ro = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    assert k.VirtualProtect(ro, 0x1000, PAGE_READONLY) == (True, PAGE_READONLY)
    for protect in (PAGE_READWRITE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE):
        k.SetLastError(0xDEADBEEF)
        assert k.VirtualProtect(ro, 0x1000, protect) == (False, 0)
        assert k.GetLastError() == ERROR_INVALID_PARAMETER
    with pytest.raises(EmulatorMemError):
        mm.protect(ro, 0x1000, PAGE_READWRITE)
    assert vq(k, ro).Protect == PAGE_READONLY
    rw = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    assert mm.protect(rw, 0x1000, PAGE_READONLY) == PAGE_READWRITE
    g = Guest(mm)
    fault = g.fault(f"mov {g.ptr}, {rw}; mov dword ptr [{g.ptr}], 5")
    assert (fault.status, fault.access) == (STATUS_ACCESS_VIOLATION, 1)
    assert mm.protect(rw, 0x1000, PAGE_READWRITE) == PAGE_READONLY
    g.store(rw, 5)
    assert dword(mm, ro) == 5
    with pytest.raises(EmulatorMemError):
        mm.protect(rw, 0x1000, PAGE_EXECUTE_READWRITE)  # beyond the section: no execute


# --------------------------------------------------------------------------------------
# lifetime
# --------------------------------------------------------------------------------------
def test_view_stays_valid_after_its_handle_is_closed(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x2000)
    view = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    mm.write(view, b"kept")
    assert k.CloseHandle(h)
    mbi = vq(k, view)
    assert (mbi.State, mbi.Protect, mbi.Type, mbi.RegionSize) == \
        (MEM_COMMIT, PAGE_READWRITE, MEM_MAPPED, 0x2000)
    g = Guest(mm)
    assert g.load(view) == int.from_bytes(b"kept", "little")
    g.store(view + 0x1FFC, 0x99)
    assert dword(mm, view + 0x1FFC) == 0x99
    assert k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0) == 0  # the handle itself is gone
    assert k.GetLastError() == ERROR_INVALID_HANDLE
    assert k.UnmapViewOfFile(view)
    assert mm.query(view).State == MEM_FREE


def test_views_cannot_be_released_like_private_memory(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x1000)
    view = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    with pytest.raises(EmulatorMemError) as info:
        mm.release(view)
    assert info.value.status == STATUS_UNABLE_TO_DELETE_SECTION
    k.SetLastError(0xDEADBEEF)
    assert not k.VirtualFree(view, 0, MEM_RELEASE)
    assert k.GetLastError() == ERROR_INVALID_PARAMETER
    assert vq(k, view).State == MEM_COMMIT and mm.region_kind(view) is RegionKind.MAPPED
    # UnmapViewOfFile refuses private memory (Wine)
    private = mm.allocate(0x10000, PAGE_READONLY)
    for address in (private, private + 0x3000):
        k.SetLastError(0xDEADBEEF)
        assert not k.UnmapViewOfFile(address)
        assert k.GetLastError() == ERROR_INVALID_ADDRESS
    assert NtUnmapViewOfSection(mm, private) == (STATUS_NOT_MAPPED_VIEW,)
    assert k.UnmapViewOfFile(view)


def test_memory_is_released_with_the_last_view_and_handle(k: K, mm: MemoryManager) -> None:
    Guest(mm)._place("nop")  # map the identity window first: it is not the section's memory
    regions = unicorn_regions(mm)
    walk = list(mm.regions())
    h = anonymous(k, 0x30000, name="Local\\lifetime")
    h2 = k.OpenFileMapping(FILE_MAP_READ, False, "Local\\lifetime")
    views = [k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0), k.MapViewOfFile(h2, FILE_MAP_READ, 0, 0x10000, 0)]
    assert all(views) and unicorn_regions(mm) > regions
    mm.write(views[0], b"x" * 0x30000)
    assert k.CloseHandle(h)
    assert k.UnmapViewOfFile(views[0])
    assert mm.read(views[1], 1) == b"x"  # one handle and one view still hold it
    assert k.CloseHandle(h2)
    assert mm.read(views[1] + 0x1FFFF, 1) == b"x"  # the last view holds it
    assert k.UnmapViewOfFile(views[1])
    assert mm.sections.names == {}
    assert mm.sections.handles == {}
    assert unicorn_regions(mm) == regions
    assert list(mm.regions()) == walk
    # a new section gets fresh zeroed memory
    h3 = anonymous(k, 0x30000)
    view = k.MapViewOfFile(h3, FILE_MAP_READ, 0, 0, 0)
    assert mm.read(view, 0x30000) == bytes(0x30000)


# --------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------
def test_named_sections(k: K, mm: MemoryManager) -> None:
    k.SetLastError(0xDEADBEEF)
    h1 = anonymous(k, 0x2000, name="Local\\Foo")
    assert k.GetLastError() == ERROR_SUCCESS
    k.SetLastError(0xDEADBEEF)
    h2 = k.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE, 0, 0x2000, "Local\\Foo")
    assert h2 and h2 != h1
    assert k.GetLastError() == ERROR_ALREADY_EXISTS
    v1 = k.MapViewOfFile(h1, FILE_MAP_WRITE, 0, 0, 0)
    v2 = k.MapViewOfFile(h2, FILE_MAP_WRITE, 0, 0, 0)
    Guest(mm).store(v1 + 0x1000, 0xABCD)
    assert dword(mm, v2 + 0x1000) == 0xABCD  # same memory
    # OpenFileMapping by name (Wine: FILE_MAP_READ handle cannot map writable)
    h3 = k.OpenFileMapping(FILE_MAP_READ, False, "Local\\Foo")
    assert h3 and h3 not in (h1, h2)
    k.SetLastError(0xDEADBEEF)
    assert k.MapViewOfFile(h3, FILE_MAP_WRITE, 0, 0, 0) == 0
    assert k.GetLastError() == ERROR_ACCESS_DENIED
    v3 = k.MapViewOfFile(h3, FILE_MAP_READ, 0, 0, 0)
    assert dword(mm, v3 + 0x1000) == 0xABCD
    mbi = vq(k, v3)
    assert (mbi.AllocationProtect, mbi.Protect, mbi.State, mbi.RegionSize) == \
        (PAGE_READONLY, PAGE_READONLY, MEM_COMMIT, 0x2000)
    # unknown names
    k.SetLastError(0xDEADBEEF)
    assert k.OpenFileMapping(FILE_MAP_READ, False, "Local\\Bar") == 0
    assert k.GetLastError() == ERROR_FILE_NOT_FOUND
    # the NT layer
    status, h4 = NtCreateSection(mm, SECTION_ALL_ACCESS, 0x2000, PAGE_READWRITE, SEC_COMMIT,
                                 name="Local\\Foo")
    assert status == STATUS_OBJECT_NAME_EXISTS and h4
    assert NtOpenSection(mm, SECTION_MAP_READ, "Local\\Bar") == (STATUS_OBJECT_NAME_NOT_FOUND, 0)
    status, h5 = NtOpenSection(mm, SECTION_MAP_READ, "Local\\Foo")
    assert status == STATUS_SUCCESS and h5


def test_name_goes_away_with_the_last_handle(k: K, mm: MemoryManager) -> None:
    """Wine test_MapViewOfFile "close named mapping handle without unmapping" (Windows
    behaviour, todo_wine): once every handle is closed the name is gone even though a view
    keeps the section alive; the name can then name a new, different section."""
    h = anonymous(k, 0x1000, name="Foo")
    ptr = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    mm.write(ptr, b"old!")
    h2 = k.OpenFileMapping(FILE_MAP_READ, False, "Foo")
    assert h2 and k.CloseHandle(h2) and k.CloseHandle(h)
    assert mm.read(ptr, 4) == b"old!"  # the view is still fine
    k.SetLastError(0xDEADBEEF)
    assert k.OpenFileMapping(FILE_MAP_READ, False, "Foo") == 0
    assert k.GetLastError() == ERROR_FILE_NOT_FOUND
    k.SetLastError(0xDEADBEEF)
    h3 = k.CreateFileMapping(INVALID_HANDLE_VALUE, PAGE_READWRITE, 0, 0x1000, "Foo")
    assert h3
    assert k.GetLastError() == ERROR_SUCCESS
    fresh = k.MapViewOfFile(h3, FILE_MAP_READ, 0, 0, 0)
    assert mm.read(fresh, 4) == bytes(4)


# --------------------------------------------------------------------------------------
# offsets and addresses
# --------------------------------------------------------------------------------------
def test_view_offsets_must_be_64k_multiples(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x30000)
    before = list(mm.regions())
    for offset in (0x1000, 0x8000, 0x10001):
        k.SetLastError(0xDEADBEEF)
        assert k.MapViewOfFile(h, FILE_MAP_READ, 0, offset, 0x1000) == 0
        assert k.GetLastError() == ERROR_MAPPED_ALIGNMENT
    assert list(mm.regions()) == before
    status, _, _ = NtMapViewOfSection(mm, h, 0, 0, 0, 1, 0, ViewShare, 0, PAGE_READWRITE)
    assert status == STATUS_MAPPED_ALIGNMENT
    full = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    mm.write(full + 0x20000, b"third")
    third = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0x20000, 0)
    assert third and mm.read(third, 5) == b"third"
    assert vq(k, third).RegionSize == 0x10000


def test_nt_map_view_base_address_rules(k: K, mm: MemoryManager) -> None:
    """Wine test_NtMapViewOfSection: same address conflicts, base must be 64 KiB aligned."""
    h = anonymous(k, 0x1000)
    status, ptr, size = NtMapViewOfSection(mm, h, 0, 0, 0, 0, 0, ViewShare, 0, PAGE_READWRITE)
    assert status == STATUS_SUCCESS and ptr % 0x10000 == 0 and size == 0x1000
    status, _, _ = NtMapViewOfSection(mm, h, ptr, 0, 0, 0, 0, ViewShare, 0, PAGE_READWRITE)
    assert status == STATUS_CONFLICTING_ADDRESSES
    for base in (ptr + 42, ptr + 0x1000):
        status, _, _ = NtMapViewOfSection(mm, h, base, 0, 0, 0, 0, ViewShare, 0, PAGE_READWRITE)
        assert status == STATUS_MAPPED_ALIGNMENT
    free = mm.find_free(0x10000)
    there = k.MapViewOfFileEx(h, FILE_MAP_WRITE, 0, 0, 0, free)
    assert there == free
    assert NtUnmapViewOfSection(mm, ptr) == (STATUS_SUCCESS,)
    assert NtUnmapViewOfSection(mm, ptr) == (STATUS_NOT_MAPPED_VIEW,)


# --------------------------------------------------------------------------------------
# file-backed sections
# --------------------------------------------------------------------------------------
def test_file_backed_section_reads_the_file_and_writes_back(k: K, mm: MemoryManager, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    content = bytes(range(256)) * 24  # 0x1800 bytes
    path.write_bytes(content)
    h = k.CreateFileMapping(str(path), PAGE_READWRITE, 0, 0, None)
    assert h
    view = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    mbi = vq(k, view)
    assert (mbi.RegionSize, mbi.State, mbi.Protect, mbi.Type) == \
        (0x2000, MEM_COMMIT, PAGE_READWRITE, MEM_MAPPED)
    assert mm.read(view, len(content)) == content
    assert mm.read(view + 0x1800, 0x800) == bytes(0x800)  # past the end of the file
    g = Guest(mm)
    g.store(view + 0x10, 0x44434241)
    assert k.FlushViewOfFile(view, 0)
    assert path.read_bytes()[0x10:0x14] == b"ABCD"
    g.store(view + 0x17FC, 0x48474645)
    assert k.UnmapViewOfFile(view)
    data = path.read_bytes()
    assert data[0x17FC:0x1800] == b"EFGH"
    assert data[:0x10] == content[:0x10] and data[0x14:0x17FC] == content[0x14:0x17FC]
    assert k.CloseHandle(h)


def test_file_backed_pathlike_and_read_only(k: K, mm: MemoryManager, tmp_path: Path) -> None:
    path = tmp_path / "ro.bin"
    path.write_bytes(b"read only data")
    h = k.CreateFileMapping(path, PAGE_READONLY, 0, 0, None)
    assert h
    k.SetLastError(0xDEADBEEF)
    assert k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0) == 0
    assert k.GetLastError() == ERROR_ACCESS_DENIED
    view = k.MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0)
    assert mm.read(view, 14) == b"read only data"
    assert k.UnmapViewOfFile(view) and k.CloseHandle(h)
    assert path.read_bytes() == b"read only data"


def test_file_backed_copy_view_is_never_written_back(k: K, mm: MemoryManager, tmp_path: Path) -> None:
    path = tmp_path / "cow.bin"
    path.write_bytes(b"original" * 0x200)
    h = k.CreateFileMapping(str(path), PAGE_READWRITE, 0, 0, None)
    cow = k.MapViewOfFile(h, FILE_MAP_COPY, 0, 0, 0)
    Guest(mm).store(cow, 0x21212121)
    mm.write(cow + 0x800, b"private")
    assert k.FlushViewOfFile(cow, 0)
    assert k.UnmapViewOfFile(cow) and k.CloseHandle(h)
    assert path.read_bytes() == b"original" * 0x200


def test_file_mapping_smaller_than_the_file_keeps_the_rest(k: K, mm: MemoryManager, tmp_path: Path) -> None:
    """Mapping the first page of a 3-page file and flushing must not truncate the file."""
    path = tmp_path / "big.bin"
    content = os.urandom(0x3000)
    path.write_bytes(content)
    h = k.CreateFileMapping(str(path), PAGE_READWRITE, 0, 0x1000, None)
    view = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    assert mm.read(view, 0x1000) == content[:0x1000]
    mm.write(view, b"HEAD")
    assert k.FlushViewOfFile(view, 0)
    assert k.UnmapViewOfFile(view) and k.CloseHandle(h)
    data = path.read_bytes()
    assert len(data) == 0x3000
    assert data[:4] == b"HEAD" and data[4:] == content[4:]


# --------------------------------------------------------------------------------------
# handles
# --------------------------------------------------------------------------------------
def test_close_handle_on_a_bad_handle(k: K, mm: MemoryManager) -> None:
    for bad in (0, 0x1234, 0xDEAD0):
        k.SetLastError(0xDEADBEEF)
        assert k.CloseHandle(bad) is False
        assert k.GetLastError() == ERROR_INVALID_HANDLE
    h = anonymous(k, 0x1000)
    assert k.CloseHandle(h) is True
    k.SetLastError(0xDEADBEEF)
    assert k.CloseHandle(h) is False  # already closed
    assert k.GetLastError() == ERROR_INVALID_HANDLE
    assert NtClose(mm, h) == (STATUS_INVALID_HANDLE,)
    k.SetLastError(0xDEADBEEF)
    assert k.MapViewOfFile(0x1234, FILE_MAP_READ, 0, 0, 0) == 0
    assert k.GetLastError() == ERROR_INVALID_HANDLE


# --------------------------------------------------------------------------------------
# code in views
# --------------------------------------------------------------------------------------
def _call(mm: MemoryManager, g: Guest, function: int) -> int:
    """Call ``function`` (cdecl, no arguments) and return eax."""
    stack = mm.allocate(0x10000, PAGE_READWRITE)
    # return into the middle of a nop sled: an ``until`` at a page start whose previous page
    # is not executable makes Unicorn's virtual-TLB mode fault (see the report)
    start, _ = g._place("nop; nop; nop; nop")
    back = start + 2
    sp = stack + 0x8000
    mm.write(sp, back.to_bytes(8, "little"))
    mm.uc.reg_write(UC_X86_REG_RSP if mm.is_64bit else UC_X86_REG_ESP, sp)
    mm.uc.emu_start(function, back)
    return int(mm.uc.reg_read(UC_X86_REG_EAX)) & 0xFFFFFFFF


def test_code_runs_in_an_executable_view_and_follows_guest_patches(k: K, mm: MemoryManager) -> None:
    h = anonymous(k, 0x1000, PAGE_EXECUTE_READWRITE)
    rx = k.MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_EXECUTE, 0, 0, 0)
    rw = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    assert vq(k, rx).Protect == PAGE_EXECUTE_READ
    g = Guest(mm)
    mm.write(rw, bytes(g.ks.asm("mov eax, 1; ret", rx)[0]))
    assert _call(mm, g, rx) == 1
    g.store(rw + 1, 2)  # the guest patches the immediate through the RW view
    assert _call(mm, g, rx) == 2
    fault = g.fault(f"mov {g.ptr}, {rx}; mov dword ptr [{g.ptr}+1], 3")
    assert (fault.status, fault.access) == (STATUS_ACCESS_VIOLATION, 1)


def test_host_patch_through_one_view_reaches_code_run_through_another(k: K, mm: MemoryManager) -> None:
    """Host writes must invalidate translated code on the shared page, whichever view
    they go through (the design: host writes to executed pages go through Unicorn)."""
    h = anonymous(k, 0x1000, PAGE_EXECUTE_READWRITE)
    rx = k.MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_EXECUTE, 0, 0, 0)
    rw = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    g = Guest(mm)
    mm.write(rw, bytes(g.ks.asm("mov eax, 1; ret", rx)[0]))
    assert _call(mm, g, rx) == 1
    mm.write(rw + 1, (3).to_bytes(4, "little"))
    assert mm.read(rx, 6) == bytes(g.ks.asm("mov eax, 3; ret", rx)[0])
    assert _call(mm, g, rx) == 3


def test_guest_reads_fresh_bytes_after_a_view_is_unmapped_and_remapped(k: K, mm: MemoryManager) -> None:
    g = Guest(mm)
    h = anonymous(k, 0x1000)
    view = k.MapViewOfFile(h, FILE_MAP_WRITE, 0, 0, 0)
    g.store(view, 0x1111)
    assert k.UnmapViewOfFile(view) and k.CloseHandle(h)
    h2 = anonymous(k, 0x1000)
    again = k.MapViewOfFileEx(h2, FILE_MAP_WRITE, 0, 0, 0, view)
    assert again == view
    assert g.load(view) == 0  # a new section: zeroed, not the old TLB's page
    g.store(view, 0x2222)
    assert mm.read(view, 4) == (0x2222).to_bytes(4, "little")
