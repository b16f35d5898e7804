"""Benchmark sf.tl.map_to_spots against a dense distance-matrix baseline, in one process.

Usage::

    python benchmarks/bench_mapping.py [--quick] [--repeat N] [--json OUT] [--strict]

Inputs are built in memory (a seeded MSI raster as read_imzml lays it out, and a Visium-like hex
lattice of spots); nothing is written but the JSON. See benchmarks/README.md for what each row
measures.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

#: "full" is what the targets are about; "quick" exists for the smoke test.
SIZES = {
    "full": {
        "field_um": 10_000.0,
        "raster": 1000,  # 1000 × 1000 = 1,000,000 pixels of 10 µm
        "coarse_raster": 316,  # 316 × 316 = 99,856 pixels of 31.6 µm, same field
        "n_features": 50,
        "spot_rows": 100,
        "spot_cols": 50,  # 5,000 spots
        "spot_origin": (2437.3, 712.9),
        "baseline_spots": 250,  # baseline measured on these many spots at 1,000,000 pixels
        "chunk": 25,  # spots per dense distance block (25 × 1e6 × 8 B = 200 MB)
        "accuracy_angles": 20,
        "accuracy_spots": 50,
    },
    "quick": {
        "field_um": 1000.0,
        "raster": 100,
        "coarse_raster": 32,
        "n_features": 8,
        "spot_rows": 10,
        "spot_cols": 10,
        "spot_origin": (37.3, 61.9),
        "baseline_spots": 40,
        "chunk": 10,
        "accuracy_angles": 2,
        "accuracy_spots": 20,
    },
}
TARGET_SPEEDUP = 50.0  # dense baseline / ours, radius rule, 5,000 spots × 1,000,000 pixels
ACCURACY_SIZES = (256, 512, 1024, 2048, 4096)
ACCURACY_PIXELS_UM = (10.0, 20.0, 30.0, 50.0, 75.0, 100.0)
RADIUS_UM = 50.0
DISC_RADIUS_UM = 27.5
BUDGET_S = 12.0
SEED = 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs; ratios meaningless")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: DATA_DIR/results-mapping[-quick].json)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"folder of the default JSON (default: ${h.DATA_DIR_ENV} or benchmarks/_data)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


# -------------------------------------------------------------------------------------------------
# inputs
# -------------------------------------------------------------------------------------------------


def msi_anndata(n: int, pixel_um: float, n_features: int, seed: int, X=None):
    """An n × n MSI raster in the read_imzml layout (float32 uniform intensities by default)."""
    import anndata as ad
    import pandas as pd

    gx, gy = np.meshgrid(np.arange(1, n + 1), np.arange(1, n + 1))
    gx, gy = gx.ravel(), gy.ravel()
    if X is None:
        X = np.random.default_rng(seed).random((gx.size, n_features), dtype=np.float32)
    obs = pd.DataFrame(
        {"imzml_x": gx, "imzml_y": gy}, index=pd.Index(np.char.mod("%d", np.arange(gx.size)))
    )
    mz = np.linspace(100.0, 1000.0, X.shape[1])
    var = pd.DataFrame({"mz": mz}, index=pd.Index([f"mz-{m:.4f}" for m in mz]))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = np.stack([(gx - 0.5) * pixel_um, (gy - 0.5) * pixel_um], axis=1)
    adata.uns["spatialfuse"] = {"modality": "msi", "pixel_size_um": [pixel_um, pixel_um]}
    return adata


def visium_anndata(centres: np.ndarray):
    import anndata as ad
    import pandas as pd

    names = pd.Index([f"SPOT{i:05d}-1" for i in range(len(centres))])
    adata = ad.AnnData(
        X=np.zeros((len(centres), 1), dtype=np.float32), obs=pd.DataFrame(index=names)
    )
    adata.obsm["spatial_um"] = centres
    adata.obsm["spatial"] = centres / 0.5 - 0.5
    adata.uns["spatialfuse"] = {"um_per_px": 0.5}
    return adata


def msi_to_visium(field_um: float):
    """The benchmark transform: 3° rotation about the field centre and a small shift."""
    from spatialfuse.reg import AffineTransform

    c = field_um / 2
    return AffineTransform.from_params(
        rotation_deg=3.0, translation=(-37.3, 21.9), center=(c, c), model="rigid"
    )


# -------------------------------------------------------------------------------------------------
# baseline: MAGPIE's rule with a dense spots × pixels distance matrix
# -------------------------------------------------------------------------------------------------


def dense_radius(spots, mapped, X64, radius, chunk):
    """MAGPIE-style: distance_matrix(spots, pixels), keep ``d < radius``, mean the kept rows.

    MAGPIE builds the full spots × pixels matrix at once (40 GB at 5,000 × 1,000,000) and then
    filters it through pandas; here it is computed ``chunk`` spots at a time (so it fits in
    memory) and reduced with a mask × matrix product (faster than MAGPIE's pandas step).
    """
    from scipy.spatial import distance_matrix

    n = np.zeros(len(spots), dtype=np.int64)
    values = np.empty((len(spots), X64.shape[1]))
    for lo in range(0, len(spots), chunk):
        d = distance_matrix(spots[lo : lo + chunk], mapped)
        mask = d < radius
        del d
        n[lo : lo + chunk] = mask.sum(axis=1)
        values[lo : lo + chunk] = mask.astype(np.float64) @ X64
    with np.errstate(invalid="ignore", divide="ignore"):
        values /= n[:, None]
    return values, n


def mapped_centres(msi, transform):
    """Pixel centres in the Visium frame (the baseline's input, computed once, untimed)."""
    p = np.asarray(msi.obsm["spatial"], dtype=np.float64)
    m = transform.matrix
    return np.stack(
        [
            p[:, 0] * m[0, 0] + p[:, 1] * m[0, 1] + m[0, 2],
            p[:, 0] * m[1, 0] + p[:, 1] * m[1, 1] + m[1, 2],
        ],
        axis=1,
    )


# -------------------------------------------------------------------------------------------------
# result records
# -------------------------------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.rows: list[dict] = []
        self.checks: list[h.Check] = []

    def timing(
        self,
        name,
        title,
        ours: h.Timing,
        base: h.Timing | None,
        *,
        pairs=None,
        factor=None,
        target=None,
        note="",
    ):
        row = {
            "name": name,
            "title": title,
            "kind": "time",
            "ours": ours.as_dict(),
            "note": note,
            "target": target,
            "target_text": f">= {target:g}x" if target else "report",
        }
        if base is None:
            row.update(baseline=None, ratio=None, passed=None, measured="ours measured")
        else:
            est = base.median * (factor or 1.0)
            row["baseline"] = {
                **base.as_dict(),
                "extrapolation_factor": factor or 1.0,
                "estimated_median_s": est,
                "spot_pixel_pairs": pairs,
            }
            row["ratio"] = est / ours.median
            row["ratio_definition"] = (
                "baseline median / ours median"
                if factor is None
                else "EXTRAPOLATED baseline median / ours median"
            )
            row["measured"] = (
                "both measured"
                if factor is None
                else f"ours measured; baseline measured on a subset, EXTRAPOLATED x{factor:g}"
            )
            row["passed"] = None if target is None else bool(row["ratio"] >= target)
        self.rows.append(row)

    def memory(self, name, title, peaks: dict[int, int], n_spots: int, note=""):
        """Peak memory at several pixel counts, against a dense spots × pixels float64 matrix."""
        sizes = sorted(peaks)
        small, large = sizes[0], sizes[-1]
        slope = (peaks[large] - peaks[small]) / max(large - small, 1)
        dense = {n: n_spots * n * 8 for n in sizes}
        self.rows.append(
            {
                "name": name,
                "title": title,
                "kind": "memory",
                "ours": {
                    "peak_bytes": {str(n): peaks[n] for n in sizes},
                    "bytes_per_added_pixel": slope,
                },
                "baseline": {"dense_float64_bytes": {str(n): dense[n] for n in sizes}},
                "ratio": dense[large] / peaks[large],
                "ratio_definition": "dense spots x pixels float64 matrix / our traced peak",
                "target": None,
                "target_text": "report",
                "passed": None,
                "note": note,
            }
        )

    def check(self, check: h.Check):
        self.checks.append(check)
        status = "ok  " if check.passed else "FAIL"
        print(f"  check {status} {check.name}: {check.detail}", flush=True)

    def table(self) -> str:
        rows = []
        for r in self.rows:
            if r["kind"] == "memory":
                peaks = r["ours"]["peak_bytes"]
                dense = r["baseline"]["dense_float64_bytes"]
                ours = (
                    " -> ".join(f"{h.fmt_bytes(v)} @ {int(n):,} px" for n, v in peaks.items())
                    + f" (+{r['ours']['bytes_per_added_pixel']:.0f} B per added px)"
                )
                base = "dense: " + " -> ".join(f"{v / 2**30:.1f} GiB" for v in dense.values())
                ratio = f"{r['ratio']:.0f}x less"
            else:
                ours = h.fmt_timing(h.Timing(r["ours"]["times_s"], 0))
                if r["baseline"] is None:
                    base, ratio = "-", "-"
                else:
                    b = r["baseline"]
                    if b["extrapolation_factor"] == 1.0:
                        base = h.fmt_timing(h.Timing(b["times_s"], 0))
                    else:
                        base = (
                            f"~{h.fmt_seconds(b['estimated_median_s'])} (EXTRAPOLATED "
                            f"x{b['extrapolation_factor']:g} from "
                            f"{h.fmt_seconds(b['median_s'])}, n={b['n']})"
                        )
                    ratio = f"{r['ratio']:.1f}x"
            verdict = {True: "PASS", False: "FAIL", None: "-"}[r["passed"]]
            rows.append([r["title"], ours, base, ratio, r["target_text"], verdict])
        return h.render_table(
            ["benchmark", "ours", "baseline", "ratio", "target", "pass/fail"], rows
        )


# -------------------------------------------------------------------------------------------------
# benchmarks
# -------------------------------------------------------------------------------------------------


def bench_radius(res, size, repeat, transform, visium, centres):
    import spatialfuse as sf

    field = size["field_um"]
    for key, n_px, extrapolate in (
        ("coarse", size["coarse_raster"], False),
        ("full", size["raster"], True),
    ):
        pixel = field / n_px
        msi = msi_anndata(n_px, pixel, size["n_features"], SEED)
        label = f"{len(centres):,} spots x {msi.n_obs:,} px ({pixel:.3g} um)"
        print(f"radius rule, {label}", flush=True)
        run = lambda msi=msi: sf.tl.map_to_spots(  # noqa: E731
            msi, visium, transform=transform, method="radius"
        )
        t_ours = h.time_call(run, repeat, budget_s=BUDGET_S)
        out = run()
        mapped = mapped_centres(msi, transform)
        X64 = np.asarray(msi.X, dtype=np.float64)
        subset = np.arange(len(centres))
        if extrapolate:
            subset = np.unique(
                np.linspace(0, len(centres) - 1, size["baseline_spots"]).round().astype(np.int64)
            )
        spots = centres[subset]
        print(f"  dense baseline on {subset.size:,} spots (chunks of {size['chunk']})", flush=True)
        kept = {}

        def baseline(spots=spots, mapped=mapped, X64=X64, kept=kept):
            kept["result"] = dense_radius(spots, mapped, X64, RADIUS_UM, size["chunk"])

        t_base = h.time_call(baseline, repeat, budget_s=BUDGET_S * 2, min_repeat=2)
        ref, n_ref = kept.pop("result")
        n_ours = out.obs["n_msi_pixels"].to_numpy()[subset]
        same_n = bool((n_ours == n_ref).all())
        res.check(
            h.Check(
                f"radius {key}: pixel count per spot == dense baseline ({subset.size} spots)",
                same_n,
                f"{int((n_ours != n_ref).sum())} of {subset.size} spots differ",
                values_compared=int(subset.size),
            )
        )
        has = n_ref > 0
        res.check(
            h.compare(
                f"radius {key}: values == dense baseline ({int(has.sum())} spots)",
                np.asarray(out.X)[subset][has],
                ref[has],
                rtol=1e-6,
            )
        )
        nan_ok = bool(np.isnan(np.asarray(out.X)[subset][~has]).all())
        res.check(
            h.Check(
                f"radius {key}: spots without pixels are NaN",
                nan_ok,
                f"{int((~has).sum())} spots without pixels",
            )
        )
        factor = len(centres) / subset.size if extrapolate else None
        res.timing(
            f"radius_{key}",
            f"radius rule, {label}",
            t_ours,
            t_base,
            pairs=int(subset.size) * msi.n_obs,
            factor=factor,
            target=TARGET_SPEEDUP if extrapolate else None,
            note=(
                f"baseline = scipy distance_matrix on blocks of {size['chunk']} spots, d < "
                f"{RADIUS_UM:g} um, mask @ X (float64); pixel centres mapped beforehand (untimed)"
                + (
                    f"; measured on {subset.size} evenly spaced spots, extrapolated linearly to "
                    f"{len(centres)} (its cost is proportional to spots x pixels)"
                    if extrapolate
                    else ""
                )
            ),
        )
        del X64, mapped
        yield key, msi


def bench_area(res, size, repeat, transform, visium, centres, msis):
    import spatialfuse as sf

    peaks: dict[str, dict[int, int]] = {"area": {}, "radius": {}}
    for key, msi in msis:
        pixel = msi.uns["spatialfuse"]["pixel_size_um"][0]
        label = f"{len(centres):,} spots x {msi.n_obs:,} px ({pixel:.3g} um)"
        run = lambda msi=msi: sf.tl.map_to_spots(msi, visium, transform=transform)  # noqa: E731
        if key == "full":
            print(f"area rule, {label}", flush=True)
            t = h.time_call(run, repeat, budget_s=BUDGET_S)
            res.timing(
                "area_full",
                f"area rule (default), {label}",
                t,
                None,
                note="1,024 quadrature samples per spot",
            )
        for method in peaks:
            print(f"  peak memory, {method}, {label}", flush=True)
            out, peak = h.traced_peak(
                lambda msi=msi, method=method: sf.tl.map_to_spots(
                    msi, visium, transform=transform, method=method
                )
            )
            peaks[method][msi.n_obs] = peak
            if method == "area":
                cov = out.obs["msi_coverage"].to_numpy()
                res.check(
                    h.Check(
                        f"area {key}: coverage in [0, 1], spots inside fully covered",
                        bool(((cov >= 0) & (cov <= 1)).all() and (cov == 1).mean() > 0.5),
                        f"{(cov == 1).mean():.1%} of spots fully covered",
                    )
                )
            del out
    for method, by_size in peaks.items():
        res.memory(
            f"memory_{method}",
            f"peak memory, {method} rule, {len(centres):,} spots",
            by_size,
            len(centres),
            note="tracemalloc peak of one call; the MSI X (float32, "
            f"{size['n_features']} features) is input, not counted",
        )


def bench_nonrigid(res, size, repeat, transform, visium, centres, msi):
    import spatialfuse as sf
    from spatialfuse.reg import DisplacementField, compose

    field = size["field_um"]
    step = field / 20
    yy, xx = np.mgrid[0:21, 0:21] * step
    u = np.stack([30 * np.sin(xx / (field * 0.15)), 25 * np.cos(yy / (field * 0.18))], axis=2)
    warped = compose(transform, DisplacementField(u, spacing_um=(step, step)))
    label = f"{len(centres):,} spots x {msi.n_obs:,} px"
    print(f"area rule, nonrigid (affine + displacement field), {label}", flush=True)
    t = h.time_call(
        lambda: sf.tl.map_to_spots(msi, visium, transform=warped), min(repeat, 3), budget_s=BUDGET_S
    )
    res.timing(
        "area_nonrigid_full",
        f"area rule, nonrigid transform, {label}",
        t,
        None,
        note="quadrature samples mapped back by the numeric (Newton) inverse",
    )


def bench_accuracy(res, size, rng):
    """Max |weight − exact| over random placements, per quadrature size."""
    import spatialfuse as sf
    from spatialfuse.reg import AffineTransform
    from spatialfuse.tl._quadrature import DEFAULT_N_SAMPLES, MEASURED_MAX_WEIGHT_ERROR

    r = DISC_RADIUS_UM
    n_grid = 12
    errors = {n: [] for n in ACCURACY_SIZES}
    placements = 0
    for pixel in ACCURACY_PIXELS_UM:
        eye = np.eye(n_grid * n_grid)
        msi = msi_anndata(n_grid, pixel, 0, SEED, X=eye)
        gx = msi.obs["imzml_x"].to_numpy()
        gy = msi.obs["imzml_y"].to_numpy()
        lo, hi = r + pixel, n_grid * pixel - r - pixel
        for _ in range(size["accuracy_angles"]):
            t = AffineTransform.from_params(
                rotation_deg=float(rng.uniform(0, 360)),
                translation=tuple(rng.uniform(-500, 500, 2)),
                mirror=bool(rng.integers(2)),
            )
            spots_msi = rng.uniform(lo, hi, size=(size["accuracy_spots"], 2))
            visium = visium_anndata(t.apply(spots_msi))
            exact = np.zeros((len(spots_msi), msi.n_obs))
            for s, (cx, cy) in enumerate(spots_msi):
                near = np.flatnonzero(
                    (np.abs((gx - 0.5) * pixel - cx) < r + pixel)
                    & (np.abs((gy - 0.5) * pixel - cy) < r + pixel)
                )
                for p in near:
                    x0, y0 = (gx[p] - 1) * pixel - cx, (gy[p] - 1) * pixel - cy
                    exact[s, p] = h.disc_rect_area(r, x0, x0 + pixel, y0, y0 + pixel)
            exact /= math.pi * r * r
            for n in ACCURACY_SIZES:
                out = sf.tl.map_to_spots(msi, visium, transform=t, n_samples=n)
                ours = np.asarray(out.X) * out.obs["msi_coverage"].to_numpy()[:, None]
                touched = (exact > 0) | (ours > 0)
                errors[n].append(np.abs(ours - exact)[touched])
            placements += len(spots_msi)
    summary = {}
    for n in ACCURACY_SIZES:
        e = np.concatenate(errors[n])
        summary[n] = {
            "max": float(e.max()),
            "rms": float(np.sqrt((e**2).mean())),
            "stated_max": MEASURED_MAX_WEIGHT_ERROR.get(n),
        }
    maxima = [summary[n]["max"] for n in ACCURACY_SIZES]
    res.check(
        h.Check(
            f"quadrature: max weight error at the default {DEFAULT_N_SAMPLES} samples <= 0.01",
            summary[DEFAULT_N_SAMPLES]["max"] <= 0.01,
            f"{summary[DEFAULT_N_SAMPLES]['max']:.4f} over {placements} placements",
        )
    )
    res.check(
        h.Check(
            "quadrature: max weight error decreases with the number of samples",
            all(a > b for a, b in itertools.pairwise(maxima)),
            ", ".join(f"{n}: {m:.4f}" for n, m in zip(ACCURACY_SIZES, maxima, strict=True)),
        )
    )
    return summary, placements


# -------------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    size = SIZES["quick" if args.quick else "full"]
    json_path = args.json or h.data_dir(args.data_dir) / (
        "results-mapping-quick.json" if args.quick else "results-mapping.json"
    )
    transform = msi_to_visium(size["field_um"])
    centres = h.hex_lattice(size["spot_rows"], size["spot_cols"], origin=size["spot_origin"])
    visium = visium_anndata(centres)
    res = Results()
    repeat = args.repeat

    msis = list(bench_radius(res, size, repeat, transform, visium, centres))
    bench_area(res, size, repeat, transform, visium, centres, msis)
    bench_nonrigid(res, size, repeat, transform, visium, centres, msis[-1][1])
    del msis
    print("quadrature accuracy vs the closed-form disc ∩ square area", flush=True)
    accuracy, placements = bench_accuracy(res, size, np.random.default_rng(SEED))

    total_s = time.perf_counter() - started
    print()
    print(res.table())
    print()
    print(
        f"quadrature accuracy: |weight - exact area fraction| over {placements:,} placements "
        f"(pixels {', '.join(f'{p:g}' for p in ACCURACY_PIXELS_UM)} um, random offset, angle "
        "and mirror; 55 um disc)"
    )
    print(
        h.render_table(
            ["samples", "max error", "rms error", "stated max"],
            [
                [
                    f"{n:,}",
                    f"{a['max']:.4f}",
                    f"{a['rms']:.5f}",
                    "-" if a["stated_max"] is None else f"{a['stated_max']:.4f}",
                ]
                for n, a in accuracy.items()
            ],
        )
    )
    per_pair = {
        r["name"]: r["baseline"]["median_s"] / r["baseline"]["spot_pixel_pairs"]
        for r in res.rows
        if r["kind"] == "time" and r["baseline"] is not None
    }
    if per_pair:
        print(
            "dense baseline cost per spot x pixel pair (measured): "
            + ", ".join(f"{name}: {v * 1e9:.2f} ns" for name, v in per_pair.items())
            + " (the EXTRAPOLATED row scales its time linearly in spots at the same pixel count)"
        )
    print()
    for paragraph in (
        "ratio: baseline median / ours median (higher is better). EXTRAPOLATED: the dense "
        "baseline ran on a subset of the spots against all pixels and its time was scaled by "
        "spots / subset (its cost is proportional to spots x pixels); ours ran on all spots. "
        "Results are compared wherever both ran.",
        "times: median of n timed calls after one warm-up (min in brackets).",
        "ours: the whole sf.tl.map_to_spots call (input validation, the disc quadrature that "
        "gives msi_coverage, mapping pixel centres, k-d tree, weights, W @ X, the AnnData).",
        "memory: tracemalloc peak during one call, above what was allocated before it; numpy's "
        "buffers (the output included) are traced, the k-d tree's C++ nodes (~16 bytes per "
        "pixel) are not.",
    ):
        print(textwrap.fill(paragraph, width=96))
    if args.quick:
        print("\n--quick: tiny inputs; these ratios are MEANINGLESS (fixed overheads dominate).")
    failed = [c for c in res.checks if not c.passed]
    missed = [r for r in res.rows if r.get("passed") is False]
    print(
        f"\ncorrectness checks: {len(res.checks) - len(failed)}/{len(res.checks)} passed"
        + ("" if not failed else " - FAILED: " + ", ".join(c.name for c in failed))
    )
    if missed and not args.quick:
        print("targets missed: " + ", ".join(f"{r['name']} ({r['ratio']:.1f}x)" for r in missed))
    print(f"total run time {total_s:.1f} s")
    h.write_json(
        json_path,
        {
            "quick": args.quick,
            "ratios_meaningful": not args.quick,
            "repeat": repeat,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "machine": h.machine_info(),
            "sizes": size,
            "benchmarks": res.rows,
            "quadrature_accuracy": {str(n): a for n, a in accuracy.items()},
            "quadrature_placements": placements,
            "checks": res.checks,
            "all_checks_passed": not failed,
            "targets_missed": [r["name"] for r in missed],
            "total_s": total_s,
        },
    )
    print("results written to", json_path)
    if failed:
        return 1
    if args.strict and missed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
