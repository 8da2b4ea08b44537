"""Replace the lines of one Wine recording where Wine knowingly differs from Windows.

Usage: ``python3 apply_overrides.py ARCH PROGRAM < wine-output > expected``.

``windows_overrides.txt`` holds one override per line::

    program[/arch] check value...  # why, citing the todo_wine line of Wine's tests

``check`` is the first word of an output line, ``value...`` the rest of the Windows line.
Without ``/arch`` the override applies to x86 and x64. An override whose check does not
appear in the output is an error: the program changed and the override is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

OVERRIDES = Path(__file__).resolve().parent / "windows_overrides.txt"


def load(arch: str, program: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, raw in enumerate(OVERRIDES.read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split(None, 2)
        if len(parts) < 3:
            raise SystemExit(f"{OVERRIDES.name}:{number}: want 'program check value'")
        target, check, value = parts
        name, _, only = target.partition("/")
        if name == program and only in ("", arch):
            found[check] = f"{check} {value}"
    return found


def main() -> int:
    arch, program = sys.argv[1], sys.argv[2]
    overrides = load(arch, program)
    used: set[str] = set()
    for line in sys.stdin.read().splitlines():
        check = line.split(" ", 1)[0]
        if check in overrides:
            used.add(check)
            line = overrides[check]
        sys.stdout.write(line + "\n")
    stale = sorted(set(overrides) - used)
    if stale:
        sys.stderr.write(f"apply_overrides: {arch}/{program}: no such line: {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
