"""``devices.dll``: MMIO devices from ``hooks/devices.py`` offered to payloads as data imports.

A payload that imports ``devices.dll!UART`` gets a UART mapped with ``mm.allocate_mmio``
when the image is linked, and the import's IAT slot receives the device's base address (a
data import's slot holds the variable's address), so the payload finds the registers by
reading the slot. The kind is the import's name in lower case; ``hooks/devices.py`` lists
the kinds it offers (``DEVICE_KINDS``). Device output goes to the process console.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnresolvedImportError
from .api import data_import
from .console import Console
from .guest import DeviceRecord, GuestProcess
from .plugins import load_plugin

DEVICES_PLUGIN = "devices"


@data_import("devices.dll")
def attach_device(process: GuestProcess, name: str) -> int:
    """Map the device ``devices.dll!name`` names; returns the base for the IAT slot."""
    kind = name.lower()
    module = load_plugin(DEVICES_PLUGIN)
    if kind not in getattr(module, "DEVICE_KINDS", ()):
        raise UnresolvedImportError(f"{process.image_name}: no device for devices.dll!{name} "
                                    f"(hooks/devices.py offers {', '.join(module.DEVICE_KINDS)})")
    handle = module.install(process.uc, process.mm, device=kind, output=process.console.emit)
    process.devices.append(DeviceRecord(kind, name, int(handle.base), handle))
    return int(handle.base)


def device_objects(console: Console, kinds: list[str]) -> tuple[Any, dict[str, Any]]:
    """The devices plugin and one unmapped device per kind, to hand to ``load_snapshot``."""
    if not kinds:
        return None, {}
    module = load_plugin(DEVICES_PLUGIN)
    return module, {k: module.make_device(k, output=console.emit) for k in kinds}
