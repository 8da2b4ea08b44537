"""Unicorn's own memory calls, never the manager's wrappers of them.

The manager replaces ``mem_map``, ``mem_read``, ``hook_add`` … on the ``Uc`` *instance* so that
code written for plain Unicorn speaks virtual addresses (:mod:`emulator_mem.ucapi`). The
layers below it map guest-*physical* memory and must reach Unicorn itself, so they call the
class's methods through these helpers: an instance attribute never shadows them.
"""

from __future__ import annotations

from typing import Any

from unicorn import Uc


def mem_map_ptr(uc: Uc, address: int, size: int, perms: int, host: int) -> None:
    type(uc).mem_map_ptr(uc, address, size, perms, host)


def mem_unmap(uc: Uc, address: int, size: int) -> None:
    type(uc).mem_unmap(uc, address, size)


def mem_protect(uc: Uc, address: int, size: int, perms: int) -> None:
    type(uc).mem_protect(uc, address, size, perms)


def mmio_map(uc: Uc, address: int, size: int, read: Any, read_ud: Any, write: Any,
             write_ud: Any) -> None:
    type(uc).mmio_map(uc, address, size, read, read_ud, write, write_ud)


def mem_regions(uc: Uc) -> list[tuple[int, int, int]]:
    return list(type(uc).mem_regions(uc))


def mem_write(uc: Uc, address: int, data: bytes) -> None:
    type(uc).mem_write(uc, address, data)


def hook_add(uc: Uc, htype: int, callback: Any, user_data: Any = None, begin: int = 1,
             end: int = 0, *args: int) -> int:
    return int(type(uc).hook_add(uc, htype, callback, user_data, begin, end, *args))


def hook_del(uc: Uc, handle: int) -> None:
    type(uc).hook_del(uc, handle)
