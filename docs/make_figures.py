"""Draw the figures and capture the printed outputs of the documentation.

    python docs/make_figures.py                      # every committed figure and output
    python docs/make_figures.py synthetic bladder    # only those targets
    python docs/make_figures.py frames [OUT_DIR]     # the frame figure (default: docs/_static)

Targets:

- ``frames`` → ``_static/frames.png``: the pixel-centre convention of one frame, and a moving frame
  (MSI, mirrored and rotated) mapped into a reference frame (H&E) by a
  :class:`spatialfuse.reg.Transform`. Drawn at build time by ``conf.py`` (offline, matplotlib only;
  not committed).
- ``synthetic`` → ``figures/synthetic/``: runs the Python blocks of ``tutorial_synthetic.md``.
- ``bladder`` → ``figures/bladder/``: runs the Python blocks of ``tutorial_real_data.md`` on the
  real mouse bladder pair of ``../shared/data`` (or ``$SPATIALFUSE_TEST_DATA``).
- ``spectra`` → ``figures/spectra/``: runs the Python blocks of ``spectra.md`` (synthetic).
- ``examples`` → ``figures/examples/``: runs every script of ``examples/``.
- ``demo`` → ``figures/getting_started/``: runs ``spatialfuse demo`` and screenshots its report in
  headless Chromium (skipped, with a message, where no ``chromium`` is on the PATH).

Everything but ``frames`` is committed: the docs build needs neither ``../shared/data`` nor the
time to run the pipelines. Each page's code runs exactly as printed there, in one namespace, in a
temporary folder (for the bladder, with the data and reference paths pointed at the real files);
what a block prints (and spatialfuse's warnings and log warnings; not third-party deprecation
notices or coloured log lines) is written to ``stepN.txt``,
N the number of the ``## N.`` (or ``### N.``) heading above the block (blocks under a heading
without a number are not run), which the page includes with ``{literalinclude}``; printed lines
longer than ``TEXT_WIDTH`` are wrapped (continuation lines indented). The PNGs the code saves
are trimmed of white margins, scaled to at most ``MAX_WIDTH`` pixels and stored as indexed-colour
PNGs (each under ``MAX_BYTES``; ``tests/test_docs.py`` checks).
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import numpy as np


def _pixel_grid(ax) -> None:
    """Left panel: a 4 × 3 MSI grid of 100 µm pixels, origin at the outer top-left corner."""
    from matplotlib.patches import Rectangle

    size = 100.0
    for col in range(4):
        for row in range(3):
            ax.add_patch(
                Rectangle((col * size, row * size), size, size, fill=False, lw=1, ec="0.4")
            )
            ax.plot((col + 0.5) * size, (row + 0.5) * size, "o", ms=4, color="C0")
    ax.annotate("origin (0, 0) µm", (0, 0), (60, -70), arrowprops={"arrowstyle": "->"}, fontsize=8)
    ax.annotate(
        "imzML position (1, 1)\ncentre (50, 50) µm",
        (50, 50),
        (420, 170),
        arrowprops={"arrowstyle": "->"},
        fontsize=8,
    )
    ax.annotate("", (430, -20), (0, -20), arrowprops={"arrowstyle": "->", "color": "k"})
    ax.text(440, -20, "x (column)", va="center", fontsize=8)
    ax.annotate("", (-20, 330), (-20, 0), arrowprops={"arrowstyle": "->", "color": "k"})
    ax.text(-20, 345, "y (row)", ha="center", va="top", fontsize=8)
    ax.set_xlim(-60, 560)
    ax.set_ylim(400, -110)
    ax.set_aspect("equal")
    ax.set_title("one frame: µm, (x, y) = (column, row),\npositions are pixel centres", fontsize=9)
    ax.axis("off")


def _two_frames(ax) -> None:
    """Right panel: an L-shaped tissue in the MSI frame and the same tissue in the H&E frame."""
    shape = np.array([[0, 0], [3, 0], [3, 1], [1, 1], [1, 3], [0, 3], [0, 0]], dtype=float) * 60
    theta = np.deg2rad(30)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    mirror = np.array([[-1.0, 0.0], [0.0, 1.0]])
    matrix = rotation @ mirror
    offset = np.array([620.0, 120.0])
    moved = shape @ matrix.T + offset
    ax.plot(shape[:, 0] + 20, shape[:, 1] + 20, color="C1", lw=2)
    ax.text(20, -20, "MSI frame (moving), µm", color="C1", fontsize=8)
    ax.plot(moved[:, 0], moved[:, 1], color="C2", lw=2)
    ax.text(420, -20, "H&E frame (reference), µm", color="C2", fontsize=8)
    ax.annotate(
        "",
        (430, 150),
        (220, 150),
        arrowprops={"arrowstyle": "->", "color": "C0", "lw": 2},
    )
    ax.text(325, 135, "transform.apply(points)\nmoving → reference", ha="center", fontsize=8)
    ax.annotate(
        "",
        (220, 250),
        (430, 250),
        arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 2, "ls": "--"},
    )
    ax.text(
        325,
        265,
        "transform.inverse()\nreference → moving\n(resampling; ITK's direction)",
        ha="center",
        va="top",
        fontsize=8,
    )
    ax.set_xlim(-20, 800)
    ax.set_ylim(420, -60)
    ax.set_aspect("equal")
    ax.set_title("two frames: a Transform maps moving µm to reference µm", fontsize=9)
    ax.axis("off")


def main(out_dir: Path) -> list[Path]:
    """Write the figures into ``out_dir`` and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.4]})
    _pixel_grid(axes[0])
    _two_frames(axes[1])
    fig.tight_layout()
    path = out_dir / "frames.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


# ---------------------------------------------------------------------------------------------
# committed figures and outputs: the pages' own code, run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURES = HERE / "figures"
#: Largest width (pixels) and size (bytes) of a committed PNG.
MAX_WIDTH, MAX_BYTES = 1200, 150_000
#: Fewer colours are tried until a PNG is this small (the photographs need it).
TARGET_BYTES = 140_000
#: Printed lines longer than this are wrapped (the width of a code block on the pages).
TEXT_WIDTH = 84


def data_root() -> Path:
    """``$SPATIALFUSE_TEST_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def python_blocks(page: Path) -> list[tuple[int | None, str]]:
    """The ```` ```python ```` blocks of a page, each with the number of its heading.

    The number is N of the nearest heading above the block that starts with ``N.`` (``## 2.
    Register``); ``None`` where that heading has no number (such blocks are shown, not run).
    """
    text = page.read_text(encoding="utf-8")
    fence = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
    heading = re.compile(r"^#+ (.*)$", flags=re.MULTILINE)
    blocks: list[tuple[int | None, str]] = []
    for match in fence.finditer(text):
        prose = re.sub(r"^```.*?^```", "", text[: match.start()], flags=re.DOTALL | re.MULTILINE)
        titles = heading.findall(prose)
        number = re.match(r"(\d+)\.", titles[-1]) if titles else None
        blocks.append((int(number.group(1)) if number else None, match.group(1)))
    return blocks


def optimise_png(source: Path, target: Path) -> Path:
    """Trim white margins, scale to ``MAX_WIDTH`` at most, store as an indexed-colour PNG."""
    from PIL import Image, ImageChops

    image = Image.open(source).convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, background).convert("L").point(lambda v: 255 * (v > 8))
    box = box.getbbox()
    if box:
        pad = 6
        image = image.crop(
            (
                max(box[0] - pad, 0),
                max(box[1] - pad, 0),
                min(box[2] + pad, image.width),
                min(box[3] + pad, image.height),
            )
        )
    if image.width > MAX_WIDTH:
        image = image.resize(
            (MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.Resampling.LANCZOS
        )
    for colours in (256, 128, 64):
        image.quantize(colours, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)
        if target.stat().st_size <= TARGET_BYTES:
            break
    return target


def run_blocks(
    blocks: list[tuple[int | None, str]], workdir: Path, replace: dict[str, str]
) -> dict[int, str]:
    """Run the blocks in one namespace inside ``workdir``; return what each step printed."""
    import contextlib
    import logging
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs: dict[int, str] = {}
    namespace: dict = {"__name__": "__main__"}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for step, code in blocks:
            for old, new in replace.items():
                code = code.replace(old, new)
            buffer = io.StringIO()  # stdout, and warnings as 'Category: message'

            def show(message, category, *args, _buffer=buffer, **kwargs):
                # spatialfuse's own warnings (third-party deprecation notices are left out)
                if category.__module__.startswith("spatialfuse"):
                    _buffer.write(f"{category.__name__}: {message}\n")

            # spatialfuse's own log warnings, as a user sees them on the terminal
            handler = logging.StreamHandler(buffer)
            handler.setLevel(logging.WARNING)
            handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
            logger = logging.getLogger("spatialfuse")
            logger.addHandler(handler)
            try:
                with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
                    warnings.simplefilter("default")
                    warnings.showwarning = show
                    exec(compile(code, f"<block of step {step}>", "exec"), namespace)
            finally:
                logger.removeHandler(handler)
            plt.close("all")
            if step is not None and buffer.getvalue():
                outputs[step] = outputs.get(step, "") + buffer.getvalue()
    finally:
        os.chdir(previous)
    return outputs


def _tidy(text: str, replace: dict[str, str]) -> str:
    """Local paths back to the page's, and lines wrapped to the width the pages show."""
    import textwrap

    for old, new in replace.items():
        text = text.replace(new, old)
    lines = []
    for line in text.strip("\n").splitlines():
        line = line.rstrip()
        if "\x1b[" in line:
            continue  # a third-party library's coloured log line (scanpy's INFO)
        if len(line) > TEXT_WIDTH:
            line = textwrap.fill(
                line,
                TEXT_WIDTH,
                subsequent_indent="    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.png"), *folder.glob("*.txt")]:
        old.unlink()
    return folder


def run_page(page: Path, folder: Path, replace: dict[str, str] | None = None) -> list[Path]:
    """Run a page's Python blocks; write ``stepN.txt`` and its PNGs (optimised) into ``folder``."""
    import tempfile

    replace = replace or {}
    written = []
    with tempfile.TemporaryDirectory(prefix="sf-docs-") as tmp:
        work = Path(tmp).resolve()
        blocks = [(step, code) for step, code in python_blocks(page) if step is not None]
        outputs = run_blocks(blocks, work, replace)
        _fresh(folder)
        undo = {old.strip('"'): new.strip('"') for old, new in replace.items()}
        undo["."] = str(work)
        for step, text in sorted(outputs.items()):
            path = folder / f"step{step}.txt"
            path.write_text(_tidy(text, undo), encoding="utf-8")
            written.append(path)
        for png in sorted(work.rglob("*.png")):
            if png.parent == work:
                written.append(optimise_png(png, folder / png.name))
    return written


def synthetic(out: Path = FIGURES) -> list[Path]:
    """``tutorial_synthetic.md``: the synthetic trio end to end."""
    return run_page(HERE / "tutorial_synthetic.md", out / "synthetic")


def bladder(out: Path = FIGURES) -> list[Path]:
    """``tutorial_real_data.md``: the real mouse bladder (needs ``../shared/data``)."""
    folder = data_root() / "paired" / "bladder_spamtp"
    if not folder.is_dir():
        raise SystemExit(f"the bladder pair is not at {folder}: set SPATIALFUSE_TEST_DATA")
    replace = {
        '"../shared/data/paired/bladder_spamtp"': f'"{folder}"',
        '"benchmarks/real_references"': f'"{ROOT / "benchmarks" / "real_references"}"',
    }
    return run_page(HERE / "tutorial_real_data.md", out / "bladder", replace)


def spectra(out: Path = FIGURES) -> list[Path]:
    """``spectra.md``: recalibration and peak picking on a synthetic profile."""
    return run_page(HERE / "spectra.md", out / "spectra")


def examples(out: Path = FIGURES) -> list[Path]:
    """Every script of ``examples/``: ``NAME.txt`` and ``NAME-FIGURE.png``."""
    import tempfile

    folder = _fresh(out / "examples")
    written = []
    for script in sorted((ROOT / "examples").glob("*.py")):
        with tempfile.TemporaryDirectory(prefix="sf-example-") as tmp:
            work = Path(tmp).resolve()
            code = script.read_text(encoding="utf-8")
            argv, sys.argv = sys.argv, [script.name]  # run as `python examples/NAME.py`
            try:
                outputs = run_blocks([(0, code)], work, {})
            finally:
                sys.argv = argv
            path = folder / f"{script.stem}.txt"
            path.write_text(_tidy(outputs.get(0, ""), {".": str(work)}), encoding="utf-8")
            written.append(path)
            for png in sorted(work.glob("*.png")):
                written.append(optimise_png(png, folder / f"{script.stem}-{png.name}"))
    return written


def demo(out: Path = FIGURES) -> list[Path]:
    """``spatialfuse demo``: what it prints, its QC figure, and the top of its report."""
    import shutil
    import subprocess
    import tempfile

    folder = _fresh(out / "getting_started")
    written = []
    # a fixed folder name, so that the report's screenshot shows no random path
    work = Path(tempfile.gettempdir()).resolve() / "spatialfuse-docs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        proc = subprocess.run(
            ["spatialfuse", "demo", "--quiet"],
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "MPLBACKEND": "Agg"},
        )
        path = folder / "demo.txt"
        path.write_text(_tidy(proc.stdout, {".": str(work)}), encoding="utf-8")
        written.append(path)
        results = work / "spatialfuse-demo" / "results"
        qc = results / "qc" / "register_msi_to_he_msi.png"
        written.append(optimise_png(qc, folder / "demo_qc_msi_to_he.png"))
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            print("no chromium on the PATH: the report screenshot is not redrawn")
            return written
        shot = work / "report.png"
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={shot}",
                "--window-size=900,1100",
                (results / "report.html").as_uri(),
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        written.append(optimise_png(shot, folder / "report.png"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


TARGETS = {
    "synthetic": synthetic,
    "bladder": bladder,
    "spectra": spectra,
    "examples": examples,
    "demo": demo,
}


def cli(argv: list[str]) -> int:
    """``python docs/make_figures.py [TARGET ...]`` (see the module docstring)."""
    if argv[:1] == ["frames"]:
        target = Path(argv[1]) if len(argv) > 1 else HERE / "_static"
        print(*main(target), sep="\n")
        return 0
    unknown = [name for name in argv if name not in TARGETS]
    if unknown:
        print(f"unknown target(s) {unknown}; choose from frames, {', '.join(TARGETS)}")
        return 2
    for name in argv or list(TARGETS):
        for path in TARGETS[name]():
            size = f"{path.stat().st_size / 1000:.0f} kB"
            print(f"{path.relative_to(ROOT)}  {size}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
