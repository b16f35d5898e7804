"""Synthetic MSI + H&E + Visium data of one tissue with exact ground truth: :func:`synthetic_trio`.

Frames
------
All frames follow ``docs/coordinates.md`` (µm, origin at the outer top-left corner, points
``(x, y)``). The **tissue frame** is the H&E frame of the MSI section (``he.ome.tif``). The MSI
acquisition grid lies under ``msi_to_he`` (an affine map drawn from the seed — any rotation, a
mirror with p = ½, anisotropic scale, shear — optionally after a smooth displacement field), and the
Visium image frame (the full-resolution image of the *serial section*, ``he_serial.ome.tif``) lies
under ``visium_to_he`` (its own rotation, slight stretch and shear, after its own smooth
deformation). Every transform maps moving → reference in µm, as :mod:`spatialfuse.reg` defines.

Tissue and regions
------------------
One label map in the tissue frame (``label_map``, about 2 µm pixels, ``-1`` = background) drawn from
seeded smooth random fields: an irregular outline on white, a few holes, and six regions arranged as
three columns of neighbouring pairs.

=================  ================================  ==================  =========================
region             H&E texture                       ion profile group   gene profile group
=================  ================================  ==================  =========================
tumor_a            nuclei-rich (dense purple dots)   A (+ radial grad.)  tumor
tumor_b            nuclei-rich (same as tumor_a)     B (+ linear ramp)   tumor (same as tumor_a)
stroma             eosin-rich fibrous                stroma              stroma
reactive_stroma    eosin-rich fibrous (same)         stroma (same)       reactive
vascular           mixed, with vessel lumens         vasc                vasc
adipose            large empty cells, thin membranes vasc (same)         vasc (same)
=================  ================================  ==================  =========================

So each modality alone misses one boundary: **only the MSI** separates tumor_a from tumor_b (same
genes, same look), **only the genes** separate stroma from reactive_stroma (same ions, same look),
and **only the H&E** separates vascular from adipose (same ions, same genes). Within a profile group
the expected signal is identical by construction (``ion_profiles`` / ``gene_profiles`` rows are
equal); every region pair is separated by at least one modality.

MSI signal
----------
Each pixel's spectrum comes from the area fractions of the regions under it (``msi_subsamples``²
sub-points per pixel mapped through ``msi_to_he``). Ions (``ions``): group markers (high in one
group, non-linear response ``a**γ``), gradient ions (a radial gradient inside tumor_a, a linear ramp
inside tumor_b), saturating ions (``S·(1 − exp(−a/S))``), shared ions at random levels, matrix ions
(high off tissue, suppressed on it) and chemical noise. Then a per-pixel multiplicative TIC factor
(lognormal), a row-wise drift (sinusoid + trend + per-row jitter, over the acquisition rows),
multiplicative and additive noise. Processed files hold centroided peaks above a threshold with
a few ppm of m/z jitter and a few random noise peaks; continuous files share one 2,000-point axis
with Gaussian peaks.

Visium signal
-------------
Spots lie on the 100 µm hexagonal pitch in the Visium image frame; ``in_tissue`` is whether a spot's
centre, mapped by ``visium_to_he``, lands on tissue (label ≥ 0). Counts are negative binomial with
means from the region fractions under the 55 µm disc, group markers, housekeeping and graded genes,
library-size variation and ambient RNA.

Labels
------
``msi_labels`` and ``spot_labels`` are the labels at the pixel / spot *centre* (``-1`` off tissue);
``msi_fractions`` and ``spot_fractions`` give the area fractions that made the signal.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid as uuid_module
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._version import __version__
from spatialfuse.reg import AffineTransform, DisplacementField, Transform, compose

if TYPE_CHECKING:
    import pandas as pd

    from spatialfuse.datasets._signals import IonDesign
    from spatialfuse.datasets._tissue import Tissue

__all__ = ["SyntheticTrio", "synthetic_trio"]

#: Visium spot pitch and diameter, µm.
_PITCH_UM = 100.0
_SPOT_DIAMETER_UM = 55.0


@dataclass(frozen=True, eq=False)
class SyntheticTrio:
    """Files and ground truth of :func:`synthetic_trio`.

    Every transform maps a moving frame into a reference frame, in µm (``docs/coordinates.md``).

    Attributes
    ----------
    folder, he, msi, visium, he_serial, truth_file
        Output folder; ``he.ome.tif`` (H&E of the MSI section); ``msi.imzML`` (its ``.ibd`` beside
        it); the Space Ranger folder ``visium/``; ``he_serial.ome.tif`` (the Visium section's
        full-resolution H&E, None when not written); ``truth.json`` (transforms, parameters,
        regions and landmarks as JSON).
    he_pixel_size_um, msi_pixel_size_um, visium_um_per_px
        H&E pixel size; MSI ``(x, y)`` pixel size (as written in the imzML); µm per Visium
        full-res pixel (= ``he_pixel_size_um``).
    msi_mode
        ``"processed"`` or ``"continuous"``.
    msi_to_he
        MSI µm (``read_imzml``'s ``obsm["spatial"]`` frame) → H&E µm of the MSI section; the affine
        ``msi_affine`` after the displacement field ``msi_warp`` where there is one.
    visium_to_he
        Visium image µm (``read_visium``'s ``obsm["spatial_um"]``) → H&E µm of the MSI section.
    he_serial_to_he
        ``he_serial`` µm → H&E µm (the same map: the serial H&E is the Visium full-res image).
    msi_to_visium
        ``compose(visium_to_he.inverse(), msi_to_he)``: what MSI → Visium registration recovers.
    msi_affine, msi_warp, visium_affine, visium_warp
        The parts of the two maps (``*_warp`` is a :class:`~spatialfuse.reg.DisplacementField` in
        the moving frame, applied before the affine, or None).
    params
        The parameters drawn or given: ``params["msi_affine"]`` and ``params["visium_affine"]`` are
        keyword arguments of :meth:`AffineTransform.from_params` that rebuild the affines, plus
        warp magnitudes, grid shapes and which values were drawn from the seed.
    region_names, region_design
        Region ``i`` is ``region_names[i]``; ``region_design[name]`` gives its texture, ion group
        and gene group.
    label_map, label_pixel_size_um
        The regions in the tissue frame (``int8``, ``-1`` background); pixel ``(row, col)``
        covers ``[col·s, (col + 1)·s] × [row·s, (row + 1)·s]`` µm.
    msi_coords, msi_grid_shape
        1-based ``(x, y)`` of each spectrum in file order (= ``read_imzml``'s obs order); the
        ``(rows, cols)`` of the raster.
    msi_labels, msi_fractions
        Label at each MSI pixel centre (``-1`` off tissue); ``(n, n_regions)`` area fractions.
    spot_barcodes, spot_labels, spot_fractions
        For the spots of ``filtered_feature_bc_matrix.h5`` in ``read_visium``'s obs order (the
        in-tissue spots): barcode, label at the spot centre, area fractions under the disc.
    all_spot_barcodes, all_spot_labels, all_spot_in_tissue
        Every spot of the positions file (= ``raw_feature_bc_matrix.h5`` order), ``-1`` off tissue.
    ions, ion_profiles, marker_ions
        Ion table (m/z, kind, target); ``(n_regions, n_ions)`` expected abundance per region;
        ``region name → m/z`` of the markers of its ion group.
    genes, gene_profiles, marker_genes
        Gene table (name, id, kind, target); ``(n_regions, n_genes)`` expected relative
        expression; ``region name → gene names`` of the markers of its gene group.
    landmarks_he_um, landmarks_msi_um, landmarks_visium_um
        ``(n, 2)`` corresponding points (hole centres, tissue extremes, region cores): the MSI and
        Visium points map onto the H&E points through ``msi_to_he`` / ``visium_to_he`` (to
        1e-6 µm).
    seed, timings
        The seed; seconds spent per stage (not part of the ground truth).

    :meth:`ion_signal_at` gives the noise-free ion signal of the tissue at any point.
    """

    folder: Path
    he: Path
    msi: Path
    visium: Path
    he_serial: Path | None
    truth_file: Path
    he_pixel_size_um: float
    msi_pixel_size_um: tuple[float, float]
    visium_um_per_px: float
    msi_mode: str
    msi_to_he: Transform
    visium_to_he: Transform
    he_serial_to_he: Transform
    msi_to_visium: Transform
    msi_affine: AffineTransform
    msi_warp: DisplacementField | None
    visium_affine: AffineTransform
    visium_warp: DisplacementField | None
    params: dict[str, Any]
    region_names: tuple[str, ...]
    region_design: dict[str, dict[str, str]]
    label_map: np.ndarray
    label_pixel_size_um: float
    msi_coords: np.ndarray
    msi_grid_shape: tuple[int, int]
    msi_labels: np.ndarray
    msi_fractions: np.ndarray
    spot_barcodes: np.ndarray
    spot_labels: np.ndarray
    spot_fractions: np.ndarray
    all_spot_barcodes: np.ndarray
    all_spot_labels: np.ndarray
    all_spot_in_tissue: np.ndarray
    ions: pd.DataFrame
    ion_profiles: np.ndarray
    marker_ions: dict[str, np.ndarray]
    genes: pd.DataFrame
    gene_profiles: np.ndarray
    marker_genes: dict[str, list[str]]
    landmarks_he_um: np.ndarray
    landmarks_msi_um: np.ndarray
    landmarks_visium_um: np.ndarray
    seed: int
    timings: dict[str, float]
    _tissue: Tissue = field(repr=False)
    _ion_design: IonDesign = field(repr=False)

    @property
    def msi_ibd(self) -> Path:
        """The ``.ibd`` file beside :attr:`msi`."""
        return self.msi.with_suffix(".ibd")

    @property
    def tissue_mask(self) -> np.ndarray:
        """``label_map >= 0``: tissue (holes and vessel lumens are background)."""
        return self.label_map >= 0

    def label_at(self, points_he_um) -> np.ndarray:
        """Label of the label-map pixel under each ``(x, y)`` point in H&E µm (``-1`` outside)."""
        p = np.asarray(points_he_um, dtype=np.float64).reshape(-1, 2)
        s = self.label_pixel_size_um
        col = np.floor(p[:, 0] / s)
        row = np.floor(p[:, 1] / s)
        rows, cols = self.label_map.shape
        ok = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        r = np.where(ok, row, 0).astype(np.int64)
        c = np.where(ok, col, 0).astype(np.int64)
        return np.where(ok, self.label_map[r, c], -1).astype(np.int64)

    def ion_signal_at(self, points_he_um) -> np.ndarray:
        """Noise-free ion signal of the tissue at points of the H&E frame.

        The tissue at each point alone (its region and gradients, background off tissue) through
        every ion's response, plus matrix and chemical-noise ions, in counts: what a vanishingly
        small MSI pixel there would record before acquisition effects (TIC factor, row drift,
        noise, a processed file's detection threshold). An MSI pixel's expected intensity is the
        same model applied to the region fractions under it; the responses are non-linear, so at
        a boundary that differs from the mean of this signal over the pixel.

        Parameters
        ----------
        points_he_um
            ``(n, 2)`` points ``(x, y)`` in H&E µm.

        Returns
        -------
        numpy.ndarray
            ``(n, n_ions)`` float64, columns in the order of :attr:`ions`.
        """
        from spatialfuse.datasets._signals import expected_ion_signal

        p = np.asarray(points_he_um, dtype=np.float64).reshape(-1, 2)
        labels = self._tissue.label_at(p).astype(np.int64)
        on = np.flatnonzero(labels >= 0)
        fractions = np.zeros((len(p), len(self.region_names)))
        fractions[on, labels[on]] = 1.0
        gradients = self._tissue.gradients_at(p)
        gradients[:, 0] *= labels == 0
        gradients[:, 1] *= labels == 1
        return expected_ion_signal(self._ion_design, fractions, gradients)

    def msi_label_image(self) -> np.ndarray:
        """``msi_labels`` on the MSI raster, ``(rows, cols)``, row ``y − 1``, column ``x − 1``."""
        rows, cols = self.msi_grid_shape
        image = np.full((rows, cols), -1, dtype=np.int64)
        image[self.msi_coords[:, 1] - 1, self.msi_coords[:, 0] - 1] = self.msi_labels
        return image

    def __repr__(self) -> str:
        rows, cols = self.msi_grid_shape
        return (
            f"SyntheticTrio(seed={self.seed}, folder={str(self.folder)!r}, "
            f"H&E {self.label_map.shape[1] * self.label_pixel_size_um:.0f}×"
            f"{self.label_map.shape[0] * self.label_pixel_size_um:.0f} µm at "
            f"{self.he_pixel_size_um:g} µm/px, MSI {cols}×{rows} px of "
            f"{self.msi_pixel_size_um[0]:g}×{self.msi_pixel_size_um[1]:g} µm ({self.msi_mode}), "
            f"Visium {len(self.spot_barcodes)}/{len(self.all_spot_barcodes)} spots in tissue, "
            f"{len(self.region_names)} regions)"
        )


# --------------------------------------------------------------------------------------------------


def _stream(seed: int, name: str) -> np.random.Generator:
    """An independent random stream per purpose, so one option never shifts another's draws."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _pair(value, what: str) -> tuple[float, float]:
    """``value`` as a pair of positive finite floats (one number means both)."""
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{what} must be a positive number or an (x, y) pair, got {value!r}")
    return float(arr[0]), float(arr[1])


def _frame(points: np.ndarray, linear: np.ndarray, pixel, margin: float, jitter) -> tuple:
    """Place a pixel grid under ``p ↦ linear · p + t`` covering ``points`` (reference µm).

    The grid covers the points with ``margin`` µm to spare (plus a sub-pixel ``jitter``);
    returns ``t`` and the grid size ``(cols, rows)``.
    """
    q = points @ np.linalg.inv(linear).T
    pixel = np.asarray(pixel, dtype=np.float64)
    lo = q.min(axis=0) - margin - np.asarray(jitter) * pixel
    n = np.ceil((q.max(axis=0) + margin - lo) / pixel).astype(np.int64)
    return linear @ lo, (int(n[0]), int(n[1]))


def _random_field(rng: np.random.Generator, extent, amplitude: float) -> DisplacementField:
    """A smooth displacement field over ``extent = (width, height)`` µm, max |u| = amplitude."""
    from spatialfuse.datasets._tissue import FourierField

    width, height = (float(v) for v in extent)
    spacing = max(width, height) / 10.0
    gx = -spacing + np.arange(math.ceil(width / spacing) + 3) * spacing
    gy = -spacing + np.arange(math.ceil(height / spacing) + 3) * spacing
    length = 0.3 * max(width, height)
    u = np.stack(
        [FourierField(rng, length).grid(gx, gy), FourierField(rng, length).grid(gx, gy)], axis=2
    )
    u -= u.mean(axis=(0, 1))
    u *= amplitude / max(float(np.hypot(u[..., 0], u[..., 1]).max()), 1e-12)
    return DisplacementField(u, origin_um=(gx[0], gy[0]), spacing_um=(spacing, spacing))


def _fractions(labels: np.ndarray, n_groups: int, per_group: int, n_regions: int) -> np.ndarray:
    """Area fraction of each region among ``per_group`` consecutive sub-point labels."""
    group = np.repeat(np.arange(n_groups), per_group)
    tissue = labels >= 0
    counts = np.bincount(
        group[tissue] * n_regions + labels[tissue].astype(np.int64),
        minlength=n_groups * n_regions,
    )
    return counts.reshape(n_groups, n_regions) / per_group


def _spot_footprint() -> np.ndarray:
    """Sub-points of a 55 µm Visium spot (a hexagonal lattice of 6.5 µm inside the disc)."""
    step = 6.5
    r = _SPOT_DIAMETER_UM / 2.0
    n = int(r // step) + 1
    pts = []
    for j in range(-n - 1, n + 2):
        for i in range(-n - 1, n + 2):
            x, y = (i + 0.5 * (j % 2)) * step, j * step * math.sqrt(3) / 2
            if x * x + y * y <= r * r:
                pts.append((x, y))
    return np.array(pts)


def _barcodes(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("ACGT"))
    codes: set[str] = set()
    out = []
    while len(out) < n:
        draw = rng.integers(0, 4, size=(n - len(out), 16))
        for row in letters[draw]:
            code = "".join(row) + "-1"
            if code not in codes:
                codes.add(code)
                out.append(code)
    return np.array(out)


def _map_grid(transform: Transform, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``transform`` at the grid ``xs × ys`` as ``(len(ys), len(xs), 2)``.

    Affine maps are evaluated exactly. Nonrigid ones are evaluated exactly on every 4th node and
    bilinearly interpolated in between (the maps are smooth on scales of hundreds of µm, so the
    interpolation error is far below a nanometre-per-micrometre; this only feeds the rendering of
    the serial H&E, never the ground truth).
    """
    from scipy.ndimage import map_coordinates

    if isinstance(transform, AffineTransform):
        m = transform.matrix
        x = m[0, 0] * xs[None, :] + m[0, 1] * ys[:, None] + m[0, 2]
        y = m[1, 0] * xs[None, :] + m[1, 1] * ys[:, None] + m[1, 2]
        return np.stack([x, y], axis=2)
    step = 4
    ci = np.unique(np.r_[np.arange(0, len(xs), step), len(xs) - 1])
    ri = np.unique(np.r_[np.arange(0, len(ys), step), len(ys) - 1])
    gx, gy = np.meshgrid(xs[ci], ys[ri])
    coarse = transform.apply(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(
        len(ri), len(ci), 2
    )
    col_pos = np.interp(np.arange(len(xs)), ci, np.arange(len(ci)))
    row_pos = np.interp(np.arange(len(ys)), ri, np.arange(len(ri)))
    rr, cc = np.meshgrid(row_pos, col_pos, indexing="ij")
    out = np.empty((len(ys), len(xs), 2))
    for k in range(2):
        out[..., k] = map_coordinates(coarse[..., k], [rr, cc], order=1, mode="nearest")
    return out


def synthetic_trio(
    path=None,
    *,
    seed: int = 0,
    msi_pixel_size_um: float | tuple[float, float] = 50.0,
    msi_mode: str = "processed",
    rotation_deg: float | None = None,
    mirror: bool | None = None,
    scale: float | tuple[float, float] | None = None,
    shear: float | None = None,
    warp_um: float = 0.0,
    serial_section: bool = True,
    serial_rotation_deg: float | None = None,
    serial_warp_um: float = 30.0,
    he_pixel_size_um: float = 1.0,
    tissue_size_um: tuple[float, float] = (3000.0, 2400.0),
    n_ions: int = 80,
    n_genes: int = 150,
    msi_subsamples: int | None = None,
    write_he_serial: bool = True,
) -> SyntheticTrio:
    """Write MSI, H&E and Visium files of one synthetic tissue and return their ground truth.

    The design (regions, signals, frames) is described in :mod:`spatialfuse.datasets._synthetic`.
    The same ``seed`` and options give byte-identical files (UUIDs are derived from the seed) and
    an identical ground truth; each option draws from its own random stream, so e.g. a different
    ``msi_pixel_size_um`` keeps the same tissue and the same transforms.

    Parameters
    ----------
    path
        Output folder (created). None: a new temporary folder.
    seed
        Seed of every random draw.
    msi_pixel_size_um
        MSI pixel size, ``s`` or ``(sx, sy)`` µm (nominal: the instrument's µm, which the affine
        maps onto tissue µm).
    msi_mode
        ``"processed"`` (centroided peaks per spectrum) or ``"continuous"`` (one shared axis).
    rotation_deg, mirror, scale, shear
        Affine parameters of MSI → H&E; None draws them: rotation uniform in [0, 360), mirror
        with p = 0.5, scale per axis uniform in [0.88, 1.12], shear uniform in [−0.05, 0.05].
        ``scale`` may be one number (isotropic) or ``(sx, sy)``. The translation is always chosen
        so that the MSI raster covers the tissue with a margin of two pixels (plus the warp).
    warp_um
        Largest displacement (µm) of a smooth nonrigid warp of the MSI frame; 0 for none.
    serial_section
        The Visium image is a serial section (its own rotation, stretch, shear and deformation,
        new cells, another staining batch); if false it is the MSI section's H&E itself and
        ``visium_to_he`` is the identity.
    serial_rotation_deg
        Rotation of the serial section's affine (drawn uniform in [0, 360) when None); its scale
        per axis is drawn in [0.97, 1.03] and its shear in [−0.02, 0.02].
    serial_warp_um
        Largest displacement of the serial section's smooth deformation (µm).
    he_pixel_size_um
        Pixel size of both H&E images and of the Visium full-res image.
    tissue_size_um
        ``(width, height)`` of the tissue's bounding box in µm.
    n_ions, n_genes
        Numbers of ions (≥ 40) and genes (≥ 40).
    msi_subsamples
        Sub-points per MSI pixel side used to average the tissue under a pixel (default: one
        per ~10 µm, between 2 and 6).
    write_he_serial
        Write ``he_serial.ome.tif`` (serial sections only).

    Returns
    -------
    SyntheticTrio
        Paths, pixel sizes, transforms, labels, signal design and landmarks.
    """
    import pandas as pd

    from spatialfuse.datasets import _signals, _tissue, _writers

    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        timings[name] = now - start
        start = now

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    if msi_mode not in ("processed", "continuous"):
        raise ValueError(f"msi_mode must be 'processed' or 'continuous', got {msi_mode!r}")
    px, py = _pair(msi_pixel_size_um, "msi_pixel_size_um")
    he_px, _ = _pair(he_pixel_size_um, "he_pixel_size_um")
    size = _pair(tissue_size_um, "tissue_size_um")
    if min(size) < 300.0:
        raise ValueError(f"tissue_size_um must be at least 300 µm per side, got {tissue_size_um}")
    if not (warp_um >= 0 and serial_warp_um >= 0):
        raise ValueError("warp_um and serial_warp_um must be ≥ 0")
    if msi_subsamples is None:
        msi_subsamples = int(min(6, max(2, math.ceil(max(px, py) / 10.0))))
    n_sub = int(msi_subsamples)
    if n_sub < 1:
        raise ValueError(f"msi_subsamples must be ≥ 1, got {msi_subsamples!r}")

    folder = Path(tempfile.mkdtemp(prefix="spatialfuse-synthetic-")) if path is None else Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    uuid_rng = _stream(seed, "uuid")
    msi_uuid = uuid_module.UUID(bytes=uuid_rng.bytes(16), version=4)
    he_uuid = uuid_module.UUID(bytes=uuid_rng.bytes(16), version=4)
    serial_uuid = uuid_module.UUID(bytes=uuid_rng.bytes(16), version=4)

    # -- tissue -----------------------------------------------------------------------------------
    tissue = _tissue.build_tissue(_stream(seed, "tissue"), size, he_px)
    lp = tissue.label_pixel_size_um
    boundary = tissue.boundary_points()
    n_regions = len(_tissue.REGION_NAMES)
    lap("tissue")

    # -- MSI geometry -----------------------------------------------------------------------------
    geo = _stream(seed, "msi_geometry")
    drawn_values = {
        "rotation_deg": float(geo.uniform(0.0, 360.0)),
        "mirror": bool(geo.random() < 0.5),
        "scale": tuple(float(v) for v in geo.uniform(0.88, 1.12, size=2)),
        "shear": float(geo.uniform(-0.05, 0.05)),
    }
    jitter = geo.uniform(0.0, 1.0, size=2)
    given = {"rotation_deg": rotation_deg, "mirror": mirror, "scale": scale, "shear": shear}
    drawn = sorted(k for k, v in given.items() if v is None)
    values = {k: drawn_values[k] if v is None else v for k, v in given.items()}
    msi_scale = _pair(values["scale"], "scale")
    linear = AffineTransform.from_params(
        rotation_deg=float(values["rotation_deg"]),
        scale=msi_scale,
        shear=float(values["shear"]),
        mirror=bool(values["mirror"]),
    ).matrix[:2, :2]
    translation, (nx, ny) = _frame(
        boundary, linear, (px, py), 2.0 * max(px, py) + 1.5 * warp_um, jitter
    )
    msi_affine_params = {
        "rotation_deg": float(values["rotation_deg"]),
        "scale": [msi_scale[0], msi_scale[1]],
        "shear": float(values["shear"]),
        "translation": [float(translation[0]), float(translation[1])],
        "mirror": bool(values["mirror"]),
    }
    msi_affine = AffineTransform.from_params(**msi_affine_params)
    msi_warp = (
        _random_field(_stream(seed, "msi_warp"), (nx * px, ny * py), warp_um) if warp_um else None
    )
    msi_to_he = msi_affine if msi_warp is None else compose(msi_affine, msi_warp)

    # -- MSI pixels: what tissue each covers ------------------------------------------------------
    gx, gy = np.meshgrid(np.arange(1, nx + 1), np.arange(1, ny + 1))
    msi_coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    n_pix = len(msi_coords)
    centres = (msi_coords - 0.5) * (px, py)
    msi_labels = tissue.label_at(msi_to_he.apply(centres)).astype(np.int64)
    offsets = (np.arange(n_sub) + 0.5) / n_sub
    ox, oy = np.meshgrid(offsets, offsets)
    sub = np.stack([ox.ravel(), oy.ravel()], axis=1)
    sub_points = ((msi_coords - 1)[:, None, :] + sub[None, :, :]).reshape(-1, 2) * (px, py)
    sub_he = msi_to_he.apply(sub_points)
    sub_labels = tissue.label_at(sub_he)
    msi_fractions = _fractions(sub_labels, n_pix, n_sub * n_sub, n_regions)
    grads = tissue.gradients_at(sub_he)
    grads[:, 0] *= sub_labels == 0
    grads[:, 1] *= sub_labels == 1
    gradient_values = grads.reshape(n_pix, n_sub * n_sub, 2).mean(axis=1)
    lap("msi_geometry")

    # -- MSI spectra ------------------------------------------------------------------------------
    ion_design = _signals.design_ions(_stream(seed, "ion_design"), int(n_ions))
    signal_rng = _stream(seed, "msi_signal")
    intensity, tic_factor = _signals.ion_intensities(
        ion_design, msi_fractions, gradient_values, msi_coords[:, 1] - 1, ny, signal_rng
    )
    if msi_mode == "processed":
        mzs, ints = _signals.processed_spectra(ion_design, intensity, signal_rng)
    else:
        mzs, ints = _signals.continuous_spectra(ion_design, intensity, tic_factor, signal_rng)
    lap("msi_spectra")
    msi_path, _ = _writers.write_imzml(
        folder / "msi.imzML",
        msi_coords,
        mzs,
        ints,
        mode=msi_mode,
        pixel_size_um=(px, py),
        uuid_bytes=msi_uuid.bytes,
        version=__version__,
    )
    del mzs, ints
    lap("msi_write")

    # -- H&E of the MSI section -------------------------------------------------------------------
    membrane = np.zeros(tissue.shape, dtype=np.float32)
    ar, ac = np.nonzero(tissue.labels == 5)
    membrane[ar, ac] = tissue.membrane_at(np.stack([(ac + 0.5) * lp, (ar + 0.5) * lp], axis=1))
    he_rgb = _tissue.render_he(
        tissue.labels,
        tissue.lumen,
        membrane,
        k=tissue.k,
        he_pixel_size_um=he_px,
        rng=_stream(seed, "he"),
        orientation_fn=tissue.orientation_at,
    )
    del membrane
    lap("he_render")
    he_path = _writers.write_ome_tiff(
        folder / "he.ome.tif", he_rgb, he_px, uuid_text=str(he_uuid), name="he"
    )
    lap("he_write")

    # -- the Visium section -----------------------------------------------------------------------
    vgeo = _stream(seed, "visium_geometry")
    v_drawn = {
        "rotation_deg": float(vgeo.uniform(0.0, 360.0)),
        "scale": tuple(float(v) for v in vgeo.uniform(0.97, 1.03, size=2)),
        "shear": float(vgeo.uniform(-0.02, 0.02)),
    }
    v_jitter = vgeo.uniform(0.0, 1.0, size=2)
    stain = (float(vgeo.uniform(0.85, 1.15)), float(vgeo.uniform(0.85, 1.15)))
    he_serial_path = None
    if serial_section:
        if serial_rotation_deg is not None:
            v_drawn["rotation_deg"] = float(serial_rotation_deg)
        v_linear = AffineTransform.from_params(
            rotation_deg=v_drawn["rotation_deg"], scale=v_drawn["scale"], shear=v_drawn["shear"]
        ).matrix[:2, :2]
        v_translation, (vcols, vrows) = _frame(
            boundary, v_linear, (he_px, he_px), 150.0 + 2.0 * serial_warp_um, v_jitter
        )
        k = tissue.k
        vcols, vrows = k * -(-vcols // k), k * -(-vrows // k)
        visium_affine_params = {
            "rotation_deg": v_drawn["rotation_deg"],
            "scale": list(v_drawn["scale"]),
            "shear": v_drawn["shear"],
            "translation": [float(v_translation[0]), float(v_translation[1])],
            "mirror": False,
        }
        visium_affine = AffineTransform.from_params(**visium_affine_params)
        visium_warp = (
            _random_field(
                _stream(seed, "visium_warp"), (vcols * he_px, vrows * he_px), serial_warp_um
            )
            if serial_warp_um
            else None
        )
        visium_to_he = visium_affine if visium_warp is None else compose(visium_affine, visium_warp)

        # serial section: labels pulled back from the tissue frame, fresh cells and stain batch
        vr_l, vc_l = vrows // k, vcols // k
        vxs = (np.arange(vc_l) + 0.5) * lp
        vys = (np.arange(vr_l) + 0.5) * lp
        mapped = _map_grid(visium_to_he, vxs, vys).reshape(-1, 2)
        v_labels = tissue.label_at(mapped).reshape(vr_l, vc_l)
        v_lumen = tissue.lumen_at(mapped).reshape(vr_l, vc_l)
        v_membrane = np.zeros((vr_l, vc_l), dtype=np.float32)
        adipose = (v_labels == 5).ravel()
        v_membrane.ravel()[adipose] = tissue.membrane_at(mapped[adipose])
        del mapped
        inverse_linear = np.linalg.inv(v_linear)

        def serial_orientation(points):
            angle = tissue.orientation_at(visium_to_he.apply(points))
            direction = np.stack([np.cos(angle), np.sin(angle)], axis=1) @ inverse_linear.T
            return np.arctan2(direction[:, 1], direction[:, 0])

        visium_rgb = _tissue.render_he(
            v_labels,
            v_lumen,
            v_membrane,
            k=k,
            he_pixel_size_um=he_px,
            rng=_stream(seed, "serial_he"),
            orientation_fn=serial_orientation,
            stain=stain,
        )
        del v_labels, v_lumen, v_membrane
        lap("serial_render")
        if write_he_serial:
            he_serial_path = _writers.write_ome_tiff(
                folder / "he_serial.ome.tif",
                visium_rgb,
                he_px,
                uuid_text=str(serial_uuid),
                name="he_serial",
            )
        lap("serial_write")
    else:
        visium_affine_params = {
            "rotation_deg": 0.0,
            "scale": [1.0, 1.0],
            "shear": 0.0,
            "translation": [0.0, 0.0],
            "mirror": False,
        }
        visium_affine = AffineTransform.identity()
        visium_warp = None
        visium_to_he = visium_affine
        visium_rgb = he_rgb
        vrows, vcols = he_rgb.shape[:2]
    del he_rgb
    stale = folder / "he_serial.ome.tif"
    if he_serial_path is None and stale.exists():
        stale.unlink()  # left by an earlier call into the same folder

    # -- Visium spots and counts ------------------------------------------------------------------
    spots_rng = _stream(seed, "visium_spots")
    width_um, height_um = vcols * he_px, vrows * he_px
    x0, y0 = spots_rng.uniform(40.0, 90.0, size=2)
    row_step = _PITCH_UM * math.sqrt(3.0) / 2.0
    n_array_cols = int((width_um - 40.0 - x0) // (_PITCH_UM / 2.0)) + 1
    n_array_rows = int((height_um - 40.0 - y0) // row_step) + 1
    ar_, ac_ = np.meshgrid(np.arange(n_array_rows), np.arange(n_array_cols), indexing="ij")
    on_grid = (ar_ + ac_) % 2 == 0
    array_row, array_col = ar_[on_grid], ac_[on_grid]
    spot_um = np.stack([x0 + array_col * (_PITCH_UM / 2.0), y0 + array_row * row_step], axis=1)
    barcodes = _barcodes(spots_rng, len(spot_um))
    order = np.argsort(barcodes, kind="stable")
    barcodes, array_row, array_col, spot_um = (
        barcodes[order],
        array_row[order],
        array_col[order],
        spot_um[order],
    )
    # full-res pixel coordinates: a spot at coordinate c is centred at (c + 0.5) · u µm
    pxl = spot_um / he_px - 0.5
    spot_um = (pxl + 0.5) * he_px  # exactly what read_visium computes from the file
    all_labels = tissue.label_at(visium_to_he.apply(spot_um)).astype(np.int64)
    in_tissue = all_labels >= 0
    footprint = _spot_footprint()
    disc = (spot_um[:, None, :] + footprint[None, :, :]).reshape(-1, 2)
    spot_fractions_all = _fractions(
        tissue.label_at(visium_to_he.apply(disc)), len(spot_um), len(footprint), n_regions
    )
    gene_design = _signals.design_genes(_stream(seed, "gene_design"), int(n_genes))
    counts = _signals.gene_counts(gene_design, spot_fractions_all, _stream(seed, "visium_counts"))
    lap("visium_spots")
    visium_folder = _writers.write_visium(
        folder / "visium",
        barcodes=barcodes,
        in_tissue=in_tissue.astype(np.int64),
        array_row=array_row,
        array_col=array_col,
        pxl_row=pxl[:, 1],
        pxl_col=pxl[:, 0],
        counts=counts,
        gene_ids=gene_design.ids,
        gene_names=gene_design.names,
        fullres=visium_rgb,
        um_per_px=he_px,
        library_id=f"synthetic_{seed}",
    )
    del visium_rgb
    lap("visium_write")

    # -- ground truth -----------------------------------------------------------------------------
    he_serial_to_he = visium_to_he
    msi_to_visium = compose(visium_to_he.inverse(), msi_to_he)
    landmarks_he = np.concatenate([tissue.holes[:, :2], tissue.extremes, tissue.centroids])
    landmarks_msi = msi_to_he.inverse().apply(landmarks_he)
    landmarks_visium = visium_to_he.inverse().apply(landmarks_he)

    region_names = tuple(_tissue.REGION_NAMES)
    region_design = {
        name: {
            "texture": _tissue.TEXTURE_NAMES[int(_tissue.REGION_TEXTURE[i])],
            "ion_group": _signals.ION_GROUP_NAMES[int(_tissue.REGION_ION_GROUP[i])],
            "gene_group": _signals.GENE_GROUP_NAMES[int(_tissue.REGION_GENE_GROUP[i])],
        }
        for i, name in enumerate(region_names)
    }
    ions = pd.DataFrame(
        {"mz": ion_design.mz, "kind": ion_design.kind, "target": ion_design.target},
        index=pd.Index([f"mz-{m:.4f}" for m in ion_design.mz], name="ion"),
    )
    genes = pd.DataFrame(
        {"gene_id": gene_design.ids, "kind": gene_design.kind, "target": gene_design.target},
        index=pd.Index(gene_design.names, name="gene"),
    )
    marker_ions = {}
    marker_genes = {}
    for i, name in enumerate(region_names):
        ion_group = _signals.ION_GROUP_NAMES[int(_tissue.REGION_ION_GROUP[i])]
        gene_group = _signals.GENE_GROUP_NAMES[int(_tissue.REGION_GENE_GROUP[i])]
        is_marker = (ion_design.kind == "marker") & (ion_design.target == ion_group)
        marker_ions[name] = ion_design.mz[is_marker].copy()
        is_gene = (gene_design.kind == "marker") & (gene_design.target == gene_group)
        marker_genes[name] = gene_design.names[is_gene].tolist()

    params = {
        "msi_affine": msi_affine_params,
        "msi_warp_um": float(warp_um),
        "msi_grid_shape": [int(ny), int(nx)],
        "msi_subsamples": n_sub,
        "visium_affine": visium_affine_params,
        "visium_warp_um": float(serial_warp_um) if serial_section else 0.0,
        "visium_image_shape": [int(vrows), int(vcols)],
        "serial_section": bool(serial_section),
        "serial_stain": list(stain) if serial_section else [1.0, 1.0],
        "drawn": drawn + (["serial_rotation_deg"] if serial_rotation_deg is None else []),
        "tissue_size_um": [size[0], size[1]],
    }
    files = {
        "he": he_path.name,
        "msi": msi_path.name,
        "msi_ibd": msi_path.with_suffix(".ibd").name,
        "visium": visium_folder.name,
        "he_serial": he_serial_path.name if he_serial_path is not None else None,
    }
    truth = {
        "generator": "spatialfuse.datasets.synthetic_trio",
        "version": __version__,
        "seed": seed,
        "options": {
            "msi_pixel_size_um": [px, py],
            "msi_mode": msi_mode,
            "warp_um": float(warp_um),
            "serial_section": bool(serial_section),
            "serial_warp_um": float(serial_warp_um),
            "he_pixel_size_um": he_px,
            "tissue_size_um": [size[0], size[1]],
            "n_ions": int(n_ions),
            "n_genes": int(n_genes),
            "msi_subsamples": n_sub,
        },
        "files": files,
        "pixel_sizes_um": {
            "he": he_px,
            "msi": [px, py],
            "visium_um_per_px": he_px,
            "label_map": lp,
        },
        "transforms": {
            "msi_to_he": msi_to_he.to_dict(),
            "visium_to_he": visium_to_he.to_dict(),
            "he_serial_to_he": he_serial_to_he.to_dict(),
            "msi_to_visium": msi_to_visium.to_dict(),
        },
        "params": params,
        "regions": [
            {"label": i, "name": name, **region_design[name]} for i, name in enumerate(region_names)
        ],
        "landmarks_um": {
            "he": landmarks_he.tolist(),
            "msi": landmarks_msi.tolist(),
            "visium": landmarks_visium.tolist(),
        },
    }
    truth_file = folder / "truth.json"
    truth_file.write_text(json.dumps(truth, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    lap("truth")
    timings["total"] = float(sum(timings.values()))

    return SyntheticTrio(
        folder=folder,
        he=he_path,
        msi=msi_path,
        visium=visium_folder,
        he_serial=he_serial_path,
        truth_file=truth_file,
        he_pixel_size_um=he_px,
        msi_pixel_size_um=(px, py),
        visium_um_per_px=he_px,
        msi_mode=msi_mode,
        msi_to_he=msi_to_he,
        visium_to_he=visium_to_he,
        he_serial_to_he=he_serial_to_he,
        msi_to_visium=msi_to_visium,
        msi_affine=msi_affine,
        msi_warp=msi_warp,
        visium_affine=visium_affine,
        visium_warp=visium_warp,
        params=params,
        region_names=region_names,
        region_design=region_design,
        label_map=tissue.labels,
        label_pixel_size_um=lp,
        msi_coords=msi_coords,
        msi_grid_shape=(int(ny), int(nx)),
        msi_labels=msi_labels,
        msi_fractions=msi_fractions,
        spot_barcodes=barcodes[in_tissue],
        spot_labels=all_labels[in_tissue],
        spot_fractions=spot_fractions_all[in_tissue],
        all_spot_barcodes=barcodes,
        all_spot_labels=all_labels,
        all_spot_in_tissue=in_tissue,
        ions=ions,
        ion_profiles=ion_design.region_profiles,
        marker_ions=marker_ions,
        genes=genes,
        gene_profiles=gene_design.region_profiles,
        marker_genes=marker_genes,
        landmarks_he_um=landmarks_he,
        landmarks_msi_um=landmarks_msi,
        landmarks_visium_um=landmarks_visium,
        seed=seed,
        timings=timings,
        _tissue=tissue,
        _ion_design=ion_design,
    )
