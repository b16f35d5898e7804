"""The documentation agrees with the package: layout, API pages, README, and runnable tutorial."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "spatialfuse"
NAMESPACES = ["io", "reg", "pp", "tl", "pl", "datasets"]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_architecture_mentions_every_module():
    # Each module must appear on a line that also names its folder (file names repeat across
    # folders: _read.py, _common.py, _convert.py).
    lines = (DOCS / "architecture.md").read_text(encoding="utf-8").splitlines()
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        folder = relative.parent.as_posix() + "/" if relative.parent != Path(".") else "top level"
        if path.name == "__init__.py" and folder != "top level":
            found = any(f"`{folder}`" in line for line in lines)  # the subpackage itself
        else:
            found = any(folder in line and f"`{path.name}`" in line for line in lines)
        if not found:
            missing.append(relative.as_posix())
    assert not missing, f"docs/architecture.md does not mention {missing}"


def test_every_namespace_has_an_api_page():
    # docs/conf.py writes docs/api/<namespace>.rst from each namespace's __all__ at build time.
    source = (DOCS / "conf.py").read_text(encoding="utf-8")
    pages = re.findall(r'^    "(\w+)": "sf\.', source, flags=re.MULTILINE)
    assert sorted(pages) == sorted([*NAMESPACES, "errors"])


def test_every_page_is_in_a_toctree():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    pages = {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.glob("*.md")}
    pages |= {f"api/{namespace}" for namespace in [*NAMESPACES, "errors"]}
    pages.discard("index")
    entries = re.findall(r"^[\w/*]+$", index, flags=re.MULTILINE)  # toctree lines, globs too
    missing = [page for page in sorted(pages) if not any(fnmatch(page, e) for e in entries)]
    assert not missing, f"not in docs/index.md's toctrees: {missing}"


def test_readme_quickstart_is_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^```bash\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    lines = [line for block in commands for line in block.splitlines() if line.strip()]
    assert lines == ["pip install -e . && spatialfuse demo", 'pip install -e ".[test]" && pytest']


def test_getting_started_has_the_quickstart_commands():
    text = (DOCS / "getting_started.md").read_text(encoding="utf-8")
    assert "pip install -e . && spatialfuse demo" in text
    assert 'pip install -e ".[test]" && pytest' in text


@pytest.mark.slow
def test_synthetic_tutorial_runs(tmp_path):
    blocks = _python_blocks((DOCS / "tutorial_synthetic.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    script = tmp_path / "tutorial.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ["qc.png", "clusters.png", "correlation.png", "gene_and_ion.png", "joint.h5mu"]:
        assert (tmp_path / name).stat().st_size > 0, name


def test_every_example_is_on_the_examples_page():
    page = (DOCS / "examples.md").read_text(encoding="utf-8")
    missing = [p.name for p in (ROOT / "examples").glob("*.py") if f"examples/{p.name}" not in page]
    assert not missing, f"docs/examples.md does not include {missing}"


@pytest.mark.slow
def test_sphinx_builds_without_warnings(tmp_path):
    for module in ["sphinx", "myst_parser", "numpydoc", "furo"]:
        pytest.importorskip(module, reason='the docs extra: pip install -e ".[docs]"')
    args = ["-W", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS)]
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", *args, str(tmp_path / "html")],
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "html" / "api" / "generated" / "spatialfuse.tl.map_to_spots.html").is_file()


def test_layer_diagram_is_current():
    """docs/architecture.md embeds the layer diagram docs/layer_diagram.py draws from the code."""
    import runpy

    script = runpy.run_path(str(DOCS / "layer_diagram.py"))
    assert script["main"](["--check"]) == 0, "run python docs/layer_diagram.py"


def _figure_script():
    """docs/make_figures.py as a module (it is a script beside the pages, not in the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_figures_are_small_and_every_one_is_shown():
    """docs/figures/ holds what make_figures.py made: each PNG small, each file on a page."""
    script = _figure_script()
    committed = sorted(p for p in (DOCS / "figures").rglob("*") if p.is_file())
    assert committed, "docs/figures/ is empty: run python docs/make_figures.py"
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    referenced = set(re.findall(r"\bfigures/[\w/.-]+\.(?:png|txt)\b", pages))
    big = [p.name for p in committed if p.suffix == ".png" and p.stat().st_size > script.MAX_BYTES]
    assert not big, f"PNGs over {script.MAX_BYTES} bytes: {big}"
    unused = [p.relative_to(DOCS).as_posix() for p in committed]
    unused = [p for p in unused if p not in referenced]
    assert not unused, f"in docs/figures but on no page: {unused}"
    missing = [r for r in referenced if not (DOCS / r).is_file()]
    assert not missing, f"pages show figures that do not exist: {missing}"


def test_figure_script_numbers_the_blocks_by_their_heading():
    script = _figure_script()
    steps = [step for step, _ in script.python_blocks(DOCS / "tutorial_synthetic.md")]
    assert steps == [1, 2, 2, 3, 4, 5, 6]
    steps = [step for step, _ in script.python_blocks(DOCS / "tutorial_real_data.md")]
    assert steps[:6] == [1, 2, 3, 4, 5, 6]
    assert steps[6:] and set(steps[6:]) == {None}  # "Your own data": shown, not run


def _without_timings(text: str) -> str:
    """Printed outputs with their seconds masked (they differ from run to run)."""
    return re.sub(r"\d+(?:\.\d+)? s\b", "… s", text)


def _same_outputs(made: Path, committed: Path) -> None:
    names = sorted(p.name for p in made.iterdir())
    assert names == sorted(p.name for p in committed.iterdir()), "python docs/make_figures.py"
    for text in made.glob("*.txt"):
        fresh = _without_timings(text.read_text(encoding="utf-8"))
        stored = _without_timings((committed / text.name).read_text(encoding="utf-8"))
        assert fresh == stored, f"{text.name} is stale: python docs/make_figures.py"


@pytest.mark.slow
def test_committed_outputs_come_from_the_pages_code(tmp_path):
    """The synthetic tutorial's and spectra page's printed outputs are what their code prints."""
    script = _figure_script()
    for target in ["synthetic", "spectra"]:
        script.TARGETS[target](tmp_path)
        _same_outputs(tmp_path / target, DOCS / "figures" / target)


@pytest.mark.slow
def test_real_data_tutorial_runs_on_the_bladder(shared_data, tmp_path, monkeypatch):
    """The real-data tutorial's code runs on the real files and prints what the page shows."""
    if not (shared_data / "paired" / "bladder_spamtp").is_dir():
        pytest.skip("the bladder pair is not in the shared data")
    monkeypatch.setenv("SPATIALFUSE_TEST_DATA", str(shared_data))
    _figure_script().bladder(tmp_path)
    _same_outputs(tmp_path / "bladder", DOCS / "figures" / "bladder")
