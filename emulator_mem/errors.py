"""The one exception hierarchy of emulator-mem.

Every error a caller can cause derives from :class:`EmulatorMemError`. Errors that have a
Windows meaning carry the NTSTATUS Windows would return, so the NT layer can pass it through
and the kernel32 layer can map it to a last-error code without a lookup table per call site.
"""

from __future__ import annotations

from .windows import constants as C


class EmulatorMemError(Exception):
    """Root of every error raised by emulator-mem."""

    status: int = C.STATUS_INVALID_PARAMETER

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidParameterError(EmulatorMemError, ValueError):
    """A size, address, flag or protection value Windows would reject outright."""

    status = C.STATUS_INVALID_PARAMETER


class InvalidProtectionError(InvalidParameterError):
    """A PAGE_* value (or combination) that Windows refuses."""

    status = C.STATUS_INVALID_PAGE_PROTECTION


class ConflictingAddressesError(EmulatorMemError):
    """The requested range overlaps memory that is already reserved or mapped."""

    status = C.STATUS_CONFLICTING_ADDRESSES


class NoMemoryError(EmulatorMemError, MemoryError):
    """No free range of the requested size exists in the allowed address window."""

    status = C.STATUS_NO_MEMORY


class NotAllocatedError(EmulatorMemError):
    """The address is not inside a reservation, or is not the reservation's base."""

    status = C.STATUS_MEMORY_NOT_ALLOCATED


class NotCommittedError(EmulatorMemError):
    """The operation needs committed pages and found reserved ones."""

    status = C.STATUS_NOT_COMMITTED


class MemoryAccessError(EmulatorMemError):
    """Host access (``mm.read``/``mm.write``) touched free or uncommitted memory."""

    status = C.STATUS_ACCESS_VIOLATION

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class SectionError(EmulatorMemError):
    """A section object or view operation Windows would refuse."""


class InvalidHandleError(SectionError):
    """A handle that names no open object."""

    status = C.STATUS_INVALID_HANDLE


class ImageFormatError(EmulatorMemError):
    """A PE file that is malformed or truncated; nothing was mapped."""

    status = C.STATUS_INVALID_IMAGE_FORMAT


class SnapshotError(EmulatorMemError):
    """A snapshot that is corrupt, truncated, hostile or for another machine."""


class AllocatorError(EmulatorMemError):
    """Misuse of one of the allocators built on the manager (double free, foreign pointer)."""


class ArenaExhausted(AllocatorError, MemoryError):
    """The guest arena has no free span large enough for the request."""

    status = C.STATUS_NO_MEMORY


class RunnerError(EmulatorMemError):
    """Loading or running a sample failed for a reason outside the guest."""


class UnresolvedImportError(RunnerError):
    """An import the runner has no handler for (message names DLL!function)."""


class UnknownAllocationError(AllocatorError):
    """An address the allocator never handed out, or one inside an allocation, not its start."""

    status = C.STATUS_INVALID_PARAMETER


class DoubleReleaseError(UnknownAllocationError):
    """Release (or shrink) of memory that is already free: a double free."""


class InvalidAllocationSizeError(AllocatorError, ValueError):
    """A size of zero or less, or a shrink to a larger size."""

    status = C.STATUS_INVALID_PARAMETER


class AllocatorOutOfMemoryError(AllocatorError, MemoryError):
    """The manager could not provide the guest memory an allocator needed for a new block."""

    status = C.STATUS_NO_MEMORY


class AllocationTooLargeError(AllocatorOutOfMemoryError):
    """A request beyond the largest allocation the allocator supports (asmjit's kErrorTooLarge)."""


class PEWriterError(EmulatorMemError, ValueError):
    """A PEWriter call that cannot produce a valid file (sizes, names, call order)."""


class UndeclaredImportError(PEWriterError, KeyError):
    """An IAT slot asked for a DLL!function that ``add_imports`` did not declare."""


class BatchError(EmulatorMemError):
    """A batch of runs cannot be set up or one of its jobs cannot be prepared (bad input
    location, unreadable target, unknown backend, Ray missing). Inside a batch such an error
    becomes that job's ``error`` result; only a batch that cannot start raises it."""
