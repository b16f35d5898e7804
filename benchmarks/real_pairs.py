"""The real MSI + optical/Visium pairs of ``../shared/data/paired`` and their reference alignments.

Each pair is loaded as the two inputs a user would hand to ``sf.reg.register`` and a *reference*:
a moving µm → fixed-pixel affine fitted to hand-placed landmarks (see
``benchmarks/real_references/README.md`` for who placed them and how), with the leave-one-out
error of that fit and a bootstrap estimate of the reference's own error over the tissue. Errors
of a registration are measured against it in moving (MSI) pixels over the moving tissue.

The data stay in ``../shared/data`` (or ``$SPATIALFUSE_TEST_DATA``); nothing here downloads.
Used by ``bench_real.py`` and by ``tests/reg/test_real_pairs.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCES = HERE / "real_references"

#: Which pairs chose the defaults and thresholds of registration ("tuning") and which were left
#: untouched until the end ("held-out"). See docs/benchmarks.md.
ROLES = {
    "bladder_spamtp": "tuning",
    "bladder_spamtp_turned": "tuning",
    "bladder_spamtp_cropped": "held-out",
    "magpie_sma": "held-out",
    "msiflow_upec12": "held-out",
    "brain_A12": "held-out",
    "brain_A13": "held-out",
    "brain_A2": "held-out",
}


def data_root() -> Path:
    """``$SPATIALFUSE_TEST_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    return Path(env) if env else HERE.parents[1] / "shared" / "data"


@dataclass
class Reference:
    """A moving µm → fixed pixel affine (3×3) from landmarks, and how far to trust it.

    Its uncertainty is the median leave-one-out error of its landmarks (issue 20's definition),
    or a stated one where there are no landmarks; ``spread_moving_px`` is the bootstrap spread
    of the fitted affine itself over the landmarks (smaller: it averages the placement errors).
    """

    matrix: np.ndarray
    loo_moving_px: np.ndarray
    spread_moving_px: float
    n_landmarks: int
    how: str
    stated_uncertainty_px: float | None = None

    @property
    def uncertainty_moving_px(self) -> float:
        """Median leave-one-out error of the landmarks (moving pixels), or the stated value."""
        if self.stated_uncertainty_px is not None:
            return self.stated_uncertainty_px
        return float(np.median(self.loo_moving_px))

    def apply(self, points_um: np.ndarray) -> np.ndarray:
        """Fixed-image pixel coordinates (pixel centres at integers) of moving µm points."""
        p = np.asarray(points_um, dtype=np.float64)
        return p @ self.matrix[:2, :2].T + self.matrix[:2, 2]

    def inverse_apply(self, fixed_px: np.ndarray) -> np.ndarray:
        """Moving µm of fixed-image pixel coordinates."""
        inv = np.linalg.inv(self.matrix)
        return np.asarray(fixed_px, dtype=np.float64) @ inv[:2, :2].T + inv[:2, 2]


@dataclass
class RealPair:
    """Inputs of one real registration problem and its reference."""

    name: str
    moving: object
    fixed: object
    reference: Reference
    moving_pixel_um: float
    tissue_um: np.ndarray
    register_kwargs: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def role(self) -> str:
        """``"tuning"`` or ``"held-out"``."""
        return ROLES[self.name]

    def errors_px(self, transform, fixed_pixel_um) -> np.ndarray:
        """Distance (moving pixels) between where ``transform`` and the reference put the tissue.

        ``transform`` maps moving µm → fixed µm of a frame whose pixel size is
        ``fixed_pixel_um`` ``(x, y)``; both are compared in the fixed image's pixels and the
        difference is taken back to the moving frame through the reference.
        """
        size = np.asarray(fixed_pixel_um, dtype=np.float64)
        found_px = transform.apply(self.tissue_um) / size - 0.5
        back = self.reference.inverse_apply(found_px)
        return np.linalg.norm(back - self.tissue_um, axis=1) / self.moving_pixel_um


def fit_reference(moving_um, fixed_px, moving_pixel_um: float, how: str, *, seed: int = 0):
    """Least-squares affine through landmark pairs, its leave-one-out error and bootstrap spread.

    The leave-one-out error says how well each landmark is predicted by the others (placement
    error plus model error); the bootstrap (landmarks resampled with replacement, 200 times)
    says how far the fitted reference itself moves over ``moving_um``: the median over the
    landmarks of the median displacement is reported as its spread.
    """
    src = np.asarray(moving_um, dtype=np.float64)
    dst = np.asarray(fixed_px, dtype=np.float64)

    def fit(s, d):
        design = np.column_stack([s, np.ones(len(s))])
        coef, *_ = np.linalg.lstsq(design, d, rcond=None)
        m = np.eye(3)
        m[:2, :2] = coef[:2].T
        m[:2, 2] = coef[2]
        return m

    def to_moving(m, px):
        inv = np.linalg.inv(m)
        return px @ inv[:2, :2].T + inv[:2, 2]

    matrix = fit(src, dst)
    loo = np.empty(len(src))
    for i in range(len(src)):
        keep = np.arange(len(src)) != i
        m = fit(src[keep], dst[keep])
        loo[i] = np.linalg.norm(to_moving(m, dst[i : i + 1])[0] - src[i]) / moving_pixel_um
    rng = np.random.default_rng(seed)
    moves = []
    for _ in range(200):
        pick = rng.integers(0, len(src), len(src))
        if np.linalg.matrix_rank(np.column_stack([src[pick], np.ones(len(pick))])) < 3:
            continue
        m = fit(src[pick], dst[pick])
        moves.append(
            np.linalg.norm(to_moving(m, src @ matrix[:2, :2].T + matrix[:2, 2]) - src, axis=1)
        )
    uncertainty = float(np.median(np.median(np.array(moves), axis=0))) / moving_pixel_um
    return Reference(matrix, loo, uncertainty, len(src), how)


# ---------------------------------------------------------------------------------------------
# the pairs


def bladder_spamtp(
    root: Path | None = None,
    *,
    optical_pixel_um=None,
    turned_in: Path | None = None,
    cropped_in: Path | None = None,
) -> RealPair:
    """Mouse bladder: real MALDI imzML (79 peaks, 10 µm) + its stained optical image.

    The optical TIFF has no usable pixel size (150 dpi); ``optical_pixel_um=None`` opens it with
    ``pixel_size_um="auto"`` (registration estimates it), a number gives it by hand.
    ``turned_in``: a folder where the optical image is written transposed (turned by 90° and
    mirrored: an exact pixel permutation, the reference follows), so that the search has to
    find the orientation; the MSI and optical image come unrotated upstream.
    ``cropped_in``: a folder where a crop of the optical image is written (``CROP``: the middle
    of the tissue, about a third of the MSI field, every part of it inside the MSI region), so
    that the optical image covers only part of the MSI: the reference shifts by the crop's
    corner.
    """
    import pandas as pd

    import spatialfuse as sf

    folder = (root or data_root()) / "paired" / "bladder_spamtp"
    msi = sf.io.read_imzml(folder / "mouse_bladder_79peaks.imzML")
    optical = folder / "mouse_urinary_bladder_HE.tif"
    if turned_in is not None:
        import tifffile

        turned_in.mkdir(parents=True, exist_ok=True)
        path = turned_in / "bladder_optical_transposed.tif"
        if not path.exists():
            # all four channels: the alpha channel hides what lies under the crop's wedges
            rgba = np.swapaxes(tifffile.imread(optical), 0, 1).copy()
            tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
        optical = path
    if cropped_in is not None:
        import tifffile

        cropped_in.mkdir(parents=True, exist_ok=True)
        path = cropped_in / "bladder_optical_cropped.tif"
        (c0, c1), (r0, r1) = CROP
        if not path.exists():
            rgba = tifffile.imread(optical)[r0:r1, c0:c1].copy()
            tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
        optical = path
    he = sf.io.read_histology(
        optical, pixel_size_um="auto" if optical_pixel_um is None else optical_pixel_um
    )
    pixel = float(msi.uns["spatialfuse"]["pixel_size_um"][0])
    x0 = int(msi.obs["imzml_x"].min())
    y0 = int(msi.obs["imzml_y"].min())
    table = pd.read_csv(REFERENCES / "bladder_spamtp_landmarks.csv")
    moving = np.column_stack(
        [(table["msi_col"] + x0 - 0.5) * pixel, (table["msi_row"] + y0 - 0.5) * pixel]
    )
    fixed = table[["optical_x", "optical_y"]].to_numpy(np.float64)
    if turned_in is not None:
        fixed = fixed[:, ::-1].copy()
    if cropped_in is not None:
        fixed = fixed - np.array([CROP[0][0], CROP[1][0]], dtype=np.float64)
    reference = fit_reference(
        moving, fixed, pixel, "11 landmarks placed by hand (real_references/README.md)"
    )
    tissue = sf.reg.registration_image(msi, working_pixel_size_um=None).centres_um(mask_only=True)
    name = "bladder_spamtp_turned" if turned_in is not None else "bladder_spamtp"
    if cropped_in is not None:
        name = "bladder_spamtp_cropped"
        # only the MSI tissue that the crop shows can be compared with the reference
        shown = reference.apply(tissue)
        (c0, c1), (r0, r1) = CROP
        inside = (shown[:, 0] >= 0) & (shown[:, 0] <= c1 - c0 - 1)
        inside &= (shown[:, 1] >= 0) & (shown[:, 1] <= r1 - r0 - 1)
        tissue = tissue[inside]
    return RealPair(name, msi, he, reference, pixel, tissue)


#: The bladder optical image's crop for the partial-overlap case: ``((col0, col1), (row0, row1))``
#: pixels of ``mouse_urinary_bladder_HE.tif`` (904 × 482), about 0.55 × 0.6 of its width and height.
CROP = ((200, 700), (100, 390))


def magpie_sma(root: Path | None = None, *, msi_pixel_um: float = 100.0) -> RealPair:
    """Mouse brain (SMA, V11L12-038_D1): the MSI footprint vs the Visium lowres H&E, same section.

    Only the MSI pixel grid of the tissue exists here (no intensities), so the moving image is
    that footprint. Its pixel size is not in the files; ``msi_pixel_um`` is nominal. The fixed
    image is the Visium lowres H&E, in µm from the spot pitch (100 µm). Reference: MAGPIE's 10
    hand-placed MSI → hires landmarks.
    """
    import pandas as pd

    import spatialfuse as sf
    from spatialfuse.reg import RegistrationImage

    folder = (root or data_root()) / "paired" / "magpie_sma_V11L12-038_D1"
    pixels = pd.read_csv(folder / "msi" / "MSI_metadata.csv")
    x0, y0 = int(pixels["x"].min()), int(pixels["y"].min())
    rows, cols = int(pixels["y"].max()) - y0 + 1, int(pixels["x"].max()) - x0 + 1
    grid = np.zeros((rows, cols), np.float32)
    grid[pixels["y"] - y0, pixels["x"] - x0] = 1.0
    moving = RegistrationImage.from_array(
        grid, msi_pixel_um, modality="msi", description="MSI footprint (no intensities)"
    )
    spatial = folder / "visium" / "spatial"
    scalefactors = pd.read_json(spatial / "scalefactors_json.json", typ="series")
    positions = pd.read_csv(spatial / "tissue_positions_list.csv", header=None)
    um_per_fullres = _visium_um_per_px(positions[[5, 4]].to_numpy(np.float64))
    lowres_um = um_per_fullres / float(scalefactors["tissue_lowres_scalef"])
    fixed = sf.io.read_histology(spatial / "tissue_lowres_image.png", pixel_size_um=lowres_um)
    marks = pd.read_csv(folder / "landmarks_noHE.csv")
    moving_um = np.column_stack(
        [(marks["X_left"] - x0 + 0.5) * msi_pixel_um, (marks["Y_left"] - y0 + 0.5) * msi_pixel_um]
    )
    to_lowres = float(scalefactors["tissue_lowres_scalef"] / scalefactors["tissue_hires_scalef"])
    fixed_px = marks[["X_right", "Y_right"]].to_numpy(np.float64) * to_lowres
    reference = fit_reference(
        moving_um, fixed_px, msi_pixel_um, "MAGPIE's 10 hand-placed landmarks (MSI → hires)"
    )
    tissue = moving.centres_um(mask_only=True)
    return RealPair(
        "magpie_sma",
        moving,
        fixed,
        reference,
        msi_pixel_um,
        tissue,
        notes="MSI footprint only; MSI pixel size nominal",
    )


def msiflow_upec12(root: Path | None = None, *, pixel_um: float = 10.0) -> RealPair:
    """Mouse bladder (UPEC infection): autofluorescence vs the MSI UMAP image, same section.

    msiFlow ships the immunofluorescence already resampled onto the MSI grid (so the reference is
    the identity), and the tissue fills the whole MSI field (no background to find). The moving
    image is the autofluorescence channel, turned by 90° and mirrored here (an exact pixel
    permutation, so the reference stays exact) so that registration has to find the orientation.
    Reference uncertainty: the MSI and IF urothelium masks overlap with Dice 0.92 at identity.
    """
    import tifffile

    from spatialfuse.reg import RegistrationImage

    folder = (root or data_root()) / "paired" / "msiflow_upec12" / "msi_if_registration"
    fluorescence = tifffile.imread(folder / "moving" / "preprocessed" / "UPEC_12.tif")[0]
    umap = tifffile.imread(folder / "fixed" / "umap" / "umap_grayscale_UPEC_12.tif")
    # moving pixel (c, r) of the turned image shows original pixel (r, c) → transposed
    turned = fluorescence.T.astype(np.float32)
    moving = RegistrationImage.from_array(
        turned, pixel_um, modality="image", description="autofluorescence (transposed)"
    )
    fixed = RegistrationImage.from_array(
        umap.astype(np.float32), pixel_um, modality="msi", description="MSI UMAP image"
    )
    # transposition: moving µm (x, y) → fixed pixel (col = y/p - 0.5, row = x/p - 0.5)
    matrix = np.array([[0, 1 / pixel_um, -0.5], [1 / pixel_um, 0, -0.5], [0, 0, 1]])
    # The upstream alignment (identity) and msiFlow's own ANTs result move the image by a median
    # 3.3 pixels against each other and validate equally (urothelium mask Dice 0.923 vs 0.918):
    # that is how far this reference can be trusted.
    reference = Reference(
        matrix, np.array([]), 3.3, 0, "identity before the transposition", stated_uncertainty_px=3.3
    )
    tissue = moving.centres_um()
    return RealPair(
        "msiflow_upec12",
        moving,
        fixed,
        reference,
        pixel_um,
        tissue,
        notes="IF resampled to the MSI grid upstream; no landmarks; tissue fills the field",
    )


#: The MALDI image of each brain-fragment pair (``paired/brain_he_maldi_pairs``).
BRAIN_MALDI = {
    "A12": "A12_1_No_NM_C_GROUP_maldi_mask.tif",
    "A13": "A13_3_No_NM_L_maldi_mask.tif",
    "A2": "A2_3_No_NM_L_maldi_mask.tif",
}


def brain_fragments(
    pair_id: str, root: Path | None = None, *, maldi_pixel_um: float = 50.0
) -> RealPair:
    """Brain tissue fragments: one MALDI channel inside a hand-drawn region vs a 128× H&E.

    Neither pixel size is stated: ``maldi_pixel_um`` is nominal and the H&E opens with
    ``pixel_size_um="auto"`` (registration estimates the scale between them). Reference: our
    hand-placed landmarks (``real_references/brain_<id>_landmarks.csv``), mostly on fragment
    outlines. No single affine relates the two images well: the fragments sit a little
    differently in the two sections and the MALDI regions are hand-drawn polygons, so the
    reference's leave-one-out error is 7–11 MALDI pixels (see ``real_references/README.md``).
    """
    import pandas as pd
    import tifffile

    import spatialfuse as sf
    from spatialfuse.reg import RegistrationImage

    folder = (root or data_root()) / "paired" / "brain_he_maldi_pairs"
    maldi = tifffile.imread(folder / BRAIN_MALDI[pair_id]).astype(np.float32)
    moving = RegistrationImage.from_array(
        maldi, maldi_pixel_um, modality="msi", description="MALDI image (one channel)"
    )
    fixed = sf.io.read_histology(folder / f"{pair_id}_lowres_he_128.tif", pixel_size_um="auto")
    table = pd.read_csv(REFERENCES / f"brain_{pair_id}_landmarks.csv")
    moving_um = (table[["msi_col", "msi_row"]].to_numpy(np.float64) + 0.5) * maldi_pixel_um
    fixed_px = table[["optical_x", "optical_y"]].to_numpy(np.float64)
    reference = fit_reference(
        moving_um,
        fixed_px,
        maldi_pixel_um,
        f"{len(table)} landmarks placed by hand on fragment outlines (real_references/README.md)",
    )
    return RealPair(
        f"brain_{pair_id}",
        moving,
        fixed,
        reference,
        maldi_pixel_um,
        moving.centres_um(mask_only=True),
        notes="one MALDI channel; no pixel sizes; fragments placed differently in the sections",
    )


# ---------------------------------------------------------------------------------------------
# optical → Visium (the H&E → Visium step of a chain)

#: Real Visium folders whose own H&E, turned and downsampled, is a right optical → Visium case.
VISIUM_FOLDERS = {
    "visiumio": "visium/visiumio_section1/outs",
    "cytassist": "visium/cytassist_ffpe_mouse_brain",
}
#: Real optical images of other tissues (path under the data root, µm per pixel as stated or
#: measured): registered onto a Visium they are wrong by construction.
OTHER_OPTICAL = {
    "bladder": ("paired/bladder_spamtp/mouse_urinary_bladder_HE.tif", 2.8),
    "squidpy": ("histology/squidpy_test_img/test_img.jpg", 1.0),
    "brain_A12": ("paired/brain_he_maldi_pairs/A12_lowres_he_128.tif", 32.0),
}


@dataclass
class VisiumCase:
    """An optical image and a Visium AnnData; ``truth`` (optical µm → Visium µm) where right."""

    name: str
    optical: object
    visium: object
    truth: object = None


def visium_cases(workdir: Path, root: Path | None = None) -> list[VisiumCase]:
    """Right and wrong optical → Visium cases from the real Visium folders.

    Right: a Visium folder's own H&E written transposed (turned by 90° and mirrored) at half its
    resolution, read with its pixel size: the truth is exact (a transposition). Wrong: every
    other Visium's H&E and every image of :data:`OTHER_OPTICAL` onto each Visium. Two mouse
    brains of different sections and preparations count as wrong here: no affine relates them.
    """
    import tifffile

    import spatialfuse as sf
    from spatialfuse.io.visium import tissue_image
    from spatialfuse.reg import AffineTransform

    root = root or data_root()
    workdir.mkdir(parents=True, exist_ok=True)
    visium, optical = {}, {}
    for name, sub in VISIUM_FOLDERS.items():
        adata = sf.io.read_visium(root / sub, require_counts=False)
        image, scale, _res = tissue_image(adata)
        pixel = float(adata.uns["spatialfuse"]["um_per_px"]) / scale
        path = workdir / f"{name}_he_transposed.tif"
        if not path.exists():
            turned = np.ascontiguousarray(np.swapaxes(image, 0, 1)[::2, ::2])
            if turned.dtype != np.uint8:
                turned = (np.clip(turned, 0, 1) * 255).round().astype(np.uint8)
            tifffile.imwrite(path, turned, photometric="rgb")
        visium[name] = adata
        optical[name] = sf.io.read_histology(path, pixel_size_um=2 * pixel)
    for name, (sub, pixel) in OTHER_OPTICAL.items():
        optical[name] = sf.io.read_histology(root / sub, pixel_size_um=pixel)
    cases = []
    for v_name, adata in visium.items():
        # optical pixel (c, r) is Visium image pixel (2r, 2c), whose centre lies half a Visium
        # image pixel before the optical pixel's centre: µm (x, y) → (y − p/2, x − p/2)
        half = optical[v_name].pixel_size_um[0] / 4
        transposition = AffineTransform([[0, 1, -half], [1, 0, -half], [0, 0, 1]])
        for o_name, image in optical.items():
            truth = transposition if o_name == v_name else None
            cases.append(VisiumCase(f"{o_name} → Visium {v_name}", image, adata, truth))
    return cases


def _visium_um_per_px(xy: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(xy).query(xy, k=2)
    return 100.0 / float(np.median(distances[:, 1]))


LOADERS = {
    "bladder_spamtp": bladder_spamtp,
    "magpie_sma": magpie_sma,
    "msiflow_upec12": msiflow_upec12,
    "brain_A12": lambda root=None: brain_fragments("A12", root),
    "brain_A13": lambda root=None: brain_fragments("A13", root),
    "brain_A2": lambda root=None: brain_fragments("A2", root),
}


def available(root: Path | None = None) -> bool:
    """Whether the paired folder is there."""
    return ((root or data_root()) / "paired").is_dir()
