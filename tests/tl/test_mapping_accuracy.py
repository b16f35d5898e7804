"""Accuracy of sf.tl.map_to_spots against the synthetic trio's noise-free ground truth.

Requirement: on ``synthetic_trio`` with its true transform, spot-level ion values from
``map_to_spots(method="area")`` correlate with the generator's ground truth at median Pearson
≥ 0.98 across ions.

Ground truth. The generator's tissue has, at every point ``x`` of the H&E frame, a noise-free ion
signal ``e(x)`` (``SyntheticTrio.ion_signal_at``: the region and gradients there through each ion's
non-linear response, plus matrix and chemical-noise ions). A user normalises each spectrum by its
total ion count (TIC; ``obs["tic"]`` of ``read_imzml``, the sum of the whole spectrum, as the
generator writes it in the imzML), so the quantity the normalised spot values estimate is the
relative signal ``e_j(x) / Σ_k e_k(x)`` averaged over the spot's 55 µm disc. The truth integrates
that over a 1 µm lattice of the disc, mapped into the H&E frame by the true ``visium_to_he``;
it never looks at MSI pixels, so pixel blur, boundary non-linearity, noise, row drift and the
detection threshold all count against the mapping.

Ions: markers, gradient, saturating and shared ions. Matrix ions (background signal suppressed on
tissue) and chemical-noise ions (constant abundance) carry no tissue pattern across in-tissue spots,
so their correlation measures noise, not mapping. Spots: in-tissue spots whose disc is fully
covered by MSI pixels.

Configuration asserted: default trio (3000 × 2400 µm tissue, processed imzML, serial-section
Visium with a 30 µm deformation), seed 0, 50 µm MSI pixels. Measured (median over the 45 ions,
seeds 0 / 1 / 2): 20 µm pixels 0.9986 / 0.9987 / 0.9988; 50 µm 0.9940 / 0.9931 / 0.9940 (also
0.9944 with a 20 µm nonrigid MSI warp, 0.9939 for a continuous imzML read with ±0.5 m/z
windows); 75 µm 0.9897; 100 µm 0.9793 / 0.9778 / 0.9816 — below 0.98 in two seeds
because a 100 µm pixel is nearly twice the spot's diameter: the noise-free pixel model mapped the
same way reaches only 0.984 / 0.981 / 0.987 (partial-volume blur), noise costs the rest. The
lowest single ions (down to 0.55 at 50 µm, seed 1) are saturating or shared ions whose abundance
barely differs between regions (a saturating ion at 30-67 units with S ≈ 10 is nearly flat), so
there is little pattern to correlate with.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import spatialfuse as sf

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

KINDS = ("marker", "gradient", "saturating", "shared")
DISC_RADIUS_UM = 27.5
LATTICE_UM = 1.0


def _disc_lattice(radius: float = DISC_RADIUS_UM, step: float = LATTICE_UM) -> np.ndarray:
    """Centres of the ``step`` µm squares of a regular lattice that fall inside the disc."""
    g = np.arange(-radius + step / 2, radius, step)
    gx, gy = np.meshgrid(g, g)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return points[(points**2).sum(axis=1) <= radius * radius]


def spot_truth(trio, centres_visium_um: np.ndarray, batch: int = 64) -> np.ndarray:
    """Disc mean of the TIC-normalised noise-free signal, ``(n_spots, n_ions)``."""
    disc = _disc_lattice()
    out = np.empty((len(centres_visium_um), len(trio.ions)))
    for start in range(0, len(centres_visium_um), batch):
        centres = centres_visium_um[start : start + batch]
        points = (centres[:, None, :] + disc[None, :, :]).reshape(-1, 2)
        signal = trio.ion_signal_at(trio.visium_to_he.apply(points))
        relative = signal / signal.sum(axis=1, keepdims=True)
        out[start : start + batch] = relative.reshape(len(centres), len(disc), -1).mean(axis=1)
    return out


def pearson_per_column(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


def measure(trio) -> dict:
    """Map TIC-normalised MSI onto the spots with the true transform; correlate with the truth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        msi = sf.io.read_imzml(trio.msi, mz=trio.ions["mz"].to_numpy())
        visium = sf.io.read_visium(trio.visium)
    assert np.allclose(msi.var["mz"], trio.ions["mz"], rtol=0, atol=1e-6)
    tic = msi.obs["tic"].to_numpy(dtype=np.float64)
    X = msi.X.toarray() if hasattr(msi.X, "toarray") else np.asarray(msi.X)
    normalised = msi.copy()
    normalised.X = X.astype(np.float64) / tic[:, None]
    spots = sf.tl.map_to_spots(normalised, visium, transform=trio.msi_to_visium, method="area")
    full = spots.obs["msi_coverage"].to_numpy() >= 1.0
    truth = spot_truth(trio, spots.obsm["spatial_um"][full])
    r = pearson_per_column(np.asarray(spots.X)[full], truth)
    kinds = trio.ions["kind"].to_numpy()
    chosen = np.isin(kinds, KINDS)
    return {
        "r": r,
        "chosen": chosen,
        "kinds": kinds,
        "n_full": int(full.sum()),
        "n_spots": int(full.size),
        "median": float(np.median(r[chosen])),
    }


@pytest.fixture(scope="module")
def trio50(tmp_path_factory):
    return sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("accuracy"), seed=0, msi_pixel_size_um=50.0
    )


def test_area_mapping_meets_the_accuracy_requirement(trio50):
    result = measure(trio50)
    r, chosen = result["r"], result["chosen"]
    per_kind = {
        k: round(float(np.median(r[result["kinds"] == k])), 4) for k in (*KINDS, "matrix", "noise")
    }
    print(
        f"\n50 µm MSI pixels, {result['n_full']}/{result['n_spots']} spots fully covered, "
        f"{int(chosen.sum())} ions: median Pearson {result['median']:.4f} "
        f"(10 % quantile {np.quantile(r[chosen], 0.1):.4f}, min {r[chosen].min():.4f}); "
        f"by kind {per_kind}"
    )
    assert result["n_full"] >= 0.9 * result["n_spots"]
    assert int(chosen.sum()) >= 40
    assert result["median"] >= 0.98
    # every tissue-patterned group of ions is mapped well, not just most of them
    assert per_kind["marker"] >= 0.98 and per_kind["gradient"] >= 0.98


def test_truth_matches_the_generator_pixel_model(trio50):
    """Where an MSI pixel lies wholly in one region, the generator's pixel expectation (its
    region fractions through the response) equals ion_signal_at at the pixel centre."""
    from spatialfuse.datasets._signals import expected_ion_signal

    pure = np.flatnonzero(trio50.msi_fractions.max(axis=1) == 1.0)
    assert pure.size > 100
    centres = (trio50.msi_coords[pure] - 0.5) * np.asarray(trio50.msi_pixel_size_um)
    at_centre = trio50.ion_signal_at(trio50.msi_to_he.apply(centres))
    no_gradient = trio50.ions["kind"].to_numpy() != "gradient"
    model = expected_ion_signal(
        trio50._ion_design, trio50.msi_fractions[pure], np.zeros((pure.size, 2))
    )
    np.testing.assert_allclose(at_centre[:, no_gradient], model[:, no_gradient], rtol=1e-12)
    off = trio50.ion_signal_at(np.array([[-500.0, -500.0]]))  # off tissue: matrix + noise only
    np.testing.assert_allclose(
        off[0], expected_ion_signal(trio50._ion_design, np.zeros((1, 6)), np.zeros((1, 2)))[0]
    )
