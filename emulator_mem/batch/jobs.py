"""What a batch runs: jobs (a program or a snapshot, an optional input, limits).

A :class:`Job` is plain data (picklable, JSON-friendly) so that it can travel to a worker
process or a Ray actor unchanged. It names its target by path; the bytes of the target
reach the worker through the backend (a local worker reads the file, a Ray actor gets it
from the object store), and the bytes of the input travel with the job: the driver reads
each input file right before it hands the job out, so an unreadable input becomes an error
result for that job instead of a failed batch, and a worker on another machine never needs
the corpus.

Where the input goes is an :class:`InputSpec`: a guest location written with a host write
(``mm.write``: guest protection is ignored, commit state is not), and optionally where its
length goes — a 32-bit little-endian DWORD at a location, or a register. Locations are
``0x…`` addresses, ``module!export`` (an export of the image) or ``module+0xoffset``
(relative to the image base), resolved in the worker against the loaded process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import BatchError

TargetKind = Literal["program", "snapshot"]
DEFAULT_MAX_OUTPUT = 4096  # console bytes kept per result
_LOCATION = re.compile(
    r"^(?:(?P<address>0[xX][0-9a-fA-F]+|[0-9]+)"
    r"|(?P<module>[^!+\s]+)(?:!(?P<symbol>[A-Za-z_?@$.][\w?@$.]*)|\+(?P<offset>0[xX][0-9a-fA-F]+|[0-9]+)))$"
)
_REGISTER = re.compile(r"^(?:[re]?(?:ax|bx|cx|dx|si|di|bp)|r(?:8|9|1[0-5])d?)$")


@dataclass(frozen=True, slots=True)
class Location:
    """A guest location: an absolute address, ``module!export`` or ``module+offset``."""

    address: int | None = None
    module: str | None = None
    symbol: str | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> Location:
        """``0x402000``, ``parse32.exe!input`` or ``parse32.exe+0x3000``; BatchError otherwise."""
        match = _LOCATION.match(text.strip())
        if match is None:
            raise BatchError(f"not a guest location: {text!r} (want 0xADDRESS, module!symbol "
                             "or module+0xOFFSET)")
        if match["address"] is not None:
            return cls(address=int(match["address"], 0))
        if match["symbol"] is not None:
            return cls(module=match["module"], symbol=match["symbol"])
        return cls(module=match["module"], offset=int(match["offset"], 0))

    def __str__(self) -> str:
        if self.address is not None:
            return f"{self.address:#x}"
        if self.symbol is not None:
            return f"{self.module}!{self.symbol}"
        return f"{self.module}+{self.offset or 0:#x}"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Where a job's input bytes go, and how the harness learns their length.

    ``max_size`` truncates longer inputs (as fuzzers cap input sizes) so a big file cannot
    spill over whatever follows the buffer in guest memory.
    """

    at: Location
    length_at: Location | None = None
    length_register: str | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        if self.length_at is not None and self.length_register is not None:
            raise BatchError("give the input length as a location or a register, not both")
        if self.length_register is not None and not _REGISTER.match(self.length_register.lower()):
            raise BatchError(f"not a general-purpose x86 register: {self.length_register!r}")
        if self.max_size is not None and self.max_size < 0:
            raise BatchError("the maximum input size must not be negative")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-job limits: instructions the guest may run, wall-clock seconds it may take."""

    max_instructions: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_instructions is not None and self.max_instructions < 0:
            raise BatchError("max_instructions must not be negative")
        if self.timeout is not None and self.timeout <= 0:
            raise BatchError("the timeout must be positive")


@dataclass(frozen=True, slots=True)
class Job:
    """One run: ``target`` (a PE file or a snapshot) with an optional input and limits.

    ``input_path`` names a file the driver reads when it dispatches the job; ``input_data``
    gives the bytes directly (then ``input_name`` labels them in the result).
    """

    id: int
    target: str
    kind: TargetKind = "program"
    input_name: str | None = None
    input_path: str | None = None
    input_data: bytes | None = None
    input: InputSpec | None = None
    limits: Limits = field(default_factory=Limits)
    max_output: int = DEFAULT_MAX_OUTPUT

    def __post_init__(self) -> None:
        if self.kind not in ("program", "snapshot"):
            raise BatchError(f"unknown job kind {self.kind!r}")
        has_input = self.input_path is not None or self.input_data is not None
        if has_input and self.input is None:
            raise BatchError("a job with input needs an input location (--input-at)")
        if self.input_path is not None and self.input_data is not None:
            raise BatchError("give a job's input as a path or as bytes, not both")

    @property
    def label(self) -> str | None:
        """The input's name in results and summaries."""
        if self.input_name is not None:
            return self.input_name
        return self.input_path

    def with_data(self, data: bytes) -> Job:
        """This job carrying its input bytes (what the driver sends to a worker)."""
        return Job(self.id, self.target, self.kind, self.label, None, data, self.input, self.limits,
                   self.max_output)


def corpus_files(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of every input file: files as given, directories walked in sorted
    order (names relative to the directory), so a corpus always yields the same job ids."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                yield item.relative_to(path).as_posix(), item
        else:
            yield path.name, path


def make_jobs(
    targets: Iterable[tuple[str, TargetKind]],
    inputs: Iterable[str | Path] = (),
    *,
    input_spec: InputSpec | None = None,
    limits: Limits | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> Iterator[Job]:
    """Every target crossed with every input (one job per target when there are no inputs),
    numbered from 0 in that order. Inputs are only listed here, not read."""
    limits = limits or Limits()
    files = list(corpus_files(inputs))
    if files and input_spec is None:
        raise BatchError("inputs need an input location (--input-at)")
    number = 0
    for target, kind in targets:
        if not files:
            yield Job(number, target, kind, limits=limits, max_output=max_output)
            number += 1
            continue
        for name, path in files:
            yield Job(number, target, kind, name, str(path), None, input_spec, limits, max_output)
            number += 1
