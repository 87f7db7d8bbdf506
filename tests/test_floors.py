"""The house's floors: every module imports in a fresh interpreter, and the import graph has no cycle."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"lab": ROOT / "lab", "lab.kernels": ROOT / "kernels", "lab.widgets": ROOT / "widgets"}
FLOORS = [  # each may import only from its own floor and the floors below it
    {"lab.errors", "lab.tree", "lab.trace", "lab.sampling", "lab.metrics", "lab.registry", "lab.models",
     "lab.drafts", "lab.vocab_trim"},
    {"lab.backends", "lab.kernels"},
    {"lab.decoding", "lab.batch"},
    {"lab.search", "lab.speculative", "lab.dllm", "lab.constrained", "lab.interp"},
    {"lab.api", "lab.widgets", "lab"},
    {"lab.bench", "lab.apps", "lab.cli", "lab.__main__", "lab.train"},
]


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lab modules a module imports, anywhere in it (lazy imports inside functions count too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def floor(name: str) -> int:
    """The floor of the most specific entry naming the module or a package above it ('lab' is only lab itself)."""
    matches = [(len(m), level) for level, members in enumerate(FLOORS) for m in members
               if name == m or (m != "lab" and name.startswith(m + "."))]
    assert matches, f"{name} is on no floor: add it to FLOORS"
    return max(matches)[1]


def test_the_import_graph_has_no_cycle_and_only_goes_down():
    mods = modules()
    graph = nx.DiGraph()
    for name, path in mods.items():
        graph.add_node(name)
        for target in imports(name, path, set(mods)):
            graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"
    upward = [(a, b) for a, b in graph.edges if floor(b) > floor(a) and not b.startswith(a + ".")]
    assert not upward, f"imports that go up a floor: {upward}"


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in modules() if n != "lab.__main__")  # __main__ runs the CLI
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
