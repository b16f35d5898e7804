"""The self-contained HTML QC report: a small document model and its renderer.

A report is a title, a list of :class:`ReportSection` (each with a status, text, tables, figures
and subsections) and a nested ``metadata`` mapping (versions, parameters). :func:`render_report`
renders it to one HTML document that needs nothing else (:func:`write_report` writes it
atomically): figures are PNG ``data:`` URIs, the CSS is inline, there is no JavaScript, and a
Content-Security-Policy forbids loading anything that is not a ``data:`` image, so the file reads
the same offline, attached to an e-mail or archived.

Every string the caller supplies is HTML-escaped; nothing is interpreted as markup.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import os
import re
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialfuse._io_utils import atomic_path
from spatialfuse._json import jsonable
from spatialfuse._text import printable
from spatialfuse._version import __version__
from spatialfuse.workflow._report_style import STATUS_COLOURS, stylesheet

if TYPE_CHECKING:
    import matplotlib.figure
    import pandas as pd

__all__ = ["ReportFigure", "ReportSection", "ReportTable", "render_report", "write_report"]

#: Allowed section statuses (``None`` means the section has no status).
STATUSES = tuple(STATUS_COLOURS)
#: Resolution matplotlib figures are rendered at; they are shown at 100 dpi (matplotlib's screen
#: size), so the PNG stays sharp on high-density screens.
FIGURE_DPI = 150
_SHOWN_DPI = 100
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Forbid every fetch: only inline styles and data: images may load.
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'"
)
METADATA_ANCHOR = "versions-and-parameters"


# -------------------------------------------------------------------------------------------------
# document model
# -------------------------------------------------------------------------------------------------


@dataclass
class ReportFigure:
    """One figure of a report section.

    Parameters
    ----------
    caption
        Text shown under the figure.
    figure
        A matplotlib Figure (rendered to PNG at :data:`FIGURE_DPI` and closed once the report is
        rendered) or the bytes of a PNG file.
    alt
        Text alternative for the image (default: the caption).
    """

    caption: str
    figure: matplotlib.figure.Figure | bytes
    alt: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.figure, bytearray | memoryview):
            self.figure = bytes(self.figure)
        if isinstance(self.figure, bytes):
            if not self.figure.startswith(_PNG_SIGNATURE):
                raise ValueError(f"figure {self.caption!r}: the bytes are not a PNG file")
        elif not callable(getattr(self.figure, "savefig", None)):
            raise TypeError(
                f"figure {self.caption!r}: expected a matplotlib Figure or PNG bytes, "
                f"got {type(self.figure).__name__}"
            )


@dataclass
class ReportTable:
    """A table with a caption.

    Parameters
    ----------
    data
        A :class:`pandas.DataFrame` (columns as columns; the index is shown unless it is the
        default ``0..n-1``) or a mapping (shown as key/value rows; nested mappings nest).
    caption
        Title shown above the table.
    max_rows
        DataFrame rows shown; the rest are counted in a last row.
    collapsed
        Shown folded under its caption (a ``<details>`` block the reader opens): for numbers
        kept for reference next to a table that explains them.
    """

    data: pd.DataFrame | Mapping[str, Any]
    caption: str | None = None
    max_rows: int = 100
    collapsed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data, Mapping) and not _is_dataframe(self.data):
            raise TypeError(
                f"table {self.caption!r}: expected a pandas DataFrame or a mapping, "
                f"got {type(self.data).__name__}"
            )
        if not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ValueError(f"table {self.caption!r}: max_rows must be a positive integer")


@dataclass
class ReportSection:
    """One section of a report (and, through ``subsections``, its children).

    Content is shown in this order: paragraphs, notes, tables, figures, subsections.

    Parameters
    ----------
    title
        Heading; also names the section's anchor and its table-of-contents entry.
    status
        ``"ok"``, ``"warning"``, ``"failed"``, ``"skipped"`` or ``None``; shown as a coloured badge
        beside the heading and in the table of contents.
    paragraphs
        Plain-text paragraphs.
    notes
        Short statements shown as a list tinted with the status colour, e.g. why a step failed.
    tables
        :class:`ReportTable`, or bare DataFrames and mappings (no caption).
    figures
        :class:`ReportFigure` objects.
    subsections
        Child sections, numbered below this one.
    """

    title: str
    status: str | None = None
    paragraphs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[ReportTable | pd.DataFrame | Mapping[str, Any]] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    subsections: list[ReportSection] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(
                f"section {self.title!r}: status must be one of {STATUSES} or None, "
                f"got {self.status!r}"
            )
        for name in ("paragraphs", "notes", "tables", "figures", "subsections"):
            value = getattr(self, name)
            if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
                raise TypeError(f"section {self.title!r}: {name} must be a list")
            setattr(self, name, list(value))
        self.tables = [t if isinstance(t, ReportTable) else ReportTable(t) for t in self.tables]
        for figure in self.figures:
            if not isinstance(figure, ReportFigure):
                raise TypeError(
                    f"section {self.title!r}: figures must be ReportFigure objects, "
                    f"got {type(figure).__name__}"
                )
        for child in self.subsections:
            if not isinstance(child, ReportSection):
                raise TypeError(
                    f"section {self.title!r}: subsections must be ReportSection objects, "
                    f"got {type(child).__name__}"
                )

    def walk(self) -> Iterator[ReportSection]:
        """Yield this section, then every subsection depth-first."""
        yield self
        for child in self.subsections:
            yield from child.walk()


# -------------------------------------------------------------------------------------------------
# public API
# -------------------------------------------------------------------------------------------------


def write_report(path: str | os.PathLike, text: str) -> Path:
    """Write a report's HTML (:func:`render_report`) atomically: a temporary file, then a rename.

    Parameters
    ----------
    path
        Destination ``.html`` file; its folder is created if needed.
    text
        The document :func:`render_report` returned.

    Returns
    -------
    The path written. A failed write leaves an earlier file at ``path`` as it was.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        # File names that are not UTF-8 are shown with hex escapes (spatialfuse._text).
        tmp.write_text(printable(text), encoding="utf-8")
    return path


def render_report(
    *,
    title: str,
    sections: Sequence[ReportSection],
    metadata: Mapping[str, Any] | None = None,
    subtitle: str | None = None,
) -> str:
    """Render a self-contained HTML QC report (write it with :func:`write_report`).

    Parameters
    ----------
    title
        Report title (page title and heading).
    sections
        Top-level sections, numbered 1, 2, … in order.
    metadata
        Versions, parameters and anything else nested (mappings, lists, scalars), shown in a
        collapsible "Versions and parameters" block as nested tables and as JSON.
    subtitle
        One line under the title (e.g. the config file and the run's date).

    Returns
    -------
    The complete HTML document. Every matplotlib figure in ``sections`` is closed, whether or not
    rendering succeeded.
    """
    if isinstance(sections, ReportSection) or not isinstance(sections, Sequence):
        raise TypeError("sections must be a list of ReportSection objects")
    sections = list(sections)
    try:
        for section in sections:
            if not isinstance(section, ReportSection):
                raise TypeError(
                    f"sections must be ReportSection objects, got {type(section).__name__}"
                )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        return _Renderer().document(str(title), sections, metadata, subtitle)
    finally:
        for section in sections:
            if isinstance(section, ReportSection):
                for child in section.walk():
                    for figure in child.figures:
                        _close_figure(figure.figure)


# -------------------------------------------------------------------------------------------------
# rendering
# -------------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].rstrip("-")


def _badge(status: str | None) -> str:
    return "" if status is None else f'<span class="badge {status}">{status}</span>'


class _Renderer:
    """Numbers sections, assigns anchors and assembles the document."""

    def __init__(self) -> None:
        self._anchors: set[str] = {METADATA_ANCHOR}

    def _anchor(self, number: str, title: str) -> str:
        base = f"s{number.replace('.', '-')}"
        slug = _slug(title)
        anchor = f"{base}-{slug}" if slug else base
        while anchor in self._anchors:
            anchor += "-x"
        self._anchors.add(anchor)
        return anchor

    def document(
        self,
        title: str,
        sections: list[ReportSection],
        metadata: Mapping[str, Any] | None,
        subtitle: str | None,
    ) -> str:
        numbered = [self._number(section, str(i)) for i, section in enumerate(sections, 1)]
        toc = self._toc(numbered, metadata is not None)
        body = "\n".join(self._section(entry, level=2) for entry in numbered)
        head = [f"<h1>{_esc(title)}</h1>"]
        if subtitle:
            head.append(f'<p class="subtitle">{_esc(subtitle)}</p>')
        head.append(_tally(sections))
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            f'<meta name="generator" content="spatialfuse {_esc(__version__)}">',
            '<link rel="icon" href="data:,">',
            f"<title>{_esc(title)}</title>",
            f"<style>{stylesheet()}</style>",
            "</head>",
            "<body>",
            '<div class="page">',
            '<header class="report">',
            *head,
            "</header>",
            toc,
            "<main>",
            body,
            "</main>",
        ]
        if metadata is not None:
            parts.append(_metadata_block(metadata))
        parts += [
            f"<footer>Written by spatialfuse {_esc(__version__)}. Self-contained: figures are "
            "embedded and nothing is loaded from elsewhere.</footer>",
            "</div>",
            "</body>",
            "</html>",
            "",
        ]
        return "\n".join(parts)

    def _number(self, section: ReportSection, number: str) -> dict:
        return {
            "section": section,
            "number": number,
            "anchor": self._anchor(number, section.title),
            "children": [
                self._number(child, f"{number}.{i}")
                for i, child in enumerate(section.subsections, 1)
            ],
        }

    def _toc(self, numbered: list[dict], has_metadata: bool) -> str:
        def items(entries: list[dict]) -> str:
            out = []
            for entry in entries:
                section = entry["section"]
                nested = f"<ol>{items(entry['children'])}</ol>" if entry["children"] else ""
                out.append(
                    f'<li><a href="#{entry["anchor"]}"><span class="num">{entry["number"]}</span>'
                    f"{_esc(section.title)}</a>{_badge(section.status)}{nested}</li>"
                )
            return "".join(out)

        meta = (
            f'<li><a href="#{METADATA_ANCHOR}"><span class="num"></span>Versions and parameters</a>'
            "</li>"
            if has_metadata
            else ""
        )
        return (
            '<nav class="toc" aria-label="Contents"><h2>Contents</h2>'
            f"<ol>{items(numbered)}{meta}</ol></nav>"
        )

    def _section(self, entry: dict, level: int) -> str:
        section: ReportSection = entry["section"]
        heading = min(level, 6)
        classes = f"level-{heading}" + (f" {section.status}" if section.status else "")
        parts = [
            f'<section id="{entry["anchor"]}" class="{classes}">',
            f'<h{heading}><a class="anchor" href="#{entry["anchor"]}">'
            f'<span class="num">{entry["number"]}</span>{_esc(section.title)}</a>'
            f"{_badge(section.status)}</h{heading}>",
        ]
        parts += [f"<p>{_esc(text)}</p>" for text in section.paragraphs]
        if section.notes:
            items = "".join(f"<li>{_esc(note)}</li>" for note in section.notes)
            classes = f"notes {section.status}" if section.status else "notes"
            parts.append(f'<ul class="{classes}">{items}</ul>')
        parts += [_table(table) for table in section.tables]
        if section.figures:
            parts.append('<div class="figures">')
            parts += [_figure(figure) for figure in section.figures]
            parts.append("</div>")
        parts += [self._section(child, level + 1) for child in entry["children"]]
        parts.append("</section>")
        return "\n".join(parts)


#: How the summary badges say each status ("3 sections failed", "1 section with warnings").
_TALLY_WORDS = {"warning": "with warnings"}


def _tally(sections: Sequence[ReportSection]) -> str:
    counts = dict.fromkeys(STATUSES, 0)
    for section in sections:
        for child in section.walk():
            if child.status is not None:
                counts[child.status] += 1
    badges = "".join(
        f'<span class="badge {status}">{count} section{"s" if count > 1 else ""} '
        f"{_TALLY_WORDS.get(status, status)}</span>"
        for status, count in counts.items()
        if count
    )
    # A failure is counted in its section and every section above it: name where it happened
    # (the sections that failed with no failed subsection), so "3 sections failed" is not read
    # as three problems.
    where = [
        child.title
        for section in sections
        for child in section.walk()
        if child.status == "failed" and not any(c.status == "failed" for c in child.subsections)
    ]
    note = f'<p class="tally-note">Failed: {_esc("; ".join(where))}.</p>' if where else ""
    return f'<div class="tally">{badges}</div>{note}' if badges else ""


# -------------------------------------------------------------------------------------------------
# figures
# -------------------------------------------------------------------------------------------------


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format requires to come first."""
    if len(png) < 24 or png[12:16] != b"IHDR":
        raise ValueError("PNG bytes have no IHDR header")
    return struct.unpack(">II", png[16:24])


def _figure(item: ReportFigure) -> str:
    if isinstance(item.figure, bytes):
        png = item.figure
        width, height = _png_size(png)
        shown_width, shown_height = width, height
    else:
        buffer = io.BytesIO()
        item.figure.savefig(
            buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight", facecolor="white"
        )
        png = buffer.getvalue()
        width, height = _png_size(png)
        shown_width = round(width * _SHOWN_DPI / FIGURE_DPI)
        shown_height = round(height * _SHOWN_DPI / FIGURE_DPI)
    data = base64.b64encode(png).decode("ascii")
    alt = item.alt if item.alt is not None else item.caption
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}" '
        f'width="{shown_width}" height="{shown_height}">'
        f"<figcaption>{_esc(item.caption)}</figcaption></figure>"
    )


def _close_figure(figure: Any) -> None:
    # A figure can only be registered with pyplot if pyplot was imported.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and isinstance(figure, sys.modules["matplotlib.figure"].Figure):
        pyplot.close(figure)


# -------------------------------------------------------------------------------------------------
# tables and nested values
# -------------------------------------------------------------------------------------------------


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    pandas = sys.modules.get("pandas")
    if pandas is not None and pandas.api.types.is_scalar(value):
        return bool(pandas.isna(value))  # NaN, NaT and pd.NA
    return isinstance(value, float) and math.isnan(value)


def _format_number(value: numbers.Number) -> str:
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if not isinstance(value, numbers.Real):
        return str(value)
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e15):
        return f"{value:.3e}"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _cell(value: Any, tag: str = "td") -> str:
    if _is_missing(value):
        return f'<{tag} class="na">–</{tag}>'
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return f'<{tag} class="n">{_format_number(value)}</{tag}>'
    if isinstance(value, Mapping) or (
        isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value)
    ):
        return f'<{tag} class="nest">{_nested(value)}</{tag}>'
    if isinstance(value, list | tuple):
        value = ", ".join(_plain(v) for v in value)
    return f"<{tag}>{_esc(_plain(value))}</{tag}>"


def _plain(value: Any) -> str:
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return _format_number(value)
    return str(value)


def _table(table: ReportTable) -> str:
    caption = f"<caption>{_esc(table.caption)}</caption>" if table.caption else ""
    if isinstance(table.data, Mapping):
        body = _nested(jsonable(table.data), caption=caption)
    else:
        body = _dataframe(table.data, caption, table.max_rows)
    if table.collapsed:
        summary = _esc(table.caption or "table")
        return (
            f'<details><summary>{summary}</summary><div class="table-wrap">{body}</div></details>'
        )
    return f'<div class="table-wrap">{body}</div>'


def _dataframe(df: pd.DataFrame, caption: str, max_rows: int) -> str:
    import pandas as pd

    show_index = not (
        isinstance(df.index, pd.RangeIndex)
        and df.index.start == 0
        and df.index.step == 1
        and df.index.name is None
    )
    columns = [
        " / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns.tolist()
    ]
    index_name = "" if df.index.name is None else str(df.index.name)
    header = ([f"<th>{_esc(index_name)}</th>"] if show_index else []) + [
        f'<th scope="col">{_esc(c)}</th>' for c in columns
    ]
    rows = []
    shown = df.iloc[:max_rows]
    for label, values in zip(shown.index, shown.itertuples(index=False, name=None), strict=True):
        cells = [f'<th scope="row">{_esc(label)}</th>'] if show_index else []
        cells += [_cell(v) for v in values]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    if len(df) > max_rows:
        span = len(header)
        rows.append(
            f'<tr class="more"><td colspan="{span}">… {len(df) - max_rows} more rows not shown '
            f"({len(df)} in all)</td></tr>"
        )
    return (
        f'<table class="df">{caption}<thead><tr>{"".join(header)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _nested(value: Any, caption: str = "") -> str:
    """A mapping as key/value rows (recursing into mappings and lists of mappings)."""
    if isinstance(value, Mapping):
        rows = [f'<tr><th scope="row">{_esc(k)}</th>{_cell(v)}</tr>' for k, v in value.items()]
    else:
        rows = [f'<tr><th scope="row">{i}</th>{_cell(v)}</tr>' for i, v in enumerate(value)]
    if not rows:
        rows = ['<tr><td class="na">(empty)</td></tr>']
    return f'<table class="kv">{caption}<tbody>{"".join(rows)}</tbody></table>'


def _metadata_block(metadata: Mapping[str, Any]) -> str:
    plain = jsonable(metadata)
    as_json = json.dumps(plain, indent=2, ensure_ascii=False)
    return (
        f'<details class="meta" id="{METADATA_ANCHOR}"><summary>Versions and parameters</summary>'
        f'<div class="table-wrap">{_nested(plain)}</div>'
        f'<details class="json"><summary>as JSON</summary><pre><code>{_esc(as_json)}</code></pre>'
        "</details></details>"
    )
