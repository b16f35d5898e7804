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

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse.datasets import _trio_steps as steps
from spatialfuse.reg import AffineTransform, DisplacementField, Transform

if TYPE_CHECKING:
    import pandas as pd

    from spatialfuse.datasets._signals import IonDesign
    from spatialfuse.datasets._tissue import Tissue

__all__ = ["SyntheticTrio", "synthetic_trio"]


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
    laps = steps.Laps()
    o = steps.check_options(
        seed=seed,
        msi_pixel_size_um=msi_pixel_size_um,
        msi_mode=msi_mode,
        he_pixel_size_um=he_pixel_size_um,
        tissue_size_um=tissue_size_um,
        warp_um=warp_um,
        serial_warp_um=serial_warp_um,
        msi_subsamples=msi_subsamples,
        msi_affine_given={
            "rotation_deg": rotation_deg,
            "mirror": mirror,
            "scale": scale,
            "shear": shear,
        },
        serial_section=serial_section,
        serial_rotation_deg=serial_rotation_deg,
        n_ions=n_ions,
        n_genes=n_genes,
        write_he_serial=write_he_serial,
    )
    folder = Path(tempfile.mkdtemp(prefix="spatialfuse-synthetic-")) if path is None else Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    msi_uuid, he_uuid, serial_uuid = steps.uuids(o.seed)

    tissue = steps.build_tissue(o)
    boundary = tissue.boundary_points()
    laps("tissue")

    msi, drawn = steps.place_msi(o, boundary)
    pixels = steps.cover_msi_pixels(o, tissue, msi)
    laps("msi_geometry")
    ion_design, spectra = steps.msi_spectra(o, msi, pixels)
    laps("msi_spectra")
    msi_path = steps.write_msi(o, folder, pixels, spectra, msi_uuid)
    del spectra
    laps("msi_write")

    he_rgb = steps.render_msi_section_he(o, tissue)
    laps("he_render")
    he_path = steps.write_he(o, folder, he_rgb, he_uuid)
    laps("he_write")

    visium, stain = steps.place_visium(o, tissue, boundary, he_rgb.shape[:2])
    fullres, he_serial_path = steps.visium_fullres(
        o, folder, tissue, visium, stain, he_rgb, serial_uuid, laps
    )
    del he_rgb
    spots = steps.lay_spots(o, tissue, visium)
    gene_design, counts = steps.visium_counts(o, spots)
    laps("visium_spots")
    visium_folder = steps.write_visium_folder(o, folder, spots, gene_design, counts, fullres)
    del fullres
    laps("visium_write")

    transforms = steps.transforms(msi, visium)
    landmarks = steps.landmarks(tissue, msi, visium)
    design = steps.design_fields(ion_design, gene_design)
    params = steps.params(o, msi, visium, stain, drawn)
    paths = {
        "he": he_path,
        "msi": msi_path,
        "msi_ibd": msi_path.with_suffix(".ibd"),
        "visium": visium_folder,
        "he_serial": he_serial_path,
    }
    truth_file = steps.write_truth(
        folder, o, paths, tissue.label_pixel_size_um, transforms, params, design, landmarks
    )
    laps("truth")
    laps.timings["total"] = float(sum(laps.timings.values()))

    on = spots.in_tissue
    return SyntheticTrio(
        folder=folder,
        he=he_path,
        msi=msi_path,
        visium=visium_folder,
        he_serial=he_serial_path,
        truth_file=truth_file,
        he_pixel_size_um=o.he_px,
        msi_pixel_size_um=o.msi_pixel,
        visium_um_per_px=o.he_px,
        msi_mode=o.msi_mode,
        **transforms,
        msi_affine=msi.affine,
        msi_warp=msi.warp,
        visium_affine=visium.affine,
        visium_warp=visium.warp,
        params=params,
        label_map=tissue.labels,
        label_pixel_size_um=tissue.label_pixel_size_um,
        msi_coords=pixels.coords,
        msi_grid_shape=(int(msi.grid[1]), int(msi.grid[0])),
        msi_labels=pixels.labels,
        msi_fractions=pixels.fractions,
        spot_barcodes=spots.barcodes[on],
        spot_labels=spots.labels[on],
        spot_fractions=spots.fractions[on],
        all_spot_barcodes=spots.barcodes,
        all_spot_labels=spots.labels,
        all_spot_in_tissue=on,
        **design,
        **{f"landmarks_{name}_um": points for name, points in landmarks.items()},
        seed=o.seed,
        timings=laps.timings,
        _tissue=tissue,
        _ion_design=ion_design,
    )
