"""The commit limit: committing more private memory than a machine has fails at once with
STATUS_COMMITMENT_LIMIT (ERROR_COMMITMENT_LIMIT through kernel32) and changes nothing, as on
Windows — instead of mapping host windows for terabytes of guest memory."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from emulator_mem import MemoryManager, nt
from emulator_mem.errors import NoMemoryError
from emulator_mem.win32 import Kernel32

MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
PAGE_READWRITE = 0x04
STATUS_COMMITMENT_LIMIT = 0xC000012D
ERROR_COMMITMENT_LIMIT = 1455


@pytest.fixture
def mm() -> MemoryManager:
    return MemoryManager(Uc(UC_ARCH_X86, UC_MODE_64))


def test_committing_64_tib_fails_at_once_and_maps_nothing(mm: MemoryManager) -> None:
    k32 = Kernel32(mm)
    before = mm.stats()
    k32.SetLastError(0xDEADBEEF)
    assert k32.VirtualAlloc(0, 1 << 46, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE) == 0
    assert k32.GetLastError() == ERROR_COMMITMENT_LIMIT
    assert mm.stats() == before


def test_reserving_64_tib_is_fine_committing_a_piece_is_charged(mm: MemoryManager) -> None:
    mm.commit_limit = 0x10_0000
    status, base, size = nt.NtAllocateVirtualMemory(mm, 0, 0, 1 << 46, MEM_RESERVE, PAGE_READWRITE)
    assert status == 0 and size == 1 << 46
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base, 0, 0x10_0000, MEM_COMMIT, PAGE_READWRITE)
    assert status == 0
    # recommitting committed pages costs nothing
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base, 0, 0x10_0000, MEM_COMMIT, PAGE_READWRITE)
    assert status == 0
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base + 0x10_0000, 0, 0x1000, MEM_COMMIT,
                                              PAGE_READWRITE)
    assert status == STATUS_COMMITMENT_LIMIT
    assert mm.query(base + 0x10_0000).State == 0x2000  # still reserved only
    mm.decommit(base, 0x1000)  # freeing a page makes room for one
    status, _, _ = nt.NtAllocateVirtualMemory(mm, base + 0x10_0000, 0, 0x1000, MEM_COMMIT,
                                              PAGE_READWRITE)
    assert status == 0


def test_the_limit_is_a_typed_error_of_the_manager(mm: MemoryManager) -> None:
    mm.commit_limit = 0x2000
    with pytest.raises(NoMemoryError) as err:
        mm.allocate(0x3000, PAGE_READWRITE)
    assert err.value.status == STATUS_COMMITMENT_LIMIT
    assert mm.stats().committed_memory == 0
