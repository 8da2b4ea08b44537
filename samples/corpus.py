"""Write a small deterministic corpus of inputs for ``samples/bin/parse32.exe``.

    python samples/corpus.py build/corpus [--count 40] [--seed 15]

The inputs are what a fuzzer's first generation looks like: mostly well-formed record
streams ("EMR1", then tag/length/data records) with random names and note appends, plus a
few with a broken magic, a truncated record, an over-long name or an unknown tag. Whether
an input reaches the planted bug (appends that add up to more than 256 bytes) is left to
the random lengths; with the default seed a handful of the 40 inputs do, which is what
``make demo`` shows ``emulator-mem batch`` finding. Same seed, same bytes, every run.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

MAGIC = b"EMR1"
TAG_END, TAG_NAME, TAG_APPEND = 0, 1, 2


def record(tag: int, data: bytes) -> bytes:
    return bytes([tag, len(data)]) + data


def make_input(rng: random.Random) -> tuple[str, bytes]:
    """One input and a word for what kind it is (used in its file name)."""
    kind = rng.choices(["records", "bad-magic", "truncated", "long-name", "unknown-tag"],
                       weights=[32, 2, 2, 2, 2])[0]
    name = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12)))
    body = record(TAG_NAME, name)
    for _ in range(rng.randint(0, 5)):
        body += record(TAG_APPEND, bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 120))))
    if kind == "bad-magic":
        return kind, b"EMR0" + body
    if kind == "truncated":
        return kind, MAGIC + body + bytes([TAG_APPEND, 200]) + b"short"
    if kind == "long-name":
        return kind, MAGIC + record(TAG_NAME, b"n" * rng.randint(32, 60)) + body
    if kind == "unknown-tag":
        return kind, MAGIC + body + record(rng.randint(3, 255), b"??")
    return kind, MAGIC + body + bytes([TAG_END])


def write_corpus(directory: Path, count: int = 40, seed: int = 15) -> list[Path]:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        kind, data = make_input(rng)
        path = directory / f"{index:03d}-{kind}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    paths = write_corpus(args.directory, args.count, args.seed)
    print(f"wrote {len(paths)} inputs to {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
