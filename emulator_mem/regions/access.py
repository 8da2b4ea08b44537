"""Host access to guest memory: ``mm.read``/``mm.write`` by virtual address.

The host (an API emulation, a loader, a debugger, a test) is not the guest: it writes into
read-only image pages and reads no-access ones, so page protections are ignored; commit
state is not, because there is no memory behind a reserved page. A range may cross
allocations and region kinds: ordinary pages are copied through their physical pieces
(private copy-on-write copies included), MMIO pages go to the device's host callbacks.
Every span is checked before anything is copied, so a failed write changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import InvalidParameterError, MemoryAccessError
from ..mmu.physmem import PhysicalMemory
from ..mmu.tlb import MMU
from ..space.address_space import PAGE_SHIFT, PAGE_SIZE, AddressSpace, Allocation, RegionKind
from ..windows import protection


def spans(space: AddressSpace, address: int, size: int) -> Iterator[tuple[Allocation, int, int]]:
    """(allocation, start, end) pieces of [address, address+size); committed or raise."""
    end = address + size
    pos = address
    while pos < end:
        alloc = space.find(pos)
        if alloc is None:
            raise MemoryAccessError(f"{pos:#x} is not allocated", pos)
        stop = min(end, alloc.end)
        first = (pos - alloc.base) >> PAGE_SHIFT
        last = (stop - 1 - alloc.base) >> PAGE_SHIFT
        for s, _, p in alloc.runs(first, last + 1):
            if not p:
                bad = max(pos, alloc.base + (s << PAGE_SHIFT))
                raise MemoryAccessError(f"{bad:#x} is not committed", bad)
        yield alloc, pos, stop
        pos = stop


def phys_pieces(alloc: Allocation, start: int, stop: int) -> Iterator[tuple[int, int]]:
    """(physical address, length) pieces of [start, stop) inside ``alloc``."""
    private = alloc.private_pages
    offset = start - alloc.base
    if not private:
        yield alloc.phys_base + offset, stop - start
        return
    pos = start
    while pos < stop:
        index = (pos - alloc.base) >> PAGE_SHIFT
        n = min(stop, alloc.base + ((index + 1) << PAGE_SHIFT)) - pos
        base = private.get(index)
        if base is None:
            yield alloc.phys_base + (pos - alloc.base), n
        else:
            yield base + (pos & (PAGE_SIZE - 1)), n
        pos += n


def _plain_page(space: AddressSpace, address: int, size: int) -> tuple[Allocation, int] | None:
    """(allocation, page protection) when [address, address+size) lies in one committed
    page of ordinary memory (no MMIO, no private copy-on-write copies): the case of the
    small reads and writes an API emulation makes (arguments, return addresses, out
    parameters), which then skip the general walk. None sends the caller the long way."""
    if size <= 0 or (address & (PAGE_SIZE - 1)) + size > PAGE_SIZE:
        return None
    alloc = space.find(address)
    if alloc is None or alloc.kind is RegionKind.MMIO or alloc.private_pages:
        return None
    protect = alloc.page_protect((address - alloc.base) >> PAGE_SHIFT)
    return (alloc, protect) if protect else None


def read(space: AddressSpace, phys: PhysicalMemory, address: int, size: int) -> bytes:
    """Guest memory as the host sees it: ignores protection, not commit state."""
    if size < 0:
        raise InvalidParameterError("negative size")
    plain = _plain_page(space, address, size)
    if plain is not None:
        return phys.read(plain[0].phys_base + (address - plain[0].base), size)
    pieces = list(spans(space, address, size))
    out = bytearray(size)
    for alloc, start, stop in pieces:
        if alloc.kind is RegionKind.MMIO:
            device = alloc.owner
            out[start - address : stop - address] = device.host_read(start - alloc.base, stop - start)
            continue
        pos = start - address
        for where, n in phys_pieces(alloc, start, stop):
            phys.read_into(where, out, pos, n)
            pos += n
    return bytes(out)


def write(space: AddressSpace, mmu: MMU, address: int, data: bytes | bytearray | memoryview) -> None:
    """Store into guest memory, ignoring protection (not commit state); all or nothing.

    Copy-on-write pages get their private copy and write-watched or checkpointed pages
    are marked, exactly as a guest write would.
    """
    data = bytes(data)
    plain = _plain_page(space, address, len(data))
    if plain is not None and plain[0].write_watch is None and not protection.is_writecopy(plain[1]):
        mmu.phys.write(plain[0].phys_base + (address - plain[0].base), data)
        return
    pieces = list(spans(space, address, len(data)))
    for alloc, start, stop in pieces:
        if alloc.kind is RegionKind.MMIO:
            continue
        first = (start - alloc.base) >> PAGE_SHIFT
        last = (stop - 1 - alloc.base) >> PAGE_SHIFT
        for s, e, p in list(alloc.runs(first, last + 1)):
            for index in range(s, e) if protection.is_writecopy(p) else ():
                mmu.copy_on_write(alloc, index, alloc.page_protect(index))
        watch = alloc.write_watch
        if watch is not None:
            watch.update(range(first, last + 1))
    phys = mmu.phys
    for alloc, start, stop in pieces:
        chunk = data[start - address : stop - address]
        if alloc.kind is RegionKind.MMIO:
            alloc.owner.host_write(start - alloc.base, chunk)
            continue
        pos = 0
        for where, n in phys_pieces(alloc, start, stop):
            phys.write(where, chunk[pos : pos + n])
            pos += n
