"""The architecture as rules: layers that import only downwards, no cycles, a true package map.

The packages of ``wire`` are layers. ``wire.core`` is pure (no sockets, no
Redis, no event loop): it must be importable, and testable, without any I/O
library. ``subscriber`` is its own distribution and must not need the server.
Every rule is checked on the real import graph, parsed from the source.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IO_LIBRARIES = ("aiohttp", "redis", "websockets", "prometheus_client", "uvloop", "hiredis")
#: Which first-party packages each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "wire.core": set(),
    "wire.runtime": {"wire.core"},
    "wire.storage": {"wire.core", "wire.runtime"},
    "wire.gateway": {"wire.core", "wire.runtime", "wire.storage", "wire.web"},
    "wire.web": {"wire.core", "wire.runtime", "wire.storage", "wire.gateway", "publisher",
                 "wire.delivery"},
    "wire.delivery": {"wire.core", "wire.runtime", "wire.storage"},
    "publisher": {"wire.core", "wire.runtime", "wire.storage", "wire.web"},
    "wire.cli": {"wire.core", "wire.runtime", "wire.storage", "wire.web", "wire.bench",
                 "subscriber", "wire.delivery"},
    "wire.bench": {"wire.core", "wire.runtime", "wire.storage", "wire.web", "wire.cli"},
    "subscriber": set(),
}


def modules() -> Iterator[tuple[str, Path]]:
    """Every first-party module: (dotted name, path), build leftovers aside."""
    for top in ("wire", "publisher", "subscriber"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "build" in path.relative_to(ROOT).parts:
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """First-party modules that ``name`` imports, anywhere in the file."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module; ``from mod import name``
            # imports ``mod`` itself.
            subs = {f"{base}.{alias.name}" for alias in node.names}
            known = subs & KNOWN
            found.update(known or {base})
    return {m for m in found if m in KNOWN and m != name}


KNOWN = {m for m, _ in modules()}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "wire" and len(parts) > 1 else parts[0]


GRAPH = {name: imports_of(name, path) for name, path in modules()}


def fresh_import(*names: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``names``."""
    code = f"import sys, {', '.join(names)}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    return {m.split(".")[0] for m in out}


def test_the_core_imports_no_io_library() -> None:
    core = sorted(m for m in GRAPH if m.startswith("wire.core"))
    assert len(core) >= 8
    loaded = fresh_import(*core)
    assert loaded.isdisjoint(IO_LIBRARIES), sorted(loaded & set(IO_LIBRARIES))


def test_the_subscriber_library_needs_nothing_of_the_server() -> None:
    lib = sorted(m for m in GRAPH if m.startswith("subscriber"))
    loaded = fresh_import(*lib)
    forbidden = {"wire", "publisher", "aiohttp", "redis", "prometheus_client"}
    assert loaded.isdisjoint(forbidden), sorted(loaded & forbidden)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_each_module_imports_only_its_own_or_lower_layers(module: str) -> None:
    layer = layer_of(module)
    if module in ("wire", "wire.__main__"):
        return
    assert layer in ALLOWED, f"{module} is in no known layer; add it to the map"
    outside = {layer_of(m) for m in GRAPH[module]} - {layer, "wire"} - ALLOWED[layer]
    assert not outside, f"{module} ({layer}) imports {sorted(outside)}"


def test_there_are_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_the_readme_package_map_names_every_package_and_only_those() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Development", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\s*((?:wire|publisher|subscriber)(?:/[a-z_]+)*)/\s", section, re.M))
    actual = {
        name.replace(".", "/") for name, path in modules() if path.name == "__init__.py"
    } - {"wire"}
    assert named == actual
