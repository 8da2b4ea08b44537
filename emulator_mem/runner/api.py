"""The registry of emulated DLL functions and what a handler gets to work with.

Adding a function is one decorated Python function, anywhere that is imported before a
process is loaded (the built-in ones live in :mod:`emulator_mem.runner.kernel32`)::

    from emulator_mem.runner.api import ApiCall, api

    @api("kernel32.dll", argc=1)
    def Sleep(call: ApiCall) -> int | None:
        (milliseconds,) = call.args
        return None                        # void: EAX/RAX are left alone

``argc`` is the number of arguments: it fixes how many are read (stdcall stack slots or
x64 registers/stack) and how many bytes the x86 stub pops, so it must match the real
prototype. ``dwords`` lists the positions of 32-bit parameters (DWORD, UINT, BOOL, int):
on x64 only their low half is defined — a compiler stores a DWORD stack argument with a
4-byte ``mov`` and may leave garbage above it in registers — so the handler receives them
truncated to 32 bits, as the real callee reads them. Return the value for EAX/RAX, or None
for ``void``. ``noreturn=True`` marks functions that end the process (the stub is ``jmp $``
and the handler stops the CPU). Set the thread's last error with ``call.k32.SetLastError``;
it is copied into TEB.LastErrorValue after every call, as Windows keeps it there.

Data imports (a DLL exporting a variable, such as ``devices.dll!UART``, see :mod:`.devices`)
are resolved by :func:`data_import` resolvers instead: they return the address the IAT slot
receives.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import RunnerError

if TYPE_CHECKING:
    from ..api.win32 import Kernel32
    from ..manager import MemoryManager
    from .guest import GuestProcess

Handler = Callable[["ApiCall"], "int | None"]
DataResolver = Callable[["GuestProcess", str], int]


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """One emulated function: ``dll!name`` with ``argc`` arguments and its handler."""

    dll: str
    name: str
    argc: int
    handler: Handler
    noreturn: bool = False
    dwords: tuple[int, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.dll}!{self.name}"

    def narrow(self, args: list[int]) -> list[int]:
        """The arguments with the 32-bit parameters cut to their defined low half."""
        for index in self.dwords:
            if index < len(args):
                args[index] &= 0xFFFFFFFF
        return args


#: (lower-case dll, function name) -> spec
REGISTRY: dict[tuple[str, str], ApiSpec] = {}
#: lower-case dll -> resolver for its data imports
DATA_IMPORTS: dict[str, DataResolver] = {}


def api(
    dll: str, argc: int, *, name: str | None = None, noreturn: bool = False,
    aliases: tuple[str, ...] = (), dwords: tuple[int, ...] = (),
) -> Callable[[Handler], Handler]:
    """Register the decorated function as ``dll!name`` (default: the function's own name)."""
    if any(not 0 <= index < argc for index in dwords):
        raise RunnerError(f"dwords {dwords} name parameters beyond argc={argc}")

    def register(handler: Handler) -> Handler:
        for export in (name or handler.__name__, *aliases):
            REGISTRY[(dll.lower(), export)] = ApiSpec(
                dll.lower(), export, argc, handler, noreturn, tuple(dwords))
        return handler

    return register


def data_import(dll: str) -> Callable[[DataResolver], DataResolver]:
    """Register a resolver for the data imports of ``dll``: ``(process, name) -> address``."""

    def register(resolver: DataResolver) -> DataResolver:
        DATA_IMPORTS[dll.lower()] = resolver
        return resolver

    return register


def lookup(dll: str, name: str) -> ApiSpec | None:
    return REGISTRY.get((dll.lower(), name))


class ApiCall:
    """One call in progress: its arguments and helpers to read and write guest memory.

    Guest pointers are virtual addresses and go through the manager, which ignores guest
    protection but not commit state: a bad pointer raises MemoryAccessError, which the
    dispatcher turns into a failed call with ERROR_NOACCESS, as kernel32's probes do.
    """

    __slots__ = ("args", "process", "spec")

    def __init__(self, process: GuestProcess, spec: ApiSpec, args: list[int]) -> None:
        self.process = process
        self.spec = spec
        self.args = args

    @property
    def mm(self) -> MemoryManager:
        return self.process.mm

    @property
    def k32(self) -> Kernel32:
        return self.process.k32

    @property
    def ptr_size(self) -> int:
        return self.process.abi.ptr_size

    def read(self, address: int, size: int) -> bytes:
        return self.mm.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        self.mm.write(address, data)

    def read_u32(self, address: int) -> int:
        return int(struct.unpack("<I", self.mm.read(address, 4))[0])

    def write_u32(self, address: int, value: int) -> None:
        self.mm.write(address, struct.pack("<I", value & 0xFFFFFFFF))

    def read_ptr(self, address: int) -> int:
        return self.process.abi.unpack_ptr(self.mm.read(address, self.ptr_size))

    def write_ptr(self, address: int, value: int) -> None:
        self.mm.write(address, self.process.abi.pack_ptr(value))

    def read_cstr(self, address: int, limit: int = 0x1000) -> str:
        """A NUL-terminated ANSI string (read page by page, never past its terminator)."""
        out = bytearray()
        while len(out) < limit:
            chunk = self.mm.read(address + len(out), min(0x100, 0x1000 - ((address + len(out)) & 0xFFF)))
            end = chunk.find(b"\0")
            if end >= 0:
                out += chunk[:end]
                return out.decode("latin-1")
            out += chunk
        raise RunnerError(f"string at {address:#x} is longer than {limit} bytes")

    def read_wstr(self, address: int, limit: int = 0x1000) -> str:
        """A NUL-terminated UTF-16LE string."""
        out = bytearray()
        while len(out) < 2 * limit:
            unit = self.mm.read(address + len(out), 2)
            if unit == b"\0\0":
                return out.decode("utf-16-le", errors="replace")
            out += unit
        raise RunnerError(f"wide string at {address:#x} is longer than {limit} characters")
