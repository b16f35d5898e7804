"""sf.tl.cross_modal_correlation: values against scipy, input handling, mechanics of both nulls."""

from __future__ import annotations

import numpy as np
import pytest
from correlation_data import hex_points, make_mdata  # tests/tl/correlation_data.py
from scipy import stats
from scipy.spatial.distance import pdist, squareform

import spatialfuse as sf
from spatialfuse.errors import DataWarning
from spatialfuse.tl import _correlation_null as nulls


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(7)
    coords = hex_points(8, 9)
    n = len(coords)
    x = rng.poisson(3.0, size=(n, 5)).astype(np.float64)  # ties, for Spearman
    x[:, 1] += 0.05 * coords[:, 0]  # one gene with a trend
    y = rng.gamma(2.0, size=(n, 4))
    y[:, 0] += 0.01 * coords[:, 0]
    return x, y, coords


def _pair(table, gene, ion):
    row = table[(table["gene"] == gene) & (table["ion"] == ion)]
    assert len(row) == 1
    return row.iloc[0]


@pytest.mark.parametrize("null", ["dutilleul", "msr"])
def test_pearson_and_spearman_equal_scipy(small, null):
    x, y, coords = small
    mdata = make_mdata(x, y, coords)
    ions = list(mdata.mod["msi"].var_names)
    pearson = sf.tl.cross_modal_correlation(mdata, null=null, n_permutations=99)
    spearman = sf.tl.cross_modal_correlation(mdata, method="spearman", null=null, n_permutations=99)
    assert len(pearson) == len(spearman) == 5 * 4
    for g in range(5):
        for i in range(4):
            expected = stats.pearsonr(x[:, g], y[:, i]).statistic
            assert _pair(pearson, f"G{g}", ions[i])["r"] == pytest.approx(expected, abs=1e-12)
            expected = stats.spearmanr(x[:, g], y[:, i]).statistic
            assert _pair(spearman, f"G{g}", ions[i])["r"] == pytest.approx(expected, abs=1e-12)


def test_table_layout_sorting_and_benjamini_hochberg(small):
    x, y, coords = small
    table = sf.tl.cross_modal_correlation(make_mdata(x, y, coords))
    columns = ["gene", "ion", "mz", "ion_name", "r", "n_eff", "p_value", "p_adjusted"]
    assert list(table.columns) == columns
    assert (table["ion_name"] == "").all()  # nothing annotated
    strength = np.abs(table["r"].to_numpy())
    assert (np.diff(strength) <= 0).all()
    assert table["mz"].to_numpy() == pytest.approx(
        [float(name[3:]) for name in table["ion"]], abs=1e-4
    )
    # Benjamini-Hochberg written out: p_(k) · m / k, made monotone from the largest down.
    p = table["p_value"].to_numpy()
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        running = min(running, p[order[rank - 1]] * m / rank)
        adjusted[order[rank - 1]] = running
    assert table["p_adjusted"].to_numpy() == pytest.approx(adjusted, rel=1e-12)
    info = table.attrs["spatialfuse"]
    assert info["null"] == "dutilleul_modified_t" and info["n_spots"] == len(coords)
    assert info["distance_class_width"] == pytest.approx(100.0)


def test_spots_without_msi_are_left_out(small):
    x, y, coords = small
    y = y.copy()
    y[:5] = np.nan  # not measured (map_to_spots' fill value)
    has_msi = np.ones(len(coords), dtype=bool)
    has_msi[5:9] = False  # flagged, values present
    table = sf.tl.cross_modal_correlation(make_mdata(x, y, coords, has_msi=has_msi))
    keep = np.arange(9, len(coords))
    assert table.attrs["spatialfuse"]["n_spots"] == keep.size
    row = _pair(table, "G1", "mz-300.0000")
    assert row["r"] == pytest.approx(stats.pearsonr(x[keep, 1], y[keep, 0]).statistic, abs=1e-12)


def test_n_top_keeps_the_most_variable_and_drops_constants(small):
    x, y, coords = small
    x = x.copy()
    x[:, 3] = 2.0  # constant
    scale = np.array([1.0, 0.1, 5.0, 1.0, 3.0])
    x = x * scale
    mdata = make_mdata(x, y, coords)
    table = sf.tl.cross_modal_correlation(mdata, n_top=2)
    variance = x.var(axis=0)
    assert set(table["gene"]) == {f"G{j}" for j in np.argsort(-variance)[:2]}
    assert table["ion"].nunique() == 2
    assert set(sf.tl.cross_modal_correlation(mdata, n_top=None)["gene"]) == {
        "G0",
        "G1",
        "G2",
        "G4",
    }
    with pytest.warns(DataWarning, match="G3"):
        named = sf.tl.cross_modal_correlation(mdata, genes=["G3", "G0"])
    assert set(named["gene"]) == {"G0"}


def test_ions_by_mz_and_errors_that_name_what_is_missing(small):
    x, y, coords = small
    mdata = make_mdata(x, y, coords)
    mz = mdata.mod["msi"].var["mz"].to_numpy()
    near = mz[2] * (1 + 3e-6)  # 3 ppm off
    table = sf.tl.cross_modal_correlation(mdata, ions=[near, "mz-300.0000"], genes=["G0"])
    assert set(table["ion"]) == {mdata.mod["msi"].var_names[2], "mz-300.0000"}
    with pytest.raises(ValueError, match=r"m/z 500\.1000 ± 10\.0 ppm"):
        sf.tl.cross_modal_correlation(mdata, ions=[500.1])
    with pytest.raises(ValueError, match=r"no ion 'mz-300\.5'.*did you mean 'mz-300\.0000'"):
        sf.tl.cross_modal_correlation(mdata, ions=["mz-300.5"])
    with pytest.raises(ValueError, match=r"rna has no gene 'G9'"):
        sf.tl.cross_modal_correlation(mdata, genes=["G0", "G9"])
    with pytest.raises(ValueError, match=r"no gene 'G4x'; did you mean 'G4'"):
        sf.tl.cross_modal_correlation(mdata, genes=["G4x"])
    with pytest.raises(ValueError, match=r"no modality 'metabolites'"):
        sf.tl.cross_modal_correlation(mdata, msi_key="metabolites")
    with pytest.raises(ValueError, match="no layer 'counts'"):
        sf.tl.cross_modal_correlation(mdata, rna_layer="counts")
    with pytest.raises(TypeError, match="MuData"):
        sf.tl.cross_modal_correlation(mdata.mod["rna"])
    with pytest.raises(ValueError, match="null must be one of"):
        sf.tl.cross_modal_correlation(mdata, null="permutation")
    with pytest.raises(ValueError, match="n_permutations"):
        sf.tl.cross_modal_correlation(mdata, null="msr", n_permutations=0)


# -------------------------------------------------------------------------------------------------
# Dutilleul: the correlogram sums against a double loop, and n_eff ≈ n for independent data
# -------------------------------------------------------------------------------------------------


def test_dutilleul_variance_matches_the_formula_written_out():
    rng = np.random.default_rng(3)
    coords = rng.uniform(0, 1000, size=(40, 2))
    x = rng.standard_normal((40, 3))
    y = rng.standard_normal((40, 2)) + 0.002 * coords[:, :1]
    x -= x.mean(axis=0)
    x /= np.linalg.norm(x, axis=0)
    y -= y.mean(axis=0)
    y /= np.linalg.norm(y, axis=0)
    variance = nulls.dutilleul_variance(coords, x, y)

    d = squareform(pdist(coords))
    nn = np.sort(d + np.diag(np.full(40, np.inf)), axis=1)[:, 0]
    width = np.median(nn)
    cls = np.floor(d / width).astype(int)
    n = 40
    for g in range(3):
        for i in range(2):
            expected = 0.0
            for c in np.unique(cls[~np.eye(n, dtype=bool)]):
                pairs = [(a, b) for a in range(n) for b in range(n) if a != b and cls[a, b] == c]
                rho_x = n * sum(x[a, g] * x[b, g] for a, b in pairs) / len(pairs)
                rho_y = n * sum(y[a, i] * y[b, i] for a, b in pairs) / len(pairs)
                if rho_x * rho_y > 0:  # classes where the correlograms disagree are left out
                    expected += len(pairs) * rho_x * rho_y
            expected = max((n + expected) / n**2, 1 / (n - 1))
            assert variance[g, i] == pytest.approx(expected, rel=1e-10)


def test_dutilleul_n_eff_is_the_number_of_spots_for_independent_data():
    rng = np.random.default_rng(4)
    coords = hex_points(20, 20)
    x, y = rng.standard_normal((400, 60)), rng.standard_normal((400, 60))
    table = sf.tl.cross_modal_correlation(make_mdata(x, y, coords), n_top=None)
    assert 0.93 * 400 < np.median(table["n_eff"]) and table["n_eff"].max() <= 400 + 1e-9
    # and the t-test then is the ordinary one
    row = table.iloc[0]
    r = row["r"]
    expected = 2 * stats.t.sf(abs(r) * np.sqrt((row["n_eff"] - 2) / (1 - r * r)), row["n_eff"] - 2)
    assert row["p_value"] == pytest.approx(expected, rel=1e-9)


# -------------------------------------------------------------------------------------------------
# Moran spectral randomisation
# -------------------------------------------------------------------------------------------------


def _moran_i(values, w):
    z = values - values.mean()
    return len(z) / w.sum() * (z @ w @ z) / (z @ z)


def test_moran_basis_and_surrogates_keep_morans_i():
    rng = np.random.default_rng(5)
    coords = hex_points(7, 8)
    n = len(coords)
    basis = nulls.moran_basis(coords)
    assert basis.shape == (n, n - 1)
    assert basis.T @ basis == pytest.approx(np.eye(n - 1), abs=1e-10)
    assert np.abs(basis.sum(axis=0)).max() < 1e-9  # orthogonal to the constant

    d = squareform(pdist(coords))
    w = np.where(d > 0, 1.0 / np.maximum(d, 1e-9) ** 2, 0.0)
    x = np.sin(coords[:, 0] / 300.0) + 0.3 * rng.standard_normal(n)  # autocorrelated
    a = basis.T @ (x - x.mean())
    for _ in range(5):
        surrogate = basis @ (rng.choice([-1.0, 1.0], size=n - 1) * a)
        assert not np.allclose(surrogate, x - x.mean())
        assert _moran_i(surrogate, w) == pytest.approx(_moran_i(x, w), abs=1e-10)


def test_msr_variance_and_p_values_against_explicit_surrogates():
    rng = np.random.default_rng(6)
    coords = hex_points(7, 8)
    n = len(coords)
    basis = nulls.moran_basis(coords)
    x = np.cos(coords[:, 1] / 250.0) + 0.5 * rng.standard_normal(n)
    y = np.cos(coords[:, 1] / 250.0 + 0.5) + 0.5 * rng.standard_normal(n)
    xn = ((x - x.mean()) / np.linalg.norm(x - x.mean()))[:, None]
    yn = ((y - y.mean()) / np.linalg.norm(y - y.mean()))[:, None]
    a, b = basis.T @ xn, basis.T @ yn
    r = float(xn[:, 0] @ yn[:, 0])
    explicit = []
    for _ in range(4000):
        s = basis @ (rng.choice([-1.0, 1.0], size=(n - 1, 1)) * a)
        explicit.append(stats.pearsonr(s[:, 0], y).statistic)
    explicit = np.asarray(explicit)
    assert nulls.msr_variance(a, b)[0, 0] == pytest.approx(explicit.var(), rel=0.08)
    counts = nulls.msr_exceedances(a, b, np.array([[r]]), 4000, seed=1)
    expected = (np.abs(explicit) >= abs(r)).mean()
    assert counts[0, 0] / 4000 == pytest.approx(expected, abs=0.02)


def test_msr_map_on_one_eigenvector_has_p_one():
    coords = hex_points(6, 7)
    basis = nulls.moran_basis(coords)
    rng = np.random.default_rng(8)
    x = basis[:, -3:-2] * 5.0 + 1.0  # one Moran eigenvector: every surrogate is ±x
    y = x + rng.standard_normal(x.shape)
    table = sf.tl.cross_modal_correlation(make_mdata(x, y, coords), null="msr", n_permutations=49)
    assert table["r"].iloc[0] > 0.3
    assert table["p_value"].iloc[0] == 1.0
    table = sf.tl.cross_modal_correlation(
        make_mdata(x, 3 * x + 1, coords), null="msr", n_permutations=49
    )
    assert table["r"].iloc[0] == pytest.approx(1.0)
    assert table["p_value"].iloc[0] == 1.0


def test_annotated_ions_carry_their_names_into_the_table(small):
    import pandas as pd

    x, y, coords = small
    mdata = make_mdata(x, y, coords)
    msi = mdata["msi"]
    named = msi.var_names[0]
    mass = float(msi.var["mz"].iloc[0]) - 1.007276  # [M+H]+ of this neutral mass
    database = pd.DataFrame({"name": ["PC(34:1)"], "mass": [mass]})
    sf.tl.annotate(msi, database, adducts=["[M+H]+"], ppm=1.0)
    table = sf.tl.cross_modal_correlation(mdata)
    assert set(table.loc[table["ion"] == named, "ion_name"]) == {"PC(34:1)"}
    assert set(table.loc[table["ion"] != named, "ion_name"]) == {""}
