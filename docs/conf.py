"""Sphinx configuration for the spatialfuse documentation (builds offline)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import spatialfuse  # noqa: E402

project = "spatialfuse"
author = "spatialfuse developers"
copyright = "spatialfuse developers"
release = spatialfuse.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "make_figures.py"]
templates_path = ["_templates"]

# Offline: no intersphinx inventories are fetched.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
# A page another engineer has not written yet may be missing from a glob in the toctree.
suppress_warnings = ["toc.empty_glob"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"spatialfuse {release}"


API_PAGES = {
    "io": "sf.io: readers and writers",
    "reg": "sf.reg: transforms and registration",
    "pp": "sf.pp: preprocessing",
    "tl": "sf.tl: integration tools",
    "pl": "sf.pl: plots",
    "datasets": "sf.datasets: synthetic data",
    "errors": "sf.errors: error and warning types",
}


def _write_api_pages(app, config) -> None:
    """One page per namespace listing everything in its ``__all__`` (so none goes stale)."""
    import importlib

    out = HERE / "api"
    out.mkdir(exist_ok=True)
    for namespace, title in API_PAGES.items():
        module = importlib.import_module(f"spatialfuse.{namespace}")
        public = getattr(module, "__all__", None) or [
            name
            for name, obj in vars(module).items()
            if isinstance(obj, type) and obj.__module__ == module.__name__ and name[0] != "_"
        ]
        names = "\n".join(f"   {name}" for name in public)
        text = (
            f"{title}\n{'=' * len(title)}\n\n"
            f".. automodule:: spatialfuse.{namespace}\n   :no-members:\n\n"
            f".. currentmodule:: spatialfuse.{namespace}\n\n"
            f".. autosummary::\n   :toctree: generated\n   :nosignatures:\n\n{names}\n"
        )
        page = out / f"{namespace}.rst"
        if not page.is_file() or page.read_text(encoding="utf-8") != text:
            page.write_text(text, encoding="utf-8")


def _make_figures(app) -> None:
    """Draw the figures from their source script (offline, matplotlib only)."""
    import make_figures

    make_figures.main(HERE / "_static")


def _make_cli_help(app) -> None:
    """Write every command's ``--help`` text for ``cli.md`` to include."""
    from click.testing import CliRunner

    from spatialfuse.cli.main import cli

    runner = CliRunner()
    parts = []
    for args in [[], *([name] for name in sorted(cli.commands))]:
        result = runner.invoke(cli, [*args, "--help"], prog_name="spatialfuse", terminal_width=100)
        command = f"$ spatialfuse {' '.join(args)} --help".replace("  ", " ")
        parts.append(command + "\n" + result.output)
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    (out / "cli_help.txt").write_text("\n".join(parts), encoding="utf-8")


def setup(app) -> None:
    """Register the lexer and the build-time page writers."""
    from pygments.lexers.special import TextLexer

    # Mermaid blocks (architecture.md's layer diagram) show as text here; GitHub draws them.
    app.add_lexer("mermaid", TextLexer)
    app.connect("config-inited", _write_api_pages)  # before Sphinx lists the source files
    app.connect("builder-inited", _make_figures)
    app.connect("builder-inited", _make_cli_help)
