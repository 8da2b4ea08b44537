"""What an observer of the address space is told, and the shape it must have.

The manager (and the MMU, for write watch) call an observer from the few places that change
the layout, after the change is made, so a failed call reports nothing. Observers are
optional and cheap to skip: with none attached, each of those places costs one test of an
empty list. Nothing here knows who listens (the HTML report's history recorder does); a
Protocol keeps the higher layer out of this one's imports.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .address_space import Allocation


class LayoutEvent(str, Enum):
    """Kinds of change, in the order the report's timeline draws their lanes."""

    ALLOCATE = "allocate"  # a new private allocation (reserved, maybe committed)
    COMMIT = "commit"  # MEM_COMMIT inside an existing reservation
    PROTECT = "protect"  # VirtualProtect / NtProtectVirtualMemory
    DECOMMIT = "decommit"  # MEM_DECOMMIT
    RELEASE = "release"  # MEM_RELEASE, of a whole allocation or a part of one
    MAP_VIEW = "map_view"  # a section view, an image, an alias or an MMIO range appeared
    UNMAP_VIEW = "unmap_view"  # ... and went away
    WRITE_WATCH = "write_watch"  # the first write to a write-watched page since its reset
    GUARD_PAGE = "guard_page"  # a PAGE_GUARD page was touched (reported by the runner)
    EXCEPTION = "exception"  # the unhandled exception that ended the process (runner)


class WriteWatchObserver(Protocol):
    """What the MMU tells about write watch (it sees the first write miss of a page)."""

    def write_watch_hit(self, alloc: Allocation, address: int) -> None:
        """The page at ``address`` of a write-watched ``alloc`` was written for the first
        time since its last reset."""


class LayoutObserver(WriteWatchObserver, Protocol):
    """What ``MemoryManager.observe`` accepts."""

    def layout_event(self, kind: LayoutEvent, alloc: Allocation, address: int, size: int,
                     protect: int, old_protect: int) -> None:
        """``[address, address+size)`` of ``alloc`` changed; ``protect`` is the new
        protection (commit, protect; for allocate and map_view the AllocationProtect, or 0
        when nothing was committed), ``old_protect`` what VirtualProtect returns as the old
        one (protect only)."""
