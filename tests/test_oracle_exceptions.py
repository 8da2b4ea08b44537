"""The exception oracle programs (``tests/oracle/src/veh.c``, ``seh64.c``, ``cspec.c``) under
the runner, compared line by line with what Wine printed for the same binaries
(``tests/oracle/expected``, recorded by ``tests/oracle/record.sh``).

veh.c: per fault ExceptionCode, ExceptionInformation[0] and [1] (relative to the
allocation), the page's protection and state inside and after a vectored handler — write to
PAGE_READONLY, read of PAGE_NOACCESS, read and write of PAGE_GUARD (the second touch passes),
execute in PAGE_READWRITE, reserved and free memory, a straddling write where only the
second page faults, ``rep movsb`` across a guard page, a write to a FILE_MAP_READ view —
plus RaiseException and handler order. seh64.c: an x64 language handler found through
.pdata/.xdata two frames up. cspec.c: ``__C_specific_handler`` scopes (filter, __except
through RtlUnwindEx, __finally, continue execution, continue search).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator_mem.runner import Process

ORACLE = Path(__file__).resolve().parent / "oracle"
PROGRAMS = ["veh", "seh64", "cspec"]


@pytest.mark.parametrize("arch", ["x86", "x64"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_exception_program_matches_wine(name: str, arch: str) -> None:
    expected = (ORACLE / "expected" / arch / f"{name}.txt").read_text().splitlines()
    result = Process.load_file(ORACLE / "bin" / arch / f"{name}.exe").run(max_instructions=20_000_000)
    assert result.stdout.decode().splitlines() == expected
    assert result.exit_code == 0
