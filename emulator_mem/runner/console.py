"""The console a payload writes to: standard handles and where their bytes go.

GetStdHandle returns fixed handle values (3, 7, 11 — what a Windows 7 console process
gets), so nothing about them needs saving in a snapshot. Every byte written to standard
output or error is kept (tests compare it, ``snapshot info`` shows it) and forwarded to the
host callbacks as it is written, so a long run shows its output live. MMIO devices such as
the UART write into the same output stream.
"""

from __future__ import annotations

from collections.abc import Callable

from ..windows import constants as C

STDIN, STDOUT, STDERR = 0x3, 0x7, 0xB
STD_HANDLES = {C.STD_INPUT_HANDLE: STDIN, C.STD_OUTPUT_HANDLE: STDOUT, C.STD_ERROR_HANDLE: STDERR}

Sink = Callable[[bytes], None]


class Console:
    """Standard output and error of one process."""

    def __init__(self, stdout: Sink | None = None, stderr: Sink | None = None) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._sinks: dict[int, Sink | None] = {STDOUT: stdout, STDERR: stderr}

    def std_handle(self, which: int) -> int | None:
        """GetStdHandle: the handle for STD_*_HANDLE (a DWORD), None for anything else."""
        return STD_HANDLES.get(which & 0xFFFFFFFF)

    def write(self, handle: int, data: bytes) -> bool:
        """WriteFile on a console handle; False when ``handle`` is not an output handle."""
        if handle == STDOUT:
            self.stdout += data
        elif handle == STDERR:
            self.stderr += data
        else:
            return False
        sink = self._sinks.get(handle)
        if sink is not None and data:
            sink(data)
        return True

    def emit(self, data: bytes) -> None:
        """Write to standard output (the devices' way in)."""
        self.write(STDOUT, data)
