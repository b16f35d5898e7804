"""Joint clustering of the spots of a joint table, and the single-modality clustering to compare.

Every method builds a weighted neighbour graph with the same kernel (:mod:`spatialfuse.tl._wnn`),
optionally mixes in the spatial neighbour graph, and runs the same Leiden (igraph's, through
scanpy, seeded), so joint and single-modality clusters differ only in what the graph is built from.

Weighted nearest neighbours are our own (:mod:`spatialfuse.tl._wnn`), not muon's: muon 0.1.9's
``mu.pp.neighbors`` was tried in this environment and is unusable (it crashed with "double free or
corruption" and spent about a minute in numba JIT compilation on 100 cells).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from spatialfuse._docs import copy_and_returns, fill_doc
from spatialfuse._logging import logger
from spatialfuse.core.adata import check_count
from spatialfuse.errors import DataWarning, MissingDependencyError
from spatialfuse.tl._wnn import (
    kernel_graph,
    modality_weights,
    neighbourhoods,
    symmetrise,
    wnn_graph,
)

if TYPE_CHECKING:
    import anndata
    import mudata

__all__ = [
    "METHODS",
    "MissingDependencyError",
    "cluster_modality",
    "joint_cluster",
    "neighbour_average",
    "robust_trend",
    "signal_share",
]

METHODS = ("wnn", "concat", "mofa")
#: What ``joint_cluster`` does with spots lacking a modality (e.g. no MSI).
INCOMPLETE = ("place", "exclude")
#: Candidate neighbours per modality for WNN (Seurat's ``knn.range``).
N_CANDIDATES = 200
# Leiden runs spent looking for a resolution that gives n_clusters.
_MAX_SEARCH = 40
#: ``resolution="auto"``: choose the resolution by the stability of the clusters under subsampling.
AUTO = "auto"
#: ``resolution="consensus"``: stability, per-cluster stability and separation must all agree
#: (issue 18, session 10; an option, not the default: see :func:`_stable_resolution`).
CONSENSUS = "consensus"
#: ``resolution="finer"``: the stability rule with the two-cluster levels kept from setting the
#: bar where a stable finer level is near (issue 18, session 11; see :func:`_stable_resolution`).
FINER = "finer"
RULES = (AUTO, CONSENSUS, FINER)
#: Resolutions the stability rule tries, coarse to fine.
RESOLUTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
#: Subsets of the spots per resolution, and the share of the spots in each.
STABILITY_RUNS = 4
STABILITY_FRACTION = 0.8
#: ``"auto"``: the finest resolution whose stability (mean adjusted Rand index between the subset
#: runs) is within this of the best one.
STABILITY_TOLERANCE = 0.05
#: ``"consensus"``: a resolution qualifies only if (1) its stability is within this of the best
#: (coarse splits are nearly always the most stable: the two halves of a tissue come back in
#: every subset even where the features carry no structure, so 0.05 kept a real but fuzzier finer
#: level out: ``noisy_msi`` seed 3, 0.99 at 2 clusters, 0.885 at the right 4),
CONSENSUS_TOLERANCE = 0.15
#: (2) each of its clusters comes back in the subsets: its mean Jaccard index with the
#: best-matching cluster of each subset run is at least this (Hennig 2007, ``fpc::clusterboot``:
#: clusters at 0.75 or above are "stable", at 0.5 or below "dissolved").
CLUSTER_STABILITY_MIN = 0.75
#: (3) every two of its clusters are at least this far apart in the embedding: the distance
#: between their means over the pooled SD along the line joining them. One Gaussian cut in two at
#: its mean gives 2 · 0.798 / 0.603 = 2.65, so a split no more separated than that is no evidence
#: of two groups (on the semi-real benchmark the splits of one region by the spatial graph or a
#: smooth gradient measured mostly 2.2–2.95, those between true regions 3.05–4.5).
SEPARATION_MIN = 2.65
#: The scan stops after two resolutions in a row this far below the best (ARI) stability.
STABILITY_DROP = 0.25
#: ``spatial_smoothing=None``: the weight of the spatial graph where spot positions exist.
DEFAULT_SPATIAL_SMOOTHING = 0.3
#: ``detrend``: radius (in spot pitches, the median distance to the nearest spot) of the
#: neighbourhoods whose local least-squares slopes :func:`robust_trend` takes the median of.
TREND_RADIUS = 3.0
#: ... and the fewest spots a neighbourhood needs for its slope to count.
TREND_MIN_SPOTS = 10
#: ``detrend="binned"``: equal-count bins of the spots along each component's slope direction,
#: whose median local slopes must agree in sign before the median over them counts as a trend.
BINNED = "binned"
TREND_BINS = 5
#: ``feature_smoothing="noise_share"``: each component moved toward its spatial neighbours' mean
#: by its own noise share ``1 − ρ_k`` (issue 18, session 14; an option, see :func:`joint_cluster`).
NOISE_SHARE = "noise_share"
#: ``weights="auto"``: each component of each modality weighted by its spatial signal share.
WEIGHTS_AUTO = "auto"
#: ``weights="detrended"``: the same, with a smooth trend of the spot positions taken out first.
WEIGHTS_DETRENDED = "detrended"
WEIGHTS_RULES = (WEIGHTS_AUTO, WEIGHTS_DETRENDED)
#: Degree of the polynomial of the spot positions that ``weights="detrended"`` takes out.
TREND_DEGREE = 2
#: Median of the chi-squared distribution with one degree of freedom (``scipy.stats.chi2(1)``):
#: the median of ``(x_i - x_j)^2 / (2 sigma^2)`` for Gaussian noise of variance ``sigma^2``.
_CHI2_1_MEDIAN = 0.454936423119572
#: Standard deviations of the no-signal spread of a share below which it counts as 0: with ``m``
#: adjacent pairs and no spatial signal the share scatters around 0 with SD ``2.33 / sqrt(m)``
#: (the sample median of χ²₁ values: ``1 / (2 f(0.4549) sqrt(m))``, f the χ²₁ density, over
#: 0.4549; checked by simulation), so shares below ``3 × 2.33 / sqrt(m)`` are set to 0.
SIGNAL_FLOOR_SD = 3.0
#: Fewer spots than this: no stability rule (subsets that small say nothing); this resolution.
STABILITY_MIN_SPOTS = 30
FALLBACK_RESOLUTION = 1.0
#: The first two parameters of the functions of a spots × components embedding and its positions.
_EMBEDDING_POSITIONS = """embedding
    ``(n, d)`` finite values.
positions
    ``(n, 2)`` spot positions."""


@fill_doc(copy=copy_and_returns("mdata", "mudata.MuData"))
def joint_cluster(
    mdata: mudata.MuData,
    *,
    method: str = "concat",
    resolution: float | str = AUTO,
    n_clusters: int | None = None,
    n_neighbors: int = 20,
    modalities: list[str] | None = None,
    use_rep: str = "X_pca",
    n_pcs: int | dict[str, int] | None = None,
    weights: dict[str, float] | str | None = WEIGHTS_AUTO,
    n_factors: int = 10,
    key_added: str = "joint",
    spatial_smoothing: float | None = None,
    n_spatial_neighbors: int = 6,
    feature_smoothing: float | str = 0.0,
    detrend: bool | str = False,
    incomplete: str = "place",
    seed: int = 0,
    show_progress: bool = False,
    copy: bool = False,
) -> mudata.MuData | None:
    """Cluster the spots of a joint table on all modalities at once (Leiden on a joint graph).

    The methods:

    - ``"concat"`` (default): each modality's embedding scaled (see **Modality weights**), the
      scaled embeddings side by side, one neighbour graph.
    - ``"wnn"``: weighted nearest neighbours (Hao et al. 2021; Seurat v4). Each spot gets its own
      modality weights, high for the modality whose neighbours predict the spot best, and the
      graph links spots that are close in the weighted combination (details in
      :mod:`spatialfuse.tl._wnn`). Embeddings are L2-normalised per spot first, as in Seurat.
    - ``"mofa"``: MOFA+ factors (``mofapy2``, optional; ``n_factors`` of them) of the modalities'
      ``X`` (the ``highly_variable`` features where that column exists), one neighbour graph.

    ``"concat"`` became the default (it was ``"wnn"``) after ``benchmarks/bench_clustering.py``:
    on semi-real cases where each modality tells apart regions the other merges, WNN's graph
    (a weighted *sum* of per-modality kernels) links spots close in either modality and merged
    such regions; the concatenation needs them close in both (ARI 0.92 vs 0.69 on the
    ``unequal`` case, see ``docs/benchmarks.md``).

    **Modality weights** (``method="concat"``). With ``weights="auto"`` (default) each component
    ``k`` (e.g. PC) of modality ``m`` gets the share ``ρ_k`` of its variance that is spatial signal,
    estimated from the data (``spatialfuse.tl._cluster.signal_share``): the noise variance is the
    median squared difference between spatially adjacent spots over 2 × 0.4549 (the median of χ²₁),
    robust to the pairs across region boundaries; ``ρ_k = 1 − noise / variance``, clipped to ``[0,
    1]``, 0 below three times its spread without signal (``2.33 / sqrt(pairs)``). The block is ``x_k
    · sqrt(ρ_k / T_m)``, ``T_m`` the modality's total variance, so each component contributes its
    signal variance, and the block's total variance (the modality's weight, ``params["weights"]``)
    is its signal share ``Σ ρ_k var_k / T_m``: a modality of pure noise gets weight 0, a noisy or
    partly informative one less than a clean one, whatever its number of features or its scale.
    Spots lacking a modality take no part in the estimate. Equal weights (each block at total
    variance 1, the rule before issue 18) are used with ``weights=None``, and by ``"auto"`` where
    there is no spatial evidence to weigh by: no spot positions, ``spatial_smoothing=0`` (clusters
    of the features alone), fewer than :data:`STABILITY_MIN_SPOTS` complete spots, or no component
    of any modality above the floor (then with a :class:`~spatialfuse.errors.DataWarning`);
    ``params["weights_rule"]`` says which. A dict gives each block's total variance by hand (default
    1 each). Measured on the semi-real benchmark: with a noisy MSI (σ 0.6, a smooth gradient on half
    the ions, 10 junk ions) the joint ARI went 0.40 → 0.83, 0.80 → 0.86, 0.81 → 0.76 and 0.40 → 0.42
    (seeds 0–3; at seed 3 the stability rule still settles on two clusters), the other semi-real
    cases +0.00 to +0.05 (``docs/benchmarks.md``); on the held-out seeds 4 and 5 of session 10, 0.59
    → 0.78 and 0.61 → 0.86 with the noisy MSI, 0.53 → 0.91 and 0.54 → 0.88 on ``unequal``. Caveats:
    the share counts only signal that adjacent spots share, so a cell type scattered spot by spot
    through the tissue looks like noise (give ``spatial_smoothing=0`` for such data, which also
    turns the weighting off); a smooth nuisance (a matrix-effect gradient) counts as signal unless
    ``detrend=True`` takes it out first (below); noise
    with heavier tails than a Gaussian (PCs of counts of uneven depth) keeps shares of 0.1–0.2.

    ``weights="detrended"`` (an option; issue 18, session 11) takes a smooth trend out of each
    share first: ``ρ_k = (var_k − t_k − noise_k) / var_k``, ``t_k`` the variance of component ``k``
    along its own quadratic trend of the spot positions (:func:`spatial_trend`: fitted to the
    differences between adjacent spots, then ``x_k`` regressed on it). A modality whose spatial
    structure is only a smooth gradient (a matrix effect) then gets (near) zero weight, where
    ``"auto"`` counts the gradient as signal. It is not the default: on the semi-real benchmark
    it cost more than it gained, because a region that is itself large-scale (a straight split
    of the section, a band along its edge) correlates with such a trend and loses its share too
    (``docs/benchmarks.md``, joint clustering, session 11).

    **Detrending and feature smoothing** (options of ``method="concat"``, off by default; issue
    18, session 12). With ``detrend=True`` each component of each modality loses its linear trend
    of the spot positions before the weights are measured, estimated robustly
    (:func:`robust_trend`: the median of the local least-squares slopes over neighbourhoods 3 spot
    pitches wide, so a smooth gradient — a matrix effect on the ions — which tilts every
    neighbourhood alike is taken out, while a strong region border, which tilts only the
    neighbourhoods it crosses, moves the median by little). With ``feature_smoothing=s`` each
    complete spot's embedding is then moved ``s`` of the way to the mean of its spatial
    neighbours' (:func:`neighbour_average`; with 0.5 independent noise keeps about 0.29 of its
    variance, a border is blurred by half a spot). ``params["detrend"]``, ``["trend_share"]``
    (per modality, each component's variance share taken out as trend) and
    ``["feature_smoothing"]`` record what was done. Measured on
    ``benchmarks/bench_clustering.py`` over seeds 0–13 (``docs/benchmarks.md``, session 12; 0–3
    designed on, 10–13 fresh), the two together (``detrend=True, feature_smoothing=0.5``) lift the
    noisy-MSI case (a matrix-effect gradient on half the ions) from 0.30–0.91 (7 of 14 seeds
    below the target of 0.8) to 0.84–0.96 (all met) and the other semi-real cases from 0.88–0.98
    to 0.94–0.99 (semi-real targets met: 54 of 56 runs against the default's 47), but they are
    not the default: on the purely synthetic demo trio seed 6 falls below its target (0.81 →
    0.69; 6 of 14 seeds met against 7); on noiseless values (the benchmark's oracle) the
    clustering falls apart (oracle ARI 0.78–1.00 → 0.17–0.59, 4–15 clusters; the feature
    smoothing does it, presumably because the averaged spots along a border become distinct
    mixtures that are split off); and a *weak* straight border between two
    large regions (mean shifts below the noise) is taken for a trend and removed
    (``tests/tl/test_domains.py``'s halves: spatial domains 0.85 → 0.39; the detrending does it).
    Use them for noisy data with a smooth nuisance gradient and large, clearly separated
    regions.

    **Noise-share smoothing** (``feature_smoothing="noise_share"``, an option of
    ``method="concat"``; issue 18, session 14). Each component ``k`` of each modality is moved
    toward the mean of its spatial neighbours by its own noise share, ``(1 − s_k)·x_ik +
    s_k·mean_j x_jk`` with ``s_k = 1 − ρ_k`` and ``ρ_k`` the signal share the weights measure
    (above; with ``detrend=True`` measured on the detrended values; with ``weights=None`` or a
    dict measured for the smoothing alone). A component without noise (``ρ_k = 1``: noiseless
    values, a clean modality) is left as it is, one of pure noise (``ρ_k = 0``, weight 0 anyway)
    becomes its neighbours' mean, and one in between is smoothed by the share of its variance
    that is noise, where the fixed ``feature_smoothing=0.5`` averages every component alike.
    ``params["smoothing_share"]`` records ``s_k`` per modality (None where no component shows
    spatial signal: then nothing is smoothed).
    Measured on ``benchmarks/bench_clustering.py`` (``docs/benchmarks.md``, session 14; seeds 0–1
    designed on, 2–13 held out): the oracle (noiseless values) is unchanged (0.998–1.000) and most
    semi-real runs gain 0.02–0.06, but it is not the default: it meets the targets in 46 of 56
    semi-real runs against the default's 47 (a large region cut in two at ``unequal`` seeds 7 and
    10, 0.94 → 0.74 and 0.95 → 0.72; on the noisy-MSI case four misses fixed, three new), and
    :func:`spatial_domains` on the pre-smoothed joint embedding loses its weak-border domains
    (``tests/tl/test_domains.py``: 0.85 → 0.77).

    ``detrend="binned"`` (an option, session 14) estimates the trend's slope so that it must be
    alike across the section (:func:`robust_trend` with ``bins=5``): the spots are cut into five
    equal-count bins along the component's median slope direction, each bin's median local slope
    along it is taken, and the slope is their median, 0 unless all five agree in sign. A border
    confined to one bin (the two halves of ``tests/tl/test_domains.py``) then counts as no
    trend, where ``detrend=True`` takes it for one (spatial domains 0.85 → 0.36 there; with
    ``"binned"`` 0.85).
    With ``feature_smoothing="noise_share"`` it met the targets in 49 of 56 semi-real runs (the
    default 47; noisy MSI 10 of 14 against 7) with the oracle unchanged, but it loses
    ``unequal`` seed 10 (0.95 → 0.72) and noisy-MSI seed 8 (0.91 → 0.27: two clusters, as at
    seeds 4 and 7), so it is an option for a noisy modality with a smooth nuisance gradient.

    **Resolution.** With ``resolution="auto"`` (default) it is chosen from the data by the
    stability of the clusters: for each of :data:`RESOLUTIONS` (0.05 … 2), Leiden runs on
    :data:`STABILITY_RUNS` random 80 % subsets of the spots, and the resolution's stability is the
    mean adjusted Rand index between those runs on the spots they share. Real clusters come back
    in every subset; a homogeneous region split at too high a resolution comes back split
    differently each time. The finest resolution whose stability is within
    :data:`STABILITY_TOLERANCE` (0.05) of the best is used (one-cluster resolutions are
    skipped). Its known failure: a coarse split is nearly always the most stable level (two
    halves of a tissue come back in every subset even where the features hold no structure), so
    where a real finer level is fuzzier the rule stops at the coarse one: on the semi-real
    ``noisy_msi`` case (seed 3) two clusters, ARI 0.42, where four (stability 0.885 vs 0.99) give
    0.79; and on pure noise it returns many clusters (16–20 in the tests).

    ``resolution="consensus"`` (an option) needs three criteria to agree: stability within
    :data:`CONSENSUS_TOLERANCE` (0.15) of the best, every cluster stable under subsampling (mean
    Jaccard with its best match in the subset runs at least :data:`CLUSTER_STABILITY_MIN`, 0.75:
    Hennig's clusterboot criterion), and every two clusters separated in the joint embedding by
    at least :data:`SEPARATION_MIN` (2.65, what one Gaussian cut in two at its mean gives)
    pooled standard deviations along the line joining their means; the finest qualifying
    resolution, else one cluster with a :class:`~spatialfuse.errors.DataWarning`. It fixes both
    failures above (``noisy_msi`` seed 3: four clusters, 0.79; pure noise: one cluster) but is
    not the default: chosen on seeds 0–3 of ``benchmarks/bench_clustering.py`` (there it met the
    targets as often as ``"auto"``, 16 of 20 runs), it over-split two of the ten runs of the
    held-out seeds 4 and 5 that ``"auto"`` got right (0.96 → 0.65, 0.94 → 0.57: regions cut in
    two by the spatial graph, 2.73–2.98 SD apart, no further than the noisy MSI's true regions,
    3.05–3.35), see ``docs/benchmarks.md``.

    ``resolution="finer"`` (an option, session 11) is ``"auto"`` with one exception for its
    known failure: where the most stable resolution gives two clusters and the most stable one
    giving three or more is within :data:`CONSENSUS_TOLERANCE` (0.15) of it with every cluster
    stable (Jaccard at least 0.75), that finer level sets the bar, and the finest resolution
    within :data:`STABILITY_TOLERANCE` of it whose clusters are all stable is used. A two-way
    split is stable on almost any layout once the spatial graph is mixed in (with the features
    shuffled column by column, 0.90–0.99 in 15 of the 20 semi-real and trio graphs of seeds
    0–3), so it is no evidence against a finer level;
    everywhere else the choice is ``"auto"``'s, so the large regions ``"auto"`` keeps whole are
    not cut. Chosen on seeds 0–3 of ``benchmarks/bench_clustering.py``, where it changes one run
    of twenty (``noisy_msi`` seed 3: four clusters, 0.42 → 0.79); the held-out check is in
    ``docs/benchmarks.md``.

    Every rule records, per resolution tried, ``params["stability"]``, ``["cluster_stability"]``
    (the smallest cluster's Jaccard) and ``["separation"]`` (the closest pair's). Below
    :data:`STABILITY_MIN_SPOTS` (30) clustered spots neither is used: resolution 1, with a
    :class:`~spatialfuse.errors.DataWarning`. A number uses that resolution; ``n_clusters``
    searches the resolution that gives that many clusters.

    **Spatial smoothing** is on by default where the table has spot positions
    (``spatial_smoothing=0.3``): 30 % of each spot's graph weight goes to its 6 nearest spots.
    On the semi-real benchmark (with equal weights) it was never worse than none and rescued the
    cases where the stability rule alone settled on too coarse a level (ARI 0.46 → 0.92 with MSI
    on 60 % of the spots, 0.38 → 0.80 with a noisy MSI, seed 1); it favours spatially contiguous
    domains, so give 0 for cell types scattered through the tissue.

    **Spots without MSI** (NaN rows of a modality, e.g. ``has_msi`` false) take no part in the
    joint graph: it is built from the spots that have every modality, and they are clustered
    alone. With ``incomplete="place"`` (default) each spot lacking a modality then gets the label
    most common among its ``n_neighbors − 1`` nearest clustered spots in the *reference* modality
    (the first that covers every spot, normally ``"rna"``; ties go to the nearest), so it is
    placed by its expression alone and cannot pull the clusters of the others; with
    ``incomplete="exclude"`` it gets no label (NaN). ``obs[f"{key_added}_basis"]`` says which
    spots were clustered on every modality, placed by the reference, or excluded (``"none"``).

    Parameters
    ----------
    mdata
        A joint table from :func:`joint_table` whose modalities carry ``obsm[use_rep]``
        (e.g. from :func:`spatialfuse.pp.preprocess_rna` / :func:`~spatialfuse.pp.preprocess_msi`).
    method
        ``"wnn"``, ``"concat"`` or ``"mofa"``.
    resolution
        ``"auto"`` (the stability rule above), ``"consensus"`` (the three criteria above),
        ``"finer"`` (``"auto"`` without the two-cluster collapse, above) or a Leiden resolution
        (modularity; higher gives more clusters). With ``n_clusters``, where the search starts
        (1 for the rules).
    n_clusters
        Search the resolution that gives exactly this many clusters (bisection over Leiden runs;
        a :class:`~spatialfuse.errors.DataWarning` if none does, keeping the closest count).
        Useful to compare methods at the same number of clusters.
    n_neighbors
        Size of each spot's neighbourhood, the spot itself included (Seurat's ``k.nn``); the
        graph links each spot to ``n_neighbors − 1`` others before symmetrisation.
    modalities
        The modalities to use, default all.
    use_rep
        Key of each modality's embedding in its ``obsm``.
    n_pcs
        Use only the first ``n_pcs`` columns of each embedding (or per modality, as a dict).
    weights
        ``method="concat"``: ``"auto"`` (default; each component weighted by its spatial
        signal share, above), ``"detrended"`` (the same with each component's smooth
        quadratic trend of the positions taken out of its share, above), None (each
        modality's block at total variance 1), or a dict of each block's total variance
        (modalities not named: 1). Other methods accept ``"auto"``, ``"detrended"`` and None
        and ignore them.
    n_factors
        ``method="mofa"``: number of MOFA+ factors.
    key_added
        Name of the labels and prefix of the other slots written.
    spatial_smoothing
        Weight ``α`` in ``[0, 1)`` of the spatial graph: the clustered graph is
        ``(1 − α)·G_features + α·G_spatial``, ``G_spatial`` being squidpy's
        kNN graph (``n_spatial_neighbors`` nearest spots, weight 1). None (default):
        :data:`DEFAULT_SPATIAL_SMOOTHING` (0.3) where the table has spot positions
        (``obsm["spatial_um"]`` or ``obsm["spatial"]``), else 0. Give 0 for clusters of
        expression and ions alone (e.g. cell types scattered through the tissue rather than
        domains).
    n_spatial_neighbors
        Neighbours per spot of the spatial graph (6 on the Visium hexagonal grid), also those
        ``feature_smoothing`` averages over.
    feature_smoothing
        ``method="concat"``: share ``s`` in ``[0, 1]`` of each complete spot's embedding that is
        replaced by the mean over its ``n_spatial_neighbors`` spatial neighbours, ``(1 − s)·x_i +
        s·mean_j x_j``, after the weights are measured (above; 0.5 is the value measured). 0
        (default): none. ``"noise_share"``: each component ``k`` of each modality by its own
        noise share ``s_k = 1 − ρ_k`` (**Noise-share smoothing**, above). Needs spot positions;
        other methods ignore it.
    detrend
        ``method="concat"``: take each component's robust linear trend of the spot positions out
        before the weights are measured (above). False (default): no. ``"binned"``: the same
        with the binned slope estimate (**Noise-share smoothing**, above). True and
        ``"binned"`` need spot positions; other methods ignore it.
    incomplete
        ``"place"``: spots lacking a modality get the label voted by their neighbours in the
        reference modality; ``"exclude"``: they get no label.
    seed
        Seed of Leiden, of the stability subsets (and of MOFA+); the same seed gives the same
        labels.
    show_progress
        Show a progress bar over the resolutions of the stability rule (``tqdm.auto``).
    {copy}

        - ``obs[key_added]``: categorical labels ``"0"``, ``"1"``, … (largest cluster first),
          also copied into each modality's ``obs``;
        - ``obs[f"{key_added}_basis"]``: ``"rna+msi"`` (the modalities joined by ``+``) for spots
          clustered on all modalities, else the reference modality that placed them, or
          ``"none"`` for spots excluded (``incomplete="exclude"``);
        - ``obsm[f"X_{key_added}"]``: the joint embedding, without NaN: the weighted blocks
          side by side (``"concat"``: detrended and averaged as above with those options, each
          block's total variance over the complete spots is its weight; ``"wnn"``: blocks at
          total variance 1) or the MOFA+ factors; for a spot
          lacking a modality, that block is the mean over the spots that voted its label
          (its nearest complete spots in the reference modality);
        - ``"wnn"``: ``obs[f"{key_added}_weight_{m}"]`` for each modality ``m``: the per-spot
          modality weights (summing to 1; 1 on the reference for spots lacking a modality);
        - ``obsp[f"{key_added}_connectivities"]``: the symmetric graph that was clustered (no
          edges at spots lacking a modality);
        - ``uns[key_added]``: ``connectivities_key`` and ``params`` (method, resolution used,
          ``resolution_rule`` — ``"stability"`` (``"auto"``), ``"consensus"``, ``"finer"``,
          ``"given"`` or ``"n_clusters"`` —, the
          ``stability``, ``cluster_stability`` and ``separation`` of each resolution tried
          (the rules), number of clusters, neighbours, modalities,
          ``incomplete`` and the numbers of spots complete, placed and excluded, smoothing,
          seed; ``"concat"``: ``weights``, one per modality, ``weights_rule`` — ``"signal"``,
          ``"given"`` or ``"equal"`` with the reason in brackets —, for ``"signal"``,
          ``signal_share``: ``{modality: [ρ_k, ...]}``, and ``detrend``, ``trend_share``
          (``{modality: [share of each component's variance taken out as trend]}``, where
          detrended), ``feature_smoothing`` and, with ``"noise_share"``, ``smoothing_share``
          (``{modality: [s_k, ...]}``)), so
          ``sc.tl.leiden(..., neighbors_key=key_added)`` style tools find the graph.

    Raises
    ------
    TypeError
        ``mdata`` is not a MuData.
    ValueError
        Unknown method or modality, a missing embedding, fewer than two modalities, no modality
        covering every spot, or bad parameters.
    MissingDependencyError
        ``method="mofa"`` without ``mofapy2`` (an :class:`ImportError`).
    """
    import pandas as pd

    from spatialfuse.tl._joint import _check_mudata

    _check_mudata(mdata)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_common(n_neighbors, resolution, n_clusters, spatial_smoothing, key_added)
    names = list(mdata.mod) if modalities is None else list(modalities)
    unknown = [m for m in names if m not in mdata.mod]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; mdata has {list(mdata.mod)}")
    if len(names) < 2:
        raise ValueError(
            f"joint clustering needs at least two modalities, got {names}; use "
            "sf.tl.cluster_modality for one"
        )
    if isinstance(weights, str) and weights not in WEIGHTS_RULES:
        raise ValueError(f"weights must be 'auto', 'detrended', None or a dict, got {weights!r}")
    if isinstance(weights, dict) and method != "concat":
        raise ValueError(f"weights apply to method='concat' only, not {method!r}")
    if incomplete not in INCOMPLETE:
        raise ValueError(f"incomplete must be one of {INCOMPLETE}, got {incomplete!r}")
    _check_feature_smoothing(feature_smoothing)
    if not (isinstance(detrend, (bool, np.bool_)) or detrend == BINNED):
        raise ValueError(f"detrend must be True, False or {BINNED!r}, got {detrend!r}")
    if method == "mofa":
        _require_mofapy2()
    mdata = mdata.copy() if copy else mdata
    n = mdata.n_obs
    if n < 3:
        raise ValueError(f"clustering needs at least 3 spots, got {n}")

    params: dict[str, Any] = {"method": method, "modalities": names, "n_neighbors": n_neighbors}
    if method == "mofa":
        factors = _mofa_factors(mdata, names, n_factors, seed)
        measured = {m: _measured_rows(mdata, m) for m in names}
        params["n_factors"] = int(factors.shape[1])
    else:
        embeddings = {m: _embedding(mdata, m, use_rep, n_pcs) for m in names}
        measured = {m: np.isfinite(e).all(axis=1) for m, e in embeddings.items()}
        if method == "wnn":
            embeddings = {m: _l2_normalise(e) for m, e in embeddings.items()}
    complete = np.logical_and.reduce([measured[m] for m in names])
    reference = next((m for m in names if measured[m].all()), None)
    if reference is None and not complete.all():
        raise ValueError(
            f"no modality among {names} has data for every spot; joint clustering needs one "
            "(normally rna) to place the spots that lack another"
        )
    if complete.sum() < 3:
        raise ValueError(
            "joint clustering needs at least 3 spots with every modality, got "
            f"{int(complete.sum())}"
        )
    rows = np.flatnonzero(complete)

    spot_weights, basis = None, None
    if method == "mofa":
        graph = kernel_graph(neighbourhoods(factors[rows], k=n_neighbors))
        basis = factors
        joint_embedding = factors
    elif method == "wnn":
        hoods = {
            m: neighbourhoods(e[rows], k=n_neighbors, n_candidates=N_CANDIDATES)
            for m, e in embeddings.items()
        }
        spot_weights = np.zeros((n, len(names)))
        if reference is not None:
            spot_weights[:, names.index(reference)] = 1.0
        spot_weights[rows] = modality_weights(hoods)
        graph = wnn_graph(hoods, spot_weights[rows], n_candidates=N_CANDIDATES)
    if method != "mofa":
        raw_reference = embeddings[reference] if reference is not None else None
        spatial = _Denoising(mdata, rows, n_spatial_neighbors)
        if method == "concat":
            embeddings, record = spatial.detrend(embeddings, detrend)
            params.update(record)
        shares, weights_rule = None, "equal"
        if method == "concat" and isinstance(weights, dict):
            weights_rule = "given"
        elif method == "concat" and weights in WEIGHTS_RULES:
            degree = TREND_DEGREE if weights == WEIGHTS_DETRENDED else None
            shares, weights_rule = _auto_shares(
                embeddings,
                rows,
                mdata,
                n_spatial_neighbors,
                smoothed=_smoothing(spatial_smoothing, mdata) > 0,
                trend_degree=degree,
            )
        if method == "concat":
            smoothing_shares = shares
            if feature_smoothing == NOISE_SHARE and shares is None:
                smoothing_shares = spatial.signal_shares(embeddings, weights, shares)
            embeddings, record = spatial.smooth(
                embeddings, feature_smoothing, signal=smoothing_shares
            )
            params.update(record)
        block_weights = _concat_weights(weights if weights_rule == "given" else None, names)
        blocks = []
        for m in names:
            e = embeddings[m]
            var = np.var(e[rows], axis=0, ddof=1)
            total = max(float(var.sum()), 1e-300)
            if shares is not None:  # column k: variance share[k] * var[k] / total
                blocks.append(e * np.sqrt(shares[m] / total)[None, :])
                block_weights[m] = float((shares[m] * var).sum() / total)
            else:
                blocks.append(e * np.sqrt(block_weights[m] / total))
        joint_embedding = np.concatenate(blocks, axis=1)
        if method == "concat":
            graph = kernel_graph(neighbourhoods(joint_embedding[rows], k=n_neighbors))
            params["weights"] = [block_weights[m] for m in names]
            params["weights_rule"] = weights_rule
            if shares is not None:
                params["signal_share"] = {m: [float(v) for v in shares[m]] for m in names}
        if reference is not None:
            basis = raw_reference

    leiden = _Leiden(
        spatial_smoothing, n_spatial_neighbors, resolution, n_clusters, seed, show_progress
    )
    found, used_resolution, record, graph, spatial_smoothing = _smoothed_leiden(
        symmetrise(graph), complete, mdata, joint_embedding[rows], leiden
    )
    labels = np.full(n, -1, dtype=np.int64)
    labels[rows] = found
    if not complete.all():
        donors = _donors(basis, complete, n_neighbors - 1)
        if incomplete == "place":
            labels[~complete] = _vote(donors, found)
        joint_embedding = _impute(joint_embedding, complete, donors)
    _write(mdata, labels, graph, key_added, modalities=names)
    mdata.obsm[f"X_{key_added}"] = joint_embedding
    placed = "" if incomplete == "exclude" else (reference or "")
    mdata.obs[f"{key_added}_basis"] = pd.Categorical(
        np.where(complete, "+".join(names), placed or "none")
    )
    if spot_weights is not None:
        for a, m in enumerate(names):
            mdata.obs[f"{key_added}_weight_{m}"] = spot_weights[:, a]
    params.update(
        reference=reference or "",
        n_spots_complete=int(complete.sum()),
        incomplete=incomplete,
        n_spots_placed=int((~complete).sum()) if incomplete == "place" else 0,
        n_spots_excluded=int((~complete).sum()) if incomplete == "exclude" else 0,
        resolution=used_resolution,
        resolution_rule=_rule(resolution, n_clusters, int(complete.sum())),
        **_stability_record(record),
        n_clusters=int(found.max() + 1),
        spatial_smoothing=float(spatial_smoothing),
        seed=int(seed),
    )
    mdata.uns[key_added] = {"connectivities_key": f"{key_added}_connectivities", "params": params}
    logger.info(
        "joint_cluster(%s): %d clusters at resolution %.4g; %d of %d spots placed by %s alone",
        method,
        found.max() + 1,
        used_resolution,
        int((~complete).sum()),
        n,
        reference,
    )
    return mdata if copy else None


def cluster_modality(
    data: mudata.MuData | anndata.AnnData,
    modality: str | None = None,
    *,
    resolution: float | str = AUTO,
    n_clusters: int | None = None,
    n_neighbors: int = 20,
    use_rep: str = "X_pca",
    n_pcs: int | None = None,
    key_added: str | None = None,
    spatial_smoothing: float | None = None,
    n_spatial_neighbors: int = 6,
    seed: int = 0,
    show_progress: bool = False,
    copy: bool = False,
) -> mudata.MuData | anndata.AnnData | None:
    """Cluster the spots on one modality with exactly the graph and Leiden of :func:`joint_cluster`.

    The graph is the same kernel graph on one embedding that ``joint_cluster`` builds from
    several, with the same neighbours, spatial smoothing and Leiden, so the labels can be compared
    with the joint ones on equal terms (e.g. at the same ``n_clusters``). Spots without data in
    the modality (NaN rows, e.g. no MSI) get no label (NaN) and no edge.

    Parameters
    ----------
    data
        A joint table (MuData, then name the ``modality``) or one modality's AnnData.
    modality
        The modality of a MuData to cluster; must be None for an AnnData.
    resolution, n_clusters, n_neighbors, spatial_smoothing, n_spatial_neighbors
        As in :func:`joint_cluster` (``resolution="auto"`` / ``"consensus"`` / ``"finer"``: the
        same rules, the separation measured in the modality's embedding).
    seed, show_progress
        As in :func:`joint_cluster`.
    use_rep
        Key of the embedding in the modality's ``obsm``.
    n_pcs
        Use only the first ``n_pcs`` columns of the embedding.
    key_added
        Name of the labels; default ``f"{modality}_clusters"`` (``"clusters"`` for an AnnData).
    copy
        Return a modified copy instead of writing into ``data``.

    Returns
    -------
    mudata.MuData or anndata.AnnData or None
        The copy when ``copy`` is true, else None. Slots written (in ``data``; for a MuData the
        labels are also copied into the modality's ``obs``):

        - ``obs[key_added]``: categorical labels (NaN for spots without data);
        - ``obsp[f"{key_added}_connectivities"]``: the graph;
        - ``uns[key_added]``: ``connectivities_key`` and ``params`` (resolution used,
          ``resolution_rule``, ``stability``, ``cluster_stability`` and ``separation`` of each
          resolution tried, number of clusters,
          spots clustered, ...).

    Raises
    ------
    TypeError
        ``data`` is neither a MuData nor an AnnData.
    ValueError
        Unknown modality, a missing embedding, too few spots with data, or bad parameters.
    """
    is_mudata = hasattr(data, "mod")
    if is_mudata:
        if modality is None or modality not in data.mod:
            raise ValueError(
                f"modality must name one of {list(data.mod)} for a MuData, got {modality!r}"
            )
    elif not all(hasattr(data, a) for a in ("obs", "obsm", "obsp", "uns")):
        raise TypeError(f"data must be a MuData or an AnnData, got {type(data).__name__}")
    elif modality is not None:
        raise ValueError("modality must be None when data is an AnnData")
    if key_added is None:
        key_added = f"{modality}_clusters" if is_mudata else "clusters"
    _check_common(n_neighbors, resolution, n_clusters, spatial_smoothing, key_added)
    data = data.copy() if copy else data

    embedding = _embedding(data, modality, use_rep, n_pcs)
    valid = np.isfinite(embedding).all(axis=1)
    if valid.sum() < 3:
        raise ValueError(
            f"clustering needs at least 3 spots with an embedding, got {int(valid.sum())}"
        )
    sub = symmetrise(kernel_graph(neighbourhoods(embedding[valid], k=n_neighbors)))
    leiden = _Leiden(
        spatial_smoothing, n_spatial_neighbors, resolution, n_clusters, seed, show_progress
    )
    labels, used_resolution, record, graph, spatial_smoothing = _smoothed_leiden(
        sub, valid, data, embedding[valid], leiden
    )
    full = np.full(data.n_obs, -1, dtype=np.int64)
    full[valid] = labels
    _write(data, full, graph, key_added, modalities=[modality] if is_mudata else [])
    data.uns[key_added] = {
        "connectivities_key": f"{key_added}_connectivities",
        "params": {
            "method": "single",
            "modality": modality if modality is not None else "",
            "n_neighbors": int(n_neighbors),
            "resolution": used_resolution,
            "resolution_rule": _rule(resolution, n_clusters, int(valid.sum())),
            **_stability_record(record),
            "n_clusters": int(labels.max() + 1),
            "spatial_smoothing": float(spatial_smoothing),
            "seed": int(seed),
            "n_spots_clustered": int(valid.sum()),
        },
    }
    return data if copy else None


# -------------------------------------------------------------------------------------------------
# inputs
# -------------------------------------------------------------------------------------------------


def _check_common(n_neighbors, resolution, n_clusters, spatial_smoothing, key_added) -> None:
    check_count(n_neighbors, "n_neighbors", minimum=2)
    if isinstance(resolution, str):
        if resolution not in RULES:
            raise ValueError(
                f"resolution must be a positive number or one of {RULES}, got {resolution!r}"
            )
    elif not (
        isinstance(resolution, (int, float, np.integer, np.floating))
        and np.isfinite(resolution)
        and resolution > 0
    ):
        raise ValueError(
            f"resolution must be a positive number or one of {RULES}, got {resolution!r}"
        )
    check_count(n_clusters, "n_clusters", optional=True)
    if spatial_smoothing is not None and not 0.0 <= float(spatial_smoothing) < 1.0:
        raise ValueError(f"spatial_smoothing must lie in [0, 1), got {spatial_smoothing!r}")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")


def _embedding(data, modality: str | None, use_rep: str, n_pcs) -> np.ndarray:
    """``obsm[use_rep]`` of a modality as float64 rows in the table's spot order (NaN if absent)."""
    table = data.mod[modality] if modality is not None else data
    where = f"mdata[{modality!r}]" if modality is not None else "adata"
    if use_rep not in table.obsm:
        raise ValueError(
            f"{where}.obsm has no {use_rep!r}; run sf.pp.preprocess_rna / sf.pp.preprocess_msi "
            "(or give use_rep=) first"
        )
    emb = np.asarray(table.obsm[use_rep], dtype=np.float64)
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise ValueError(f"{where}.obsm[{use_rep!r}] must be a 2-D array, got shape {emb.shape}")
    count = n_pcs.get(modality) if isinstance(n_pcs, dict) else n_pcs
    if count is not None:
        check_count(count, "n_pcs")
        emb = emb[:, : int(count)]
    if modality is not None and not table.obs_names.equals(data.obs_names):
        position = table.obs_names.get_indexer(data.obs_names)
        out = np.full((data.n_obs, emb.shape[1]), np.nan)
        out[position >= 0] = emb[position[position >= 0]]
        emb = out
    return emb


def _l2_normalise(embedding: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(embedding, axis=1, keepdims=True)
    return embedding / np.where(norm > 0, norm, 1.0)


def _measured_rows(mdata, modality: str) -> np.ndarray:
    """Spots (in the table's order) whose row of the modality's ``X`` is all finite."""
    from spatialfuse.core.adata import finite_rows

    mod = mdata.mod[modality]
    ok = finite_rows(mod.X)
    position = mod.obs_names.get_indexer(mdata.obs_names)
    return np.where(position >= 0, ok[np.maximum(position, 0)], False)


def _donors(basis: np.ndarray, known: np.ndarray, k: int) -> np.ndarray:
    """Each unknown spot's ``k`` nearest ``known`` spots in ``basis``, nearest first.

    Returns ``(n_unknown, k)`` positions among the known spots.
    """
    from sklearn.neighbors import NearestNeighbors

    have = np.flatnonzero(known)
    k = max(1, min(k, have.size))
    return NearestNeighbors(n_neighbors=k).fit(basis[have]).kneighbors(basis[~known])[1]


def _vote(donors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The commonest label among each row's donors; ties go to the nearest of the tied."""
    k = donors.shape[1]
    votes = labels[donors]
    n_labels = int(labels.max()) + 1
    counts = np.zeros((votes.shape[0], n_labels), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(votes.shape[0]), k), votes.ravel()), 1)
    tied = counts == counts.max(axis=1, keepdims=True)
    first = np.argmax(tied[np.arange(votes.shape[0])[:, None], votes], axis=1)
    return votes[np.arange(votes.shape[0]), first]


def _impute(embedding: np.ndarray, known: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """``embedding`` with no NaN: the spots not ``known`` get their donors' mean where not finite.

    Only the non-finite values of those spots are replaced, column by column.
    """
    out = np.array(embedding, dtype=np.float64, copy=True)
    unknown = np.flatnonzero(~known)
    mean = out[known][donors].mean(axis=1)
    rows = out[unknown]
    out[unknown] = np.where(np.isfinite(rows), rows, mean)
    return out


def signal_share(
    embedding: np.ndarray,
    positions: np.ndarray,
    *,
    n_neighbors: int = 6,
    trend_degree: int | None = None,
) -> np.ndarray:
    """Share of each column's variance that spatially adjacent spots have in common.

    For column ``k`` of ``embedding`` (spots × components), the noise variance is estimated from
    the differences between spatially adjacent spots (pairs of squidpy's kNN graph of
    ``positions``, ``n_neighbors`` per spot): ``σ²_k = median((x_ik − x_jk)²) / (2 · 0.4549)``,
    0.4549 being the median of χ²₁, so that for Gaussian noise ``σ²_k`` is the noise variance,
    whatever the signal, as long as most adjacent spots share it. The *median* leaves out the
    pairs across a region boundary, where adjacent spots differ by signal (the mean of the
    squared differences — ``1 −`` Geary's C — would count them as noise). The share is
    ``ρ_k = max(0, 1 − σ²_k / var(x_k))``: about 0 for a component of noise, near 1 for one whose
    value changes only between regions. Without spatial signal ``ρ_k`` scatters around 0 with SD
    ``2.33 / sqrt(m)`` over ``m`` adjacent pairs; shares below :data:`SIGNAL_FLOOR_SD` (3) times
    that are set to 0.

    Noise with heavier tails than a Gaussian (e.g. PCs of counts whose depth varies from spot to
    spot) makes ``σ²_k`` too small, so such noise keeps a share of about 0.1–0.2.

    With ``trend_degree`` the variance along the column's smooth trend (a polynomial of the
    positions, :func:`spatial_trend`) is not counted as signal either: ``ρ_k = max(0, (var(x_k) −
    t_k − σ²_k) / var(x_k))``, ``t_k`` the variance of ``x_k`` explained by a regression on its
    trend. Adjacent spots share a smooth gradient, so without this it counts as signal.

    Parameters
    ----------
    embedding
        ``(n, d)`` finite values.
    positions
        ``(n, 2)`` spot positions, ``(x, y)``.
    n_neighbors
        Spatial neighbours of each spot (6 on the Visium grid).
    trend_degree
        None (default): no trend taken out. Otherwise the degree of the polynomial trend
        (``joint_cluster(weights="detrended")`` uses :data:`TREND_DEGREE`, 2).

    Returns
    -------
    numpy.ndarray
        ``(d,)`` shares in ``[0, 1]`` (0 for a constant column).
    """
    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    check_count(n_neighbors, "n_neighbors")
    if n < 3 or np.asarray(positions).shape != (n, 2):
        raise ValueError(
            f"signal_share needs at least 3 spots and (n, 2) positions, got {n} spots and "
            f"positions of shape {np.asarray(positions).shape}"
        )
    pairs = _adjacent_pairs(positions, n_neighbors)
    var = np.var(x, axis=0, ddof=1)
    kept = var
    if trend_degree is not None:  # take out the variance along the column's smooth trend
        kept = var - _variance_along(x, spatial_trend(x, positions, pairs, degree=trend_degree))
    floor = SIGNAL_FLOOR_SD * _null_share_sd(len(pairs[0]))
    out = np.zeros(x.shape[1])
    for k in range(x.shape[1]):
        noise = np.median((x[pairs[0], k] - x[pairs[1], k]) ** 2) / (2.0 * _CHI2_1_MEDIAN)
        if var[k] > 0:
            out[k] = min(max((kept[k] - noise) / var[k], 0.0), 1.0)
    out[out < floor] = 0.0
    return out


def _adjacent_pairs(positions: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)``, ``i < j``, of the pairs of squidpy's spatial kNN graph (symmetrised)."""
    import anndata as ad
    from scipy import sparse

    from spatialfuse._spatial_graph import spatial_knn_graph

    n = len(positions)
    tmp = ad.AnnData(obs={"i": np.arange(n)})
    tmp.obsm["spatial"] = np.asarray(positions, dtype=np.float64)
    spatial_knn_graph(tmp, n_neighs=int(min(n_neighbors, n - 1)))
    pairs = sparse.triu(symmetrise((tmp.obsp["spatial_connectivities"] > 0).astype(float)), k=1)
    pairs = pairs.tocoo()
    return pairs.row, pairs.col


def _trend_design(positions: np.ndarray, degree: int) -> np.ndarray:
    """The monomials ``x^a y^b``, ``1 ≤ a + b ≤ degree``, of standardised positions."""
    p = np.asarray(positions, dtype=np.float64)
    p = (p - p.mean(axis=0)) / np.where(p.std(axis=0) > 0, p.std(axis=0), 1.0)
    terms = []
    for total in range(1, int(degree) + 1):
        for i in range(total + 1):
            terms.append(p[:, 0] ** (total - i) * p[:, 1] ** i)
    return np.column_stack(terms)


@fill_doc(embedding_positions=_EMBEDDING_POSITIONS)
def spatial_trend(
    embedding: np.ndarray,
    positions: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    *,
    degree: int = TREND_DEGREE,
) -> np.ndarray:
    """Smooth trend of each column fitted to the differences between adjacent spots.

    Fits a polynomial ``T(p)`` of the positions (degree ``degree``, no constant) by least squares
    to ``x_i − x_j ≈ T(p_i) − T(p_j)`` over adjacent pairs ``(i, j)``, i.e. to the *local
    gradient* of each column: a smooth nuisance changes every adjacent pair a little, in the same
    direction, while a region boundary changes only the pairs that cross it. :func:`signal_share`
    uses the fitted trend's *shape* and regresses the column on it, so a region laid out like a
    trend (a straight split of the section) still correlates with it and loses part of its share.

    Parameters
    ----------
    {embedding_positions}
    pairs
        ``(i, j)`` index arrays of the adjacent pairs.
    degree
        Degree of the polynomial.

    Returns
    -------
    numpy.ndarray
        ``(n, d)``: each column's trend, centred.
    """
    x = np.asarray(embedding, dtype=np.float64)
    design = _trend_design(positions, degree)
    i, j = pairs
    coef, *_ = np.linalg.lstsq(design[i] - design[j], x[i] - x[j], rcond=None)
    trend = design @ coef
    return trend - trend.mean(axis=0)


def _variance_along(x: np.ndarray, trend: np.ndarray) -> np.ndarray:
    """Per column, the variance of ``x`` explained by a regression on its ``trend`` column."""
    xc = x - x.mean(axis=0)
    tc = trend - trend.mean(axis=0)
    t2 = (tc**2).sum(axis=0)
    along = np.where(t2 > 0, (xc * tc).sum(axis=0) ** 2 / np.where(t2 > 0, t2, 1.0), 0.0)
    return along / max(x.shape[0] - 1, 1)


def _null_share_sd(n_pairs: int) -> float:
    """SD of a column's share over ``n_pairs`` adjacent pairs when it carries no spatial signal."""
    from scipy import stats

    density = stats.chi2(1).pdf(_CHI2_1_MEDIAN)
    return 1.0 / (2.0 * density * np.sqrt(max(n_pairs, 1)) * _CHI2_1_MEDIAN)


def _auto_shares(
    embeddings, rows, data, n_spatial: int, *, smoothed: bool, trend_degree: int | None = None
):
    """``weights="auto"``: the signal share of every column of each modality, and the rule used.

    None (equal weights) where the table has no spot positions, the graph is not smoothed
    spatially (clusters of the features alone), there are too few complete spots, or no modality
    shows any spatial signal.
    """
    key = "spatial_um" if "spatial_um" in data.obsm else "spatial"
    if key not in data.obsm:
        return None, "equal (no spot positions)"
    if not smoothed:
        return None, "equal (no spatial smoothing)"
    if rows.size < STABILITY_MIN_SPOTS:
        return None, "equal (too few spots)"
    positions = np.asarray(data.obsm[key], dtype=np.float64)[rows]
    shares = {
        m: signal_share(e[rows], positions, n_neighbors=n_spatial, trend_degree=trend_degree)
        for m, e in embeddings.items()
    }
    if not any(s.any() for s in shares.values()):
        warnings.warn(
            "no modality shows spatial signal (every component's signal share is 0); "
            "weighting the modalities equally",
            DataWarning,
            stacklevel=3,
        )
        return None, "equal (no spatial signal)"
    return shares, "signal"


class _Denoising:
    """The options of ``method="concat"`` applied before the kernel graph (issue 18, session 12).

    ``detrend`` takes each component's robust linear trend of the positions out
    (:func:`robust_trend`), before the signal shares are measured; ``smooth`` then averages each
    complete spot's embedding with its spatial neighbours' (:func:`neighbour_average`). Both act
    on the complete spots (``rows``) only; each returns the embeddings and a record for
    ``params``.
    """

    def __init__(self, data, rows: np.ndarray, n_spatial: int) -> None:
        key = "spatial_um" if "spatial_um" in data.obsm else "spatial"
        self.rows = rows
        self.n_spatial = n_spatial
        self.positions = (
            np.asarray(data.obsm[key], dtype=np.float64)[rows] if key in data.obsm else None
        )

    def detrend(self, embeddings: dict, detrend: bool) -> tuple[dict, dict]:
        if detrend and self.positions is None:
            raise ValueError("detrend=True needs spot positions in obsm['spatial'(_um)]")
        if not detrend:
            return embeddings, {"detrend": False}
        out, shares = {}, {}
        bins = TREND_BINS if detrend == BINNED else None
        for m, e in embeddings.items():
            x = e[self.rows]
            trend = robust_trend(x, self.positions, bins=bins)
            var = np.var(x, axis=0, ddof=1)
            shares[m] = [
                float(v) for v in np.var(trend, axis=0, ddof=1) / np.where(var > 0, var, 1.0)
            ]
            out[m] = np.array(e, dtype=np.float64, copy=True)
            out[m][self.rows] = x - trend
        return out, {"detrend": detrend if detrend == BINNED else True, "trend_share": shares}

    def signal_shares(self, embeddings: dict, weights, shares) -> dict | None:
        """Signal shares for ``feature_smoothing="noise_share"`` where the weights measured none.

        Measured as ``weights="auto"`` would (``"detrended"``: with the quadratic trend kept
        out); None where there are too few complete spots or no component of any modality
        shows spatial signal (then nothing is smoothed).
        """
        if shares is not None or self.positions is None:
            return shares
        if self.rows.size < STABILITY_MIN_SPOTS:
            return None
        degree = TREND_DEGREE if weights == WEIGHTS_DETRENDED else None
        out = {
            m: signal_share(
                e[self.rows], self.positions, n_neighbors=self.n_spatial, trend_degree=degree
            )
            for m, e in embeddings.items()
        }
        return out if any(v.any() for v in out.values()) else None

    def smooth(
        self, embeddings: dict, feature_smoothing: float | str, *, signal: dict | None = None
    ) -> tuple[dict, dict]:
        noise_share = feature_smoothing == NOISE_SHARE
        share = 0.0 if noise_share else float(feature_smoothing)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"feature_smoothing must lie in [0, 1], got {feature_smoothing!r}")
        if (noise_share or share > 0) and self.positions is None:
            raise ValueError("feature_smoothing needs spot positions in obsm['spatial'(_um)]")
        if noise_share:
            if signal is None:  # no component shows spatial signal: nothing to go by
                return embeddings, {"feature_smoothing": NOISE_SHARE, "smoothing_share": None}
            shares = {m: 1.0 - np.clip(np.asarray(signal[m], float), 0.0, 1.0) for m in signal}
        elif share == 0:
            return embeddings, {"feature_smoothing": 0.0}
        else:
            shares = {m: share for m in embeddings}
        out = {}
        for m, e in embeddings.items():
            out[m] = np.array(e, dtype=np.float64, copy=True)
            out[m][self.rows] = neighbour_average(
                e[self.rows], self.positions, share=shares[m], n_neighbors=self.n_spatial
            )
        if noise_share:
            return out, {
                "feature_smoothing": NOISE_SHARE,
                "smoothing_share": {m: [float(v) for v in shares[m]] for m in shares},
            }
        return out, {"feature_smoothing": share}


def _check_feature_smoothing(feature_smoothing) -> None:
    if isinstance(feature_smoothing, str):
        if feature_smoothing != NOISE_SHARE:
            raise ValueError(
                f"feature_smoothing must lie in [0, 1] or be {NOISE_SHARE!r}, "
                f"got {feature_smoothing!r}"
            )
        return
    if not (
        isinstance(feature_smoothing, (int, float, np.integer, np.floating))
        and 0.0 <= float(feature_smoothing) <= 1.0
    ):
        raise ValueError(
            f"feature_smoothing must lie in [0, 1] or be {NOISE_SHARE!r}, got {feature_smoothing!r}"
        )


@fill_doc(embedding_positions=_EMBEDDING_POSITIONS)
def robust_trend(
    embedding: np.ndarray,
    positions: np.ndarray,
    *,
    radius: float = TREND_RADIUS,
    bins: int | None = None,
) -> np.ndarray:
    """Each column's linear trend of the positions, estimated so that region borders hardly count.

    For every spot, the least-squares slope (a 2-vector per column) of the column over the spots
    within ``radius`` spot pitches (the pitch is the median distance to the nearest spot;
    neighbourhoods of fewer than :data:`TREND_MIN_SPOTS` spots are left out); the trend's slope is
    the median of those local slopes, coordinate by coordinate. A smooth gradient (e.g. a matrix
    effect on the ions) tilts every neighbourhood alike, so the median keeps it; a region border
    tilts only the neighbourhoods it crosses, so a region, even one laid out like a trend (a
    straight split of the section), moves the median little. A least-squares fit to the values,
    or to the differences between adjacent spots (:func:`spatial_trend`), counts a step between
    two halves as a slope of the same size (the mean local slope equals the step over the
    distance), which is why ``weights="detrended"`` also took out large regions.

    With ``bins`` the slopes must be alike across the section before they count as a trend: the
    spots are cut into ``bins`` equal-count bins along the column's median slope direction, each
    bin's median local slope along that direction is taken, and the trend's slope is the median
    of those (along that direction), 0 unless every bin's has the same sign. A border confined to
    one bin then cannot count; the step alone of a straight split, which the plain median still
    takes for a small slope (0.02 per pitch in the tests), gives none.

    Parameters
    ----------
    {embedding_positions}
    radius
        Neighbourhood radius in spot pitches.
    bins
        None (default): the median of all the local slopes. A number: the binned estimate above
        (``joint_cluster(detrend="binned")`` uses :data:`TREND_BINS`, 5).

    Returns
    -------
    numpy.ndarray
        ``(n, d)``: each column's linear trend at each spot, centred (zeros where no
        neighbourhood qualifies).
    """
    check_count(bins, "bins", minimum=2, optional=True)
    x = np.asarray(embedding, dtype=np.float64)
    p = np.asarray(positions, dtype=np.float64)
    slopes = _local_slopes(x, p, radius, bins=bins)
    if slopes is None:
        return np.zeros_like(x)
    gradient, pitch = slopes
    trend = ((p - p.mean(axis=0)) / pitch) @ gradient
    return trend - trend.mean(axis=0)


def _local_slopes(x: np.ndarray, p: np.ndarray, radius: float, *, bins: int | None = None):
    """``(2, d)`` median local slope per column (per pitch) and the pitch, or None."""
    from sklearn.neighbors import NearestNeighbors

    if x.shape[0] < TREND_MIN_SPOTS:
        return None
    nearest = NearestNeighbors(n_neighbors=2).fit(p).kneighbors(p)[0][:, 1]
    pitch = float(np.median(nearest))
    if not pitch > 0:
        return None
    q = (p - p.mean(axis=0)) / pitch
    hood = NearestNeighbors(radius=radius * 1.01).fit(q).radius_neighbors_graph(q).tocsr()
    count = np.asarray(hood.sum(axis=1)).ravel()

    def mean(values):
        return (hood @ values) / count.reshape((-1,) + (1,) * (values.ndim - 1))

    qm, xm = mean(q), mean(x)
    s00 = mean(q[:, 0] ** 2) - qm[:, 0] ** 2
    s01 = mean(q[:, 0] * q[:, 1]) - qm[:, 0] * qm[:, 1]
    s11 = mean(q[:, 1] ** 2) - qm[:, 1] ** 2
    b0 = mean(q[:, [0]] * x) - qm[:, [0]] * xm
    b1 = mean(q[:, [1]] * x) - qm[:, [1]] * xm
    det = s00 * s11 - s01**2
    ok = (count >= TREND_MIN_SPOTS) & (det > 1e-6 * max(float(np.median(det)), 1e-300))
    if not ok.any():
        return None
    det = det[ok, None]
    g0 = (s11[ok, None] * b0[ok] - s01[ok, None] * b1[ok]) / det
    g1 = (s00[ok, None] * b1[ok] - s01[ok, None] * b0[ok]) / det
    gradient = np.vstack([np.median(g0, axis=0), np.median(g1, axis=0)])
    if bins is not None:
        gradient = _binned_slopes(g0, g1, q[ok], gradient, int(bins))
    return gradient, pitch


def _binned_slopes(g0, g1, q, gradient, bins: int) -> np.ndarray:
    """The binned slope estimate of :func:`robust_trend` (``(2, d)``, per pitch).

    Per column: the spots in ``bins`` equal-count bins along the column's median slope
    direction, the median local slope of each bin along that direction, and the trend's slope
    the median over the bins, 0 unless every bin's has the same sign.
    """
    out = np.zeros_like(gradient)
    for k in range(gradient.shape[1]):
        norm = float(np.hypot(*gradient[:, k]))
        if not norm > 0:
            continue
        u = gradient[:, k] / norm
        proj = q @ u
        edges = np.quantile(proj, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        which = np.searchsorted(edges, proj, side="right")
        along = np.array(
            [
                np.median(g0[which == b, k]) * u[0] + np.median(g1[which == b, k]) * u[1]
                for b in range(bins)
                if (which == b).any()
            ]
        )
        if along.size and ((along > 0).all() or (along < 0).all()):
            out[:, k] = np.median(along) * u
    return out


@fill_doc(embedding_positions=_EMBEDDING_POSITIONS)
def neighbour_average(
    embedding: np.ndarray,
    positions: np.ndarray,
    *,
    share: float | np.ndarray,
    n_neighbors: int = 6,
) -> np.ndarray:
    """Each spot's embedding moved ``share`` of the way to the mean over its spatial neighbours.

    ``(1 − share) · x_i + share · mean_j x_j`` over the spots ``j`` adjacent to ``i`` in
    squidpy's kNN graph of ``positions`` (``n_neighbors`` per spot, symmetrised; a spot with
    none keeps its value). With 0.5 and 6 neighbours each neighbour weighs 1/12: independent noise
    keeps about 0.29 of its variance (0.25 + 0.25 / 6), a region border is blurred by half a spot.

    Parameters
    ----------
    {embedding_positions}
    share
        Weight of the neighbours' mean, in ``[0, 1]``: one for every column, or ``(d,)``, one
        per column (``joint_cluster(feature_smoothing="noise_share")`` gives each component its
        noise share ``1 − ρ_k``).
    n_neighbors
        Spatial neighbours of each spot.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` averaged values.
    """
    from scipy import sparse

    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    share = np.asarray(share, dtype=np.float64)
    if share.ndim not in (0, 1) or (share.ndim == 1 and share.shape != (x.shape[1],)):
        raise ValueError(f"share must be a number or one per column, got shape {share.shape}")
    if not np.all((share >= 0) & (share <= 1)):
        raise ValueError("share must lie in [0, 1]")
    if n < 2 or not share.any():
        return x.copy()
    i, j = _adjacent_pairs(positions, n_neighbors)
    adjacency = sparse.coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)).tocsr()
    adjacency = adjacency + adjacency.T
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    mean = (adjacency @ x) / np.where(degree > 0, degree, 1.0)[:, None]
    return np.where(degree[:, None] > 0, (1.0 - share) * x + share * mean, x)


def _concat_weights(weights, names) -> dict[str, float]:
    weights = dict(weights or {})
    unknown = [m for m in weights if m not in names]
    if unknown:
        raise ValueError(f"weights name modalities not clustered: {unknown}")
    out = {m: float(weights.get(m, 1.0)) for m in names}
    if any(not (np.isfinite(w) and w >= 0) for w in out.values()) or not any(out.values()):
        raise ValueError(f"weights must be non-negative and not all zero, got {out}")
    return out


def _require_mofapy2() -> None:
    try:
        import mofapy2  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "method='mofa' needs the optional package mofapy2, which is not installed; install "
            "it with `pip install mofapy2` (or use method='wnn' or 'concat')"
        ) from err


def _mofa_factors(mdata, names: list[str], n_factors: int, seed: int) -> np.ndarray:
    """MOFA+ factors (spots × factors) of the modalities' ``X`` (NaN rows are missing values)."""
    from mofapy2.run.entry_point import entry_point

    from spatialfuse.core.adata import dense_rows

    check_count(n_factors, "n_factors")
    views, features = [], []
    for m in names:
        mod = mdata.mod[m]
        if not mod.obs_names.equals(mdata.obs_names):
            raise ValueError(f"modality {m!r} is not in the table's spot order")
        mask = (
            mod.var["highly_variable"].to_numpy(dtype=bool)
            if "highly_variable" in mod.var
            else np.ones(mod.n_vars, dtype=bool)
        )
        views.append([dense_rows(mod.X, np.ones(mod.n_obs, dtype=bool), mask)])
        features.append([str(v) for v in mod.var_names[mask]])
    with contextlib.redirect_stdout(io.StringIO()):  # mofapy2 prints banners even when quiet
        return _run_mofa(entry_point, views, features, names, mdata, n_factors, seed)


def _run_mofa(entry_point, views, features, names, mdata, n_factors, seed) -> np.ndarray:
    ent = entry_point()
    ent.set_data_options(scale_views=True)
    ent.set_data_matrix(
        views,
        likelihoods=["gaussian"] * len(names),
        views_names=names,
        groups_names=["spots"],
        samples_names=[[str(s) for s in mdata.obs_names]],
        features_names=features,
    )
    ent.set_model_options(factors=int(n_factors))
    ent.set_train_options(seed=int(seed), convergence_mode="fast", quiet=True, verbose=False)
    ent.build()
    ent.run()
    return np.asarray(ent.model.nodes["Z"].getExpectation(), dtype=np.float64)


# -------------------------------------------------------------------------------------------------
# graph and Leiden
# -------------------------------------------------------------------------------------------------


class _Leiden(NamedTuple):
    """The clustering options :func:`_smoothed_leiden` applies (the public functions' names)."""

    spatial_smoothing: float | None
    n_spatial_neighbors: int
    resolution: float | str
    n_clusters: int | None
    seed: int
    show_progress: bool


def _smoothed_leiden(sub, valid: np.ndarray, data, embedding: np.ndarray, options: _Leiden):
    """Leiden on the symmetric graph ``sub`` of the ``valid`` spots, spatially smoothed.

    ``embedding``: the valid spots' embedding (for the resolution rule). Returns the valid spots'
    labels, the resolution used and its record, the smoothed graph over every spot, and the
    smoothing used.
    """
    graph = _embed_graph(sub, valid)
    alpha = _smoothing(options.spatial_smoothing, data)
    graph = _smooth(graph, data, alpha, options.n_spatial_neighbors, valid=valid)
    labels, used, record = _leiden_labels(
        graph[valid][:, valid],
        options.resolution,
        options.n_clusters,
        options.seed,
        embedding=embedding,
        show_progress=options.show_progress,
    )
    return labels, used, record, graph, alpha


def _embed_graph(sub, valid: np.ndarray):
    """A graph over the ``valid`` spots as an ``n × n`` graph (no edge at the other spots)."""
    from scipy import sparse

    idx = np.flatnonzero(valid)
    coo = sub.tocoo()
    return sparse.csr_matrix(
        (coo.data, (idx[coo.row], idx[coo.col])), shape=(valid.size, valid.size)
    )


def _smoothing(alpha: float | None, data) -> float:
    """``alpha``; for None, :data:`DEFAULT_SPATIAL_SMOOTHING` where positions exist, else 0."""
    if alpha is not None:
        return float(alpha)
    has_positions = "spatial_um" in data.obsm or "spatial" in data.obsm
    return DEFAULT_SPATIAL_SMOOTHING if has_positions else 0.0


def _smooth(graph, data, alpha: float, n_spatial: int, *, valid: np.ndarray | None = None):
    """``(1 − α)·graph + α·spatial kNN graph`` (squidpy), restricted to ``valid`` spots."""
    if alpha <= 0:
        return graph
    import anndata as ad

    from spatialfuse._spatial_graph import spatial_knn_graph

    key = "spatial_um" if "spatial_um" in data.obsm else "spatial"
    if key not in data.obsm:
        raise ValueError("spatial_smoothing needs spot positions in obsm['spatial'(_um)]")
    check_count(n_spatial, "n_spatial_neighbors")
    valid = np.ones(graph.shape[0], dtype=bool) if valid is None else valid
    tmp = ad.AnnData(obs={"i": np.flatnonzero(valid)})
    tmp.obsm["spatial"] = np.asarray(data.obsm[key], dtype=np.float64)[valid]
    spatial_knn_graph(tmp, n_neighs=int(min(n_spatial, valid.sum() - 1)))
    spatial = tmp.obsp["spatial_connectivities"]
    spatial = symmetrise((spatial > 0).astype(np.float64))
    return ((1.0 - alpha) * graph + alpha * _embed_graph(spatial, valid)).tocsr()


def _leiden(graph, resolution: float, seed: int) -> np.ndarray:
    """Leiden labels (igraph through scanpy; largest cluster = 0) of a symmetric graph."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(graph.shape[0])]))
    sc.tl.leiden(
        tmp,
        resolution=float(resolution),
        adjacency=graph,
        flavor="igraph",
        directed=False,
        n_iterations=-1,
        random_state=int(seed),
        key_added="leiden",
    )
    return _by_size(tmp.obs["leiden"].astype(int).to_numpy())


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``0, 1, …`` by cluster size, largest first (ties: first seen first)."""
    _, raw = np.unique(labels, return_inverse=True)
    sizes = np.bincount(raw)
    first = np.full(sizes.size, raw.size)
    np.minimum.at(first, raw, np.arange(raw.size))
    rank = np.empty(sizes.size, dtype=np.int64)
    rank[np.lexsort((first, -sizes))] = np.arange(sizes.size)
    return rank[raw]


def _leiden_labels(
    graph, resolution, n_clusters: int | None, seed: int, *, embedding=None, show_progress=False
):
    """Labels at ``resolution`` (a number or ``"auto"``), or at one giving ``n_clusters``.

    Returns labels, the resolution used and, for the rules (:data:`RULES`), the record of the
    resolutions tried (:func:`_stable_resolution`; else None). ``embedding``: the rows
    clustered, for the separation of each resolution.
    """
    if n_clusters is None:
        if resolution in RULES and graph.shape[0] < STABILITY_MIN_SPOTS:
            warnings.warn(
                f"{graph.shape[0]} spots are too few to choose the resolution by stability "
                f"(needs {STABILITY_MIN_SPOTS}); using resolution {FALLBACK_RESOLUTION:g}",
                DataWarning,
                stacklevel=3,
            )
            return _leiden(graph, FALLBACK_RESOLUTION, seed), FALLBACK_RESOLUTION, None
        if resolution == AUTO:
            return _stable_resolution(graph, seed, embedding=embedding, show_progress=show_progress)
        if resolution in (CONSENSUS, FINER):
            return _stable_resolution(
                graph, seed, embedding=embedding, rule=resolution, show_progress=show_progress
            )
        return _leiden(graph, resolution, seed), float(resolution), None
    start = 1.0 if resolution in RULES else float(resolution)
    tried: dict[float, np.ndarray] = {}

    def run(r: float) -> int:
        tried[r] = _leiden(graph, r, seed)
        return int(tried[r].max() + 1)

    lo, hi = 0.0, start
    count = run(hi)
    while count < n_clusters and len(tried) < _MAX_SEARCH // 2:
        lo, hi = hi, hi * 2.0
        count = run(hi)
    if count > n_clusters:
        while len(tried) < _MAX_SEARCH:
            mid = 0.5 * (lo + hi)
            count = run(mid)
            if count == n_clusters:
                break
            if count < n_clusters:
                lo = mid
            else:
                hi = mid
    best = min(tried, key=lambda r: (abs(int(tried[r].max() + 1) - n_clusters), r))
    found = int(tried[best].max() + 1)
    if found != n_clusters:
        warnings.warn(
            f"no resolution tried gives {n_clusters} clusters; keeping {found} "
            f"(resolution {best:.4g})",
            DataWarning,
            stacklevel=3,
        )
    return tried[best], best, None


def _stable_resolution(
    graph, seed: int, *, embedding=None, rule: str = AUTO, show_progress: bool = False
):
    """The finest resolution of :data:`RESOLUTIONS` whose clusters are stable (and separated).

    For each resolution, Leiden runs on the whole graph and on :data:`STABILITY_RUNS` random
    subsets of :data:`STABILITY_FRACTION` of the spots (the subgraph they induce, each with its
    own seed); its stability is the mean adjusted Rand index between every two subset runs on the
    spots they share. Resolutions giving one cluster are skipped.

    ``rule="auto"`` (the default of :func:`joint_cluster`): the finest resolution whose stability
    is within :data:`STABILITY_TOLERANCE` (0.05) of the best.

    ``rule="consensus"``: a resolution qualifies if

    - its stability is within :data:`CONSENSUS_TOLERANCE` (0.15) of the best,
    - every cluster of the whole-graph run comes back in the subsets: its mean over the runs of
      the Jaccard index with the best-matching cluster of the run (on the spots the run has) is at
      least :data:`CLUSTER_STABILITY_MIN` (Hennig's clusterboot criterion), and
    - every two clusters are separated in ``embedding`` by at least :data:`SEPARATION_MIN`
      (:func:`_separation`), so that a region cut in two by the spatial graph or a smooth
      gradient, which comes back in every subset just as well, does not count.

    The finest qualifying resolution is used. None qualifying (e.g. no structure at all): one
    cluster, resolution 0, with a :class:`~spatialfuse.errors.DataWarning`. Without an embedding
    the separation is not checked. Chosen on seeds 0–3 of ``benchmarks/bench_clustering.py`` and
    then checked on fresh seeds 4 and 5, it over-split two held-out runs that ``"auto"`` got
    right (partial_msi seed 4 0.96 → 0.65, one_modality seed 5 0.94 → 0.57: a region cut by the
    spatial graph with separation 2.73–2.98, as far apart as the true regions of the noisy MSI
    case, 3.05–3.35), so it is an option, not the default.

    ``rule="finer"``: as ``"auto"``, except where the most stable resolution gives two clusters
    (:func:`_finer_choice`).

    Every rule: the scan stops once two resolutions in a row fall :data:`STABILITY_DROP` below
    the best stability; every resolution's stability, smallest cluster Jaccard and smallest
    separation are recorded.

    Returns labels, the resolution, and a record ``{"stability": {r: ARI}, "cluster_stability":
    {r: min Jaccard}, "separation": {r: min separation}}``.
    """
    from sklearn.metrics import adjusted_rand_score
    from tqdm.auto import tqdm

    n = graph.shape[0]
    rng = np.random.default_rng(seed)
    size = max(3, round(STABILITY_FRACTION * n))
    subsets = [np.sort(rng.choice(n, size=size, replace=False)) for _ in range(STABILITY_RUNS)]
    subgraphs = [graph[s][:, s] for s in subsets]
    full: dict[float, np.ndarray] = {}
    stability: dict[float, float] = {}
    cluster_stability: dict[float, float] = {}
    separation: dict[float, float] = {}
    below = 0
    for r in tqdm(RESOLUTIONS, desc="resolution", disable=not show_progress, leave=False):
        full[r] = _leiden(graph, r, seed)
        if full[r].max() < 1:
            continue
        runs = []
        for i, (s, g) in enumerate(zip(subsets, subgraphs, strict=True)):
            lab = np.full(n, -1, dtype=np.int64)
            lab[s] = _leiden(g, r, seed + 1 + i)
            runs.append(lab)
        scores = []
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                both = (runs[i] >= 0) & (runs[j] >= 0)
                scores.append(adjusted_rand_score(runs[i][both], runs[j][both]))
        stability[r] = float(np.mean(scores))
        cluster_stability[r] = float(_cluster_jaccard(full[r], runs).min())
        if embedding is not None:
            separation[r] = _separation(embedding, full[r])
        best = max(stability.values())
        below = below + 1 if stability[r] < best - STABILITY_DROP else 0
        if below >= 2:
            break
    record = {
        "stability": stability,
        "cluster_stability": cluster_stability,
        "separation": separation,
    }
    if not stability:  # every resolution gave one cluster
        r = RESOLUTIONS[-1]
        return full[r], float(r), record
    best = max(stability.values())
    if rule == AUTO:
        chosen = max(r for r, v in stability.items() if v >= best - STABILITY_TOLERANCE)
        return full[chosen], float(chosen), record
    if rule == FINER:
        chosen = _finer_choice(stability, cluster_stability, full)
        return full[chosen], float(chosen), record
    ok = [
        r
        for r in stability
        if stability[r] >= best - CONSENSUS_TOLERANCE
        and cluster_stability[r] >= CLUSTER_STABILITY_MIN
        and (embedding is None or separation[r] >= SEPARATION_MIN)
    ]
    if not ok:
        warnings.warn(
            "no resolution gives clusters that are both stable under subsampling (Jaccard >= "
            f"{CLUSTER_STABILITY_MIN:g}) and separated (>= {SEPARATION_MIN:g} SD); all spots "
            "are put in one cluster (give resolution= or n_clusters= to split them anyway)",
            DataWarning,
            stacklevel=4,
        )
        return np.zeros(n, dtype=np.int64), 0.0, record
    chosen = max(ok)
    return full[chosen], float(chosen), record


def _finer_choice(
    stability: dict[float, float],
    cluster_stability: dict[float, float],
    full: dict[float, np.ndarray],
) -> float:
    """The resolution ``rule="finer"`` picks from a scan's record (stability, smallest Jaccard).

    As ``"auto"`` (the finest resolution within :data:`STABILITY_TOLERANCE` of the best
    stability), unless the most stable resolution gives two clusters and the most stable one
    giving three or more is within :data:`CONSENSUS_TOLERANCE` of it with each of its clusters
    stable (Jaccard at least :data:`CLUSTER_STABILITY_MIN`). Then that finer level sets the bar:
    the finest resolution within :data:`STABILITY_TOLERANCE` of *its* stability whose clusters
    are all stable. The reason: once the spatial graph is mixed in, a two-way split is stable on
    almost any layout (the two halves of a tissue come back in every subset even with the
    features shuffled column by column: 0.90-0.99 in 15 of the 20 benchmark graphs of seeds
    0-3, ``benchmarks/_resolution_study.py``), so its stability is no evidence
    that a finer level is less real; a finer level has to earn its place cluster by cluster
    instead, which keeps out slivers (a few spots split off one region, Jaccard 0.2-0.4).
    """
    best_r = max(stability, key=lambda r: (stability[r], -r))
    best = stability[best_r]
    chosen = max(r for r, v in stability.items() if v >= best - STABILITY_TOLERANCE)
    if int(full[best_r].max()) + 1 != 2:
        return chosen
    finer = [r for r in stability if int(full[r].max()) + 1 >= 3]
    if not finer:
        return chosen
    bar = max(finer, key=lambda r: (stability[r], -r))
    if (
        stability[bar] < best - CONSENSUS_TOLERANCE
        or cluster_stability[bar] < CLUSTER_STABILITY_MIN
    ):
        return chosen
    return max(
        r
        for r in stability
        if stability[r] >= stability[bar] - STABILITY_TOLERANCE
        and cluster_stability[r] >= CLUSTER_STABILITY_MIN
    )


def _cluster_jaccard(labels: np.ndarray, runs: list[np.ndarray]) -> np.ndarray:
    """Each cluster's mean (over ``runs``) Jaccard index with its best match in the run.

    ``runs`` hold labels of the same spots, -1 where a run left a spot out; a cluster is compared
    on the spots the run has (Hennig 2007's clusterboot statistic, with subsets for bootstraps).
    """
    k = int(labels.max()) + 1
    total = np.zeros(k)
    for run in runs:
        have = run >= 0
        table = np.zeros((k, int(run[have].max()) + 1))
        np.add.at(table, (labels[have], run[have]), 1.0)
        union = table.sum(axis=1, keepdims=True) + table.sum(axis=0, keepdims=True) - table
        total += (table / np.maximum(union, 1.0)).max(axis=1)
    return total / max(len(runs), 1)


def _separation(embedding: np.ndarray, labels: np.ndarray) -> float:
    """The smallest separation between two clusters in ``embedding`` (inf for one cluster).

    For clusters ``a`` and ``b``, project both on the unit vector ``u`` from the mean of ``b``
    to the mean of ``a``: the separation is the difference of the projected means over their
    pooled SD (Fisher's criterion along ``u``, the d′ of signal detection). The two halves of one
    Gaussian cut at its mean are 2.65 apart.
    """
    x = np.asarray(embedding, dtype=np.float64)
    k = int(labels.max()) + 1
    groups = [x[labels == c] for c in range(k)]
    means = [g.mean(axis=0) for g in groups]
    best = np.inf
    for a in range(k):
        for b in range(a + 1, k):
            diff = means[a] - means[b]
            norm = float(np.linalg.norm(diff))
            if norm == 0.0:
                return 0.0
            pa, pb = groups[a] @ (diff / norm), groups[b] @ (diff / norm)
            pooled = (pa.var() * pa.size + pb.var() * pb.size) / (pa.size + pb.size)
            sep = np.inf if pooled <= 0 else (pa.mean() - pb.mean()) / np.sqrt(pooled)
            best = min(best, float(sep))
    return best


def _rule(resolution, n_clusters, n_spots: int) -> str:
    if n_clusters is not None:
        return "n_clusters"
    if resolution not in RULES:
        return "given"
    if n_spots < STABILITY_MIN_SPOTS:
        return "fallback (too few spots)"
    return "stability" if resolution == AUTO else str(resolution)


def _stability_record(record: dict | None) -> dict[str, dict[str, float]]:
    """The rule's record, per resolution tried: ``{"stability": {"0.3": 0.97, ...}, ...}``.

    Keys ``stability``, ``cluster_stability`` and ``separation``, h5ad-writable; empty where the
    rule was not used.
    """
    record = record or {}
    return {
        key: {f"{r:g}": float(v) for r, v in record.get(key, {}).items()}
        for key in ("stability", "cluster_stability", "separation")
    }


def _write(data, labels: np.ndarray, graph, key_added: str, *, modalities: list[str]) -> None:
    """Labels (categorical strings, NaN for -1) into ``obs`` (and modalities'), graph into obsp."""
    import pandas as pd

    categories = [str(c) for c in range(int(labels.max()) + 1)]
    values = pd.Categorical(np.where(labels >= 0, labels.astype(str), None), categories=categories)
    data.obs[key_added] = pd.Categorical(values, categories=categories)
    if hasattr(data, "mod"):
        for m in modalities:
            mod = data.mod[m]
            position = data.obs_names.get_indexer(mod.obs_names)
            mod.obs[key_added] = pd.Categorical(
                np.asarray(values, dtype=object)[position], categories=categories
            )
    data.obsp[f"{key_added}_connectivities"] = graph.tocsr()
