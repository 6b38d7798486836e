"""The package is layered, bottom to top (docs/architecture.md):

    checks, configs -> ops -> modules -> layers -> models -> data -> eval -> train -> compare -> cli

A module may import (at module level or inside a function) only from its own layer or below,
and no set of modules imports itself in a loop. Read from the source with ``ast``: nothing runs.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [("checks", "configs"), ("ops",), ("modules",), ("layers",), ("models", ""), ("data",), ("eval",), ("train",),
          ("compare",), ("cli",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: {slotmem modules it imports}}`` for every module of ``src/slotmem``."""
    modules = {_module_name(p): p for p in (SRC / "slotmem").rglob("*.py")}
    graph = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:  # slotmem.x.y.Name -> slotmem.x.y
                    name = name.rpartition(".")[0]
                if name.startswith("slotmem") and name != mod:
                    targets.add(name)
        graph[mod] = targets
    return graph


def layer(mod: str) -> int:
    return RANK[mod.split(".")[1] if "." in mod else ""]


def test_every_module_has_a_layer():
    assert all(m.split(".")[1] in RANK for m in import_graph() if "." in m), sorted(import_graph())


def test_no_import_runs_up_the_layers():
    up = sorted(f"{a} -> {b}" for a, bs in import_graph().items() for b in bs if layer(b) > layer(a))
    assert not up, "imports from a higher layer:\n" + "\n".join(up)


def test_no_import_cycle():
    graph = import_graph()
    # Tarjan's strongly connected components over every import (module level and inside functions)
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not sccs, f"import cycles: {sccs}"


@pytest.mark.parametrize("package", ["models", "data", "eval", "train"])
def test_a_package_imports_alone_and_loads_nothing_above_it(package):
    """Importing one package in a fresh interpreter loads no slotmem module of a higher layer
    (``import slotmem`` itself registers the models, so every import loads up to ``models``: the
    packages below it are covered by the source check above)."""
    code = (f"import sys, slotmem.{package}; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('slotmem')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}).stdout.split()
    ceiling = max(RANK[package], RANK["models"])
    above = sorted(m for m in out if m in import_graph() and layer(m) > ceiling)
    assert not above, f"importing slotmem.{package} loaded {above}"
