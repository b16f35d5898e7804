"""The HTML QC report: what it contains (parsed back with html.parser) and how it renders in a real
headless Chromium (no console errors, every image decoded, no request beyond the file itself)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import headless_chromium
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spatialfuse.pl._registration import _checkerboard
from spatialfuse.workflow._report import (
    FIGURE_DPI,
    ReportFigure,
    ReportSection,
    ReportTable,
    render_report,
    write_report,
)
from spatialfuse.workflow._report_style import STATUS_COLOURS

EVIL_TITLE = 'QC <script>alert("x")</script> & co'


# -------------------------------------------------------------------------------------------------
# a realistic sample report
# -------------------------------------------------------------------------------------------------


def _tissue(shape=(120, 150), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    mask = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.4) / 0.3) ** 2 < 1
    texture = 0.55 + 0.25 * np.sin(xx * 23) * np.cos(yy * 17) + 0.1 * rng.random(shape)
    return np.where(mask, texture, 0.0), mask


def _registration_figure(shift: int, dice: float):
    fixed, fixed_mask = _tissue()
    moving, moving_mask = (np.roll(x, (shift, 2 * shift), axis=(0, 1)) for x in _tissue(seed=1))
    fig, axes = plt.subplots(1, 3, figsize=(12.6, 4.4), constrained_layout=True)
    axes[0].imshow(np.clip(np.dstack([fixed, moving, fixed]), 0, 1))
    axes[0].set_title("overlay: fixed magenta, moving green")
    axes[1].imshow(_checkerboard(fixed, moving), cmap="gray")
    axes[1].set_title("checkerboard")
    axes[2].imshow(fixed, cmap="gray")
    axes[2].contour(fixed_mask.astype(float), levels=[0.5], colors="magenta", linewidths=1)
    axes[2].contour(moving_mask.astype(float), levels=[0.5], colors="lime", linewidths=1)
    axes[2].set_title(f"tissue outlines (Dice {dice:.3f})")
    for ax in axes:
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    return fig


def _inputs_figure():
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), constrained_layout=True)
    for ax, (name, cmap), seed in zip(
        axes,
        [("MSI (TIC)", "magma"), ("H&E", "pink"), ("Visium (UMI)", "viridis")],
        range(3),
        strict=True,
    ):
        image, _ = _tissue(seed=seed)
        ax.imshow(image, cmap=cmap)
        ax.set_title(name)
        ax.set_axis_off()
    return fig


def _coverage_figure():
    rng = np.random.default_rng(3)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    axes[0].hist(rng.poisson(4.2, 800), bins=np.arange(0, 13) - 0.5, color="#4c72b0")
    axes[0].set_xlabel("MSI pixels per spot")
    axes[0].set_ylabel("spots")
    xy = rng.uniform(0, 1, (800, 2))
    points = axes[1].scatter(xy[:, 0], xy[:, 1], c=rng.uniform(0, 1, 800), s=9, cmap="cividis")
    fig.colorbar(points, ax=axes[1], label="covered fraction")
    axes[1].set_aspect("equal")
    axes[1].set_title("coverage on the tissue")
    return fig


def _clusters_figure():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 1, (900, 2))
    labels = (xy[:, 0] * 2).astype(int) + 2 * (xy[:, 1] > 0.5)
    fig, ax = plt.subplots(figsize=(5.2, 4.4), constrained_layout=True)
    for k in range(4):
        ax.scatter(*xy[labels == k].T, s=10, label=f"cluster {k}")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    ax.set_aspect("equal")
    ax.set_title("joint clusters (WNN + Leiden)")
    return fig


def _pair_figure(ion: str, gene: str, seed: int):
    base, mask = _tissue(seed=seed)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), constrained_layout=True)
    for ax, (name, cmap), image in zip(
        axes, [(ion, "magma"), (gene, "viridis")], [base, base**2], strict=True
    ):
        shown = ax.imshow(np.where(mask, image, np.nan), cmap=cmap)
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_title(name)
        ax.set_axis_off()
    return fig


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


TOP_PAIRS = pd.DataFrame(
    {
        "ion": [f"mz-{760.5851 + 13.2 * i:.4f}" for i in range(14)],
        "gene": [f"Gene{i}" for i in range(14)],
        "pearson_r": np.linspace(0.82, 0.41, 14),
        "q_value": np.geomspace(1e-9, 2e-3, 14),
        "n_spots": np.arange(14) * 37 + 1210,
    }
)
INPUTS = pd.DataFrame(
    {
        "file": ["msi.imzML", "he.ome.tif", "visium/"],
        "pixel size (µm)": [50.0, 1.0, 0.9875],
        "calibration": ["imzML IMS:1000046/47", "OME PhysicalSizeX", "spot pitch (100 µm)"],
        "shape": ["62 × 50", "3000 × 2400", "3120 × 2760"],
    },
    index=pd.Index(["MSI", "H&E", "Visium"], name="input"),
)
METADATA = {
    "versions": {"spatialfuse": "0.1.0.dev0", "numpy": np.__version__, "python": "3.11"},
    "parameters": {
        "registration": {
            "msi_to_he": {"kind": "affine", "mirror_search": True, "levels": [4, 2, 1]},
            "visium_to_he": {"kind": "affine", "max_rotation_deg": np.float64(180.0)},
        },
        "mapping": {"method": "area", "spot_diameter_um": 55.0},
        "clusters": {"resolution": 0.8, "n_neighbors": np.int64(15)},
    },
    "config": 'run.yaml <with> "odd" & characters',
}
PNG_SIZE = (37, 23)


def build_sample_report(path: Path, *, title: str = EVIL_TITLE) -> Path:
    """A report like the pipeline's: calibration, an ok and a failed registration, coverage,
    clusters, top pairs with their maps, versions and parameters."""
    pair_sections = [
        ReportSection(
            title=f"{row.ion} × {row.gene}",
            paragraphs=[f"Pearson r = {row.pearson_r:.3f} over {row.n_spots} spots."],
            figures=[
                ReportFigure(
                    f"{row.ion} and {row.gene} on the tissue", _pair_figure(row.ion, row.gene, i)
                )
            ],
        )
        for i, row in enumerate(TOP_PAIRS.head(2).itertuples())
    ]
    sections = [
        ReportSection(
            title="Inputs and calibration",
            status="ok",
            paragraphs=["Three modalities, each in its own frame, in micrometres."],
            tables=[ReportTable(INPUTS, caption="Inputs")],
            figures=[ReportFigure("The three inputs at registration resolution", _inputs_figure())],
        ),
        ReportSection(
            title="Registrations",
            subsections=[
                ReportSection(
                    title="MSI → H&E",
                    status="ok",
                    paragraphs=["Affine after a rotation/mirror search; mirrored start chosen."],
                    tables=[
                        ReportTable(
                            {
                                "dice": 0.9412,
                                "nmi_gain": 0.183,
                                "rotation_deg": 212.4,
                                "mirror": True,
                            },
                            caption="Metrics",
                        )
                    ],
                    figures=[
                        ReportFigure(
                            "Overlay, checkerboard and outlines", _registration_figure(1, 0.941)
                        )
                    ],
                ),
                ReportSection(
                    title="Visium → H&E",
                    status="failed",
                    paragraphs=["The registration did not pass its quality checks."],
                    notes=[
                        "Dice 0.412 < 0.80 (threshold)",
                        "NMI gain −0.02: the best start is no better than the identity",
                    ],
                    tables=[{"dice": 0.412, "nmi_gain": -0.02, "rotation_deg": float("nan")}],
                    figures=[
                        ReportFigure(
                            "Overlay of the failed registration", _registration_figure(18, 0.412)
                        )
                    ],
                ),
            ],
        ),
        ReportSection(
            title="Spot coverage",
            status="warning",
            paragraphs=["MSI pixels per Visium spot (area rule)."],
            notes=["112 spots (4.1 %) have no MSI pixel: they lie outside the MSI raster."],
            figures=[
                ReportFigure("Coverage", _coverage_figure()),
                ReportFigure("A PNG given as bytes", _png(*PNG_SIZE), alt="blue rectangle"),
            ],
        ),
        ReportSection(
            title="Joint clusters",
            status="skipped",
            paragraphs=["Shown for the MSI ∩ Visium spots only."],
            tables=[
                ReportTable(
                    {"cluster 0": 231, "cluster 1": 198, "cluster 2": 254, "cluster 3": 217},
                    caption="Spots per cluster",
                )
            ],
            figures=[ReportFigure("Clusters on the tissue", _clusters_figure())],
        ),
        ReportSection(
            title="Top cross-modality pairs",
            paragraphs=["Ion–gene pairs ranked by Pearson r across spots; <b>not</b> markup."],
            tables=[ReportTable(TOP_PAIRS, caption="Top pairs", max_rows=10)],
            subsections=pair_sections,
        ),
    ]
    text = render_report(
        title=title, sections=sections, metadata=METADATA, subtitle="run.yaml · 2026-11-24"
    )
    return write_report(path, text)


N_FIGURES = 8


# -------------------------------------------------------------------------------------------------
# the HTML, parsed back
# -------------------------------------------------------------------------------------------------


class _Doc(HTMLParser):
    """Elements with their attributes and text, and the open-element stack at each text run."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict, list[str]]] = []  # (tag, attrs, text parts)
        self._open: list[tuple[str, dict, list[str]]] = []

    _VOID = frozenset({"meta", "link", "img", "br", "hr", "input"})

    def handle_starttag(self, tag, attrs):
        element = (tag, dict(attrs), [])
        self.elements.append(element)
        if tag not in self._VOID:
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for element in self._open:
            element[2].append(data)

    def find(self, tag, **attrs):
        return [
            (a, "".join(t))
            for g, a, t in self.elements
            if g == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]

    def with_class(self, tag, cls):
        return [
            (a, "".join(t))
            for g, a, t in self.elements
            if g == tag and cls in a.get("class", "").split()
        ]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return build_sample_report(tmp_path_factory.mktemp("report") / "qc" / "report.html")


@pytest.fixture(scope="module")
def doc(report) -> _Doc:
    parser = _Doc()
    parser.feed(report.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_title_and_user_text_are_escaped(doc, report):
    assert doc.find("title")[0][1] == EVIL_TITLE
    assert doc.find("h1")[0][1] == EVIL_TITLE
    assert doc.find("script") == []
    assert doc.find("b") == []  # the paragraph's <b> is text
    assert any("<b>not</b> markup" in text for _, text in doc.find("p"))
    assert "<script>" not in report.read_text(encoding="utf-8")


def test_sections_are_numbered_and_linked_from_the_contents(doc):
    sections = doc.find("section")
    ids = [a["id"] for a, _ in sections]
    assert len(ids) == len(set(ids)) == 9
    toc_links = [a["href"] for a, _ in doc.find("a") if a.get("href", "").startswith("#")]
    toc = [h for h in toc_links if h.lstrip("#") in ids or h == "#versions-and-parameters"]
    assert {h.lstrip("#") for h in toc} == set(ids) | {"versions-and-parameters"}
    headings = {tag: [text for _, text in doc.find(tag)] for tag in ("h2", "h3", "h4")}
    assert headings["h2"][0] == "Contents"
    assert headings["h2"][1:] == [
        "1Inputs and calibrationok",
        "2Registrations",
        "3Spot coveragewarning",
        "4Joint clustersskipped",
        "5Top cross-modality pairs",
    ]
    assert headings["h3"] == [
        "2.1MSI → H&Eok",
        "2.2Visium → H&Efailed",
        f"5.1{TOP_PAIRS.ion[0]} × {TOP_PAIRS.gene[0]}",
        f"5.2{TOP_PAIRS.ion[1]} × {TOP_PAIRS.gene[1]}",
    ]
    status = {a["id"]: [*a["class"].split(), None][1] for a, _ in sections}
    assert sorted(s for s in status.values() if s) == ["failed", "ok", "ok", "skipped", "warning"]
    tally = [text for _, text in doc.with_class("span", "badge") if text[0].isdigit()]
    assert tally == [
        "2 sections ok",
        "1 section with warnings",
        "1 section failed",
        "1 section skipped",
    ]
    # under the badges, where the failure happened
    notes = [text for _, text in doc.with_class("p", "tally-note")]
    assert notes == ["Failed: Visium → H&E."]


def test_figures_are_embedded_pngs_with_alt_text(doc):
    images = doc.find("img")
    assert len(images) == N_FIGURES
    captions = [text for _, text in doc.find("figcaption")]
    assert len(captions) == N_FIGURES
    for attrs, _ in images:
        assert attrs["alt"]
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        png = Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix) :])))
        png.load()
        shown = int(attrs["width"]), int(attrs["height"])
        if attrs["alt"] == "blue rectangle":
            assert png.size == shown == PNG_SIZE
        else:  # matplotlib figures: rendered at FIGURE_DPI, shown at 100 dpi
            assert shown == pytest.approx(np.array(png.size) * 100 / FIGURE_DPI, abs=0.51)
    inputs_png = [a for a, _ in images if a["alt"] == "The three inputs at registration resolution"]
    width = Image.open(io.BytesIO(base64.b64decode(inputs_png[0]["src"].split(",")[1]))).size[0]
    assert width == pytest.approx(10 * FIGURE_DPI, rel=0.1)  # a 10-inch figure, tight bbox


def test_tables_hold_the_values_given(doc):
    tables = [(a, text) for a, text in doc.find("table")]
    captions = [text for _, text in doc.find("caption")]
    assert captions == ["Inputs", "Metrics", "Spots per cluster", "Top pairs"]
    rows = _rows(doc, "Top pairs")
    assert rows[0] == ["ion", "gene", "pearson_r", "q_value", "n_spots"]
    body = rows[1:-1]
    assert len(body) == 10
    assert "4 more rows" in rows[-1][0]
    for cells, expected in zip(body, TOP_PAIRS.head(10).itertuples(index=False), strict=True):
        assert cells[:2] == [expected.ion, expected.gene]
        assert float(cells[2]) == pytest.approx(expected.pearson_r, rel=1e-3)
        assert float(cells[3]) == pytest.approx(expected.q_value, rel=1e-3)
        assert int(cells[4].replace(",", "")) == expected.n_spots
    inputs = _rows(doc, "Inputs")
    assert inputs[0] == ["input", *INPUTS.columns]
    assert [r[0] for r in inputs[1:]] == ["MSI", "H&E", "Visium"]
    assert [float(r[2]) for r in inputs[1:]] == pytest.approx(INPUTS["pixel size (µm)"].tolist())
    failed = next(t for a, t in tables if "0.412" in t and "nmi_gain" in t)
    assert "–" in failed  # NaN shown as a dash, not "nan"
    assert "nan" not in failed.lower()


def test_notes_carry_the_failure_reasons(doc):
    notes = doc.with_class("ul", "notes")
    assert [a["class"] for a, _ in notes] == ["notes failed", "notes warning"]
    assert "Dice 0.412 < 0.80 (threshold)" in notes[0][1]


def test_versions_and_parameters_are_collapsible_and_complete(doc):
    details = doc.find("details", id="versions-and-parameters")
    assert len(details) == 1
    assert "open" not in details[0][0]
    dumped = json.loads(doc.find("pre")[0][1])
    expected = json.loads(json.dumps(METADATA, default=lambda v: v.item()))
    assert dumped == expected
    assert "clusters" in details[0][1] and "n_neighbors" in details[0][1]


def test_nothing_is_loaded_from_elsewhere(doc, report):
    for tag, attrs, _ in doc.elements:
        for key in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("#", "data:")), (tag, key, value[:60])
    assert doc.find("link", rel="stylesheet") == []
    csp = doc.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert "default-src 'none'" in csp[0][0]["content"]
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "@import" not in text


def _rows(doc: _Doc, caption: str) -> list[list[str]]:
    """Rows (header first) of the table with this caption, read from the element list."""
    start = next(
        i for i, (g, _, t) in enumerate(doc.elements) if g == "caption" and "".join(t) == caption
    )
    rows: list[list[str]] = []
    for tag, _, text in doc.elements[start + 1 :]:
        if tag in ("table", "div", "section", "details"):
            break  # past the end of this table
        if tag == "tr":
            rows.append([])
        elif tag in ("td", "th"):
            rows[-1].append("".join(text))
    return rows


# -------------------------------------------------------------------------------------------------
# behaviour of the writer
# -------------------------------------------------------------------------------------------------


def test_figures_are_closed_even_when_writing_fails(tmp_path):
    plt.close("all")
    nested = ReportSection("child", figures=[ReportFigure("b", _clusters_figure())])
    sections = [
        ReportSection("s", figures=[ReportFigure("a", _clusters_figure())], subsections=[nested])
    ]
    write_report(tmp_path / "ok.html", render_report(title="x", sections=sections))
    assert plt.get_fignums() == []

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fig = _clusters_figure()
    with pytest.raises(OSError):
        write_report(
            blocker / "report.html",
            render_report(
                title="x", sections=[ReportSection("s", figures=[ReportFigure("c", fig)])]
            ),
        )
    assert plt.get_fignums() == []
    fig = _clusters_figure()
    with pytest.raises(TypeError, match="metadata must be a mapping"):
        render_report(
            title="x", sections=[ReportSection("s", figures=[ReportFigure("c", fig)])], metadata=[1]
        )
    assert plt.get_fignums() == []


def test_a_failed_write_leaves_the_previous_report(tmp_path):
    path = tmp_path / "report.html"
    write_report(path, render_report(title="first", sections=[ReportSection("one", status="ok")]))
    before = path.read_bytes()

    class Exploding:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_report(
            path,
            render_report(
                title="second",
                sections=[ReportSection("two", figures=[ReportFigure("c", Exploding())])],
            ),
        )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_deep_nesting_and_duplicate_titles_get_unique_anchors():
    deep = ReportSection("same")
    for _ in range(6):
        deep = ReportSection("same", subsections=[deep, ReportSection("same")])
    parser = _Doc()
    parser.feed(
        render_report(title="t", sections=[deep, ReportSection("same"), ReportSection("!!")])
    )
    ids = [a["id"] for a, _ in parser.find("section")]
    assert len(ids) == len(set(ids)) == 15
    assert "s3" in ids  # a title with no letters still gets an anchor
    assert parser.find("h6")  # headings stop at h6
    assert not parser.find("h7")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ReportSection("s", status="great"), ValueError, "status must be one of"),
        (
            lambda: ReportSection("s", paragraphs="one string"),
            TypeError,
            "paragraphs must be a list",
        ),
        (lambda: ReportSection("s", figures=[b"png"]), TypeError, "ReportFigure"),
        (lambda: ReportSection("s", subsections=["x"]), TypeError, "ReportSection"),
        (lambda: ReportSection("s", tables=[[1, 2]]), TypeError, "DataFrame or a mapping"),
        (lambda: ReportFigure("c", b"GIF89a..."), ValueError, "not a PNG"),
        (lambda: ReportFigure("c", np.zeros((3, 3))), TypeError, "matplotlib Figure or PNG"),
        (lambda: ReportTable({"a": 1}, max_rows=0), ValueError, "max_rows"),
        (lambda: render_report(title="t", sections=ReportSection("s")), TypeError, "list of"),
    ],
)
def test_bad_input_is_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


# -------------------------------------------------------------------------------------------------
# in a real browser
# -------------------------------------------------------------------------------------------------


def test_report_renders_cleanly_in_chromium(chromium, report, tmp_path):
    url = report.resolve().as_uri()
    page, tab = chromium.load(url, width=1280, height=900)
    assert page.errors == []
    assert page.foreign_requests == []
    assert [u for u in page.requests if not u.startswith("data:")] == [url]
    assert len(page.images) == N_FIGURES
    for image in page.images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
    # nothing wider than the window, even a narrow one (figures scale down, wide tables scroll in
    # their box), and every contents link has a target
    assert chromium.evaluate("document.documentElement.scrollWidth <= window.innerWidth", tab)
    missing = chromium.evaluate(
        "Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
        ".filter(a => !document.getElementById(a.getAttribute('href').slice(1))).length",
        tab,
    )
    assert missing == 0
    narrow, narrow_tab = chromium.load(url, width=600, height=900)
    assert narrow.errors == []
    assert chromium.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth", narrow_tab
    )
    # the badges really are painted in their colours
    shot = chromium.screenshot(tab, tmp_path / "report.png")
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    for status, (colour, _, _) in STATUS_COLOURS.items():
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        assert (pixels == rgb).all(axis=1).sum() > 50, status


def test_the_browser_check_catches_a_broken_page(chromium, tmp_path):
    """The same checks fail on a page with an external image, a missing file and a script error."""
    page_file = tmp_path / "broken.html"
    page_file.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<img src="https://example.org/logo.png" alt="remote"><img src="missing.png" alt="gone">'
        f'<img src="data:image/png;base64,{base64.b64encode(_png(4, 4)).decode()}" alt="fine">'
        '<script>console.error("boom")</script></body></html>'
    )
    page, _ = chromium.load(page_file.as_uri())
    assert "https://example.org/logo.png" in page.foreign_requests
    assert (tmp_path / "missing.png").as_uri() in page.foreign_requests
    assert "console.error: boom" in page.errors
    assert any("ERR_FILE_NOT_FOUND" in e for e in page.errors)
    assert [i["naturalWidth"] for i in page.images] == [0, 0, 4]


def test_no_browser_means_a_skip_reason_not_a_failure(monkeypatch, tmp_path):
    not_executable = tmp_path / "chromium"
    not_executable.write_text("")
    monkeypatch.setenv("SPATIALFUSE_CHROMIUM", str(not_executable))
    assert headless_chromium.find_chromium() is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert headless_chromium.install_chromium() == (
        None,
        "chromium is not installed and we are not root to apt-get install it",
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    path, why = headless_chromium.install_chromium()
    assert path is None and "apt-get is not available" in why
