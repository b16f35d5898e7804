"""Imports run one way down the layers, and never into another subpackage's private modules.

Layers, lowest first (docs/architecture.md): the top-level helpers (``errors.py``,
``_io_utils.py``, ...), ``core``, ``io``, ``pp``, ``reg``, ``tl``, ``pl``, ``datasets``,
``workflow``, ``cli``. Read from the source with ``ast`` (imports inside functions count).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "spatialfuse"
LAYERS = ["core", "io", "pp", "reg", "tl", "pl", "datasets", "workflow", "cli"]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "spatialfuse"]


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).parts
        yield path, (parts[0] if len(parts) > 1 else None)


def test_imports_run_down_the_layers():
    upward = []
    for path, package in _modules():
        for line, name in _imports(path):
            target = name.split(".")[1] if name.count(".") >= 1 else None
            where = f"{path.relative_to(SRC)}:{line} imports {name}"
            if package is None:
                # top-level helpers sit below every subpackage (__main__ is the CLI's door)
                if target in LAYERS and path.name not in ("__init__.py", "__main__.py"):
                    upward.append(where)
            elif target in LAYERS and LAYERS.index(target) > LAYERS.index(package):
                upward.append(where)
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_reaches_into_another_subpackage_private_module():
    private = []
    for path, package in _modules():
        for line, name in _imports(path):
            parts = name.split(".")
            if len(parts) < 3 or parts[1] not in LAYERS or parts[1] == package:
                continue
            if any(p.startswith("_") for p in parts[2:]):
                private.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert not private, "imports into another subpackage's private modules:\n" + "\n".join(private)


def test_the_check_sees_imports():
    """The walk finds imports inside functions too (so the tests above can fail)."""
    names = [name for _, name in _imports(SRC / "pl" / "_ion_image.py")]
    assert "spatialfuse.core.msi_raster" in names
