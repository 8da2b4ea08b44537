"""Snapshots: the versioned file (:mod:`.file`, format in :mod:`.format`, validation in
:mod:`.check`, registers in :mod:`.cpu_state`) and O(dirty) checkpoint/rollback
(:mod:`.rollback`).

Below the manager: these take the narrow :class:`~emulator_mem.regions.host.SnapshotHost`
view of it, so ``MemoryManager.checkpoint()`` can use them without an import circle.
``emulator_mem.snapshot`` is the public path of the file functions.
"""

from __future__ import annotations

from .file import (
    LAYOUT_CLASSES,
    load_snapshot,
    register_mmio_device,
    save_snapshot,
    snapshot_extras,
    snapshot_info,
    unregister_mmio_device,
)

__all__ = [
    "LAYOUT_CLASSES",
    "load_snapshot",
    "register_mmio_device",
    "save_snapshot",
    "snapshot_extras",
    "snapshot_info",
    "unregister_mmio_device",
]
