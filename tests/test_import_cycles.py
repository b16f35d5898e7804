"""No module of spatialfuse imports, directly or through others, a module that imports it.

Read from the source with ``ast``. Two graphs: the imports run when a module is loaded, and those
plus the imports inside functions (a function-level import that closes a loop is a cycle put off
until the call, e.g. ``cli/_run`` once took ``_kind_of`` from ``cli/main``, which imports
``cli/_run``). Imports under ``if TYPE_CHECKING:`` never run and do not count. An import names
the module it reads from (``from spatialfuse.reg import X`` is an edge to ``spatialfuse.reg``'s
``__init__``, ``from spatialfuse.cli import main`` one to ``spatialfuse.cli.main``); parent
packages are not edges (Python initialises them first, whatever the order).
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "spatialfuse"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _children(node: ast.AST):
    """The child nodes that run: the body of ``if TYPE_CHECKING:`` is left out."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return node.orelse
    return ast.iter_child_nodes(node)


def _targets(node: ast.AST, module: str, is_package: bool, modules, top: str) -> list[str]:
    """The modules of package ``top`` that an import statement reads from."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == top]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    if node.level:
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base.split(".")[0] != top:
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph(root: Path) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Edges ``module → {imported module: line}`` of the package at ``root``.

    Returns the imports run at load time, and those together with the imports inside functions.
    """
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    at_load: dict[str, dict[str, int]] = {m: {} for m in paths}
    every: dict[str, dict[str, int]] = {m: {} for m in paths}

    def walk(node: ast.AST, module: str, is_package: bool, in_function: bool) -> None:
        for child in _children(node):
            for target in _targets(child, module, is_package, paths, root.name):
                if target != module and target in paths:
                    every[module].setdefault(target, child.lineno)
                    if not in_function:
                        at_load[module].setdefault(target, child.lineno)
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            walk(child, module, is_package, in_function or nested)

    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        walk(tree, module, path.name == "__init__.py", False)
    return at_load, every


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One closed path per strongly connected group of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, set(group)) for group in groups]


def _closed_path(graph: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """A path ``a → b → … → a`` inside ``group`` (breadth-first from its first module)."""
    start = min(group)
    previous = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if w in group and w not in previous:
                previous[w] = v
                queue.append(w)
    return sorted(group)


def _describe(graph: dict[str, dict[str, int]], path: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]}) → {b}" for a, b in itertools.pairwise(path)]
    return "; ".join(steps)


def test_no_import_cycle_when_modules_load():
    at_load, _ = import_graph(SRC)
    found = [_describe(at_load, c) for c in cycles(at_load)]
    assert not found, "module-level import cycles:\n" + "\n".join(found)


def test_no_import_cycle_through_imports_inside_functions():
    _, every = import_graph(SRC)
    found = [_describe(every, c) for c in cycles(every)]
    assert not found, "import cycles (counting imports inside functions):\n" + "\n".join(found)


def test_the_check_finds_cycles(tmp_path):
    """A package with one cycle at load time and one through a function (so the tests can fail)."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg.b import B\nA = 1\n",
        "b.py": "from pkg import a\nB = 2\n",
        "sub/__init__.py": "from pkg.sub.main import cli\n",
        "sub/main.py": "from pkg.sub._run import run\ncli = run\n",
        "sub/_run.py": "def run():\n    from pkg.sub.main import _kind\n",
        "sub/_typed.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
        ),
        "c.py": "from . import _typed_user\n",
        "_typed_user.py": "from pkg.sub import _typed\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    at_load, every = import_graph(pkg)
    assert cycles(at_load) == [["pkg.a", "pkg.b", "pkg.a"]]
    found = sorted(cycles(every))
    assert ["pkg.sub._run", "pkg.sub.main", "pkg.sub._run"] in found
    assert len(found) == 2
    assert "pkg.a" not in every["pkg.sub._typed"]
    assert "pkg._typed_user" in every["pkg.c"]
