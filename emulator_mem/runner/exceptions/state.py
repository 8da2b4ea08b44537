"""The dispatcher's state: one JSON-ready record per dispatch in progress, and the narrow
view of the process the dispatcher works through (a Protocol, so the layers stay apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from unicorn import Uc

from ...manager import MemoryManager
from ..abi import Abi
from ..environment import ThreadEnvironment
from ..heap import ProcessHeap

VECTORED, FRAMES, FILTER, UNWIND = "vectored", "frames", "filter", "unwind"
CALLED, END, INVALID = "called", "end", "invalid"
STATUS_BAD_STACK = 0xC0000028
EFLAGS_TF, EFLAGS_DF = 0x100, 0x400
RETURN_STUB = "return from exception handler"
NESTED_STUB = "exception nested frame"


class Host(Protocol):
    """What the dispatcher needs of the process (kept narrow so the layers stay apart)."""

    uc: Uc
    mm: MemoryManager
    abi: Abi
    env: ThreadEnvironment | None
    heap: ProcessHeap | None

    def terminate(self, exit_code: int) -> None: ...

    def end_with_exception(self, code: int, information: list[int], address: int) -> None: ...

    def runner_stub(self, name: str) -> int: ...


@dataclass(slots=True)
class Dispatch:
    """One exception (or unwind) being dispatched; every field is JSON-ready."""

    kind: str  # EXCEPTION_KIND, UNWIND_KIND, UNWIND64_KIND or C_HANDLER_KIND
    code: int
    flags: int
    address: int
    information: list[int]
    record: int
    context: int
    pointers: int
    scratch: int
    base: int
    phase: str = VECTORED
    handlers: list[int] = field(default_factory=list)  # vectored handler handles, in call order
    index: int = 0
    frame: int = 0  # x86: registration record being handled; x64: establisher frame
    nested_frame: int = 0
    saved_chain: int = 0
    call_sp: int = 0  # SP at the entry of the outstanding handler call
    target: int = 0  # unwind: TargetFrame
    walk: dict[str, int] = field(default_factory=dict)  # x64: registers of the next frame
    walk_context: int = 0  # x64: where the unwound CONTEXT for language handlers goes
    walk_next: dict[str, int] = field(default_factory=dict)  # x64 unwind: the caller's registers
    target_ip: int = 0  # x64 unwind: where execution continues
    return_value: int = 0  # unwind: RAX/EAX at the target
    dispatcher_context: int = 0  # __C_specific_handler: its DISPATCHER_CONTEXT argument
    scope: int = 0  # __C_specific_handler: next scope-table entry
    ret_pc: int = 0  # __C_specific_handler: its return address
    ret_sp: int = 0  # __C_specific_handler: RSP at its entry

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dispatch:
        """A record from the runner state (fields added later take their defaults)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})



EXCEPTION_KIND = "exception"
UNWIND_KIND = "unwind"
UNWIND64_KIND = "unwind64"
C_HANDLER_KIND = "c_handler"
