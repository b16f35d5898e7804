"""The inline stylesheet of the HTML QC report (system fonts only: nothing is fetched)."""

from __future__ import annotations

#: Colours per section status: badge and border, badge text (chosen for contrast), note tint.
STATUS_COLOURS = {
    "ok": ("#1a7f37", "#ffffff", "#dafbe1"),
    "warning": ("#d4a72c", "#1f2328", "#fff8c5"),
    "failed": ("#cf222e", "#ffffff", "#ffebe9"),
    "skipped": ("#6e7781", "#ffffff", "#f6f8fa"),
}

_BASE = """
:root {
  color-scheme: light;
  --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0969da;
}
* { box-sizing: border-box; }
html { font-size: 15px; }
body {
  margin: 0; background: #eef1f4; color: var(--fg); line-height: 1.5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans",
    "DejaVu Sans", Arial, sans-serif;
}
.page { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
header.report { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 20px 24px; margin-bottom: 16px; }
header.report h1 { margin: 0 0 4px; font-size: 1.7rem; line-height: 1.25; overflow-wrap: anywhere; }
header.report .subtitle { margin: 0; color: var(--muted); overflow-wrap: anywhere; }
.tally { margin: 12px 0 0; display: flex; flex-wrap: wrap; gap: 6px; }
.tally-note { margin: 8px 0 0; overflow-wrap: anywhere; }
nav.toc { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 24px; margin-bottom: 16px; }
nav.toc h2 { font-size: 1rem; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
nav.toc ol { list-style: none; margin: 0; padding-left: 0; }
nav.toc ol ol { padding-left: 1.6em; }
nav.toc li { margin: 2px 0; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
nav.toc .num { display: inline-block; min-width: 2.4em; color: var(--muted);
  font-variant-numeric: tabular-nums; }
section.level-2 { background: #fff; border: 1px solid var(--line);
  border-left: 5px solid var(--line); border-radius: 8px; padding: 6px 24px 18px;
  margin-bottom: 16px; }
section.level-3, section.level-4, section.level-5, section.level-6 {
  border-top: 1px solid var(--line); margin-top: 18px; padding-top: 4px; }
h2, h3, h4, h5, h6 { line-height: 1.3; overflow-wrap: anywhere; }
section h2 { font-size: 1.35rem; margin: 14px 0 10px; }
section h3 { font-size: 1.12rem; margin: 12px 0 8px; }
section h4, section h5, section h6 { font-size: 1rem; margin: 10px 0 6px; }
.num { color: var(--muted); font-weight: 600; margin-right: .35em; }
a.anchor { color: inherit; text-decoration: none; }
a.anchor:hover { text-decoration: underline; }
p { margin: 6px 0 10px; max-width: 80ch; overflow-wrap: anywhere; }
.badge { display: inline-block; vertical-align: middle; margin-left: .5em; padding: 1px 9px;
  border-radius: 999px; font-size: .72rem; font-weight: 700; letter-spacing: .05em;
  text-transform: uppercase; line-height: 1.6; white-space: nowrap; }
nav.toc .badge { font-size: .66rem; padding: 0 7px; }
.notes { margin: 8px 0 12px; padding: 8px 14px 8px 30px; border-radius: 6px;
  background: var(--soft); border: 1px solid var(--line); max-width: 90ch; }
.notes li { margin: 2px 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 10px 0 14px; max-width: 100%; }
table { border-collapse: collapse; font-size: .9rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 4px;
  color: var(--fg); }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
thead th { background: var(--soft); border-bottom: 2px solid var(--line); white-space: nowrap; }
tbody th { font-weight: 600; white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.na { color: var(--muted); text-align: center; }
tr.more td { color: var(--muted); font-style: italic; text-align: left; }
table.kv { min-width: 18em; }
table.kv td.n { text-align: left; }
table.kv td.nest { padding: 0; }
table.kv table.kv { width: 100%; min-width: 0; font-size: inherit; }
table.kv table.kv tr:last-child > * { border-bottom: none; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; margin: 12px 0 6px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 4px; background: #fff; }
figcaption { font-size: .88rem; color: var(--muted); margin-top: 4px; max-width: 90ch; }
details.meta { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 24px; margin-bottom: 16px; }
details.meta > summary { cursor: pointer; font-size: 1.2rem; font-weight: 600; padding: 4px 0; }
details.json > summary { cursor: pointer; color: var(--muted); margin: 10px 0 4px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  overflow-x: auto; font-size: .82rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", "Liberation Mono",
  Menlo, Consolas, monospace; }
footer { color: var(--muted); font-size: .85rem; text-align: center; margin-top: 24px; }
@media print {
  body { background: #fff; }
  section.level-2, header.report, nav.toc, details.meta { border-color: #bbb; }
  figure { break-inside: avoid; }
}
"""


def stylesheet() -> str:
    """The report's CSS: the base rules plus one badge and border colour per status."""
    rules = [_BASE]
    for status, (colour, text, tint) in STATUS_COLOURS.items():
        rules.append(f".badge.{status} {{ background: {colour}; color: {text}; }}")
        rules.append(f"section.level-2.{status} {{ border-left-color: {colour}; }}")
        rules.append(f".notes.{status} {{ border-color: {colour}; background: {tint}; }}")
    return "\n".join(rules)
