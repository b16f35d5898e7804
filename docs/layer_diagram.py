"""Draw the layers of ``src/spatialfuse`` from the code's own imports, into docs/architecture.md.

Every ``import spatialfuse.X`` / ``from spatialfuse.X... import`` in the package (inside functions
too) is read with :mod:`ast`; each module belongs to its subpackage (``core``, ``io``, ...) or, at
the top level, to ``helpers`` (``errors.py``, ``_io_utils.py``, ...). The diagram has one node per
layer, listed from the top (``cli``) to the bottom (``helpers``), and one arrow per pair of layers
where a module of the first imports the second. An arrow that runs up the layers would be drawn
dotted and named ``UP``; ``tests/test_layers.py`` fails on it. Only which layers import which is
drawn (not how many modules), so the diagram changes when the architecture does, not with every
new module.

Run ``python docs/layer_diagram.py`` to rewrite the block between the ``layers:begin`` and
``layers:end`` markers of docs/architecture.md; ``--check`` only says (exit status 1) whether the
block is out of date, as ``tests/test_docs.py`` does.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "spatialfuse"
DOC = ROOT / "docs" / "architecture.md"
#: Layers from the top down (``tests/test_layers.py`` holds the same order).
LAYERS = ["cli", "workflow", "datasets", "pl", "tl", "reg", "pp", "io", "core", "helpers"]
BEGIN = "<!-- layers:begin (written by docs/layer_diagram.py; do not edit by hand) -->"
END = "<!-- layers:end -->"


def layer_of(module: str) -> str:
    """The layer of a dotted module name below ``spatialfuse`` (``spatialfuse.io.visium``: io)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "helpers"


def imported_layers(path: Path) -> set[str]:
    """The layers that the module at ``path`` imports, its own left out."""
    own = layer_of("spatialfuse." + ".".join(path.relative_to(SRC).with_suffix("").parts))
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] == "spatialfuse" and name != "spatialfuse":
                found.add(layer_of(name))
    return found - {own}


def edges() -> set[tuple[str, str]]:
    """``(importer, imported)`` for every pair of layers where a module of one imports the other."""
    found = set()
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if relative.parts in (("__init__.py",), ("__main__.py",)):
            continue  # the package's lazy door and ``python -m``: above every layer
        layer = layer_of("spatialfuse." + ".".join(relative.with_suffix("").parts))
        found |= {(layer, target) for target in imported_layers(path)}
    return found


def _ordered(pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(pairs, key=lambda pair: (LAYERS.index(pair[0]), LAYERS.index(pair[1])))


def mermaid() -> str:
    """The diagram as a Mermaid flowchart (GitHub draws it; elsewhere it reads as text)."""
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"    {layer}" for layer in LAYERS]  # declared in order: top to bottom
    for src, dst in _ordered(edges()):
        up = LAYERS.index(dst) < LAYERS.index(src)
        lines.append(f"    {src} -.->|UP| {dst}" if up else f"    {src} --> {dst}")
    lines.append("```")
    return "\n".join(lines)


def text() -> str:
    """The same as a plain list: each layer and the layers it imports."""
    pairs = _ordered(edges())
    width = max(len(layer) for layer in LAYERS)
    lines = ["```text"]
    for layer in LAYERS:
        imports = ", ".join(dst for src, dst in pairs if src == layer) or "(nothing of spatialfuse)"
        lines.append(f"{layer:<{width}}  imports {imports}")
    lines.append("```")
    return "\n".join(lines)


def block() -> str:
    """What stands between the markers of docs/architecture.md."""
    return "\n".join([BEGIN, mermaid(), "", text(), END])


def updated(doc: str) -> str:
    """``doc`` with the block between the markers replaced by the current one."""
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    return doc[:start] + block() + doc[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the block of docs/architecture.md, or with ``--check`` only compare it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the doc is current")
    args = parser.parse_args(argv)
    doc = DOC.read_text(encoding="utf-8")
    new = updated(doc)
    if args.check:
        if new != doc:
            print(f"{DOC} is out of date: run python docs/layer_diagram.py", file=sys.stderr)
            return 1
        return 0
    if new != doc:
        DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
