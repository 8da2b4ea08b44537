"""The Wine oracle: C programs we did not have to interpret, run by Wine and by our runner.

``tests/oracle/src/*.c`` are freestanding kernel32 programs (one API family each) built for
x86 and x64 into ``tests/oracle/bin/``; ``tests/oracle/expected/`` is what Wine printed for
them (``tests/oracle/record.sh``, Wine version in ``expected/WINE_VERSION``), with the few
lines where Wine's own tests mark Wine wrong (todo_wine) replaced by the Windows value
(``tests/oracle/windows_overrides.txt``). Every binary runs here through
:class:`emulator_mem.runner.Process` — what ``emulator-mem run`` does — and its console
output must equal the recording line for line. Rebuild and re-record with ``make oracle``.

Among them, the exception programs: veh.c prints per fault ExceptionCode,
ExceptionInformation[0] and [1] (relative to the allocation), the page's protection and
state inside and after a vectored handler — write to PAGE_READONLY, read of PAGE_NOACCESS,
read and write of PAGE_GUARD (the second touch passes), execute in PAGE_READWRITE, reserved
and free memory, a straddling write where only the second page faults, ``rep movsb`` across
a guard page, a write to a FILE_MAP_READ view — plus RaiseException and handler order;
seh64.c has an x64 language handler found through .pdata/.xdata two frames up; cspec.c
covers ``__C_specific_handler`` scopes (filter, __except through RtlUnwindEx, __finally,
continue execution, continue search).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from emulator_mem.runner import Process

ORACLE = Path(__file__).resolve().parent / "oracle"
ARCHES = ("x86", "x64")
PROGRAMS = sorted(p.stem for p in (ORACLE / "src").glob("*.c"))
MAX_INSTRUCTIONS = 50_000_000  # the largest program runs well under 5 million


def test_every_program_is_built_and_recorded() -> None:
    """A program without its binaries or recordings would silently check nothing."""
    assert PROGRAMS, "no oracle programs found"
    for arch in ARCHES:
        built = sorted(p.stem for p in (ORACLE / "bin" / arch).glob("*.exe"))
        recorded = sorted(p.stem for p in (ORACLE / "expected" / arch).glob("*.txt"))
        assert built == PROGRAMS, f"{arch}: binaries {built} != sources {PROGRAMS} (make oracle)"
        assert recorded == PROGRAMS, f"{arch}: recordings {recorded} != sources {PROGRAMS} (make oracle)"
    assert (ORACLE / "expected" / "WINE_VERSION").read_text().startswith("wine-")


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("program", PROGRAMS)
def test_matches_wine(program: str, arch: str) -> None:
    exe = ORACLE / "bin" / arch / f"{program}.exe"
    expected = (ORACLE / "expected" / arch / f"{program}.txt").read_text().splitlines()
    result = Process.load_file(exe).run(MAX_INSTRUCTIONS)
    got = result.stdout.decode("latin-1").splitlines()
    ending = result.exception.describe() if result.exception else f"exit code {result.exit_code}"
    diff = "\n".join(difflib.unified_diff(
        expected, got, f"wine/{arch}/{program}.txt", f"emulator-mem/{arch}/{program}", n=1, lineterm=""))
    assert got == expected, (
        f"{arch}/{program}: {sum(a != b for a, b in zip(expected, got, strict=False))} lines differ "
        f"({len(expected)} expected, {len(got)} printed; process ended with {ending})\n{diff}")
    assert result.exit_code == 0 and result.exception is None, ending
