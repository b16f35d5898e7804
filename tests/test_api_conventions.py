"""The public API follows the house conventions (in the style of scanpy's ``test_api``).

For every public function of ``sf.pp``, ``sf.tl`` and ``sf.pl`` (names in ``__all__``): the data
object comes first, every boolean is keyword-only, every parameter has a type hint and is
documented, the docstring has a numpydoc ``Returns`` section, and functions that write into their
input take ``key_added`` (or are listed below with the reason they do not). Every public name of
every namespace has a docstring.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

NAMESPACES = ["io", "reg", "pp", "tl", "pl", "datasets"]
ANALYSIS = ["pp", "tl", "pl"]
SRC = Path(__file__).resolve().parents[1] / "src" / "spatialfuse"

# Names the first parameter (the data object) may have.
DATA_NAMES = {"adata", "mdata", "data", "msi", "visium", "rna", "result"}

# Functions that write into the object they are given (they take ``copy=``): each names its main
# output slot with ``key_added`` except these.
KEY_ADDED_EXCEPTIONS = {
    # Pipelines of scanpy steps that fill scanpy's standard slots (layers, X, var
    # "highly_variable", obsm "X_pca"); the clustering functions read them by those names
    # (``use_rep="X_pca"``), as ``sc.pp`` does.
    "pp.preprocess_rna": "writes scanpy's standard slots, read downstream by name",
    "pp.preprocess_msi": "writes scanpy's standard slots, read downstream by name",
}

# Functions that return a new object and leave their inputs untouched (no ``copy``); they need no
# ``key_added`` (``map_to_pixels`` has one anyway: the ``uns`` entry of the table it returns).
RETURNS_NEW = {
    "tl.map_to_spots": "a new spots × m/z AnnData",
    "tl.map_to_pixels": "a new pixels × genes AnnData",
    "tl.map_to_bins": "a new HD bins × m/z AnnData",
    "tl.aggregate_bins": "a new AnnData of coarser bins (the observations change)",
    "tl.joint_table": "a new MuData of copies",
    "tl.concatenate_modalities": "a new AnnData",
    "tl.cross_modal_correlation": "a DataFrame",
    "pp.pick_peaks": "a new pixels × peaks AnnData (the m/z dimension changes)",
}

# Functions of ``sf.pl`` that return something other than a matplotlib Figure.
NOT_FIGURES = {
    "pl.pick_landmarks": "an interactive napari window (LandmarkPicker), not a figure",
}


def _public(namespace: str) -> list[tuple[str, object]]:
    module = importlib.import_module(f"spatialfuse.{namespace}")
    return [(name, getattr(module, name)) for name in module.__all__]


def _functions() -> list[tuple[str, object]]:
    return [
        (f"{ns}.{name}", obj)
        for ns in ANALYSIS
        for name, obj in _public(ns)
        if inspect.isfunction(obj)
    ]


FUNCTIONS = _functions()
IDS = [name for name, _ in FUNCTIONS]


def _is_bool(parameter: inspect.Parameter) -> bool:
    annotation = parameter.annotation
    if annotation is bool:
        return True
    if isinstance(annotation, str):
        return "bool" in {part.strip() for part in annotation.split("|")}
    return isinstance(parameter.default, bool)


def _sections(doc: str) -> dict[str, str]:
    """Numpydoc sections of a docstring, by title (a simple parser: title, underline, body)."""
    lines = inspect.cleandoc(doc).splitlines()
    sections, title, body = {}, "Summary", []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"-{3,}", following.strip()):
            sections[title] = "\n".join(body)
            title, body = line.strip(), []
        elif not re.fullmatch(r"-{3,}", line.strip()):
            body.append(line)
    sections[title] = "\n".join(body)
    return sections


def _parameter_names_simple(doc: str) -> set[str]:
    text = _sections(doc).get("Parameters", "")
    heads = [line for line in text.splitlines() if line and not line.startswith(" ")]
    return {part.strip().lstrip("*") for h in heads for part in h.split(":")[0].split(",")}


def _documented_parameters(doc: str) -> set[str]:
    """Parameter names of the Parameters section (numpydoc's parser where it is installed)."""
    try:
        from numpydoc.docscrape import NumpyDocString  # the docs extra
    except ImportError:
        return _parameter_names_simple(doc)
    names = [p.name for p in NumpyDocString(inspect.cleandoc(doc))["Parameters"]]
    return {part.strip().lstrip("*") for name in names for part in name.split(",")}


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=IDS)
def test_simple_parser_agrees_with_numpydoc(name, func):
    docscrape = pytest.importorskip("numpydoc.docscrape")
    doc = inspect.getdoc(func)
    assert _parameter_names_simple(doc) == _documented_parameters(doc)
    returns = docscrape.NumpyDocString(inspect.cleandoc(doc))["Returns"]
    assert bool(returns) == bool(_sections(doc).get("Returns", "").strip())


def test_the_lists_name_real_functions():
    names = set(IDS)
    for table in (KEY_ADDED_EXCEPTIONS, RETURNS_NEW, NOT_FIGURES):
        assert set(table) <= names, set(table) - names


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=IDS)
def test_data_object_first(name, func):
    first = next(iter(inspect.signature(func).parameters.values()))
    assert first.name in DATA_NAMES, f"{name}: first parameter {first.name!r}"
    assert first.default is inspect.Parameter.empty, f"{name}: the data object has a default"
    assert first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=IDS)
def test_booleans_are_keyword_only(name, func):
    positional = [
        p.name
        for p in inspect.signature(func).parameters.values()
        if _is_bool(p) and p.kind is not inspect.Parameter.KEYWORD_ONLY
    ]
    assert not positional, f"{name}: boolean parameters not keyword-only: {positional}"


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=IDS)
def test_type_hints(name, func):
    signature = inspect.signature(func)
    missing = [p for p, v in signature.parameters.items() if v.annotation is inspect._empty]
    assert not missing, f"{name}: parameters without a type hint: {missing}"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return hint"


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=IDS)
def test_numpydoc_parameters_and_returns(name, func):
    doc = inspect.getdoc(func)
    assert doc, f"{name} has no docstring"
    sections = _sections(doc)
    assert sections.get("Returns", "").strip(), f"{name}: no Returns section"
    documented = _documented_parameters(doc)
    parameters = set(inspect.signature(func).parameters)
    assert parameters == documented, (
        f"{name}: undocumented {sorted(parameters - documented)}, "
        f"documented but absent {sorted(documented - parameters)}"
    )


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=IDS)
def test_writers_take_key_added(name, func):
    parameters = inspect.signature(func).parameters
    returns = str(inspect.signature(func).return_annotation)
    if name.startswith("pl."):
        assert "copy" not in parameters and "key_added" not in parameters, f"{name} writes data"
        if name not in NOT_FIGURES:
            assert "Figure" in returns, f"{name}: a plot returns its Figure"
        return
    writes_in_place = "copy" in parameters
    assert writes_in_place != (name in RETURNS_NEW), (
        f"{name}: either it writes into its input (takes copy=) or returns a new object; "
        "list it in RETURNS_NEW with the reason"
    )
    if name in RETURNS_NEW:
        assert "None" not in returns, f"{name} returns a new object, not None"
        return
    assert parameters["copy"].default is False
    assert "None" in returns, f"{name}: with copy=False it returns None"
    if name in KEY_ADDED_EXCEPTIONS:
        assert "key_added" not in parameters, f"{name} has key_added now: drop the exception"
        return
    assert "key_added" in parameters, f"{name} writes into its input but has no key_added"
    returns_text = _sections(inspect.getdoc(func)).get("Returns", "")
    assert "key_added" in returns_text, f"{name}: the Returns section names no key_added slot"


def _documented_constant(namespace: str, name: str) -> bool:
    """A module-level constant is documented by a ``#:`` comment line right above it.

    It is defined in the namespace's folder or in ``core/`` (the data model it re-exports).
    """
    pattern = re.compile(rf"^#:.*\n{re.escape(name)}\s*(:[^=]*)?=", re.MULTILINE)
    paths = [*(SRC / namespace).rglob("*.py"), *(SRC / "core").rglob("*.py")]
    return any(pattern.search(path.read_text(encoding="utf-8")) for path in paths)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_name_is_documented(namespace):
    module = importlib.import_module(f"spatialfuse.{namespace}")
    assert inspect.getdoc(module), f"sf.{namespace} has no module docstring"
    assert module.__all__, f"sf.{namespace} exports nothing"
    undocumented = []
    for name, obj in _public(namespace):
        if inspect.isclass(obj):
            documented = bool(obj.__dict__.get("__doc__"))  # not a docstring inherited
        elif callable(obj):
            documented = bool(inspect.getdoc(obj))
        else:
            documented = _documented_constant(namespace, name)
        if not documented:
            undocumented.append(name)
    assert not undocumented, f"sf.{namespace}: no docstring for {undocumented}"


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_all_names_exist_and_are_unique(namespace):
    module = importlib.import_module(f"spatialfuse.{namespace}")
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"


def _returns_is_numpydoc(doc: str) -> bool:
    """A Returns section whose entries are a type line, then an indented description."""
    lines = [line for line in _sections(doc).get("Returns", "").splitlines() if line.strip()]
    if not lines or lines[0].startswith(" "):
        return False
    return all(
        head.startswith(" ") or (i + 1 < len(lines) and lines[i + 1].startswith(" "))
        for i, head in enumerate(lines)
    )


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_function_has_a_numpydoc_returns_section(namespace):
    bad = [
        name
        for name, obj in _public(namespace)
        if inspect.isfunction(obj) and not _returns_is_numpydoc(inspect.getdoc(obj) or "")
    ]
    assert not bad, f"sf.{namespace}: no numpydoc Returns section (type line + description): {bad}"
