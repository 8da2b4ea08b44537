"""What a batch reports: one :class:`Result` per job, written as one JSON line.

``outcome`` says how the job ended:

* ``exited`` — the process called ExitProcess (or its entry point returned): ``exit_code``;
* ``exception`` — an unhandled Windows exception ended it: ``exception`` has the code, its
  name, the exact faulting address, ``module+offset`` and the faulting instruction, and
  ``exit_code`` is the code, as Windows makes it;
* ``instruction-limit`` — ``max_instructions`` ran out (the process was still running);
* ``timeout`` — the wall-clock limit ran out (in the worker, or the driver had to kill a
  worker that did not answer in time);
* ``worker-crashed`` — the worker process died while running this job (the batch goes on
  with a new worker);
* ``error`` — the job could not run: unreadable input or target, bad snapshot, an input
  location that does not resolve; ``error`` says why.

Everything except ``wall_time`` is a deterministic function of the job, which is what lets
the tests compare the rollback fast path with fresh loads, and one backend with another.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["exited", "exception", "instruction-limit", "timeout", "worker-crashed", "error"]
OUTCOMES: tuple[Outcome, ...] = ("exited", "exception", "instruction-limit", "timeout", "worker-crashed",
                                 "error")
#: outcomes that mean the job did not run to a guest-defined end
FAILED: frozenset[str] = frozenset({"worker-crashed", "error"})


@dataclass(slots=True)
class ExceptionInfo:
    """The unhandled exception that ended a job (EXCEPTION_RECORD's first fields)."""

    code: int
    name: str
    address: int
    location: str  # module+0xoffset, dll!function or a region name
    instruction: str
    information: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Result:
    """How one job ended; :meth:`to_json` is its line in the results file."""

    job: int
    input: str | None
    target: str
    outcome: Outcome
    exit_code: int | None = None
    exception: ExceptionInfo | None = None
    instructions: int = 0
    stdout: str = ""
    stdout_bytes: int = 0  # the full length; ``stdout`` holds at most the job's max_output
    pages_dirtied: int = 0
    wall_time: float = 0.0
    error: str | None = None

    @property
    def crash_key(self) -> tuple[int, str] | None:
        """``(exception code, module+offset)``: what makes two crashes the same crash."""
        if self.exception is None:
            return None
        return self.exception.code, self.exception.location

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON (no newline inside)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def comparable(self) -> dict[str, Any]:
        """Everything but the wall time: equal for equal jobs on any backend or path."""
        data = self.to_dict()
        del data["wall_time"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        exc = data.get("exception")
        fields = dict(data)
        fields["exception"] = None if exc is None else ExceptionInfo(**exc)
        return cls(**fields)


def failed(job: int, label: str | None, target: str, outcome: Outcome, message: str,
           wall_time: float = 0.0) -> Result:
    """A result for a job that produced no guest outcome (error, crash, kill)."""
    return Result(job, label, target, outcome, error=message, wall_time=wall_time)


def printable_output(data: bytes, limit: int) -> tuple[str, int]:
    """Console bytes as text for JSON (UTF-8, undecodable bytes as ``\\xNN``), cut at ``limit``."""
    return data[:limit].decode("utf-8", errors="backslashreplace"), len(data)
