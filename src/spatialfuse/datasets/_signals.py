"""Molecular signals of the synthetic tissue: MSI ion images and Visium gene counts.

Both modalities see the tissue through *profile groups* (``_tissue.REGION_ION_GROUP`` and
``REGION_GENE_GROUP``): regions in the same group have exactly the same expected signal, so that
group is blind to their boundary. Signals are computed from the area fractions of each region under
a pixel's or spot's footprint (averaged over sub-points), then passed through per-feature
non-linear responses and noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialfuse.datasets._tissue import REGION_GENE_GROUP, REGION_ION_GROUP, REGION_NAMES

#: m/z range of the ions.
MZ_RANGE = (300.0, 1000.0)
#: Points of the shared m/z axis of continuous files.
CONTINUOUS_POINTS = 2000
#: Relative m/z jitter (1 σ, ppm) of centroided peaks in processed files.
MZ_JITTER_PPM = 1.5

# Human-readable group names of the ion and gene profile groups.
ION_GROUP_NAMES = ("tumor_a", "tumor_b", "stroma+reactive_stroma", "vascular+adipose")
GENE_GROUP_NAMES = ("tumor_a+tumor_b", "stroma", "reactive_stroma", "vascular+adipose")
_GENE_PREFIX = ("TUM", "STR", "RST", "VAS")


@dataclass
class IonDesign:
    """The ions of the synthetic MSI data and how each responds to the tissue."""

    mz: np.ndarray  # (n,) float64, sorted
    kind: np.ndarray  # (n,) str: marker, gradient, saturating, shared, matrix, noise
    group_abundance: np.ndarray  # (n_ion_groups, n) abundance in each profile group
    gamma: np.ndarray  # (n,) response exponent (a ** gamma)
    saturation: np.ndarray  # (n,) saturation level S (inf: none): S · (1 − exp(−a / S))
    gradient: np.ndarray  # (n,) -1, or 0 (radial in tumor_a) / 1 (ramp in tumor_b)
    gradient_amplitude: np.ndarray  # (n,)
    matrix_off: np.ndarray  # (n,) abundance of matrix ions off tissue
    matrix_suppression: np.ndarray  # (n,) fraction of it suppressed on tissue
    noise_level: np.ndarray  # (n,) constant chemical-noise abundance everywhere
    counts_per_unit: np.ndarray  # (n,) ionisation efficiency (counts per abundance unit)
    target: np.ndarray  # (n,) str: the region(s) an ion marks, or ""

    @property
    def region_profiles(self) -> np.ndarray:
        """``(n_regions, n)`` expected abundance per region (before gradients and responses)."""
        return self.group_abundance[REGION_ION_GROUP]


@dataclass
class GeneDesign:
    """The genes of the synthetic Visium data."""

    names: np.ndarray  # (n,) str
    ids: np.ndarray  # (n,) str
    kind: np.ndarray  # (n,) str: housekeeping, marker, graded, background
    group_expression: np.ndarray  # (n_gene_groups, n) relative expression, rows sum to 1
    library_factor: np.ndarray  # (n_gene_groups,) UMIs relative to the mean
    target: np.ndarray  # (n,) str

    @property
    def region_profiles(self) -> np.ndarray:
        """``(n_regions, n)`` expected relative expression per region."""
        return self.group_expression[REGION_GENE_GROUP]


# --------------------------------------------------------------------------------------------------
# MSI


def design_ions(rng: np.random.Generator, n_ions: int) -> IonDesign:
    """Draw ``n_ions`` ions (≥ 40): markers, gradients, saturating, shared, matrix, noise."""
    n_groups = len(ION_GROUP_NAMES)
    n_marker = max(2, round(0.06 * n_ions))
    n_sat = max(2, round(0.06 * n_ions))
    n_matrix = max(3, round(0.08 * n_ions))
    n_shared = max(4, round(0.2 * n_ions))
    n_grad = 4
    counts = {
        "marker": n_marker * n_groups,
        "gradient": n_grad,
        "saturating": n_sat,
        "matrix": n_matrix,
        "shared": n_shared,
    }
    counts["noise"] = n_ions - sum(counts.values())
    if counts["noise"] < 0:
        raise ValueError(f"n_ions must be at least {sum(counts.values())}, got {n_ions}")
    # m/z on 2-Da slots with a mass defect: neighbours are ≥ 1.6 Da apart (resolved in profile).
    slots = np.sort(rng.choice(int((MZ_RANGE[1] - MZ_RANGE[0]) / 2.0), n_ions, replace=False))
    mz = MZ_RANGE[0] + 2.0 * slots + rng.uniform(0.3, 0.7, size=n_ions)
    kind = np.concatenate([np.full(c, k, dtype=object) for k, c in counts.items()])
    kind = kind[rng.permutation(n_ions)].astype(str)

    group_abundance = np.zeros((n_groups, n_ions))
    gamma = np.ones(n_ions)
    saturation = np.full(n_ions, np.inf)
    gradient = np.full(n_ions, -1, dtype=np.int64)
    gradient_amplitude = np.zeros(n_ions)
    matrix_off = np.zeros(n_ions)
    suppression = np.zeros(n_ions)
    noise_level = np.zeros(n_ions)
    target = np.full(n_ions, "", dtype=object)

    markers = np.flatnonzero(kind == "marker")
    for i, j in enumerate(markers):
        group = i % n_groups
        group_abundance[:, j] = rng.uniform(0.3, 1.5)
        group_abundance[group, j] = rng.uniform(15.0, 40.0)
        gamma[j] = rng.uniform(0.7, 1.4)
        target[j] = ION_GROUP_NAMES[group]
    for i, j in enumerate(np.flatnonzero(kind == "gradient")):
        gradient[j] = i % 2
        group_abundance[:, j] = rng.uniform(0.4, 1.0)
        gradient_amplitude[j] = rng.uniform(10.0, 25.0)
        target[j] = REGION_NAMES[i % 2]
    for j in np.flatnonzero(kind == "saturating"):
        group_abundance[:, j] = np.exp(rng.uniform(np.log(5.0), np.log(80.0), size=n_groups))
        saturation[j] = rng.uniform(8.0, 15.0)
    for j in np.flatnonzero(kind == "shared"):
        group_abundance[:, j] = np.clip(
            np.exp(rng.normal(np.log(3.0), 0.8, size=n_groups)), 0.8, 40.0
        )
        gamma[j] = rng.uniform(0.7, 1.4)
    for j in np.flatnonzero(kind == "matrix"):
        matrix_off[j] = rng.uniform(10.0, 30.0)
        suppression[j] = rng.uniform(0.6, 0.9)
        target[j] = "background"
    for j in np.flatnonzero(kind == "noise"):
        noise_level[j] = rng.uniform(1.0, 2.0)
    return IonDesign(
        mz=mz,
        kind=kind,
        group_abundance=group_abundance,
        gamma=gamma,
        saturation=saturation,
        gradient=gradient,
        gradient_amplitude=gradient_amplitude,
        matrix_off=matrix_off,
        matrix_suppression=suppression,
        noise_level=noise_level,
        counts_per_unit=300.0 * np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=n_ions)),
        target=target.astype(str),
    )


def expected_ion_signal(
    design: IonDesign, region_fractions: np.ndarray, gradient_values: np.ndarray
) -> np.ndarray:
    """Noise-free ion counts ``(n, n_ions)`` of footprints with these region fractions.

    The per-ion responses (power law, saturation) to the region abundances and gradients, plus
    matrix ions (suppressed by the tissue fraction) and constant chemical noise, times each ion's
    ionisation efficiency: what :func:`ion_intensities` records before any acquisition effect
    (TIC factor, row drift, noise; a processed file's detection threshold comes later still).

    Parameters
    ----------
    region_fractions
        ``(n, n_regions)`` area fraction of each region under each footprint.
    gradient_values
        ``(n, 2)`` area-mean of ``[label == tumor_a] · radial`` and
        ``[label == tumor_b] · ramp``.
    """
    group_onehot = np.zeros((len(REGION_NAMES), design.group_abundance.shape[0]))
    group_onehot[np.arange(len(REGION_NAMES)), REGION_ION_GROUP] = 1.0
    tissue = region_fractions.sum(axis=1)
    abundance = (region_fractions @ group_onehot) @ design.group_abundance
    has_gradient = design.gradient >= 0
    abundance[:, has_gradient] += (
        gradient_values[:, design.gradient[has_gradient]] * design.gradient_amplitude[has_gradient]
    )
    saturating = np.isfinite(design.saturation)
    response = np.power(abundance, design.gamma)
    s = design.saturation[saturating]
    response[:, saturating] = s * (1.0 - np.exp(-abundance[:, saturating] / s))
    response += design.matrix_off * (1.0 - design.matrix_suppression * tissue[:, None])
    response += design.noise_level
    return response * design.counts_per_unit


def ion_intensities(
    design: IonDesign,
    region_fractions: np.ndarray,
    gradient_values: np.ndarray,
    grid_rows: np.ndarray,
    n_rows: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Peak intensities (counts) of every ion in every pixel.

    Parameters
    ----------
    region_fractions, gradient_values
        As for :func:`expected_ion_signal`, one row per pixel (``n = n_pixels``).
    grid_rows
        0-based acquisition row of each pixel (row-wise drift), ``n_rows`` rows in all.

    Returns
    -------
    intensities : ``(n_pixels, n_ions)`` float64 (noisy, ≥ 0)
    tic_factor : ``(n_pixels,)`` the multiplicative TIC factor applied (drift × pixel variation)
    """
    n_pixels = len(region_fractions)
    intensity = expected_ion_signal(design, region_fractions, gradient_values)

    # acquisition effects: row-wise drift and per-pixel TIC variation (both multiplicative)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    cycles = rng.uniform(0.5, 1.5)
    row_jitter = np.exp(rng.normal(0.0, 0.04, size=max(1, n_rows)))
    t = grid_rows / max(1, n_rows - 1)
    drift = (1.0 + 0.25 * np.sin(2.0 * np.pi * cycles * t + phase) + 0.2 * (t - 0.5)) * row_jitter[
        grid_rows
    ]
    tic_factor = drift * np.exp(rng.normal(0.0, 0.15, size=n_pixels))
    intensity *= tic_factor[:, None]
    intensity *= np.exp(rng.normal(0.0, 0.08, size=intensity.shape))
    intensity += rng.normal(0.0, 1.0, size=intensity.shape) * np.sqrt(40.0**2 + 2.0 * intensity)
    return np.maximum(intensity, 0.0), tic_factor


def processed_spectra(
    design: IonDesign, intensity: np.ndarray, rng: np.random.Generator, threshold: float = 150.0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Centroided spectra from peak intensities.

    Peaks above ``threshold`` are kept with their m/z jittered by a few ppm, a few random noise
    peaks are added, and each spectrum is sorted by m/z (float64 m/z, float32 intensities).
    """
    n_pixels = intensity.shape[0]
    jitter = np.clip(rng.normal(0.0, MZ_JITTER_PPM, size=intensity.shape), -4.0, 4.0)
    peak_mz = design.mz[None, :] * (1.0 + jitter * 1e-6)
    detected = intensity > threshold
    strongest = np.argmax(intensity, axis=1)
    detected[np.arange(n_pixels), strongest] = True  # never an empty spectrum
    n_noise = rng.poisson(3.0, size=n_pixels)
    noise_mz = rng.uniform(*MZ_RANGE, size=int(n_noise.sum()))
    noise_int = rng.uniform(threshold, 2.5 * threshold, size=int(n_noise.sum()))
    noise_start = np.r_[0, np.cumsum(n_noise)]
    mzs, intensities = [], []
    for i in range(n_pixels):
        keep = detected[i]
        a, b = noise_start[i], noise_start[i + 1]
        m = np.concatenate([peak_mz[i, keep], noise_mz[a:b]])
        v = np.concatenate([intensity[i, keep], noise_int[a:b]])
        order = np.argsort(m, kind="stable")
        mzs.append(m[order].astype(np.float64))
        intensities.append(v[order].astype(np.float32))
    return mzs, intensities


def continuous_spectra(
    design: IonDesign, intensity: np.ndarray, tic_factor: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Profile spectra on one shared axis.

    Gaussian peaks (σ ≈ 1.2 axis steps) over a decaying chemical baseline, with noise. Returns
    the axis (float64) and ``(n_pixels, n_points)`` float32 intensities.
    """
    axis = np.linspace(MZ_RANGE[0] - 10.0, MZ_RANGE[1] + 10.0, CONTINUOUS_POINTS)
    sigma = 1.2 * (axis[1] - axis[0])
    shapes = np.exp(-0.5 * ((axis[None, :] - design.mz[:, None]) / sigma) ** 2)
    spectra = intensity @ shapes
    baseline = 60.0 * np.exp(-(axis - axis[0]) / 250.0)
    spectra += tic_factor[:, None] * baseline[None, :]
    spectra += np.abs(rng.normal(0.0, 15.0, size=spectra.shape))
    return axis, spectra.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Visium


def design_genes(rng: np.random.Generator, n_genes: int) -> GeneDesign:
    """Draw ``n_genes`` genes (≥ 40): housekeeping, group markers, graded and background genes."""
    n_groups = len(GENE_GROUP_NAMES)
    n_marker = max(3, round(0.05 * n_genes))
    counts = {
        "housekeeping": max(4, round(0.15 * n_genes)),
        "marker": n_marker * n_groups,
        "graded": max(4, round(0.2 * n_genes)),
    }
    counts["background"] = n_genes - sum(counts.values())
    if counts["background"] < 0:
        raise ValueError(f"n_genes must be at least {sum(counts.values())}, got {n_genes}")
    names, kinds, targets = [], [], []
    base = np.zeros(n_genes)
    fold = np.ones((n_groups, n_genes))

    def add(name: str, kind: str, typical: float, spread: float, target: str = "") -> int:
        """Append a gene with a lognormal base level around ``typical``; return its index."""
        j = len(names)
        names.append(name)
        base[j] = np.exp(rng.normal(np.log(typical), spread))
        kinds.append(kind)
        targets.append(target)
        return j

    for i in range(counts["housekeeping"]):
        add(f"HK{i + 1}", "housekeeping", 20.0, 0.5)
    for i in range(counts["marker"]):
        group = i % n_groups
        name = f"{_GENE_PREFIX[group]}{i // n_groups + 1}"
        j = add(name, "marker", 2.0, 0.5, GENE_GROUP_NAMES[group])
        fold[group, j] = rng.uniform(12.0, 30.0)
    for i in range(counts["graded"]):
        j = add(f"GRD{i + 1}", "graded", 5.0, 0.8)
        fold[:, j] = np.exp(rng.normal(0.0, 0.7, size=n_groups))
    for i in range(counts["background"]):
        add(f"GEN{i + 1}", "background", 0.5, 1.0)
    expression = base[None, :] * fold
    expression /= expression.sum(axis=1, keepdims=True)
    return GeneDesign(
        names=np.array(names),
        ids=np.array([f"SFG{i:011d}" for i in range(n_genes)]),
        kind=np.array(kinds),
        group_expression=expression,
        library_factor=np.array([1.3, 1.0, 1.0, 0.7]),
        target=np.array(targets),
    )


def gene_counts(
    design: GeneDesign,
    region_fractions: np.ndarray,
    rng: np.random.Generator,
    *,
    mean_umis: float = 4000.0,
    ambient_umis: float = 30.0,
    dispersion: float = 0.25,
) -> np.ndarray:
    """Negative-binomial counts ``(n_spots, n_genes)`` (int32) for spots with these fractions.

    The mean of a spot is ``L · Σ_r f_r · q_g(r)`` with ``L = mean_umis · library factor of the
    group · lognormal(0, 0.3)``, plus ambient RNA (the average profile, ``ambient_umis`` UMIs);
    counts are Poisson–Gamma with the given dispersion.
    """
    n_groups = design.group_expression.shape[0]
    onehot = np.zeros((len(REGION_NAMES), n_groups))
    onehot[np.arange(len(REGION_NAMES)), REGION_GENE_GROUP] = 1.0
    group_fractions = region_fractions @ onehot
    size = np.exp(rng.normal(0.0, 0.3, size=len(region_fractions)))
    library = mean_umis * (group_fractions @ design.library_factor) * size
    tissue = np.maximum(group_fractions.sum(axis=1), 1e-12)
    profile = (group_fractions @ design.group_expression) / tissue[:, None]
    ambient = design.group_expression.mean(axis=0)
    ambient_size = ambient_umis * np.exp(rng.normal(0.0, 0.5, size=len(region_fractions)))
    mean = library[:, None] * profile + ambient_size[:, None] * ambient[None, :]
    shape = 1.0 / dispersion
    rate = rng.gamma(shape, 1.0 / shape, size=mean.shape)
    return rng.poisson(mean * rate).astype(np.int32)
