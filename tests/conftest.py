"""Fixtures shared by the test modules: a manager on a fresh x86 or x64 CPU, and kernel32."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc

from emulator_mem import MemoryManager
from emulator_mem.win32 import Kernel32


@pytest.fixture(params=[UC_MODE_32, UC_MODE_64], ids=["x86", "x64"])
def mm(request: pytest.FixtureRequest) -> MemoryManager:
    """A MemoryManager on a new Unicorn CPU, once per bitness (modules may override it)."""
    return MemoryManager(Uc(UC_ARCH_X86, request.param))


@pytest.fixture
def k32(mm: MemoryManager) -> Kernel32:
    return Kernel32(mm)
