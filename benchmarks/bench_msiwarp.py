"""msiWarp beside ``sf.pp.recalibrate(model="piecewise")``, in the same run, on the same inputs.

msiWarp (Eriksson et al., Anal. Chem. 2020, github.com/horvatovichlab/MSIWarp) aligns *peak
lists*: each spectrum's peaks are matched to a reference spectrum's, and a piecewise-linear
warping between "nodes" is chosen by dynamic programming over a grid of node shifts, maximising
the Gaussian overlap of the matched peaks. ``recalibrate(model="piecewise")`` fits the same kind
of function (ppm piecewise linear in m/z between nodes) by penalised least squares to the
errors measured at reference masses on the *profile* spectra.

Cases (each input given to both):

* ``bend``: the synthetic bend of ``tests/pp/test_recalibrate_piecewise.py`` (4 lines × 6 px,
  ``drift_data.pixel_drift(4, 6, seed=0)``, profile spectra at resolving power 15,000 on a
  10-ppm axis; 13 references, 11 held out between them);
* ``kidney``: the real Bruker timsTOF kidney (``imzml/bruker_timstof_imzy``, 342 px, its TOF
  grid over m/z 440–900), lock masses = every other of the 21 lipids by m/z (11), the other 10
  held out, as ``bench_spectra_real.py timstof`` does;
* ``kidney+bend``: the same spectra with ``bench_spectra_real.bend`` injected (+15 → −10 →
  +5 ppm across m/z 450–885, × 0.6–1.4 and ± 5 ppm per pixel, seed 1).

msiWarp's side: each profile spectrum is centroided with msiWarp's own
``msiwarp.util.parabolic_centroid`` (threshold: the spectrum's median + 5 × 1.4826 MAD of its
non-zero points, the rule ``recalibrate`` measures with), made an msiWarp peak list with
``to_mx_peaks(..., instrument_type="tof")`` (peak sigma = ``sigma_1`` × m/z, ``sigma_1`` from
the data's peak width), and warped by ``find_optimal_spectra_warpings`` then ``warp_peaks``
with constant nodes: the m/z of ``recalibrate``'s nodes (quantiles of the references; the
outer two moved outwards by the slack so that no reference peak falls outside the nodes,
which msiWarp drops). Two references:

* ``lock masses``: a reference spectrum holding only the reference masses (height 1), the
  information ``recalibrate`` gets;
* ``mean spectrum``: msiWarp's own way (its ``generate_mean_spectrum``, every spectrum,
  1,000 most intense peaks): aligns pixels to the data's mean, not to true masses.

Settings: ``epsilon`` (peak matching distance, in peak sigmas) and the slack (± search range
of each node) as written below; ``n_steps`` so that one step is 0.25 ppm ("fine"), and
msiWarp's examples' choice (slack = 2·epsilon·sigma, 50 steps; "examples").

Measured, per method: the held-out ions' error, two ways, each the same for both methods:
(i) *profile*: the correction applied to the profile spectra (ours by ``recalibrate`` itself;
msiWarp's warping function, the same piecewise-linear map, applied by interpolation) and each
pixel's peak found by ``recalibrate``'s own measurement (``measure_errors``: the highest point
within ± ppm, Gaussian three-point centroid); (ii) *peak lists*: msiWarp's warped peaks, and
our fitted drift applied to the same centroids (each m/z divided by 1 + e(m)·10⁻⁶), the most
intense peak within ± ppm. Reported: median |ppm| over pixel × ion ("per pixel"), the per-ion
medians' median and worst, and the spread (median over ions of the sd across pixels). Time:
wall and CPU seconds of ``recalibrate`` (copy=True, resampling included) against msiWarp's
centroiding + peak-list conversion, its warping search (its own threads, and one spectrum at a
time with ``find_optimal_spectrum_warping``), and ``warp_peaks``.

msiWarp is an optional benchmark dependency: without it this prints why and exits 0. It is
not on PyPI in a buildable form (the 0.1 sdist ships no C++ sources); see docs/spectra.md for
how it was built here.

Usage::

    python benchmarks/bench_msiwarp.py              # all cases (about 2 minutes)
    python benchmarks/bench_msiwarp.py bend         # the synthetic case only
    # data from $SPATIALFUSE_TEST_DATA or ../shared/data
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "pp")]

#: Reference id of msiWarp's reference spectrum (must differ from every spectrum's id).
REF_ID = 2**31


def import_msiwarp():
    """``(module, None)`` or ``(None, reason)``."""
    try:
        import msiwarp
        import msiwarp.util.parabolic_centroid
        import msiwarp.util.warp
    except ImportError as err:  # optional benchmark dependency
        return None, f"msiwarp not importable ({err}); build it as docs/spectra.md says"
    return msiwarp, None


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def dense_rows(table) -> np.ndarray:
    x = table.X
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def centroids(mx, table, sigma_1: float):
    """msiWarp peak lists (one per pixel) and the same centroids as (mz, height) arrays."""
    from msiwarp.util.parabolic_centroid import parabolic_centroid
    from msiwarp.util.warp import to_mx_peaks

    from spatialfuse.pp._peaks import dense_noise

    mz = table.var["mz"].to_numpy()
    x = dense_rows(table)
    level, noise = dense_noise(x)
    lists, arrays = [], []
    for i, y in enumerate(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            m, h = parabolic_centroid(mz, y, level[i] + 5 * noise[i])
        ok = np.isfinite(m) & np.isfinite(h)
        m, h = m[ok], h[ok]
        order = np.argsort(m)
        m, h = m[order], h[order]
        arrays.append((m, h))
        lists.append(list(to_mx_peaks(m, h, sigma_1, id=i, instrument_type="tof")))
    return lists, arrays


def node_positions(references: np.ndarray, n_nodes: int, slack_ppm: float) -> np.ndarray:
    """``recalibrate``'s nodes (quantiles of the references), the outer two moved out."""
    nodes = np.quantile(np.sort(references), np.linspace(0, 1, n_nodes))
    nodes[0] *= 1 - 2 * slack_ppm * 1e-6
    nodes[-1] *= 1 + 2 * slack_ppm * 1e-6
    return nodes


def warp_map(mx, nodes, moves):
    """msiWarp's warping function of one spectrum as (node m/z, warped node m/z)."""
    at = np.array([n.mz for n in nodes])
    shift = np.array([n.mz_shifts[k] for n, k in zip(nodes, moves, strict=True)])
    return at, at + shift


def warp_profile(table, maps):
    """The profile spectra with msiWarp's per-pixel map applied (point at m moves to w(m))."""
    mz = table.var["mz"].to_numpy()
    x = dense_rows(table)
    out = np.empty_like(x)
    for i, (at, to) in enumerate(maps):
        # msiWarp's map: linear in m/z between nodes (warp_peaks); beyond the outer nodes (where
        # msiWarp drops peaks) the outer node's relative shift, as recalibrate extends its own
        warped = np.interp(mz, at, to)
        below, above = mz < at[0], mz > at[-1]
        warped[below] = mz[below] * to[0] / at[0]
        warped[above] = mz[above] * to[-1] / at[-1]
        out[i] = np.interp(mz, warped, x[i], left=0.0, right=0.0)
    res = table.copy()
    res.X = out.astype(np.float32)
    return res


def our_drift(out, mz: np.ndarray) -> np.ndarray:
    """(pixels × mz) drift (ppm) of ``recalibrate``'s fitted model, from its slots."""
    info = out.uns["recalibration"]
    nodes = info["nodes_mz"]
    return np.stack([np.interp(mz, nodes, v) for v in out.obsm["recalibration_nodes_ppm"]])


def list_errors(arrays, ions: np.ndarray, ppm: float) -> np.ndarray:
    """(pixels × ions) ppm error of each pixel's most intense peak within ± ppm (NaN: none)."""
    err = np.full((len(arrays), ions.size), np.nan)
    for i, (m, h) in enumerate(arrays):
        for k, r in enumerate(ions):
            near = np.abs(m - r) <= r * ppm * 1e-6
            if near.any():
                j = np.flatnonzero(near)[np.argmax(h[near])]
                err[i, k] = (m[j] - r) / r * 1e6
    return err


def summary(errors: np.ndarray, common: np.ndarray) -> dict:
    """Statistics over the (pixel, ion) cells every method found (``common``)."""
    found = float(np.mean(np.isfinite(errors)))
    errors = np.where(common, errors, np.nan)
    per_ion = np.nanmedian(errors, axis=0)
    return {
        "pixel_abs": float(np.nanmedian(np.abs(errors))),
        "ion_abs": float(np.nanmedian(np.abs(per_ion))),
        "ion_max": float(np.nanmax(np.abs(per_ion))),
        "spread": float(np.nanmedian(np.nanstd(errors, axis=0))),
        "found": found,
    }


def summaries(rows: dict, kind: str) -> None:
    """Replace each row's ``kind`` error matrix by its summary over the common cells."""
    common = np.logical_and.reduce([np.isfinite(r[kind]) for r in rows.values()])
    for r in rows.values():
        r[kind] = summary(r[kind], common)
    rows_common = float(common.mean())
    for r in rows.values():
        r[f"{kind}_common"] = rows_common


def best_of(n: int, fn):
    """``(result of the last call, Clock of the fastest of n calls)``."""
    best = None
    for _ in range(n):
        with Clock() as c:
            out = fn()
        if best is None or c.wall < best.wall:
            best = c
    return out, best


def _fmt(s: dict) -> str:
    return (
        f"per pixel {s['pixel_abs']:5.2f}, per ion {s['ion_abs']:5.2f} (worst {s['ion_max']:5.2f}),"
        f" sd over px {s['spread']:5.2f} ppm (found {s['found']:.0%})"
    )


def compare(
    sf, mx, name, table, refs, held, *, ppm, n_nodes, sigma_1, epsilon, after_ppm=15.0, repeat=3
) -> dict:
    """Ours and msiWarp's on one table; prints and returns the rows.

    Held-out errors before are measured within ± ``ppm`` (the drift's range), after within
    ± ``after_ppm``; timings are the fastest of ``repeat`` runs.
    """
    from spatialfuse.pp._recalibrate import measure_errors

    refs, held = np.sort(np.asarray(refs, float)), np.sort(np.asarray(held, float))
    if table.n_obs < 10:  # msiWarp's threaded search never stops splitting fewer spectra
        raise ValueError("msiWarp's find_optimal_spectra_warpings needs >= 10 spectra")
    rows = {}
    print(
        f"\n== {name}: {table.n_obs} px × {table.n_vars:,} points; {refs.size} references, "
        f"{held.size} held out; ± {ppm:g} ppm; piecewise {n_nodes} nodes; msiWarp sigma_1 "
        f"{sigma_1:.3g} (sigma {sigma_1 * 1e6:.1f} ppm), epsilon {epsilon:g}"
    )
    prof_before = measure_errors(table, held, ppm=ppm)

    # ---- ours
    ours, ours_t = best_of(
        repeat,
        lambda: sf.pp.recalibrate(
            table, reference_mz=refs, ppm=ppm, model="piecewise", n_nodes=n_nodes, copy=True
        ),
    )
    info = ours.uns["recalibration"]
    prof_ours = measure_errors(ours, held, ppm=after_ppm)

    # ---- msiWarp: centroids (its parabolic centroid), peak lists
    with Clock() as cen_t:
        spectra, arrays = centroids(mx, table, sigma_1)
    list_before = list_errors(arrays, held, ppm)
    # our fitted drift on the same centroids
    ours_arrays = []
    for (m, h), row in zip(arrays, ours.obsm["recalibration_nodes_ppm"], strict=True):
        e = np.interp(m, info["nodes_mz"], row)
        ours_arrays.append((m / (1 + e * 1e-6), h))
    list_ours = list_errors(ours_arrays, held, after_ppm)
    rows["before"] = {"profile": prof_before, "lists": list_before}
    rows["ours"] = {
        "profile": prof_ours,
        "lists": list_ours,
        "wall": ours_t.wall,
        "cpu": ours_t.cpu,
        "pixels_by_model": info["pixels_by_model"],
    }
    n_peaks = np.median([a[0].size for a in arrays])

    lock = [mx.peak(REF_ID, float(r), 1.0, sigma_1 * float(r)) for r in refs]
    fine_steps = int(np.ceil(ppm / 0.25))
    node_mz = node_positions(refs, n_nodes, ppm)
    settings = {
        "lock masses, fine": (lock, ppm, fine_steps),
        "lock masses, examples": (lock, 2 * epsilon * sigma_1 * 1e6, 50),
    }
    # msiWarp's examples' own reference: the data's mean spectrum (their slack and 50 steps)
    with Clock() as mean_t:
        from msiwarp.util.warp import generate_mean_spectrum

        tic = np.array([max(float(h.sum()), 1e-12) for _m, h in arrays])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s_m = generate_mean_spectrum(
                spectra, 2_000_000, sigma_1, node_mz[0], node_mz[-1], tic, "tof", stride=1
            )
        s_ref = sorted(mx.peaks_top_n(s_m, 1000), key=lambda p: p.mz)
        s_ref = [mx.peak(REF_ID, p.mz, p.height, p.sigma) for p in s_ref]
    settings["mean spectrum, examples"] = (s_ref, 2 * epsilon * sigma_1 * 1e6, 50)

    for label, (reference, slack_ppm, n_steps) in settings.items():
        nodes = mx.initialize_nodes(list(node_mz), list(node_mz * slack_ppm * 1e-6), n_steps)
        moves, find_t = best_of(
            repeat,
            lambda r=reference, n=nodes: mx.find_optimal_spectra_warpings(spectra, r, n, epsilon),
        )
        moves_1, one_t = best_of(
            1,
            lambda r=reference, n=nodes: [
                mx.find_optimal_spectrum_warping(r, s, n, epsilon) for s in spectra
            ],
        )
        assert [list(a) for a in moves] == [list(b) for b in moves_1]
        with Clock() as warp_t:
            warped = [mx.warp_peaks(s, nodes, o) for s, o in zip(spectra, moves, strict=True)]
        warped_arrays = [
            (np.array([p.mz for p in w]), np.array([p.height for p in w])) for w in warped
        ]
        maps = [warp_map(mx, nodes, o) for o in moves]
        prof = measure_errors(warp_profile(table, maps), held, ppm=after_ppm)
        rows[f"msiWarp, {label}"] = {
            "profile": prof,
            "lists": list_errors(warped_arrays, held, after_ppm),
            "centroid_wall": cen_t.wall,
            "find_wall": find_t.wall,
            "find_cpu": find_t.cpu,
            "find_one_wall": one_t.wall,
            "warp_wall": warp_t.wall,
            "mean_wall": mean_t.wall if label.startswith("mean") else 0.0,
            "slack_ppm": slack_ppm,
            "n_steps": n_steps,
            "step_ppm": slack_ppm / n_steps,
        }
    summaries(rows, "profile")
    summaries(rows, "lists")
    print(
        f"   statistics over the pixel × held-out cells found by every row: "
        f"{rows['ours']['profile_common']:.0%} (profile), {rows['ours']['lists_common']:.0%} "
        f"(peak lists); before within ± {ppm:g} ppm, after within ± {after_ppm:g} ppm"
    )
    print(
        f"   msiWarp peak lists: median {n_peaks:.0f} centroids per pixel; nodes at "
        f"{', '.join(f'{m:.1f}' for m in node_mz)}"
    )
    for label, row in rows.items():
        print(f"   {label:30s} profile:    {_fmt(row['profile'])}")
        print(f"   {'':30s} peak lists: {_fmt(row['lists'])}")
    o = rows["ours"]
    print(
        f"   time, ours: recalibrate {o['wall']:.2f} s wall, {o['cpu']:.2f} s CPU "
        f"(measure + fit + resample); pixels by model {o['pixels_by_model']}"
    )
    for label, row in rows.items():
        if not label.startswith("msiWarp"):
            continue
        total = row["centroid_wall"] + row["mean_wall"] + row["find_wall"] + row["warp_wall"]
        print(
            f"   time, {label}: slack ±{row['slack_ppm']:.1f} ppm, {row['n_steps']} steps "
            f"({row['step_ppm']:.2f} ppm); centroid+convert {row['centroid_wall']:.2f} s"
            + (f", mean spectrum {row['mean_wall']:.2f} s" if row["mean_wall"] else "")
            + f", search {row['find_wall']:.2f} s wall / {row['find_cpu']:.2f} s CPU (its "
            f"threads; one at a time {row['find_one_wall']:.2f} s), warp {row['warp_wall']:.2f} s;"
            f" total {total:.2f} s = {total / o['wall']:.2f} × ours; search alone "
            f"{row['find_wall'] / o['wall']:.2f} ×"
        )
    return rows


def case_bend(sf, mx, repeat: int = 3) -> dict:
    from drift_data import HELD_OUT, REFERENCES, pixel_drift, profile_bent

    ppm, line = pixel_drift(4, 6, seed=0)
    table = profile_bent(ppm)
    table.obs["imzml_y"] = line + 1
    sigma_1 = 1 / 15_000 / 2.3548200450309493  # resolving power 15,000 (spectra_data)
    return compare(
        sf,
        mx,
        "synthetic bend (tests/pp/test_recalibrate_piecewise.py)",
        table,
        REFERENCES,
        HELD_OUT,
        ppm=30.0,
        n_nodes=5,
        sigma_1=sigma_1,
        epsilon=1.0,
        repeat=repeat,
    )


def case_kidney(sf, mx) -> dict:
    import bench_spectra_real as real

    path = real.TIMSTOF / "kidney_tdf_profile.imzML"
    if not path.is_file():
        print(f"\n== kidney: skipped, {path} not found (set SPATIALFUSE_TEST_DATA)")
        return {}
    table = real.tof_grid_table(sf, path, real.KIDNEY_RANGE)
    ions = real.kidney_ions()
    lock, held = ions.iloc[0::2].to_numpy(), ions.iloc[1::2].to_numpy()
    # the kidney's peaks: FWHM 20.9 ppm (docs/spectra.md) → sigma 8.9 ppm
    sigma_1 = 20.9e-6 / 2.3548200450309493
    out = {}
    for n_nodes in (3, 5):
        out[f"kidney, {n_nodes} nodes"] = compare(
            sf,
            mx,
            f"real timsTOF kidney, {n_nodes} nodes",
            table,
            lock,
            held,
            ppm=15.0,
            n_nodes=n_nodes,
            sigma_1=sigma_1,
            epsilon=2.0,
        )
    drifted, _ = real.inject_drift(table, real.bend, 1)
    out["kidney+bend"] = compare(
        sf,
        mx,
        "real timsTOF kidney + injected bend, 3 nodes",
        drifted,
        lock,
        held,
        ppm=40.0,
        n_nodes=3,
        sigma_1=sigma_1,
        epsilon=3.0,
    )
    return out


def main() -> int:
    warnings.simplefilter("ignore")
    mx, reason = import_msiwarp()
    if mx is None:
        print(f"skipped: {reason}")
        return 0
    import spatialfuse as sf

    which = sys.argv[1:] or ["bend", "kidney"]
    if "bend" in which:
        case_bend(sf, mx)
    if "kidney" in which:
        case_kidney(sf, mx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
