"""The steps of :func:`~spatialfuse.datasets.synthetic_trio`, in the order it takes them.

The design (regions, signals, frames) is described in :mod:`spatialfuse.datasets._synthetic`.
Every draw comes from its own seeded stream (:func:`stream`), so the steps can be read (and
changed) one at a time without shifting another's draws: options and UUIDs; the tissue; where the
MSI grid lies on it and what each pixel covers; the MSI spectra and ``msi.imzML``; the H&E;
where the Visium image lies and its full-res image (a serial section's H&E, or the H&E itself);
the spots and their counts; and the ground truth (transforms, landmarks, ``truth.json``).
"""

from __future__ import annotations

import json
import math
import time
import uuid as uuid_module
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._version import __version__
from spatialfuse.core.visium_geometry import SPOT_DIAMETER_UM, SPOT_PITCH_UM
from spatialfuse.datasets import _signals, _tissue, _writers
from spatialfuse.reg import AffineTransform, DisplacementField, Transform, compose

if TYPE_CHECKING:
    from spatialfuse.datasets._signals import GeneDesign, IonDesign
    from spatialfuse.datasets._tissue import Tissue


def stream(seed: int, name: str) -> np.random.Generator:
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
    r = SPOT_DIAMETER_UM / 2.0
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


# --------------------------------------------------------------------------------------------------
# the steps, in the order synthetic_trio takes them


@dataclass(frozen=True)
class Options:
    """The checked options of one :func:`synthetic_trio` call."""

    seed: int
    msi_pixel: tuple[float, float]
    msi_mode: str
    msi_affine_given: dict[str, Any]  # rotation_deg, mirror, scale, shear (None: drawn)
    warp_um: float
    serial_section: bool
    serial_rotation_deg: float | None
    serial_warp_um: float
    he_px: float
    tissue_size: tuple[float, float]
    n_ions: int
    n_genes: int
    n_sub: int
    write_he_serial: bool

    def as_json(self) -> dict[str, Any]:
        """The options as ``truth.json`` records them."""
        return {
            "msi_pixel_size_um": list(self.msi_pixel),
            "msi_mode": self.msi_mode,
            "warp_um": float(self.warp_um),
            "serial_section": bool(self.serial_section),
            "serial_warp_um": float(self.serial_warp_um),
            "he_pixel_size_um": self.he_px,
            "tissue_size_um": list(self.tissue_size),
            "n_ions": int(self.n_ions),
            "n_genes": int(self.n_genes),
            "msi_subsamples": self.n_sub,
        }


def check_options(
    *,
    seed,
    msi_pixel_size_um,
    msi_mode: str,
    he_pixel_size_um,
    tissue_size_um,
    warp_um: float,
    serial_warp_um: float,
    msi_subsamples: int | None,
    **passed_on,
) -> Options:
    """Validate :func:`synthetic_trio`'s options; ``passed_on`` ones are kept as given."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
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
    return Options(
        seed=int(seed),
        msi_pixel=(px, py),
        msi_mode=msi_mode,
        warp_um=warp_um,
        serial_warp_um=serial_warp_um,
        he_px=he_px,
        tissue_size=size,
        n_sub=n_sub,
        **passed_on,
    )


class Laps:
    """Seconds per stage, each counted from the end of the one before (``timings``)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = now - self._start
        self._start = now


def uuids(seed: int) -> list[uuid_module.UUID]:
    """The UUIDs of the imzML, the H&E and the serial H&E, drawn from the seed."""
    rng = stream(seed, "uuid")
    return [uuid_module.UUID(bytes=rng.bytes(16), version=4) for _ in range(3)]


def build_tissue(o: Options) -> Tissue:
    """The tissue: label map, holes, gradients and cell seeds in the tissue (H&E) frame."""
    return _tissue.build_tissue(stream(o.seed, "tissue"), o.tissue_size, o.he_px)


def _affine_params(rotation_deg, scale, shear, translation, mirror) -> dict[str, Any]:
    """Keyword arguments of :meth:`AffineTransform.from_params`, in ``truth.json``'s order."""
    return {
        "rotation_deg": float(rotation_deg),
        "scale": [float(scale[0]), float(scale[1])],
        "shear": float(shear),
        "translation": [float(translation[0]), float(translation[1])],
        "mirror": bool(mirror),
    }


@dataclass(frozen=True, eq=False)
class Placement:
    """Where a moving frame (the MSI grid, the Visium image) lies in the tissue frame."""

    affine_params: dict[str, Any]
    affine: AffineTransform
    warp: DisplacementField | None  # in the moving frame, before the affine
    grid: tuple[int, int]  # (cols, rows) of the moving frame's pixels
    linear: np.ndarray  # the 2 × 2 linear part the grid was laid out under
    to_he: Transform = field(init=False)

    def __post_init__(self) -> None:
        to_he = self.affine if self.warp is None else compose(self.affine, self.warp)
        object.__setattr__(self, "to_he", to_he)


def place_msi(o: Options, boundary: np.ndarray) -> tuple[Placement, list[str]]:
    """The MSI grid on the tissue: affine drawn (or given), grid over the tissue, warp.

    Also returns the names of the affine parameters that were drawn.
    """
    geo = stream(o.seed, "msi_geometry")
    drawn_values = {
        "rotation_deg": float(geo.uniform(0.0, 360.0)),
        "mirror": bool(geo.random() < 0.5),
        "scale": tuple(float(v) for v in geo.uniform(0.88, 1.12, size=2)),
        "shear": float(geo.uniform(-0.05, 0.05)),
    }
    jitter = geo.uniform(0.0, 1.0, size=2)
    given = o.msi_affine_given
    values = {k: drawn_values[k] if v is None else v for k, v in given.items()}
    scale = _pair(values["scale"], "scale")
    linear = AffineTransform.from_params(
        rotation_deg=float(values["rotation_deg"]),
        scale=scale,
        shear=float(values["shear"]),
        mirror=bool(values["mirror"]),
    ).matrix[:2, :2]
    px, py = o.msi_pixel
    margin = 2.0 * max(px, py) + 1.5 * o.warp_um
    translation, (nx, ny) = _frame(boundary, linear, (px, py), margin, jitter)
    params = _affine_params(
        values["rotation_deg"], scale, values["shear"], translation, values["mirror"]
    )
    warp_rng = stream(o.seed, "msi_warp")
    warp = _random_field(warp_rng, (nx * px, ny * py), o.warp_um) if o.warp_um else None
    placement = Placement(params, AffineTransform.from_params(**params), warp, (nx, ny), linear)
    return placement, sorted(k for k, v in given.items() if v is None)


@dataclass(frozen=True)
class MsiPixels:
    """The MSI raster and the tissue under each pixel."""

    coords: np.ndarray  # (n, 2) 1-based (x, y), row-major: the file order
    labels: np.ndarray  # label at the pixel centre, -1 off tissue
    fractions: np.ndarray  # (n, n_regions) area fractions of the sub-points
    gradients: np.ndarray  # (n, 2) mean radial (tumor_a) and ramp (tumor_b) gradient values


def cover_msi_pixels(o: Options, tissue: Tissue, msi: Placement) -> MsiPixels:
    """What tissue each MSI pixel covers: ``n_sub``² sub-points per pixel through ``msi_to_he``."""
    nx, ny = msi.grid
    gx, gy = np.meshgrid(np.arange(1, nx + 1), np.arange(1, ny + 1))
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    n_pix, n_sub = len(coords), o.n_sub
    centres = (coords - 0.5) * o.msi_pixel
    labels = tissue.label_at(msi.to_he.apply(centres)).astype(np.int64)
    offsets = (np.arange(n_sub) + 0.5) / n_sub
    ox, oy = np.meshgrid(offsets, offsets)
    sub = np.stack([ox.ravel(), oy.ravel()], axis=1)
    sub_points = ((coords - 1)[:, None, :] + sub[None, :, :]).reshape(-1, 2) * o.msi_pixel
    sub_he = msi.to_he.apply(sub_points)
    sub_labels = tissue.label_at(sub_he)
    fractions = _fractions(sub_labels, n_pix, n_sub * n_sub, len(_tissue.REGION_NAMES))
    grads = tissue.gradients_at(sub_he)
    grads[:, 0] *= sub_labels == 0
    grads[:, 1] *= sub_labels == 1
    gradients = grads.reshape(n_pix, n_sub * n_sub, 2).mean(axis=1)
    return MsiPixels(coords, labels, fractions, gradients)


def msi_spectra(o: Options, msi: Placement, pixels: MsiPixels) -> tuple[IonDesign, tuple]:
    """The ion design and every pixel's spectrum ``(mzs, intensities)``, as the file holds them."""
    ion_design = _signals.design_ions(stream(o.seed, "ion_design"), int(o.n_ions))
    rng = stream(o.seed, "msi_signal")
    rows = msi.grid[1]
    intensity, tic_factor = _signals.ion_intensities(
        ion_design, pixels.fractions, pixels.gradients, pixels.coords[:, 1] - 1, rows, rng
    )
    if o.msi_mode == "processed":
        return ion_design, _signals.processed_spectra(ion_design, intensity, rng)
    return ion_design, _signals.continuous_spectra(ion_design, intensity, tic_factor, rng)


def render_msi_section_he(o: Options, tissue: Tissue) -> np.ndarray:
    """The H&E of the MSI section: the tissue frame itself."""
    lp = tissue.label_pixel_size_um
    membrane = np.zeros(tissue.shape, dtype=np.float32)
    ar, ac = np.nonzero(tissue.labels == 5)
    membrane[ar, ac] = tissue.membrane_at(np.stack([(ac + 0.5) * lp, (ar + 0.5) * lp], axis=1))
    return _tissue.render_he(
        tissue.labels,
        tissue.lumen,
        membrane,
        k=tissue.k,
        he_pixel_size_um=o.he_px,
        rng=stream(o.seed, "he"),
        orientation_fn=tissue.orientation_at,
    )


def write_he(o: Options, folder: Path, he_rgb: np.ndarray, uuid: uuid_module.UUID) -> Path:
    """``he.ome.tif``: the H&E of the MSI section."""
    return _writers.write_ome_tiff(
        folder / "he.ome.tif", he_rgb, o.he_px, uuid_text=str(uuid), name="he"
    )


def place_visium(
    o: Options, tissue: Tissue, boundary: np.ndarray, he_shape: tuple[int, int]
) -> tuple[Placement, tuple[float, float]]:
    """The Visium image frame: a serial section's (drawn), or the H&E of the MSI section's.

    Also returns the serial section's stain batch (drawn either way, used only there).
    """
    geo = stream(o.seed, "visium_geometry")
    rotation = float(geo.uniform(0.0, 360.0))
    scale = tuple(float(v) for v in geo.uniform(0.97, 1.03, size=2))
    shear = float(geo.uniform(-0.02, 0.02))
    jitter = geo.uniform(0.0, 1.0, size=2)
    stain = (float(geo.uniform(0.85, 1.15)), float(geo.uniform(0.85, 1.15)))
    if not o.serial_section:
        identity = _affine_params(0.0, (1.0, 1.0), 0.0, (0.0, 0.0), False)
        rows, cols = he_shape
        return Placement(identity, AffineTransform.identity(), None, (cols, rows), np.eye(2)), stain
    if o.serial_rotation_deg is not None:
        rotation = float(o.serial_rotation_deg)
    linear = AffineTransform.from_params(rotation_deg=rotation, scale=scale, shear=shear).matrix
    linear = linear[:2, :2]
    margin = 150.0 + 2.0 * o.serial_warp_um
    translation, (cols, rows) = _frame(boundary, linear, (o.he_px, o.he_px), margin, jitter)
    k = tissue.k
    cols, rows = k * -(-cols // k), k * -(-rows // k)
    params = _affine_params(rotation, scale, shear, translation, False)
    warp = (
        _random_field(
            stream(o.seed, "visium_warp"), (cols * o.he_px, rows * o.he_px), o.serial_warp_um
        )
        if o.serial_warp_um
        else None
    )
    placement = Placement(params, AffineTransform.from_params(**params), warp, (cols, rows), linear)
    return placement, stain


def render_serial_he(
    o: Options, tissue: Tissue, visium: Placement, stain: tuple[float, float]
) -> np.ndarray:
    """The serial section's H&E: labels pulled back from the tissue frame, new cells and stain."""
    k, lp = tissue.k, tissue.label_pixel_size_um
    cols, rows = visium.grid[0] // k, visium.grid[1] // k
    xs = (np.arange(cols) + 0.5) * lp
    ys = (np.arange(rows) + 0.5) * lp
    mapped = _map_grid(visium.to_he, xs, ys).reshape(-1, 2)
    labels = tissue.label_at(mapped).reshape(rows, cols)
    lumen = tissue.lumen_at(mapped).reshape(rows, cols)
    membrane = np.zeros((rows, cols), dtype=np.float32)
    adipose = (labels == 5).ravel()
    membrane.ravel()[adipose] = tissue.membrane_at(mapped[adipose])
    del mapped
    inverse_linear = np.linalg.inv(visium.linear)

    def orientation(points):
        angle = tissue.orientation_at(visium.to_he.apply(points))
        direction = np.stack([np.cos(angle), np.sin(angle)], axis=1) @ inverse_linear.T
        return np.arctan2(direction[:, 1], direction[:, 0])

    return _tissue.render_he(
        labels,
        lumen,
        membrane,
        k=k,
        he_pixel_size_um=o.he_px,
        rng=stream(o.seed, "serial_he"),
        orientation_fn=orientation,
        stain=stain,
    )


@dataclass(frozen=True)
class Spots:
    """Every spot of the capture area, in barcode order (the positions file's)."""

    barcodes: np.ndarray
    array_row: np.ndarray
    array_col: np.ndarray
    pxl: np.ndarray  # (n, 2) full-res pixel coordinates (x, y)
    labels: np.ndarray  # label at the spot centre, -1 off tissue
    fractions: np.ndarray  # (n, n_regions) area fractions under the 55 µm disc

    @property
    def in_tissue(self) -> np.ndarray:
        """Whether the spot centre lies on tissue."""
        return self.labels >= 0


def lay_spots(o: Options, tissue: Tissue, visium: Placement) -> Spots:
    """Spots on the 100 µm hexagonal pitch of the Visium image frame, and the tissue under each."""
    rng = stream(o.seed, "visium_spots")
    width_um, height_um = visium.grid[0] * o.he_px, visium.grid[1] * o.he_px
    x0, y0 = rng.uniform(40.0, 90.0, size=2)
    row_step = SPOT_PITCH_UM * math.sqrt(3.0) / 2.0
    n_array_cols = int((width_um - 40.0 - x0) // (SPOT_PITCH_UM / 2.0)) + 1
    n_array_rows = int((height_um - 40.0 - y0) // row_step) + 1
    ar_, ac_ = np.meshgrid(np.arange(n_array_rows), np.arange(n_array_cols), indexing="ij")
    on_grid = (ar_ + ac_) % 2 == 0
    array_row, array_col = ar_[on_grid], ac_[on_grid]
    spot_um = np.stack([x0 + array_col * (SPOT_PITCH_UM / 2.0), y0 + array_row * row_step], axis=1)
    barcodes = _barcodes(rng, len(spot_um))
    order = np.argsort(barcodes, kind="stable")
    # full-res pixel coordinates: a spot at coordinate c is centred at (c + 0.5) · u µm
    pxl = spot_um[order] / o.he_px - 0.5
    spot_um = (pxl + 0.5) * o.he_px  # exactly what read_visium computes from the file
    labels = tissue.label_at(visium.to_he.apply(spot_um)).astype(np.int64)
    footprint = _spot_footprint()
    disc = (spot_um[:, None, :] + footprint[None, :, :]).reshape(-1, 2)
    fractions = _fractions(
        tissue.label_at(visium.to_he.apply(disc)),
        len(spot_um),
        len(footprint),
        len(_tissue.REGION_NAMES),
    )
    return Spots(barcodes[order], array_row[order], array_col[order], pxl, labels, fractions)


def visium_counts(o: Options, spots: Spots) -> tuple[GeneDesign, np.ndarray]:
    """The gene design and every spot's counts, from the region fractions under its disc."""
    genes = _signals.design_genes(stream(o.seed, "gene_design"), int(o.n_genes))
    return genes, _signals.gene_counts(genes, spots.fractions, stream(o.seed, "visium_counts"))


def write_visium_folder(
    o: Options, folder: Path, spots: Spots, genes: GeneDesign, counts, fullres
) -> Path:
    """The Space Ranger folder ``visium/``: every spot, its counts and the full-res image."""
    return _writers.write_visium(
        folder / "visium",
        barcodes=spots.barcodes,
        in_tissue=spots.in_tissue.astype(np.int64),
        array_row=spots.array_row,
        array_col=spots.array_col,
        pxl_row=spots.pxl[:, 1],
        pxl_col=spots.pxl[:, 0],
        counts=counts,
        gene_ids=genes.ids,
        gene_names=genes.names,
        fullres=fullres,
        um_per_px=o.he_px,
        library_id=f"synthetic_{o.seed}",
    )


def design_fields(ion_design: IonDesign, gene_design: GeneDesign) -> dict[str, Any]:
    """The trio's region, ion and gene tables (``region_names`` … ``marker_genes``)."""
    import pandas as pd

    names = tuple(_tissue.REGION_NAMES)
    ion_groups = [_signals.ION_GROUP_NAMES[int(g)] for g in _tissue.REGION_ION_GROUP]
    gene_groups = [_signals.GENE_GROUP_NAMES[int(g)] for g in _tissue.REGION_GENE_GROUP]
    textures = [_tissue.TEXTURE_NAMES[int(t)] for t in _tissue.REGION_TEXTURE]
    ion_markers = ion_design.kind == "marker"
    gene_markers = gene_design.kind == "marker"
    return {
        "region_names": names,
        "region_design": {
            name: {"texture": texture, "ion_group": ion_group, "gene_group": gene_group}
            for name, texture, ion_group, gene_group in zip(
                names, textures, ion_groups, gene_groups, strict=True
            )
        },
        "ions": pd.DataFrame(
            {"mz": ion_design.mz, "kind": ion_design.kind, "target": ion_design.target},
            index=pd.Index([f"mz-{m:.4f}" for m in ion_design.mz], name="ion"),
        ),
        "ion_profiles": ion_design.region_profiles,
        "marker_ions": {
            name: ion_design.mz[ion_markers & (ion_design.target == group)].copy()
            for name, group in zip(names, ion_groups, strict=True)
        },
        "genes": pd.DataFrame(
            {"gene_id": gene_design.ids, "kind": gene_design.kind, "target": gene_design.target},
            index=pd.Index(gene_design.names, name="gene"),
        ),
        "gene_profiles": gene_design.region_profiles,
        "marker_genes": {
            name: gene_design.names[gene_markers & (gene_design.target == group)].tolist()
            for name, group in zip(names, gene_groups, strict=True)
        },
    }


def write_msi(
    o: Options, folder: Path, pixels: MsiPixels, spectra: tuple, uuid: uuid_module.UUID
) -> Path:
    """``msi.imzML`` and its ``.ibd``."""
    mzs, ints = spectra
    path, _ = _writers.write_imzml(
        folder / "msi.imzML",
        pixels.coords,
        mzs,
        ints,
        mode=o.msi_mode,
        pixel_size_um=o.msi_pixel,
        uuid_bytes=uuid.bytes,
        version=__version__,
    )
    return path


def visium_fullres(
    o: Options,
    folder: Path,
    tissue: Tissue,
    visium: Placement,
    stain: tuple[float, float],
    he_rgb: np.ndarray,
    uuid: uuid_module.UUID,
    laps: Laps,
) -> tuple[np.ndarray, Path | None]:
    """The Visium full-res image and ``he_serial.ome.tif`` (None when not written).

    A serial section's H&E, rendered (and written unless ``write_he_serial`` is false), or the
    H&E of the MSI section itself. A ``he_serial.ome.tif`` left by an earlier call is removed.
    """
    image, path = he_rgb, None
    if o.serial_section:
        image = render_serial_he(o, tissue, visium, stain)
        laps("serial_render")
        if o.write_he_serial:
            path = _writers.write_ome_tiff(
                folder / "he_serial.ome.tif",
                image,
                o.he_px,
                uuid_text=str(uuid),
                name="he_serial",
            )
        laps("serial_write")
    stale = folder / "he_serial.ome.tif"
    if path is None and stale.exists():
        stale.unlink()  # left by an earlier call into the same folder
    return image, path


def transforms(msi: Placement, visium: Placement) -> dict[str, Transform]:
    """The maps between the frames, by their ``SyntheticTrio`` names."""
    return {
        "msi_to_he": msi.to_he,
        "visium_to_he": visium.to_he,
        "he_serial_to_he": visium.to_he,  # the serial H&E is the Visium full-res image
        "msi_to_visium": compose(visium.to_he.inverse(), msi.to_he),
    }


def landmarks(tissue: Tissue, msi: Placement, visium: Placement) -> dict[str, np.ndarray]:
    """Hole centres, tissue extremes and region cores: in H&E µm, MSI µm and Visium µm."""
    he = np.concatenate([tissue.holes[:, :2], tissue.extremes, tissue.centroids])
    return {
        "he": he,
        "msi": msi.to_he.inverse().apply(he),
        "visium": visium.to_he.inverse().apply(he),
    }


def params(
    o: Options, msi: Placement, visium: Placement, stain, drawn: list[str]
) -> dict[str, Any]:
    """``SyntheticTrio.params``: the parameters drawn or given."""
    serial = bool(o.serial_section)
    return {
        "msi_affine": msi.affine_params,
        "msi_warp_um": float(o.warp_um),
        "msi_grid_shape": [int(msi.grid[1]), int(msi.grid[0])],
        "msi_subsamples": o.n_sub,
        "visium_affine": visium.affine_params,
        "visium_warp_um": float(o.serial_warp_um) if serial else 0.0,
        "visium_image_shape": [int(visium.grid[1]), int(visium.grid[0])],
        "serial_section": serial,
        "serial_stain": list(stain) if serial else [1.0, 1.0],
        "drawn": drawn + (["serial_rotation_deg"] if o.serial_rotation_deg is None else []),
        "tissue_size_um": list(o.tissue_size),
    }


def write_truth(
    folder: Path,
    o: Options,
    paths: dict[str, Path | None],
    label_pixel_size_um: float,
    transforms: dict[str, Transform],
    params: dict[str, Any],
    design: dict[str, Any],
    landmarks: dict[str, np.ndarray],
) -> Path:
    """``truth.json``: the ground truth as JSON (transforms, parameters, regions, landmarks)."""
    files = {name: path.name if path is not None else None for name, path in paths.items()}
    truth = {
        "generator": "spatialfuse.datasets.synthetic_trio",
        "version": __version__,
        "seed": o.seed,
        "options": o.as_json(),
        "files": files,
        "pixel_sizes_um": {
            "he": o.he_px,
            "msi": list(o.msi_pixel),
            "visium_um_per_px": o.he_px,
            "label_map": label_pixel_size_um,
        },
        "transforms": {name: t.to_dict() for name, t in transforms.items()},
        "params": params,
        "regions": [
            {"label": i, "name": name, **design["region_design"][name]}
            for i, name in enumerate(design["region_names"])
        ],
        "landmarks_um": {name: points.tolist() for name, points in landmarks.items()},
    }
    path = folder / "truth.json"
    path.write_text(json.dumps(truth, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
