"""Rewind a whole process, not just its memory: the batch's fast path.

``mm.checkpoint()``/``mm.rollback()`` return memory, layout and registers in time
proportional to the pages dirtied. A runner process also keeps a little state in Python
(:mod:`emulator_mem.runner.persist` lists it for snapshots): the console output so far, the
instruction count, the exit code and exception, the stack limit (which grows), the heap's
block index, kernel32's last error, the MMIO devices' registers and the exception
dispatcher's state (vectored handlers, the unhandled-exception filter, dispatches in
flight). A
:class:`ProcessCheckpoint` saves those next to the memory checkpoint and puts them back on
:meth:`~ProcessCheckpoint.rollback`, so a rolled-back process is indistinguishable from one
freshly loaded from the same snapshot — the batch tests compare exactly that.

What a rollback does not undo: hooks the caller installed after the checkpoint, and bytes
already flushed to a file behind a file-backed section (as :mod:`emulator_mem.rollback`
says).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sortedcontainers import SortedDict

from ..runner import Process


@dataclasses.dataclass(slots=True)
class _RunnerState:
    stdout: bytes
    stderr: bytes
    instructions: int
    exit_code: int | None
    exception: Any
    env: Any
    heap_top: int | None
    heap_blocks: SortedDict | None
    last_error: int
    last_status: int
    devices: list[dict[str, Any]]
    exceptions: dict[str, Any]


class ProcessCheckpoint:
    """A state of one runner :class:`~emulator_mem.runner.Process` to come back to, repeatedly.

    Taking one replaces the manager's previous checkpoint (one is active per manager).
    """

    def __init__(self, process: Process) -> None:
        self.process = process
        heap = process.heap
        self._state = _RunnerState(
            bytes(process.console.stdout), bytes(process.console.stderr), process.instructions,
            process.exit_code, process.exception,
            None if process.env is None else dataclasses.replace(process.env),
            None if heap is None else heap.top,
            None if heap is None else SortedDict(heap.blocks),
            process.k32.GetLastError(), process.k32.last_status,
            [d.handle.device.state() if d.handle is not None else {} for d in process.devices],
            process.exceptions.to_json(),
        )
        self._memory = process.mm.checkpoint()

    @property
    def dirty_pages(self) -> int:
        """Physical pages written since the checkpoint or the last rollback to it."""
        return len(self._memory.log.pages)

    def rollback(self) -> None:
        """Return the process to this checkpoint: memory, registers and the runner's state."""
        process, state = self.process, self._state
        process.mm.rollback(self._memory)
        console = process.console
        if len(console.stdout) != len(state.stdout) or len(console.stderr) != len(state.stderr):
            console.stdout[:] = state.stdout  # the console only ever grows: same length, same bytes
            console.stderr[:] = state.stderr
        process.instructions = state.instructions
        process.exit_code = state.exit_code
        process.exception = state.exception
        if state.env is not None and process.env != state.env:
            process.env = dataclasses.replace(state.env)
        heap = process.heap
        if heap is not None and state.heap_blocks is not None and state.heap_top is not None:
            heap.top = state.heap_top
            if heap.blocks != state.heap_blocks:  # copying a SortedDict is the slow part
                heap.blocks = SortedDict(state.heap_blocks)
        process.k32.SetLastError(state.last_error)
        process.k32.last_status = state.last_status
        for record, saved in zip(process.devices, state.devices, strict=True):
            if record.handle is not None:
                record.handle.device.restore(saved)
        process.exceptions.restore(state.exceptions)
