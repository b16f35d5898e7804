"""Joint clustering beyond our own demo (issue 18): semi-real cases, every method, ARI and NMI.

**Semi-real** means: the spot layouts, the H&E and the count structure are real, the labels and
the signals are synthetic. Each case takes

- a real Visium spot layout (in-tissue spots, hexagonal array coordinates, full-res pixel
  positions) from ``visium/cytassist_ffpe_mouse_brain`` (2,310 in-tissue spots, Space Ranger 2.x)
  or ``visium/scanpy_visium_1.0.0`` (4,235 in-tissue spots, Space Ranger 1.x);
- its real H&E (hires, resp. lowres, image): the regions follow the tissue: a band along the tissue
  edge, the most haematoxylin-rich spots (blue), the rest split by a line, plus two small discs,
  so region sizes are very unequal (e.g. 1,020 / 520 / 390 / 230 / 110 / 37 spots);
- the real count matrix of ``visium/visiumio_section1`` (50 spots × 49 genes): the spread of
  library sizes (relative to their median) and the gene-gene correlation of the log-normalised
  counts (shrunk halfway to the identity, repeated in blocks over 196 genes) and the gene means
  drive a negative-binomial-like (Poisson-log-normal) count model;
- synthetic MSI (log-normal ions, a per-spot TIC factor, optional nuisance: a smooth spatial
  gradient on many ions and pure-noise ions), missing (NaN, ``has_msi`` false) outside an
  acquisition window where the case says so.

Each region has an expression class and an MSI class; regions that share a class look the same
to that modality, so each modality alone merges some regions (the regions "only one modality
sees"). The *oracle* is the same default joint clustering run on the noiseless values (class means,
constant depth): where it reaches ARI 0.9 the target for the default is 0.8.

The fifth case is our demo trio (``sf.datasets.synthetic_trio`` through registration and mapping,
as ``tests/tl/test_cluster_trio.py``): purely synthetic, so its numbers are unit-test numbers.

Methods, each scored with ARI and NMI against the synthetic labels on the in-tissue spots that
have MSI (the only spots every method labels); ``joint (all spots)`` also scores the spots without
MSI, which the joint default places by expression:

- ``sf joint``: :func:`sf.tl.joint_cluster` with its defaults (concatenation with each modality
  weighted by its spatial signal share, ``weights="auto"``; resolution by stability; spatial
  smoothing 0.3); ``sf joint, detrend + feature smoothing``: the same with ``detrend=True,
  feature_smoothing=0.5`` (each component's robust linear trend of the positions taken out, each
  spot's embedding averaged half with its spatial neighbours'; session 12); ``sf joint,
  noise-share smoothing``: the same with ``feature_smoothing="noise_share"`` (each component
  moved toward its neighbours' mean by its own noise share ``1 − ρ_k``; session 14), and ``sf
  joint, binned detrend + noise-share smoothing`` with ``detrend="binned"`` as well (the trend's
  slope must be alike across the section; session 14); ``sf joint, consensus
  resolution``: the same with ``resolution="consensus"`` (stability, per-cluster stability and
  separation must agree; issue 18, session 10); ``sf joint, finer resolution``: the same with
  ``resolution="finer"`` (the stability rule with the two-cluster levels kept from setting the
  bar; session 11);
  ``sf joint, detrended weights``: the same with ``weights="detrended"`` (each component's
  smooth trend of the positions kept out of its signal share; session 11);
  ``sf joint, equal weights``: the same with ``weights=None`` (each modality's
  block at total variance 1, the default before the signal-share weights); ``old default (wnn,
  r=1)``: the defaults before issue 18 (no smoothing); ``sf wnn``: WNN with the other defaults;
  ``sf joint, no smoothing``; ``sf mofa`` (MOFA+ where ``mofapy2`` is installed); ``sf joint
  K`` (``n_clusters`` = the true number);
- ``sf rna`` / ``sf msi``: :func:`sf.tl.cluster_modality` with its defaults (the same stability
  rule and smoothing), and the same without smoothing;
- ``scanpy rna`` / ``scanpy msi``: plain scanpy, ``sc.pp.neighbors`` (15 neighbours) on the same
  PCA and ``sc.tl.leiden`` at resolution 1;
- ``muon wnn``: ``mu.pp.neighbors`` + ``mu.tl.leiden`` (resolution 1) on the spots with MSI, run in
  a subprocess (muon 0.1.9 has crashed the interpreter here) where muon is installed;
- ``oracle``: ``sf joint`` defaults on noiseless values (``oracle, <option>``: the options that
  could become the default, :data:`ORACLE_OPTIONS`, on the same values).

Run::

    python benchmarks/bench_clustering.py                 # all cases, seed 0, markdown table
    python benchmarks/bench_clustering.py --cases unequal partial_msi --seeds 0 1
    python benchmarks/bench_clustering.py --json out.json --no-muon
    python benchmarks/bench_clustering.py --core --seeds 6 7   # the rules and the target only

The shared data are read from ``$SPATIALFUSE_TEST_DATA``, else ``../shared/data`` beside the
repository; a case whose files are absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

N_GENE_BLOCKS = 4
N_IONS = 60


def data_root() -> Path:
    """``$SPATIALFUSE_TEST_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------
# real inputs
# ---------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """In-tissue spots of a real Visium folder and the H&E seen at each spot."""

    name: str
    barcodes: np.ndarray
    array_rc: np.ndarray  # (n, 2) array_row, array_col
    xy_px: np.ndarray  # (n, 2) full-res (x, y) = (column, row)
    um_per_px: float
    rgb: np.ndarray  # (n, 3) mean H&E colour around each spot, 0..1
    image: np.ndarray | None = None
    scalef: float = 1.0
    image_key: str = "hires"


LAYOUTS = {
    "cytassist": ("visium/cytassist_ffpe_mouse_brain/spatial", "tissue_positions.csv", "hires"),
    "scanpy_v1": ("visium/scanpy_visium_1.0.0/spatial", "tissue_positions_list.csv", "lowres"),
}


def load_layout(name: str, root: Path | None = None) -> Layout:
    """The in-tissue spots of a real layout with the mean H&E colour around each."""
    import pandas as pd
    from PIL import Image
    from scipy.spatial import cKDTree

    folder, positions, res = LAYOUTS[name]
    spatial = (root or data_root()) / folder
    path = spatial / positions
    if not path.is_file():
        raise FileNotFoundError(path)
    first = path.read_text().split("\n", 1)[0].split(",")[0]
    table = pd.read_csv(path, header=0 if first == "barcode" else None)
    table.columns = ["barcode", "in_tissue", "row", "col", "pxl_row", "pxl_col"]
    table = table[table["in_tissue"] == 1].reset_index(drop=True)
    scale = json.loads((spatial / "scalefactors_json.json").read_text())
    scalef = float(scale[f"tissue_{res}_scalef"])
    image = np.asarray(Image.open(spatial / f"tissue_{res}_image.png").convert("RGB"), float) / 255
    xy = table[["pxl_col", "pxl_row"]].to_numpy(np.float64)
    nn = cKDTree(xy).query(xy, k=2)[0][:, 1]
    um_per_px = 100.0 / float(np.median(nn))
    radius = max(1, round(0.5 * float(np.median(nn)) * scalef))
    rgb = np.empty((len(table), 3))
    for i, (x, y) in enumerate(xy * scalef):
        c, r = round(x), round(y)
        patch = image[max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1]
        rgb[i] = patch.reshape(-1, 3).mean(axis=0)
    return Layout(
        name,
        table["barcode"].to_numpy(str),
        table[["row", "col"]].to_numpy(np.int64),
        xy,
        um_per_px,
        rgb,
        image,
        scalef,
        res,
    )


@dataclass
class CountModel:
    """What the real count matrix of ``visiumio_section1`` gives the generator."""

    relative_depth: np.ndarray  # library sizes / their median (spots with counts)
    log_mean: np.ndarray  # (49,) log of the mean proportion of each gene
    correlation: np.ndarray  # (49, 49) of log-normalised counts, shrunk halfway to I


def load_count_model(root: Path | None = None) -> CountModel:
    import scanpy as sc

    path = (root or data_root()) / "visium/visiumio_section1/outs/raw_feature_bc_matrix.h5"
    if not path.is_file():
        raise FileNotFoundError(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.read_10x_h5(path)
    x = np.asarray(adata.X.todense(), dtype=np.float64)
    depth = x.sum(axis=1)
    x, depth = x[depth > 0], depth[depth > 0]
    prop = x / depth[:, None]
    log_mean = np.log(prop.mean(axis=0) + 1e-3)
    logn = np.log1p(prop * np.median(depth))
    corr = np.corrcoef(logn, rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(corr, 1.0)
    corr = 0.5 * corr + 0.5 * np.eye(corr.shape[0])
    return CountModel(depth / np.median(depth), log_mean, corr)


# ---------------------------------------------------------------------------------------------
# regions from the real layout and H&E
# ---------------------------------------------------------------------------------------------


def _hex_neighbours(array_rc: np.ndarray) -> list[np.ndarray]:
    where = {(int(r), int(c)): i for i, (r, c) in enumerate(array_rc)}
    steps = [(0, 2), (0, -2), (1, 1), (1, -1), (-1, 1), (-1, -1)]
    return [
        np.array([where[(r + a, c + b)] for a, b in steps if (r + a, c + b) in where], dtype=int)
        for r, c in array_rc
    ]


def tissue_regions(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Six regions of very unequal size that follow the real tissue and H&E.

    0/1: the interior split by a line through the tissue (along its long axis); 2: a band two
    spots wide along the tissue edge; 3: the 8 % most haematoxylin-rich (blue) interior spots; 4 and
    5: discs of radius 4 and 2.2 spot pitches around random interior spots. Labels are then
    renumbered by size, largest first.
    """
    n = len(layout.barcodes)
    nbrs = _hex_neighbours(layout.array_rc)
    edge = np.array([len(v) < 6 for v in nbrs])
    # hop distance from the edge (breadth-first)
    dist = np.where(edge, 0, -1)
    frontier = list(np.flatnonzero(edge))
    level = 0
    while frontier:
        level += 1
        nxt = []
        for i in frontier:
            for j in nbrs[i]:
                if dist[j] < 0:
                    dist[j] = level
                    nxt.append(j)
        frontier = nxt
    labels = np.zeros(n, dtype=np.int64)
    xy = layout.xy_px * layout.um_per_px
    centred = xy - xy.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    side = centred @ axis
    labels[side > np.quantile(side, 0.62 + 0.1 * rng.random())] = 1
    labels[dist <= 1] = 2
    r, _, b = layout.rgb.T
    blue = b - r  # haematoxylin shifts the pink of eosin towards blue
    interior = dist >= 3
    labels[interior & (blue >= np.quantile(blue[interior], 0.92))] = 3
    for region, radius in ((4, 4.0), (5, 2.2)):
        candidates = np.flatnonzero(dist >= radius + 2)
        centre = xy[rng.choice(candidates)]
        labels[np.linalg.norm(xy - centre, axis=1) <= radius * 100.0 + 1.0] = region
    sizes = np.bincount(labels, minlength=6)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty(6, dtype=np.int64)
    rank[order] = np.arange(6)
    return rank[labels]


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------


@dataclass
class CaseSpec:
    name: str
    layout: str
    rna_class: tuple[int, ...]  # expression class of each region (size order)
    msi_class: tuple[int, ...]
    depth: float = 1500.0  # median counts per spot
    rna_effect: float = 0.8  # log fold change of marker genes
    rna_sigma: float = 0.35  # spot-level log-normal over-dispersion (correlated across genes)
    msi_effect: float = 0.5  # log fold change of marker ions
    msi_sigma: float = 0.45  # per ion and spot log-normal noise
    msi_window: float = 1.0  # fraction of spots inside the MSI acquisition window
    msi_nuisance: float = 0.0  # amplitude of a smooth gradient on half of the ions
    msi_junk: int = 0  # ions of pure (high-variance) noise
    note: str = ""


CASES = {
    "unequal": CaseSpec(
        "unequal",
        "cytassist",
        rna_class=(0, 1, 1, 2, 3, 3),
        msi_class=(0, 0, 1, 2, 2, 3),
        note="six regions 1,000 to 37 spots; each modality merges two pairs",
    ),
    "one_modality": CaseSpec(
        "one_modality",
        "cytassist",
        rna_class=(0, 1, 1, 2, 2, 3),
        msi_class=(0, 0, 1, 2, 3, 2),
        rna_effect=0.7,
        msi_effect=0.6,
        note="weaker expression; region 4 (57 spots) only the MSI sees, 5 (19) only the RNA",
    ),
    "partial_msi": CaseSpec(
        "partial_msi",
        "scanpy_v1",
        rna_class=(0, 1, 1, 2, 3, 3),
        msi_class=(0, 0, 1, 2, 2, 3),
        msi_window=0.6,
        note="4,235 spots; the MSI covers 60 % of them",
    ),
    "noisy_msi": CaseSpec(
        "noisy_msi",
        "scanpy_v1",
        rna_class=(0, 0, 1, 2, 3, 3),
        msi_class=(0, 1, 1, 2, 2, 3),
        msi_sigma=0.6,
        msi_nuisance=0.5,
        msi_junk=10,
        msi_window=0.8,
        note="noisy MSI (σ 0.6, a smooth matrix-effect gradient on half the ions, 10 junk ions), "
        "80 % coverage; the expression merges the two largest regions",
    ),
}


@dataclass
class Case:
    name: str
    rna: object  # AnnData of counts (spots × genes)
    msi: object  # AnnData of intensities, NaN rows without MSI
    labels: np.ndarray
    rna_oracle: object | None = None
    msi_oracle: object | None = None
    info: dict = field(default_factory=dict)


def _adata(x, barcodes, prefix, layout, extra_obs=None):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(index=pd.Index(barcodes, dtype=str))
    for k, v in (extra_obs or {}).items():
        obs[k] = v
    var = pd.DataFrame(index=[f"{prefix}{j}" for j in range(x.shape[1])])
    a = ad.AnnData(X=np.asarray(x, dtype=np.float32), obs=obs, var=var)
    a.obsm["spatial"] = layout.xy_px.copy()
    a.obsm["spatial_um"] = layout.xy_px * layout.um_per_px
    a.uns["spatial"] = {
        layout.name: {
            "images": {layout.image_key: layout.image.astype(np.float32)},
            "scalefactors": {
                f"tissue_{layout.image_key}_scalef": layout.scalef,
                "spot_diameter_fullres": 55.0 / layout.um_per_px,
            },
        }
    }
    return a


def make_case(
    spec: CaseSpec | str, *, seed: int = 0, root: Path | None = None, oracle: bool = True
) -> Case:
    """Build one semi-real case (counts and MSI before any preprocessing)."""
    spec = CASES[spec] if isinstance(spec, str) else spec
    rng = np.random.default_rng([seed, sum(map(ord, spec.name))])
    layout = load_layout(spec.layout, root)
    model = load_count_model(root)
    labels = tissue_regions(layout, rng)
    n = labels.size
    rna_class = np.asarray(spec.rna_class)[labels]
    msi_class = np.asarray(spec.msi_class)[labels]

    # expression: Poisson-log-normal with the real gene-gene correlation and depth spread
    g0 = model.log_mean.size
    base = np.concatenate([rng.permutation(model.log_mean) for _ in range(N_GENE_BLOCKS)])
    n_genes = base.size
    chol = np.linalg.cholesky(model.correlation)
    n_rc = max(spec.rna_class) + 1
    effects = np.zeros((n_rc, n_genes))
    for c in range(n_rc):
        markers = rng.choice(n_genes, size=12, replace=False)
        effects[c, markers] = spec.rna_effect * rng.choice([-1.0, 1.0], size=12)
    log_p = base[None, :] + effects[rna_class]
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    noise = np.concatenate(
        [rng.standard_normal((n, g0)) @ chol.T for _ in range(N_GENE_BLOCKS)], axis=1
    )
    depth = spec.depth * rng.choice(model.relative_depth, size=n)
    depth = np.maximum(depth, 0.05 * spec.depth)
    mu = depth[:, None] * np.exp(log_p + spec.rna_sigma * noise - 0.5 * spec.rna_sigma**2)
    counts = rng.poisson(mu).astype(np.float32)

    # MSI: log-normal ions, TIC factor, nuisance gradient and junk ions, acquisition window
    n_mc = max(spec.msi_class) + 1
    ion_base = rng.normal(3.0, 1.0, size=N_IONS)
    ion_fx = np.zeros((n_mc, N_IONS))
    for c in range(n_mc):
        markers = rng.choice(N_IONS, size=8, replace=False)
        ion_fx[c, markers] = spec.msi_effect * rng.choice([-1.0, 1.0], size=8)
    log_i = ion_base[None, :] + ion_fx[msi_class]
    xy = layout.xy_px * layout.um_per_px
    span = (xy - xy.min(axis=0)) / np.ptp(xy, axis=0)
    if spec.msi_nuisance:
        direction = rng.normal(size=2)
        grad = (span - 0.5) @ (direction / np.linalg.norm(direction))
        loading = np.where(rng.random(N_IONS) < 0.5, rng.normal(1.0, 0.3, N_IONS), 0.0)
        log_i = log_i + spec.msi_nuisance * 2.0 * grad[:, None] * loading[None, :]
    tic = rng.normal(0.0, 0.25, size=(n, 1))
    intens = np.exp(log_i + tic + spec.msi_sigma * rng.standard_normal((n, N_IONS)))
    if spec.msi_junk:
        junk = np.exp(rng.normal(3.0, 1.5, size=(n, spec.msi_junk)))
        intens = np.concatenate([intens, junk], axis=1)
    has_msi = np.ones(n, dtype=bool)
    if spec.msi_window < 1.0:
        # a straight acquisition edge: of the four sides, the one that keeps the largest share
        # of the region with the smallest share inside (so every region keeps some MSI)
        best = None
        for axis_ in (0, 1):
            for sign in (1.0, -1.0):
                pos = sign * span[:, axis_]
                inside = pos <= np.quantile(pos, spec.msi_window)
                share = min(inside[labels == r].mean() for r in np.unique(labels))
                if best is None or share > best[0]:
                    best = (share, inside)
        has_msi = best[1]
    intens[~has_msi] = np.nan
    msi_obs = {
        "has_msi": has_msi,
        "msi_coverage": has_msi.astype(float),
        "n_msi_pixels": np.where(has_msi, 4, 0),
    }
    case = Case(
        spec.name,
        _adata(counts, layout.barcodes, "gene", layout),
        _adata(intens, layout.barcodes, "mz-", layout, msi_obs),
        labels,
        info={
            "layout": layout.name,
            "n_spots": int(n),
            "n_with_msi": int(has_msi.sum()),
            "region_sizes": np.bincount(labels).tolist(),
            "rna_class": list(spec.rna_class),
            "msi_class": list(spec.msi_class),
            "note": spec.note,
        },
    )
    if oracle:
        # noiseless: class means at constant depth (a tiny jitter keeps neighbours distinct)
        jit = 1e-3 * rng.standard_normal((n, n_genes))
        case.rna_oracle = _adata(np.exp(log_p + jit) * spec.depth, layout.barcodes, "gene", layout)
        clean = np.exp(
            ion_base[None, :] + ion_fx[msi_class] + 1e-3 * rng.standard_normal((n, N_IONS))
        )
        clean[~has_msi] = np.nan
        case.msi_oracle = _adata(clean, layout.barcodes, "mz-", layout, msi_obs)
    return case


def trio_case(workdir: Path, *, seed: int = 1) -> Case:
    """The demo trio through registration and mapping (purely synthetic)."""
    import spatialfuse as sf

    trio = sf.datasets.synthetic_trio(workdir, seed=seed, tissue_size_um=(2400.0, 2000.0))
    msi = sf.io.read_imzml(trio.msi)
    he = sf.io.read_histology(trio.he)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(trio.visium)
    chain = sf.reg.register_chain([msi, he, visium])
    spots = sf.tl.map_to_spots(msi, visium, transform=chain.transform)
    truth = dict(zip(trio.spot_barcodes, trio.spot_labels, strict=True))
    labels = np.array([truth[b] for b in visium.obs_names])
    keep = labels >= 0
    return Case(
        "trio (synthetic)",
        visium[keep].copy(),
        spots[keep].copy(),
        labels[keep],
        info={
            "layout": "synthetic",
            "n_spots": int(keep.sum()),
            "n_with_msi": int(np.asarray(spots.obs["has_msi"])[keep].sum()),
            "region_sizes": np.bincount(labels[keep]).tolist(),
            "note": "demo generator; registration ok: " + str(chain.ok),
        },
    )


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


def preprocess(rna, msi):
    """The documented path: preprocess_rna / preprocess_msi / joint_table."""
    import spatialfuse as sf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sf.pp.preprocess_rna(rna, n_top_genes=min(2000, rna.n_vars), n_comps=15, copy=True)
        m = sf.pp.preprocess_msi(msi, n_comps=15, copy=True)
        return sf.tl.joint_table(r, m)


def _labels(obs_column) -> np.ndarray:
    values = np.asarray(obs_column, dtype=object)
    return np.array(["" if (v is None or v != v) else str(v) for v in values], dtype=object)


def _scanpy_leiden(mod, rows) -> np.ndarray:
    import scanpy as sc

    sub = mod[rows].copy()
    sc.pp.neighbors(sub, n_neighbors=15, use_rep="X_pca", random_state=0)
    sc.tl.leiden(sub, resolution=1.0, flavor="igraph", n_iterations=2, random_state=0)
    out = np.full(mod.n_obs, "", dtype=object)
    out[rows] = sub.obs["leiden"].astype(str).to_numpy()
    return out


_MUON_SCRIPT = r"""
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np, mudata as md, muon as mu
m = md.read_h5mu(sys.argv[1])
for k in m.mod:
    import scanpy as sc
    sc.pp.neighbors(m.mod[k], n_neighbors=15, use_rep="X_pca", random_state=0)
mu.pp.neighbors(m, key_added="wnn", random_state=0)
# muon's WNN graph, scanpy's Leiden on it (mu.tl.leiden did not find the graph it had written)
import anndata as ad
tmp = ad.AnnData(obs=m.obs[[]].copy())
sc.tl.leiden(tmp, adjacency=m.obsp["wnn_connectivities"], resolution=1.0, flavor="igraph",
             n_iterations=2, directed=False, random_state=0)
np.save(sys.argv[2], tmp.obs["leiden"].astype(str).to_numpy())
"""


_MUON_BROKEN: list[str] = []  # why muon crashed once: not tried again in this process


def _muon_wnn(mdata, rows, timeout: float = 600.0) -> tuple[np.ndarray | None, str]:
    import mudata as md

    try:
        import muon  # noqa: F401
    except ImportError:
        return None, "muon not installed"
    if _MUON_BROKEN:
        return None, _MUON_BROKEN[0] + " (on an earlier case; not tried again)"
    with tempfile.TemporaryDirectory() as tmp:
        sub = md.MuData({k: mdata.mod[k][rows].copy() for k in mdata.mod})
        for k in sub.mod:
            sub.mod[k].uns.pop("spatial", None)
        path = Path(tmp) / "m.h5mu"
        sub.write(path)
        out = Path(tmp) / "labels.npy"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _MUON_SCRIPT, str(path), str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None, f"muon timed out after {timeout:.0f} s"
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
            why = f"muon failed (exit {proc.returncode}): {tail[0][:120]}"
            if proc.returncode < 0:  # killed by a signal (it has crashed the interpreter here)
                _MUON_BROKEN.append(why)
            return None, why
        labels = np.full(mdata.n_obs, "", dtype=object)
        labels[rows] = np.load(out, allow_pickle=True).astype(str)
        return labels, "ok"


def load_case(name: str, seed: int, **kwargs) -> Case:
    """Case ``name`` at ``seed``: the demo trio (built in a temporary folder, trio seed
    ``1 + seed``) or a semi-real case (:func:`make_case`, ``kwargs`` passed on)."""
    if name == "trio":
        with tempfile.TemporaryDirectory() as tmp:
            return trio_case(Path(tmp), seed=1 + seed)
    return make_case(name, seed=seed, **kwargs)


#: The options of ``sf.tl.joint_cluster`` run beside the default (``--options`` names them):
#: short name → (row, ``key_added``, keyword arguments).
OPTIONS = {
    "denoised": (
        "sf joint, detrend + feature smoothing",
        "jd5",
        {"detrend": True, "feature_smoothing": 0.5},
    ),
    "noise_share": ("sf joint, noise-share smoothing", "jn", {"feature_smoothing": "noise_share"}),
    "binned_noise_share": (
        "sf joint, binned detrend + noise-share smoothing",
        "jbn",
        {"detrend": "binned", "feature_smoothing": "noise_share"},
    ),
    "consensus": ("sf joint, consensus resolution", "jc", {"resolution": "consensus"}),
    "finer": ("sf joint, finer resolution", "jf", {"resolution": "finer"}),
    "detrended": ("sf joint, detrended weights", "jd", {"weights": "detrended"}),
}
#: Options also run on the noiseless values (an ``oracle, ...`` row each), where they run.
ORACLE_OPTIONS = ("noise_share", "binned_noise_share")


def run_methods(
    case: Case,
    *,
    muon: bool = True,
    mofa: bool = True,
    core: bool = False,
    options: list[str] | None = None,
) -> dict:
    """Labels of every method (``""`` where a method leaves a spot unlabelled) and notes.

    ``core``: only the default, the options (:data:`OPTIONS`: the detrend + feature smoothing,
    the noise-share smoothing, the resolution rules ``"consensus"`` and ``"finer"``, the
    ``"detrended"`` weights) and the rows the target needs (the single-modality rows and the
    oracle). ``options``: the short names of the options to run (default all).
    """
    import spatialfuse as sf

    mdata = preprocess(case.rna, case.msi)
    has = mdata.obs["has_msi"].to_numpy(bool)
    rows = np.flatnonzero(has)
    k_true = int(np.unique(case.labels).size)
    out: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    timing: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        fn()
        timing[name] = time.perf_counter() - t0

    timed("sf joint", lambda: sf.tl.joint_cluster(mdata, key_added="j"))
    out["sf joint"] = _labels(mdata.obs["j"])
    notes["sf joint"] = str(mdata.uns["j"]["params"].get("resolution_rule", ""))
    chosen = OPTIONS if options is None else {k: OPTIONS[k] for k in options}
    for row, key, kwargs in chosen.values():
        timed(
            row, lambda kwargs=kwargs, key=key: sf.tl.joint_cluster(mdata, **kwargs, key_added=key)
        )
        out[row] = _labels(mdata.obs[key])
    for key, name in (
        ("j", "sf joint"),
        ("jc", "consensus"),
        ("jf", "finer"),
        ("jn", "noise_share"),
    ):
        if key in mdata.uns:
            p = mdata.uns[key]["params"]
            notes[f"resolution ({name})"] = f"{p['resolution']:g}, {p['n_clusters']} clusters"
    if core:
        muon = mofa = False
    if not core:  # the other joint variants
        timed(
            "sf joint, equal weights",
            lambda: sf.tl.joint_cluster(mdata, weights=None, key_added="je"),
        )
        out["sf joint, equal weights"] = _labels(mdata.obs["je"])
        timed(
            "old default (wnn, r=1)",
            lambda: sf.tl.joint_cluster(
                mdata, method="wnn", resolution=1.0, spatial_smoothing=0.0, key_added="j1"
            ),
        )
        out["old default (wnn, r=1)"] = _labels(mdata.obs["j1"])
        timed("sf wnn", lambda: sf.tl.joint_cluster(mdata, method="wnn", key_added="w"))
        out["sf wnn"] = _labels(mdata.obs["w"])
        timed(
            "sf joint, no smoothing",
            lambda: sf.tl.joint_cluster(mdata, spatial_smoothing=0.0, key_added="js"),
        )
        out["sf joint, no smoothing"] = _labels(mdata.obs["js"])
        timed("sf joint K", lambda: sf.tl.joint_cluster(mdata, n_clusters=k_true, key_added="jk"))
        out["sf joint K"] = _labels(mdata.obs["jk"])
    if mofa:
        try:
            timed("sf mofa", lambda: sf.tl.joint_cluster(mdata, method="mofa", key_added="mo"))
            out["sf mofa"] = _labels(mdata.obs["mo"])
        except ImportError as err:
            notes["sf mofa"] = str(err).split(";")[0]
    timed("sf rna", lambda: sf.tl.cluster_modality(mdata, "rna", key_added="r"))
    out["sf rna"] = _labels(mdata.obs["r"])
    timed("sf msi", lambda: sf.tl.cluster_modality(mdata, "msi", key_added="m"))
    out["sf msi"] = _labels(mdata.obs["m"])
    for m in ("rna", "msi"):
        sf.tl.cluster_modality(mdata, m, spatial_smoothing=0.0, key_added=f"{m}0")
        out[f"sf {m}, no smoothing"] = _labels(mdata.obs[f"{m}0"])
    timed(
        "scanpy rna",
        lambda: out.__setitem__(
            "scanpy rna", _scanpy_leiden(mdata.mod["rna"], np.arange(mdata.n_obs))
        ),
    )
    timed(
        "scanpy msi", lambda: out.__setitem__("scanpy msi", _scanpy_leiden(mdata.mod["msi"], rows))
    )
    if muon:
        t0 = time.perf_counter()
        labels, why = _muon_wnn(mdata, rows)
        timing["muon wnn"] = time.perf_counter() - t0
        notes["muon wnn"] = why
        if labels is not None:
            out["muon wnn"] = labels
    if case.rna_oracle is not None:
        oracle = preprocess(case.rna_oracle, case.msi_oracle)
        sf.tl.joint_cluster(oracle, key_added="o")
        out["oracle"] = _labels(oracle.obs["o"])
        for name in ORACLE_OPTIONS:  # the options that could become the default, noiseless too
            if name in chosen:
                row, key, kwargs = chosen[name]
                sf.tl.joint_cluster(oracle, **kwargs, key_added=f"o{key}")
                out[f"oracle, {row.split(', ', 1)[1]}"] = _labels(oracle.obs[f"o{key}"])
    return {"labels": out, "notes": notes, "timing": timing, "has_msi": has, "mdata": mdata}


def score(truth: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    ok = rows & (labels != "")
    if ok.sum() < 2:
        return float("nan"), float("nan")
    t, lab = truth[ok], labels[ok].astype(str)
    return float(adjusted_rand_score(t, lab)), float(normalized_mutual_info_score(t, lab))


def evaluate(case: Case, **kwargs) -> dict:
    res = run_methods(case, **kwargs)
    has = res["has_msi"]
    rows = {}
    for name, labels in res["labels"].items():
        ari, nmi = score(case.labels, labels, has)
        rows[name] = {
            "ari": ari,
            "nmi": nmi,
            "n_clusters": int(np.unique(labels[has & (labels != "")]).size),
        }
    j = res["labels"]["sf joint"]
    every = np.ones(case.labels.size, dtype=bool)
    rows["sf joint"]["ari_all_spots"], rows["sf joint"]["nmi_all_spots"] = score(
        case.labels, j, every
    )
    rows["sf rna"]["ari_all_spots"], rows["sf rna"]["nmi_all_spots"] = score(
        case.labels, res["labels"]["sf rna"], every
    )
    mdata = res["mdata"]
    params = mdata.uns["j"]["params"]
    for m in ("rna", "msi"):  # a perfect clustering of one modality: its classes
        classes = case.info.get(f"{m}_class")
        if classes is not None:
            ceiling = np.asarray(classes)[case.labels].astype(str)
            ari, nmi = score(case.labels, ceiling, has)
            rows[f"{m} classes (ceiling)"] = {
                "ari": ari,
                "nmi": nmi,
                "n_clusters": len(set(classes)),
            }
    best_single = max(rows["sf rna"]["ari"], rows["sf msi"]["ari"])
    singles = ("sf rna", "sf msi", "sf rna, no smoothing", "sf msi, no smoothing")
    best_single_any = max(
        rows[k]["ari"] for k in (*singles, "scanpy rna", "scanpy msi") if k in rows
    )
    oracle = rows.get("oracle", {}).get("ari", float("nan"))
    target = best_single_any + 0.1
    if oracle >= 0.9:
        target = max(target, 0.8)
    joint = rows["sf joint"]["ari"]
    return {
        "case": case.name,
        "info": case.info,
        "methods": rows,
        "notes": res["notes"],
        "timing_s": res["timing"],
        "joint_params": {k: v for k, v in params.items() if not isinstance(v, (list, dict))},
        "joint_weights": dict(zip(params["modalities"], params.get("weights", []), strict=False)),
        "best_single": best_single,
        "best_single_any": best_single_any,
        "oracle": oracle,
        "target": target,
        "met": bool(joint >= target),
        "met_rules": {
            m: bool(rows[m]["ari"] >= target)
            for m in ("sf joint", *(row for row, _, _ in OPTIONS.values()))
            if m in rows
        },
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

ORDER = [
    "sf joint",
    "sf joint, noise-share smoothing",
    "sf joint, binned detrend + noise-share smoothing",
    "sf joint, detrend + feature smoothing",
    "sf joint, consensus resolution",
    "sf joint, finer resolution",
    "sf joint, detrended weights",
    "sf joint, equal weights",
    "old default (wnn, r=1)",
    "sf wnn",
    "sf joint, no smoothing",
    "sf mofa",
    "sf joint K",
    "muon wnn",
    "sf rna",
    "sf msi",
    "sf rna, no smoothing",
    "sf msi, no smoothing",
    "scanpy rna",
    "scanpy msi",
    "oracle",
    "oracle, noise-share smoothing",
    "oracle, binned detrend + noise-share smoothing",
    "rna classes (ceiling)",
    "msi classes (ceiling)",
]


def markdown(results: list[dict]) -> str:
    cases = [r["case"] for r in results]
    lines = ["| method | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for m in ORDER:
        cells = []
        for r in results:
            row = r["methods"].get(m)
            cells.append(
                "—" if row is None else f"{row['ari']:.2f} / {row['nmi']:.2f} ({row['n_clusters']})"
            )
        if any(c != "—" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append(
        "| sf joint, all spots (ARI / NMI) | "
        + " | ".join(
            f"{r['methods']['sf joint']['ari_all_spots']:.2f} / "
            f"{r['methods']['sf joint']['nmi_all_spots']:.2f}"
            for r in results
        )
        + " |"
    )
    lines.append(
        "| target (ARI) | "
        + " | ".join(f"{r['target']:.2f} {'met' if r['met'] else '**missed**'}" for r in results)
        + " |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", nargs="*", default=[*CASES, "trio"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-muon", action="store_true")
    parser.add_argument("--no-mofa", action="store_true")
    parser.add_argument(
        "--core",
        action="store_true",
        help="only the default, the options and the rows the target needs "
        "(single modalities, oracle); implies --no-muon --no-mofa",
    )
    parser.add_argument(
        "--options",
        nargs="*",
        choices=list(OPTIONS),
        default=None,
        help="the options of joint_cluster run beside the default (short names; default all)",
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    results = []
    for seed in args.seeds:
        for name in args.cases:
            t0 = time.perf_counter()
            try:
                case = load_case(name, seed)
            except FileNotFoundError as err:
                print(f"skipping {name}: {err} not found (set SPATIALFUSE_TEST_DATA)")
                continue
            r = evaluate(
                case,
                muon=not args.no_muon,
                mofa=not args.no_mofa,
                core=args.core,
                options=args.options,
            )
            r["seed"] = seed
            r["seconds"] = time.perf_counter() - t0
            results.append(r)
            j = r["methods"]["sf joint"]
            rules = ", ".join(
                f"{row.split(', ')[1]} {r['methods'][row]['ari']:.3f}"
                f"{'' if r['met_rules'][row] else ' MISSED'}"
                for row, _, _ in OPTIONS.values()
                if row in r["methods"]
            )
            for row in r["methods"]:
                if row.startswith("oracle, "):
                    rules += f"; {row} {r['methods'][row]['ari']:.3f}"
            print(
                f"{name} seed {seed}: joint ARI {j['ari']:.3f} ({j['n_clusters']} cl), best single "
                f"{r['best_single_any']:.3f}, oracle {r['oracle']:.3f}, target {r['target']:.2f} "
                f"{'met' if r['met'] else 'MISSED'} [{r['seconds']:.0f} s] ({rules}) {r['notes']} "
                f"weights {r['joint_weights']} ({r['joint_params'].get('weights_rule', '')})",
                flush=True,
            )
    if not results:
        return 1
    for seed in args.seeds:
        part = [r for r in results if r["seed"] == seed]
        print(f"\nseed {seed}: ARI / NMI (clusters) on spots with MSI\n")
        print(markdown(part))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0 if all(r["met"] for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
