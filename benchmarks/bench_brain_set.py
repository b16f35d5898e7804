"""Registration on every brain MALDI + H&E pair of one public set: how often is a result flagged?

Usage::

    python benchmarks/bench_brain_set.py [--ids A10 A17 ...] [--no-swapped] [--json OUT]
                                         [--montage PNG] [--data-dir DIR]

The inputs are ``../shared/data/paired/brain_he_maldi_all`` (its ``SOURCE.txt``: the 75 MALDI
images and 77 H&E images of github.com/harshithakota/multimodal-brain-slice-alignment at
c371928; one MALDI channel inside a hand-drawn region, filled with 255 outside it, and the H&E
of a neighbouring section downsampled 128×; neither pixel size is stated). Three of the pairs
(A2, A12, A13) are the brain pairs of ``bench_real.py``, whose references and checks were
studied there; the other 72 were never looked at while the defaults and thresholds were chosen,
so this is an untouched check of how the checks behave on one kind of real data.

There are no references here, so a result is not called right or wrong by a number:

* **automatic**: ``sf.reg.register(maldi, he)`` as ``bench_real.py`` calls it for A2/A12/A13 (the
  MALDI at a nominal 50 µm, the H&E with ``pixel_size_um="auto"``). Reported: ``ok``, the checks
  that failed, Dice, time. ``--montage`` draws every result (the MALDI region's outline laid on
  the H&E) so that a person can judge each by eye (``docs/failure_detection.md`` says how they
  were judged).
* **swapped** (wrong by construction): each MALDI registered onto the H&E of the next pair in
  sorted order, a different section and fragment. Every one reported ``ok`` is a wrong result
  reported ok (unless the two sections happen to be cut from the same block at the same place,
  which the montage shows).

Nothing here tunes anything: the code path is ``register``'s defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_pairs import data_root

#: The MALDI images' nominal pixel size (µm), as in ``real_pairs.brain_fragments``.
MALDI_PIXEL_UM = 50.0
#: The pairs of ``bench_real.py`` (studied there; the rest are untouched).
STUDIED = ("A2", "A12", "A13")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def folder(root: Path | None = None) -> Path:
    return (root or data_root()) / "paired" / "brain_he_maldi_all"


def pair_ids(root: Path | None = None) -> dict[str, tuple[Path, Path]]:
    """``{id: (maldi path, H&E path)}`` for every id with both images, sorted by number."""
    base = folder(root)
    maldi = {p.name.split("_")[0]: p for p in (base / "maldi_mask").glob("*_maldi_mask.tif")}
    he = {p.name.split("_")[0]: p for p in (base / "lowres_he").glob("*_lowres_he_128.tif")}
    common = sorted(set(maldi) & set(he), key=lambda s: int(re.sub(r"\D", "", s) or 0))
    return {i: (maldi[i], he[i]) for i in common}


def load(maldi_path: Path, he_path: Path):
    """The two inputs a user would give ``register`` (as ``real_pairs.brain_fragments``)."""
    import tifffile

    import spatialfuse as sf
    from spatialfuse.reg import RegistrationImage

    maldi = tifffile.imread(maldi_path).astype(np.float32)
    moving = RegistrationImage.from_array(
        maldi, MALDI_PIXEL_UM, modality="msi", description="MALDI image (one channel)"
    )
    return moving, sf.io.read_histology(he_path, pixel_size_um="auto")


def run_one(moving, fixed) -> tuple[object, dict]:
    import spatialfuse as sf

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = sf.reg.register(moving, fixed)
        except Exception as error:  # a refusal is an outcome too (it is not "ok")
            return None, {
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "seconds": time.perf_counter() - start,
            }
    m = result.metrics
    return result, {
        "ok": bool(result.ok),
        "failed_checks": list(result.checks.loc[~result.checks["passed"].astype(bool), "name"]),
        "dice": m.get("dice_final"),
        "peak_sharpness": m.get("peak_sharpness"),
        "best_neighbour_gain": m.get("best_neighbour_gain"),
        "estimated_pixel_size_um": m.get("estimated_pixel_size_um"),
        "seconds": time.perf_counter() - start,
    }


def outline_on(ax, result, moving, fixed_rgb, fixed_pixel_um) -> None:
    """The outline of the moving tissue mask, mapped by ``result``, over the fixed image."""
    from scipy import ndimage

    ax.imshow(fixed_rgb)
    if result is not None:
        mask = moving.mask
        edge = mask & ~ndimage.binary_erosion(mask)
        rows, cols = np.nonzero(edge)
        size = np.asarray(moving.pixel_size_um)
        um = (np.stack([cols, rows], axis=1) + 0.5) * size + np.asarray(moving.origin_um)
        px = result.transform.apply(um) / np.asarray(fixed_pixel_um) - 0.5
        colour = "lime" if result.ok else "red"
        ax.scatter(px[:, 0], px[:, 1], s=1.5, c=colour, linewidths=0)
    ax.set_axis_off()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", nargs="*", help="pair ids to run (default: all)")
    parser.add_argument("--no-swapped", action="store_true", help="skip the swapped pairs")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--montage", type=Path, help="draw every automatic result here (PNG)")
    parser.add_argument("--data-dir", type=Path, help="the shared data root")
    args = parser.parse_args(argv)

    pairs = pair_ids(args.data_dir)
    if not pairs:
        print(f"no pairs under {folder(args.data_dir)} (see its SOURCE.txt); nothing to do")
        return 0
    ids = [i for i in pairs if not args.ids or i in args.ids]
    print(f"{len(ids)} pairs; {_load()}")
    rows = []
    drawn = []
    for n, pid in enumerate(ids):
        moving, fixed = load(*pairs[pid])
        result, row = run_one(moving, fixed)
        row.update(id=pid, case="automatic", studied=pid in STUDIED)
        rows.append(row)
        drawn.append((pid, result, moving, fixed))
        print(f"[{n + 1}/{len(ids)}] {pid} automatic: {_line(row)}", flush=True)
        if args.no_swapped:
            continue
        other = ids[(ids.index(pid) + 1) % len(ids)] if len(ids) > 1 else None
        if other is None:
            continue
        _, other_fixed = load(*pairs[other])
        _, row = run_one(moving, other_fixed)
        row.update(id=f"{pid} on {other}", case="swapped", studied=False)
        rows.append(row)
        print(f"[{n + 1}/{len(ids)}] {pid} on {other}'s H&E (wrong): {_line(row)}", flush=True)

    summary = _summary(rows)
    print()
    for line in summary:
        print(line)
    print(_load())
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=str))
    if args.montage and drawn:
        _montage(drawn, args.montage)
    return 0


def _line(row: dict) -> str:
    if "error" in row:
        return f"refused ({row['error'][:90]}), {row['seconds']:.1f} s"
    fails = ", ".join(row["failed_checks"]) or "-"
    return f"ok={row['ok']} dice={row['dice']:.2f} failed: {fails}; {row['seconds']:.1f} s"


def _summary(rows: list[dict]) -> list[str]:
    lines = []
    for case in ("automatic", "swapped"):
        for studied in (False, True):
            some = [r for r in rows if r["case"] == case and r["studied"] == studied]
            if not some:
                continue
            ok = sum(r["ok"] for r in some)
            refused = sum("error" in r for r in some)
            seconds = np.median([r["seconds"] for r in some])
            which = "studied in bench_real" if studied else "untouched"
            lines.append(
                f"{case} ({which}): {len(some)} runs, {ok} ok, {len(some) - ok - refused} flagged,"
                f" {refused} refused; median {seconds:.1f} s"
            )
    counts: dict[str, int] = {}
    for r in rows:
        if r["case"] == "automatic":
            for name in r.get("failed_checks", []):
                counts[name] = counts.get(name, 0) + 1
    if counts:
        lines.append(
            "checks failed by automatic results: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        )
    return lines


def _montage(drawn, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 8
    rows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (pid, result, moving, fixed) in zip(axes.ravel(), drawn, strict=False):
        rgb = fixed.read()
        # The transform maps into the H&E's frame as given (its pixel size as read).
        outline_on(ax, result, moving, rgb, fixed.pixel_size_um)
        verdict = "refused" if result is None else ("ok" if result.ok else "flagged")
        ax.set_title(f"{pid}: {verdict}", fontsize=8)
    fig.suptitle("The MALDI region's outline laid on the H&E by register: green ok, red flagged")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"montage: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
