"""The package's layers, checked from its source: no import circle anywhere in
``emulator_mem`` (``TYPE_CHECKING`` imports included — a type-only circle is still a
design circle), and no module importing a layer above its own.

Imports are read with :mod:`ast`, so nothing is executed and a new module is covered the
day it is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "emulator_mem"

#: bottom (0) to top; a module may import its own layer or a lower one
LAYERS: dict[str, int] = {
    "errors": 0,
    "windows": 0,
    "pe": 1,
    "space": 1,
    "mmu": 2,
    "regions": 3,
    "snapshot": 4,
    "manager": 5,
    "ucapi": 5,
    "api": 6,
    "nt": 6,
    "win32": 6,
    "allocators": 6,
    "report": 7,
    "runner": 7,
    "cli": 8,
    "batch": 8,
}
#: the package root and its import-path glue sit outside the layers
UNLAYERED = {"", "_compat"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports (at any depth in its source)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
            elif node.module and node.module.split(".")[0] == "emulator_mem":
                base = []
            else:
                continue
            target = base + (node.module.split(".") if node.module else [])
            if not node.level:
                target = target[1:]
            for alias in node.names:
                sub = ".".join([*target, alias.name])
                found.add(sub if sub in modules else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "emulator_mem":
                    found.add(".".join(parts[1:]))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int | None:
    if module in UNLAYERED:
        return None
    return LAYERS[module.split(".")[0]]


def test_the_package_has_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_every_module_belongs_to_a_layer() -> None:
    unknown = [m for m in all_modules() if m not in UNLAYERED and m.split(".")[0] not in LAYERS]
    assert unknown == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, targets in import_graph().items():
        own = layer_of(module)
        if own is None:
            continue
        for target in targets:
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    assert sorted(upward) == []


def test_the_checker_sees_circles_and_upward_imports() -> None:
    """The walk itself must be able to fail: a made-up circle is found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "windows.constants" in graph["errors"]
    assert "manager" in graph["api.nt"]
