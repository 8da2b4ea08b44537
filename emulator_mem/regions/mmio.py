"""MMIO regions: guest pages whose loads and stores call Python.

An MMIO allocation is an ordinary reservation in the address space (VirtualQuery reports it
committed, ``MEM_MAPPED``, ``PAGE_READWRITE``) whose pages translate to a guest-physical
range in the alias area that Unicorn maps with ``uc.mmio_map``. Guest accesses therefore
reach the callbacks through Unicorn's own MMIO dispatch — no per-access hook anywhere else —
and offsets are relative to the region base. Unicorn registers its MMIO ops without a
maximum access size, so qemu delivers an 8-byte guest access as two 4-byte callbacks (low
half first); raw ``uc.mmio_map`` behaves the same and the guest's PC is not precise inside
the callback, so the halves cannot be told apart from two 4-byte accesses. Host
``mm.read``/``mm.write`` call the same callbacks, split into naturally aligned 8/4/2/1-byte
accesses like a CPU would issue them.

An exception raised by a callback stops emulation and is re-raised by ``uc.emu_start``
(Unicorn's bindings keep it); the manager's state is untouched by that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParameterError
from ..mmu import raw
from ..space.address_space import Allocation, RegionKind
from ..windows import constants as C
from .host import RegionHost

MmioRead = Callable[[int, int], int]
MmioWrite = Callable[[int, int, int], None]


@dataclass(slots=True, eq=False)
class MmioDevice:
    """The callbacks behind one MMIO region and where it lives."""

    base: int
    size: int
    phys: int
    read: MmioRead
    write: MmioWrite
    name: str | None = None
    maximum_protect: int = C.PAGE_READWRITE

    def host_read(self, offset: int, size: int) -> bytes:
        out = bytearray()
        for off, n in _accesses(offset, size):
            out += (self.read(off, n) & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
        return bytes(out)

    def host_write(self, offset: int, data: bytes) -> None:
        pos = 0
        for off, n in _accesses(offset, len(data)):
            self.write(off, n, int.from_bytes(data[pos : pos + n], "little"))
            pos += n


def _accesses(offset: int, size: int) -> list[tuple[int, int]]:
    """Split [offset, offset+size) into naturally aligned accesses of 8, 4, 2 or 1 bytes."""
    out = []
    end = offset + size
    while offset < end:
        n = 8
        while n > 1 and (offset % n or offset + n > end):
            n //= 2
        out.append((offset, n))
        offset += n
    return out


def allocate_mmio(
    mm: RegionHost,
    address: int | None,
    size: int,
    read: MmioRead,
    write: MmioWrite,
    name: str | None = None,
) -> int:
    """Map an MMIO region of ``size`` bytes at ``address`` (None: a free address); returns it."""
    if not callable(read) or not callable(write):
        raise InvalidParameterError("MMIO read and write callbacks must be callable")
    size = mm.check_size(size)
    if address is None:
        base = mm.find_free(size)
    else:
        if address % C.ALLOCATION_GRANULARITY:
            raise InvalidParameterError(f"MMIO base {address:#x} is not 64 KiB aligned")
        mm.check_range(address, size)
        if not mm.space.free.is_free(address, address + size):
            from ..errors import ConflictingAddressesError

            raise ConflictingAddressesError(f"{address:#x}+{size:#x} overlaps a reservation")
        base = address
    phys = mm.phys.alias_range(size)
    device = MmioDevice(base, size, phys, read, write, name)

    map_device(mm.uc, device)
    alloc = Allocation(base, size, C.PAGE_READWRITE, RegionKind.MMIO, phys_base=phys,
                       name=name, owner=device)
    mm.insert_allocation(alloc, reserve_only=False)
    return base


def mmio_span(size: int) -> int:
    """Unicorn maps MMIO ranges in 64 KiB units here (the alias area's granularity)."""
    return (size + 0xFFFF) & ~0xFFFF


def map_device(uc: Any, device: MmioDevice) -> None:
    """Map ``device``'s physical range into Unicorn with callbacks that call it.

    Also used when a snapshot or a rollback brings an MMIO region back.
    """

    def on_read(uc: Any, offset: int, n: int, _ud: Any) -> int:
        try:
            return device.read(offset, n) & ((1 << (8 * n)) - 1)
        except BaseException as exc:  # noqa: BLE001 - re-raised by emu_start
            _stop_with(uc, exc)
            return 0

    def on_write(uc: Any, offset: int, n: int, value: int, _ud: Any) -> None:
        try:
            device.write(offset, n, value)
        except BaseException as exc:  # noqa: BLE001 - re-raised by emu_start
            _stop_with(uc, exc)

    raw.mmio_map(uc, device.phys, mmio_span(device.size), on_read, None, on_write, None)


def _stop_with(uc: Any, exc: BaseException) -> None:
    """Stop emulation and let ``uc.emu_start`` re-raise ``exc`` (the bindings' convention).

    Done here rather than by the bindings' wrapper so a failing *read* callback does not
    also produce ctypes' "cannot convert result" noise.
    """
    if getattr(uc, "_hook_exception", None) is None:
        uc._hook_exception = exc
    uc.emu_stop()


def release_mmio(mm: RegionHost, alloc: Allocation) -> None:
    """Unmap the Unicorn MMIO range behind ``alloc`` (called when the region is released)."""
    if alloc.kind is RegionKind.MMIO:
        raw.mem_unmap(mm.uc, alloc.phys_base, mmio_span(alloc.size))
