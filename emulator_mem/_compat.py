"""Old import paths keep working after the package was laid out by layer.

Round one had every module side by side (``emulator_mem.pe_writer``,
``emulator_mem.sections`` …). Users' code imports those names, so a meta-path finder
answers each old name with the module at its new home — the same module object, not a
copy, so ``isinstance`` checks and monkeypatching keep meaning what they did — and warns
once with :class:`DeprecationWarning`. ``emulator_mem.nt`` and ``emulator_mem.win32`` are
real modules (type checkers see them); these are the rest.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

PACKAGE = "emulator_mem"

#: round-one module name -> its home since the layered layout
MOVED: dict[str, str] = {
    "constants": "windows.constants",
    "status": "windows.status",
    "protection": "windows.protection",
    "freeranges": "space.freeranges",
    "records": "space.records",
    "mmu": "mmu.tlb",
    "physmem": "mmu.physmem",
    "fetchtrap": "mmu.fetchtrap",
    "faults": "mmu.faults",
    "sections": "regions.sections",
    "mmio": "regions.mmio",
    "writewatch": "regions.writewatch",
    "image_map": "regions.image_map",
    "image": "pe.image",
    "pe_writer": "pe.writer",
    "snapshot_format": "snapshot.format",
    "snapshot_check": "snapshot.check",
    "cpu_state": "snapshot.cpu_state",
    "rollback": "snapshot.rollback",
    "nt_sections": "api.nt_sections",
    "win32_sections": "api.win32_sections",
    "vmmap": "report.vmmap",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``emulator_mem.<old>`` to the module now at ``emulator_mem.<new>``."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        old = _old_name(fullname)
        if old is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        old = _old_name(spec.name)
        if old is None:  # find_spec only hands out specs for moved names
            raise ImportError(f"{spec.name} is not a moved module", name=spec.name)
        new = f"{PACKAGE}.{MOVED[old]}"
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed at its new home already."""


def _old_name(fullname: str) -> str | None:
    prefix = PACKAGE + "."
    if not fullname.startswith(prefix):
        return None
    name = fullname[len(prefix):]
    if name not in MOVED:
        return None
    return name


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (importing the package calls this)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
