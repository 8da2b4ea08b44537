"""Loading hook plugins by name (``--hook tracer``) from the top-level ``hooks/`` folder.

A plugin is a module with ``install(uc, mm, **options)`` returning a handle whose
``remove()`` uninstalls it. ``NAME`` is looked up, in order, as:

1. a path to a ``.py`` file;
2. a module ``hooks.NAME`` that Python can already import (e.g. when run from the
   repository root, or when ``hooks`` is installed);
3. ``NAME.py`` in each directory of ``$EMULATOR_MEM_HOOKS`` (``os.pathsep``-separated);
4. ``NAME.py`` in the repository's ``hooks/`` folder next to the ``emulator_mem`` package
   (a source checkout or editable install).

Options given as ``NAME:key=value,key=value`` are passed to ``install`` as strings, except
that integers (``0x10``, ``42``) are converted.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from unicorn import Uc

from ..errors import RunnerError
from ..manager import MemoryManager

ENV_VAR = "EMULATOR_MEM_HOOKS"
REPO_HOOKS = Path(__file__).resolve().parents[2] / "hooks"


class HookHandle(Protocol):
    """What ``install`` returns."""

    def remove(self) -> None: ...


def _load_path(path: Path, module_name: str) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RunnerError(f"cannot load hook plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_plugin(name: str) -> ModuleType:
    """The plugin module called ``name`` (see the module docstring for the search order)."""
    if name.endswith(".py") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise RunnerError(f"hook plugin file {name} does not exist")
        return _check(_load_path(path.resolve(), f"emulator_mem_hook_{path.stem}"), name)
    if not name.isidentifier():
        raise RunnerError(f"{name!r} is not a hook plugin name")
    try:
        return _check(importlib.import_module(f"hooks.{name}"), name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("hooks", f"hooks.{name}"):
            raise
    dirs = [Path(d) for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    for directory in [*dirs, REPO_HOOKS]:
        path = directory / f"{name}.py"
        if path.is_file():
            return _check(_load_path(path, f"hooks.{name}"), name)
    raise RunnerError(f"no hook plugin named {name!r} (looked in hooks/, ${ENV_VAR})")


def _check(module: ModuleType, name: str) -> ModuleType:
    if not callable(getattr(module, "install", None)):
        raise RunnerError(f"hook plugin {name!r} has no install(uc, mm, **options)")
    return module


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"tracer:path=t.txt,limit=100"`` -> ``("tracer", {"path": "t.txt", "limit": 100})``."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise RunnerError(f"hook option {item!r} is not key=value")
        try:
            options[key] = int(value, 0)
        except ValueError:
            options[key] = value
    return name, options


def install_plugin(name: str, uc: Uc, mm: MemoryManager, **options: Any) -> HookHandle:
    """Load plugin ``name`` and install it; options it does not accept are dropped only if
    they are among the runner's automatic extras (``symbols``, ``output``)."""
    module = load_plugin(name)
    install = module.install
    params = inspect.signature(install).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for extra in ("symbols", "output"):
        if extra in options and extra not in params and not takes_any:
            del options[extra]
    handle = install(uc, mm, **options)
    if not callable(getattr(handle, "remove", None)):
        raise RunnerError(f"hook plugin {name!r}: install() must return an object with remove()")
    return handle  # type: ignore[no-any-return]
