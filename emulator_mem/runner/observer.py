"""What a process tells an observer of its run (the HTML report's history recorder).

Optional and cheap: a process without an observer pays one ``is None`` test per API call
and per chunk. With one, the runner also runs shorter chunks while the guest is calling
APIs, because Unicorn only reports how many instructions ran when ``emu_start`` returns
(see :meth:`Process.run <emulator_mem.runner.process.Process.run>`). A Protocol, so the
runner never imports the report package that implements it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..manager import MemoryManager
    from ..mmu.faults import Fault
    from .report import GuestException


class ObservedProcess(Protocol):
    """What an observer may read of the process it watches."""

    mm: MemoryManager
    instructions: int  # executed before the current chunk


class RunObserver(Protocol):
    """Callbacks of one process's run, in the order things happen."""

    def attach(self, process: ObservedProcess) -> None:
        """Called by ``Process.load`` before the image is mapped (so the loader's own
        allocations are seen too); the observer may observe ``process.mm`` as well."""

    def chunk_start(self, budget: int) -> None:
        """An ``emu_start`` of at most ``budget`` instructions begins; until the next call,
        everything happens between ``process.instructions`` and that plus ``budget``."""

    def api_call(self, name: str, args: list[int], caller: int) -> None:
        """The guest called ``dll!function`` with ``args``; ``caller`` is the return address."""

    def api_return(self, result: int | None) -> None:
        """The handler of the call in progress returned ``result`` (None: void)."""

    def guest_fault(self, fault: Fault, outcome: str) -> None:
        """The guest faulted; ``outcome`` says what the runner made of it ("stack grew")."""

    def guest_exception(self, exception: GuestException) -> None:
        """The exception that ends the process (reported as Windows would)."""
