"""The package's shape: imports point only downward (no module or package imports in a circle, no package
imports one above it in the declared order; every import counts, those inside functions included: a lazy
import hides a cycle from Python, not from the next engineer), few loose modules, small functions and
modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "medsynth"
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400

# Bottom to top, as docs/architecture.md draws them; each may import only the ones before it.
LAYERS = ["io", "data", "models", "metrics", "inference", "train", "evaluation", "sharing", "reporting",
          "config", "cli"]
LOOSE = {"__init__", "cli"}  # the only modules allowed beside the subpackages


def module_names(package: Path) -> dict[str, Path]:
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = ["medsynth", *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _targets(module: str, path: Path, node: ast.AST, names: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
        # ``from a import b`` imports module a.b when there is one, else a name of a
        candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
    found = []
    for name in candidates:
        while name not in names and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in names and name != module:
            found.append(name)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body."""
    names = module_names(package)
    graph = {name: set() for name in names}
    for module, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(_targets(module, path, node, names))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {package_of(m): set() for m in graph}
    for module, targets in graph.items():
        packages[package_of(module)].update(package_of(t) for t in targets if package_of(t) != package_of(module))
    return packages


def test_no_module_imports_in_a_circle():
    assert cycles(import_graph()) == []


def test_no_package_imports_in_a_circle():
    assert cycles(package_graph(import_graph())) == []


def test_every_package_imports_only_layers_below_it():
    packages = package_graph(import_graph())
    assert set(packages) - {"__init__"} == set(LAYERS), "declare every package's layer in LAYERS"
    upward = [f"{p} imports {q}" for p, targets in packages.items() if p != "__init__"
              for q in sorted(targets) if q != "__init__" and LAYERS.index(q) > LAYERS.index(p)]
    assert upward == []


def test_the_package_keeps_its_loose_modules_few():
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose <= LOOSE, f"put {sorted(loose - LOOSE)} into the subpackage of its stage"


@pytest.mark.parametrize("source, expected", [
    ({"a": "from medsynth import b", "b": "def f():\n    from medsynth.a import x"}, [["medsynth.a", "medsynth.b"]]),
    ({"a": "from medsynth import b", "b": "import math"}, []),
])
def test_the_checks_see_imports_inside_functions(tmp_path, source, expected):
    root = tmp_path / "medsynth"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, text in source.items():
        (root / f"{name}.py").write_text(text + "\n")
    assert cycles(import_graph(root)) == expected


def _our_python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "workflow" / "scripts").glob("*.py"))


def test_every_module_stays_under_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _our_python_files()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, "split these modules by concept"


def test_every_function_stays_under_60_lines():
    long = {}
    for path in _our_python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert long == {}, "split these functions into named steps"
