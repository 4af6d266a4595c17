"""The import graph is one-way (benchmarks -> models -> solver) and has no cycles, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("solver", "models", "benchmarks")
ALLOWED = {"solver": set(), "models": {"solver"}, "benchmarks": {"models", "solver"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports anywhere (top level or inside functions)."""
    graph = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = _module_name(path)
            is_pkg = path.name == "__init__.py"
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                        mod = ".".join(base + ([node.module] if node.module else []))
                    else:
                        mod = node.module or ""
                    found.add(mod)
                    found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` imports module x
            graph[name] = {m for m in found if m.split(".")[0] in PACKAGES}
    modules = set(graph)
    return {k: {m for m in v if m in modules and m != k} for k, v in graph.items()}


def test_layers_import_one_way():
    for module, targets in _imports().items():
        for target in targets:
            src, dst = module.split(".")[0], target.split(".")[0]
            assert src == dst or dst in ALLOWED[src], f"{module} imports {target}: {src} may not import {dst}"


def test_no_import_cycles():
    graph = _imports()
    # a package's __init__ importing its own submodules is how packages work; any other cycle is a knot
    edges = {m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


#: the size limits of the code outside tests: a file, and a function other than a numba kernel
MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 80


def _numba_kernel(node: ast.FunctionDef) -> bool:
    def name(d: ast.expr) -> str:
        return ast.unparse(d.func if isinstance(d, ast.Call) else d)
    return any(name(d).split(".")[-1] in ("njit", "jit", "vectorize", "guvectorize") for d in node.decorator_list)


def _oversized() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            where = path.relative_to(ROOT)
            if text.count("\n") > MAX_FILE_LINES:
                found.append(f"{where}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _numba_kernel(node):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_no_file_or_function_over_the_size_limits():
    """No file over 450 lines outside tests, no function over 80 lines outside numba kernels."""
    assert _oversized() == []
