"""Write watch: MEM_WRITE_WATCH allocations, GetWriteWatch/ResetWriteWatch and their NT twins.

Independent tests of the spec with Wine's kernel32 test_write_watch (and the write-watch part
of test_guard_page) as the oracle. Guest writes and host ``mm.write`` mark pages, reads do
not; results are page addresses in address order; WRITE_WATCH_FLAG_RESET with a count that
cuts the scan resets only the scanned part (Wine); after a reset the next guest write is seen
again; parameter errors are STATUS_INVALID_PARAMETER / ERROR_INVALID_PARAMETER and
GetWriteWatch returns (UINT)-1. A hypothesis test drives random guest/host writes and resets
against a model set. Expected values are Windows literals; 32- and 64-bit guests both run.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snippets import Guest as SnippetGuest
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc

from emulator_mem import MemoryManager
from emulator_mem.regions.writewatch import NtGetWriteWatch, NtResetWriteWatch

try:
    from emulator_mem.win32 import Kernel32
except ImportError:  # pragma: no cover
    Kernel32 = None  # type: ignore[assignment,misc]

# winnt.h / ntstatus.h / winerror.h values, written out
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_EXECUTE_READWRITE = 0x40
PAGE_GUARD = 0x100
MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_DECOMMIT = 0x4000
MEM_WRITE_WATCH = 0x200000
WRITE_WATCH_FLAG_RESET = 0x01
STATUS_SUCCESS = 0
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
STATUS_INVALID_PARAMETER = 0xC000000D
ERROR_INVALID_PARAMETER = 87
UINT_FAILURE = 0xFFFFFFFF
PAGE = 0x1000
SIZE = 0x10000


@pytest.fixture(params=[UC_MODE_32, UC_MODE_64], ids=["x86", "x64"])
def mode(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def mm(mode: int) -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, mode))


class Guest(SnippetGuest):
    """The shared snippet runner plus this file's helpers."""

    def store(self, address: int, width: int = 4) -> None:
        kind = {1: "byte", 2: "word", 4: "dword"}[width]
        self.run(f"mov {self.ptr}, {address}; mov {kind} ptr [{self.ptr}], 0x5a")

    def load(self, address: int) -> None:
        self.run(f"mov {self.ptr}, {address}; mov eax, dword ptr [{self.ptr}]")


def watched(mm: MemoryManager, size: int = SIZE) -> int:
    return mm.allocate(size, PAGE_READWRITE, write_watch=True)


def pages(base: int, *indexes: int) -> list[int]:
    return [base + i * PAGE for i in indexes]


# --------------------------------------------------------------------------------------
# what marks a page
# --------------------------------------------------------------------------------------
def test_guest_and_host_writes_mark_reads_do_not(mm: MemoryManager) -> None:
    base = watched(mm)
    g = Guest(mm)
    assert mm.get_write_watch(base, SIZE) == []
    g.load(base + PAGE + 8)
    g.load(base + 7 * PAGE)
    assert mm.read(base, SIZE) == bytes(SIZE)  # host reads neither
    assert mm.get_write_watch(base, SIZE) == []
    g.store(base + PAGE + 1, 1)  # Wine: base[pagesize + 1] = 0x44
    assert mm.get_write_watch(base, SIZE) == pages(base, 1)
    mm.write(base + 3 * PAGE + 0xFFF, b"h")
    assert mm.get_write_watch(base, SIZE) == pages(base, 1, 3)
    g.load(base + 3 * PAGE)
    g.load(base + 5 * PAGE)
    assert mm.get_write_watch(base, SIZE) == pages(base, 1, 3)


def test_read_then_write_in_one_run_is_seen(mm: MemoryManager) -> None:
    """The read enters the TLB first; the write to the same page must still be noticed."""
    base = watched(mm)
    g = Guest(mm)
    p = g.ptr
    g.run(f"mov {p}, {base + 2 * PAGE}; mov eax, dword ptr [{p}]; add eax, 1; mov dword ptr [{p}+4], eax")
    assert mm.get_write_watch(base, SIZE) == pages(base, 2)
    assert mm.read(base + 2 * PAGE + 4, 4) == (1).to_bytes(4, "little")


def test_results_are_in_address_order_and_clipped_to_the_range(mm: MemoryManager) -> None:
    base = watched(mm)
    g = Guest(mm)
    for index in (9, 4, 2, 15, 0):
        g.store(base + index * PAGE + 0x10)
    assert mm.get_write_watch(base, SIZE) == pages(base, 0, 2, 4, 9, 15)
    # Wine: GetWriteWatch(base + 3*pagesize, 2*pagesize) finds only page 4
    assert mm.get_write_watch(base + 3 * PAGE, 2 * PAGE) == pages(base, 4)
    assert mm.get_write_watch(base + 2 * PAGE + 0x800, 0x1000) == pages(base, 2)  # rounds out to pages 2..3
    assert mm.get_write_watch(base + 10 * PAGE, 5 * PAGE) == []
    assert mm.get_write_watch(base, SIZE, max_count=3) == pages(base, 0, 2, 4)


def test_write_across_a_page_boundary_marks_both_pages(mm: MemoryManager) -> None:
    base = watched(mm)
    g = Guest(mm)
    # Wine: *(DWORD *)(base + 2*pagesize - 2) = 0xdeadbeef
    g.run(f"mov {g.ptr}, {base + 2 * PAGE - 2}; mov dword ptr [{g.ptr}], 0xdeadbeef")
    assert mm.get_write_watch(base, SIZE) == pages(base, 1, 2)
    mm.write(base + 6 * PAGE - 1, b"\x01\x02")
    assert mm.get_write_watch(base, SIZE) == pages(base, 1, 2, 5, 6)


def test_string_and_stack_writes_mark_every_page_they_touch(mm: MemoryManager) -> None:
    base = watched(mm)
    src = mm.allocate(SIZE, PAGE_READWRITE)
    g = Guest(mm)
    wide = mm.is_64bit
    cx, si, sp = ("rcx", "rsi", "rsp") if wide else ("ecx", "esi", "esp")
    g.run(f"mov {g.ptr}, {base + 0x1FFC}; mov {cx}, 0x800; xor eax, eax; rep stosd")  # 0x1ffc..0x3ffc
    assert mm.get_write_watch(base, SIZE, reset=True) == pages(base, 1, 2, 3)
    g.run(f"mov {g.ptr}, {base + 0x5000}; mov {si}, {src}; mov {cx}, 0x3000; rep movsb")
    assert mm.get_write_watch(base, SIZE, reset=True) == pages(base, 5, 6, 7)
    g.run(f"mov {si}, {sp}; mov {sp}, {base + 0x9004}; push {cx}; push {cx}; mov {sp}, {si}")
    assert mm.get_write_watch(base, SIZE) == pages(base, 8, 9)


def test_failed_host_write_marks_nothing(mm: MemoryManager) -> None:
    base = mm.allocate(SIZE, PAGE_READWRITE, reserve_only=True, write_watch=True)
    mm.commit(base, PAGE, PAGE_READWRITE)
    with pytest.raises(Exception) as info:
        mm.write(base + PAGE - 0x10, b"x" * 0x20)  # runs into a reserved page
    assert getattr(info.value, "address", None) == base + PAGE
    assert mm.get_write_watch(base, SIZE) == []
    assert mm.read(base + PAGE - 0x10, 0x10) == bytes(0x10)


# --------------------------------------------------------------------------------------
# reset
# --------------------------------------------------------------------------------------
def test_reset_and_the_next_guest_write(mm: MemoryManager) -> None:
    base = watched(mm)
    g = Guest(mm)
    g.store(base + PAGE)
    g.store(base + PAGE + 4)  # the TLB entry is writable now
    assert mm.get_write_watch(base, SIZE, reset=True) == pages(base, 1)
    assert mm.get_write_watch(base, SIZE) == []
    g.store(base + PAGE + 8)  # must be seen again: the old writable entry may not survive
    assert mm.get_write_watch(base, SIZE) == pages(base, 1)
    mm.reset_write_watch(base, SIZE)
    assert mm.get_write_watch(base, SIZE) == []
    g.store(base + PAGE + 12)
    g.store(base + 8 * PAGE)
    assert mm.get_write_watch(base, SIZE) == pages(base, 1, 8)


def test_reset_write_watch_resets_only_its_range(mm: MemoryManager) -> None:
    base = watched(mm)
    g = Guest(mm)
    for index in (1, 2, 4):
        g.store(base + index * PAGE)
    mm.reset_write_watch(base, 3 * PAGE)  # Wine: ResetWriteWatch(base, 3*pagesize)
    assert mm.get_write_watch(base, SIZE) == pages(base, 4)
    g.store(base + 2 * PAGE)
    assert mm.get_write_watch(base, SIZE) == pages(base, 2, 4)


def test_flag_reset_with_a_count_resets_only_the_scanned_part(mm: MemoryManager) -> None:
    """Wine: pages 1, 2, 4 written; GetWriteWatch(WRITE_WATCH_FLAG_RESET, count=1) returns
    page 1 and resets only up to it; pages 2 and 4 stay reported."""
    base = watched(mm)
    g = Guest(mm)
    for index in (1, 2, 4):
        g.store(base + index * PAGE)
    assert mm.get_write_watch(base, SIZE, reset=True, max_count=1) == pages(base, 1)
    assert mm.get_write_watch(base, SIZE) == pages(base, 2, 4)
    assert mm.get_write_watch(base, SIZE, reset=True, max_count=2) == pages(base, 2, 4)
    assert mm.get_write_watch(base, SIZE) == []
    status, found, granularity = NtGetWriteWatch(mm, WRITE_WATCH_FLAG_RESET, base, SIZE, 64)
    assert (status, found, granularity) == (STATUS_SUCCESS, [], PAGE)


def test_protection_changes_and_decommit_keep_the_watch(mm: MemoryManager) -> None:
    base = watched(mm)
    g = Guest(mm)
    for index in (2, 4):
        g.store(base + index * PAGE)
    # Wine: changing protections doesn't affect watches
    assert mm.protect(base, 3 * PAGE, PAGE_READONLY) == PAGE_READWRITE
    assert mm.protect(base, 3 * PAGE, PAGE_READWRITE) == PAGE_READONLY
    assert mm.get_write_watch(base, SIZE) == pages(base, 2, 4)
    # Wine: initial protect doesn't matter; a decommitted page stays reported
    other = mm.allocate(SIZE, PAGE_NOACCESS, reserve_only=True, write_watch=True)
    mm.commit(other, SIZE, PAGE_NOACCESS)
    assert mm.get_write_watch(other, SIZE) == []
    mm.protect(other, 6 * PAGE, PAGE_READWRITE)
    g.store(other + 5 * PAGE + 200, 1)
    mm.protect(other, 6 * PAGE, PAGE_NOACCESS)
    assert mm.get_write_watch(other, SIZE) == pages(other, 5)
    # ... because the VirtualProtect after the write latched it (see the next test)
    mm.decommit(other, SIZE)
    assert mm.get_write_watch(other, SIZE) == pages(other, 5)


def test_decommit_drops_pages_no_protection_change_latched(mm: MemoryManager) -> None:
    """Wine's test_write_watch, second half, as Windows answers it (the ``todo_wine`` lines
    are Wine's known differences; we follow Windows): decommitting clears a page's watch
    state, except for pages written before a VirtualProtect over them."""
    g = Guest(mm)
    base = mm.allocate(SIZE, PAGE_NOACCESS, reserve_only=True, write_watch=True)
    mm.commit(base, SIZE, PAGE_NOACCESS)
    mm.reset_write_watch(base, SIZE)
    assert mm.get_write_watch(base, SIZE, reset=True) == []
    mm.decommit(base + PAGE, PAGE)
    assert mm.protect(base + 2 * PAGE, PAGE, PAGE_READWRITE) == PAGE_NOACCESS
    assert mm.get_write_watch(base, SIZE, reset=True) == []
    g.store(base + 2 * PAGE + 200, 1)
    assert mm.get_write_watch(base, SIZE, reset=True) == pages(base, 2)

    assert mm.commit(base, SIZE, PAGE_NOACCESS) == base
    assert mm.protect(base, 6 * PAGE, PAGE_READWRITE) == PAGE_NOACCESS
    g.store(base + 3 * PAGE + 200, 1)
    g.store(base + 5 * PAGE + 200, 1)
    mm.decommit(base, SIZE)
    assert mm.get_write_watch(base, SIZE) == []  # todo_wine_if(count == 2): Windows says 0
    mm.commit(base, SIZE, PAGE_READWRITE)
    assert mm.get_write_watch(base, SIZE) == []

    # "VirtualProtect latches write watch state somewhere": page 3 was written before it
    g.store(base + 3 * PAGE + 200, 1)
    assert mm.protect(base, 6 * PAGE, PAGE_READWRITE) == PAGE_READWRITE
    g.store(base + 5 * PAGE + 200, 1)
    assert mm.get_write_watch(base, SIZE) == pages(base, 3, 5)
    mm.decommit(base, SIZE)
    assert mm.get_write_watch(base, SIZE) == pages(base, 3)  # todo_wine: count == 1
    mm.commit(base, SIZE, PAGE_READWRITE)
    assert mm.get_write_watch(base, SIZE) == pages(base, 3)  # todo_wine: count == 1
    for index in (4, 2, 6):
        g.store(base + index * PAGE + 200, 1)
    assert mm.get_write_watch(base, SIZE) == pages(base, 2, 3, 4, 6)  # todo_wine: count == 4
    # a reset forgets latched pages too
    mm.reset_write_watch(base, SIZE)
    mm.decommit(base, SIZE)
    mm.commit(base, SIZE, PAGE_READWRITE)
    assert mm.get_write_watch(base, SIZE) == []


def test_guard_page_fires_before_the_watch(mm: MemoryManager) -> None:
    """Wine test_guard_page (write watch part): the first touch raises the guard page
    exception; a read does not mark the page; the write, once it happens, does."""
    base = mm.allocate(PAGE, PAGE_READWRITE | PAGE_GUARD, write_watch=True)
    g = Guest(mm)
    p = g.ptr
    fault = g.fault(f"mov {p}, {base}; mov dword ptr [{p}], 1")
    assert (fault.status, fault.access) == (STATUS_GUARD_PAGE_VIOLATION, 1)
    assert mm.get_write_watch(base, PAGE) == []  # the write has not happened yet
    g.store(base)  # retried after the guard is gone
    assert mm.get_write_watch(base, PAGE, reset=True) == [base]
    mm.protect(base, PAGE, PAGE_READWRITE | PAGE_GUARD)
    fault = g.fault(f"mov {p}, {base}; mov eax, dword ptr [{p}+4]")
    assert (fault.status, fault.access) == (STATUS_GUARD_PAGE_VIOLATION, 0)
    g.load(base + 4)
    assert mm.get_write_watch(base, PAGE) == []


def test_win32_and_nt_success_conventions(mm: MemoryManager) -> None:
    assert Kernel32 is not None
    k32 = Kernel32(mm)
    base = k32.VirtualAlloc(0, SIZE, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE)
    assert base
    assert k32.GetWriteWatch(0, base, SIZE, 64) == (0, [], PAGE)
    Guest(mm).store(base + PAGE + 1, 1)
    k32.SetLastError(0xDEADBEEF)
    assert k32.GetWriteWatch(0, base, SIZE, 64) == (0, pages(base, 1), PAGE)
    assert k32.GetWriteWatch(WRITE_WATCH_FLAG_RESET, base, SIZE, 64) == (0, pages(base, 1), PAGE)
    assert k32.GetWriteWatch(0, base, SIZE, 64) == (0, [], PAGE)
    mm.write(base, bytes(SIZE))  # Wine: memset(base, 0, size) marks all 16 pages
    status, found, _ = NtGetWriteWatch(mm, 0, base, SIZE, 64)
    assert status == STATUS_SUCCESS and len(found) == 16
    assert k32.ResetWriteWatch(base, SIZE) == 0
    assert NtResetWriteWatch(mm, base, SIZE) == (STATUS_SUCCESS,)
    assert k32.GetLastError() == 0xDEADBEEF  # success leaves the last error alone
    assert k32.GetWriteWatch(0, base, SIZE, 64) == (0, [], PAGE)


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def test_nt_parameter_errors(mm: MemoryManager) -> None:
    base = watched(mm)
    plain = mm.allocate(SIZE, PAGE_READWRITE)
    free = mm.find_free(SIZE)
    Guest(mm).store(base)
    cases = [
        (0, plain, SIZE, 64),              # not a write-watch allocation
        (0, free, SIZE, 64),               # free memory
        (0, base, 0, 64),                  # size 0
        (0, base, SIZE, 0),                # count 0
        (0xDEADBEEF, base, SIZE, 64),      # bad flags
        (2, base, SIZE, 64),
        (0, base, SIZE * 2, 64),           # past the allocation
        (0, base + SIZE - PAGE, PAGE + 1, 64),
    ]
    for flags, address, size, count in cases:
        result = NtGetWriteWatch(mm, flags, address, size, count)
        assert result == (STATUS_INVALID_PARAMETER, [], 0), (flags, hex(address), size, count)
    assert mm.get_write_watch(base, SIZE) == [base]  # nothing was reset by the failures
    for address, size in ((plain, SIZE), (base, 0), (free, SIZE), (base, SIZE * 2)):
        assert NtResetWriteWatch(mm, address, size) == (STATUS_INVALID_PARAMETER,)
    assert mm.get_write_watch(base, SIZE) == [base]


def test_win32_parameter_errors(mm: MemoryManager) -> None:
    assert Kernel32 is not None
    k32 = Kernel32(mm)
    base = watched(mm)
    plain = mm.allocate(SIZE, PAGE_READWRITE)
    for args in ((0, plain, SIZE, 64), (0, base, 0, 64), (0, base, SIZE, 0), (0xDEADBEEF, base, SIZE, 64),
                 (0, base, SIZE * 2, 64), (0, 0, SIZE, 64)):
        k32.SetLastError(0xDEADBEEF)
        result = k32.GetWriteWatch(*args)
        assert result[0] == UINT_FAILURE == 0xFFFFFFFF, args
        assert result[1] == []
        assert k32.GetLastError() == ERROR_INVALID_PARAMETER, args
    for address, size in ((base, 0), (plain, SIZE)):
        k32.SetLastError(0xDEADBEEF)
        assert k32.ResetWriteWatch(address, size) == UINT_FAILURE
        assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    for flags, size in ((MEM_WRITE_WATCH, SIZE),):  # Wine: MEM_WRITE_WATCH alone is refused
        k32.SetLastError(0xDEADBEEF)
        assert k32.VirtualAlloc(0, size, flags, PAGE_READWRITE) == 0
        assert k32.GetLastError() == ERROR_INVALID_PARAMETER
    with pytest.raises(Exception) as info:
        mm.get_write_watch(plain, SIZE)
    assert getattr(info.value, "status", None) == STATUS_INVALID_PARAMETER


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
NPAGES = 12

ops = st.lists(
    st.one_of(
        st.tuples(st.just("guest"), st.integers(0, NPAGES * PAGE - 4), st.sampled_from([1, 2, 4])),
        st.tuples(st.just("host"), st.integers(0, NPAGES * PAGE - 1), st.integers(1, 3 * PAGE)),
        st.tuples(st.just("read"), st.integers(0, NPAGES * PAGE - 4), st.just(4)),
        st.tuples(st.just("reset"), st.integers(0, NPAGES - 1), st.integers(1, NPAGES)),
        st.tuples(st.just("get_reset"), st.integers(0, NPAGES - 1), st.integers(1, NPAGES)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops, counts=st.lists(st.integers(1, NPAGES), min_size=40, max_size=40))
def test_write_watch_matches_a_model(
    mode: int, script: list[tuple[str, int, int]], counts: list[int]
) -> None:
    mm = MemoryManager(Uc(UC_ARCH_X86, mode))
    g = Guest(mm)
    base = mm.allocate(NPAGES * PAGE, PAGE_READWRITE, write_watch=True)
    model: set[int] = set()
    for step, (op, a, b) in enumerate(script):
        if op == "guest":
            g.store(base + a, b)
            model.update({a // PAGE, (a + b - 1) // PAGE})
        elif op == "host":
            size = min(b, NPAGES * PAGE - a)
            mm.write(base + a, b"\x01" * size)
            model.update(range(a // PAGE, (a + size - 1) // PAGE + 1))
        elif op == "read":
            g.load(base + a)
            mm.read(base + a, b)
        elif op == "reset":
            n = min(b, NPAGES - a)
            mm.reset_write_watch(base + a * PAGE, n * PAGE)
            model.difference_update(range(a, a + n))
        else:  # GetWriteWatch(WRITE_WATCH_FLAG_RESET) with a count: resets the scanned part
            n = min(b, NPAGES - a)
            count = counts[step]
            hits = sorted(i for i in model if a <= i < a + n)[:count]
            got = mm.get_write_watch(base + a * PAGE, n * PAGE, reset=True, max_count=count)
            assert got == [base + i * PAGE for i in hits]
            scanned_end = a + n if len(hits) < count else hits[-1] + 1
            model.difference_update(range(a, scanned_end))
        assert mm.get_write_watch(base, NPAGES * PAGE) == [base + i * PAGE for i in sorted(model)], (step, op)
