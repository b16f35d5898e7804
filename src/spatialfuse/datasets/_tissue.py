"""The synthetic tissue: a label map of regions in the tissue frame, and its H&E rendering.

The tissue frame is the micrometre frame of the H&E image of the MSI section (origin at the outer
top-left corner of pixel ``(0, 0)``, ``docs/coordinates.md``). Everything here is built from seeded
smooth random fields (:class:`FourierField`) and vectorised numpy; the only Python loops run over
a few holes, a few dozen vessels and a few hundred stamp shapes, never over individual nuclei.

The ground truth is the **label map** (``Tissue.labels``, ``int8``, ``-1`` = background) sampled on
a grid of ``label_pixel_size_um`` (an integer multiple ``k`` of the H&E pixel size, about 2 µm);
every other quantity (H&E texture, MSI spectra, Visium counts, labels of pixels and spots) is
derived from it by nearest-pixel look-ups through the exact transforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Regions, in label order (label ``i`` is ``REGION_NAMES[i]``; ``-1`` is background).
REGION_NAMES = ("tumor_a", "tumor_b", "stroma", "reactive_stroma", "vascular", "adipose")
#: H&E texture classes.
TEXTURE_NAMES = ("nuclei_rich", "fibrous", "vascular", "adipose")
#: Texture class of each region: tumor_a/tumor_b look alike, and so do stroma/reactive_stroma.
REGION_TEXTURE = np.array([0, 0, 1, 1, 2, 3], dtype=np.int8)
#: Metabolite (ion) profile group of each region: stroma/reactive_stroma and vascular/adipose share.
REGION_ION_GROUP = np.array([0, 1, 2, 2, 3, 3], dtype=np.int64)
#: Gene-expression profile group of each region: tumor_a/tumor_b and vascular/adipose share.
REGION_GENE_GROUP = np.array([0, 0, 1, 2, 3, 3], dtype=np.int64)

#: Label-map pixel size aimed at (rounded to a multiple of the H&E pixel size).
LABEL_PIXEL_TARGET_UM = 2.0

# Optical densities: Ruifrok & Johnston's hematoxylin and eosin RGB absorbance vectors.
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_EOSIN = np.array([0.072, 0.990, 0.105])
_GLASS_OD = 0.012
# Quantisation of optical densities for the colour look-up table: OD = q / _Q, q in [0, 511].
_Q = 200.0
_QMAX = 511

# Per texture class: base hematoxylin and eosin OD of the cytoplasm / matrix.
_BASE_H = np.array([0.20, 0.035, 0.09, 0.01], dtype=np.float32)
_BASE_E = np.array([0.30, 0.36, 0.28, 0.03], dtype=np.float32)
# Nuclei per texture: density (1/µm²), semi-major axis (µm), elongation, OD, aligned with fibres.
_NUCLEI = (
    (1 / 70.0, (2.8, 4.4), (1.0, 1.5), (0.9, 1.4), False),
    (1 / 900.0, (3.5, 6.0), (2.5, 4.0), (0.8, 1.2), True),
    (1 / 260.0, (2.6, 3.8), (1.0, 1.6), (0.7, 1.2), False),
    (1 / 5000.0, (3.0, 5.0), (2.0, 3.0), (0.6, 0.9), False),
)
# Eosin fibres per texture: density (1/µm²), half-length (µm), half-width (µm), OD.
_FIBRES = (
    (1 / 3000.0, (8.0, 14.0), (0.7, 1.0), (0.15, 0.30)),
    (1 / 130.0, (15.0, 32.0), (0.7, 1.5), (0.30, 0.55)),
    (1 / 600.0, (10.0, 20.0), (0.7, 1.2), (0.20, 0.40)),
    None,
)


class FourierField:
    """A smooth stationary random field of about unit variance: a sum of random cosine modes.

    ``f(p) = sqrt(2 / n) · Σ cos(ω_m · p + φ_m)`` with ``ω_m ~ N(0, 1 / length_um)``, so the field
    has a Gaussian covariance of correlation length ``length_um``. It can be evaluated exactly at
    any points (:meth:`at`) or on a regular grid with one matrix product (:meth:`grid`).
    """

    def __init__(self, rng: np.random.Generator, length_um: float, n_modes: int = 32):
        self.omega = rng.normal(0.0, 1.0 / float(length_um), size=(n_modes, 2))
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=n_modes)
        self.amp = math.sqrt(2.0 / n_modes)

    def at(self, points) -> np.ndarray:
        """Values at ``(n, 2)`` points ``(x, y)`` in µm."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.empty(len(p))
        weights = np.full(len(self.phase), self.amp)
        for start in range(0, len(p), 65536):
            block = p[start : start + 65536]
            out[start : start + 65536] = np.cos(block @ self.omega.T + self.phase) @ weights
        return out

    def grid(self, xs, ys) -> np.ndarray:
        """Values on the grid ``xs × ys`` (1-D µm coordinates) as a ``(len(ys), len(xs))`` array."""
        a = np.outer(np.asarray(xs, dtype=np.float64), self.omega[:, 0]) + self.phase
        b = np.outer(np.asarray(ys, dtype=np.float64), self.omega[:, 1])
        return self.amp * (np.cos(b) @ np.cos(a).T - np.sin(b) @ np.sin(a).T)


@dataclass
class Tissue:
    """The tissue model in the tissue frame (see the module docstring)."""

    labels: np.ndarray  # (rows, cols) int8, -1 background
    lumen: np.ndarray  # (rows, cols) bool: vessel lumens (background inside the vascular region)
    label_pixel_size_um: float
    he_pixel_size_um: float
    k: int  # H&E pixels per label pixel along each axis
    tissue_size_um: tuple[float, float]
    centroids: np.ndarray  # (n_regions, 2) a point inside each region, µm
    holes: np.ndarray  # (n, 3): x, y, radius of the holes punched into the tissue, µm
    extremes: np.ndarray  # (4, 2): left-, right-, top- and bottom-most tissue pixel centres
    adipose_seeds: np.ndarray  # (n, 2) centres of adipocytes, µm
    orientation: FourierField  # fibre orientation: angle = π · f(p)
    radial_centre: np.ndarray  # (2,) centre of the radial gradient inside tumor_a
    radial_radius: float
    ramp_direction: np.ndarray  # (2,) unit vector of the linear gradient inside tumor_b
    ramp_range: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the label map."""
        return self.labels.shape

    @property
    def he_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the H&E image of the MSI section."""
        return self.labels.shape[0] * self.k, self.labels.shape[1] * self.k

    @property
    def extent_um(self) -> tuple[float, float]:
        """``(width, height)`` of the frame in µm."""
        return (
            self.labels.shape[1] * self.label_pixel_size_um,
            self.labels.shape[0] * self.label_pixel_size_um,
        )

    def _index(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        col = np.floor(p[:, 0] / self.label_pixel_size_um)
        row = np.floor(p[:, 1] / self.label_pixel_size_um)
        rows, cols = self.labels.shape
        valid = (row >= 0) & (row < rows) & (col >= 0) & (col < cols) & np.isfinite(row + col)
        row = np.where(valid, row, 0).astype(np.int64)
        col = np.where(valid, col, 0).astype(np.int64)
        return row, col, valid

    def label_at(self, points) -> np.ndarray:
        """Label of the label-map pixel containing each point (``-1`` outside the map)."""
        row, col, valid = self._index(points)
        return np.where(valid, self.labels[row, col], -1).astype(np.int8)

    def lumen_at(self, points) -> np.ndarray:
        """Whether each point lies in a vessel lumen."""
        row, col, valid = self._index(points)
        return valid & self.lumen[row, col]

    def orientation_at(self, points) -> np.ndarray:
        """Fibre orientation (radians, in the tissue frame) at each point."""
        return np.pi * self.orientation.at(points)

    def membrane_at(self, points) -> np.ndarray:
        """Adipocyte membrane weight in [0, 1] at each point (1 on a cell border)."""
        from scipy.spatial import cKDTree

        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(p) == 0 or len(self.adipose_seeds) < 2:
            return np.zeros(len(p), dtype=np.float32)
        dist, _ = cKDTree(self.adipose_seeds).query(p, k=2)
        width = 3.0 + 0.5 * self.label_pixel_size_um
        return np.clip(1.0 - (dist[:, 1] - dist[:, 0]) / width, 0.0, 1.0).astype(np.float32)

    def gradients_at(self, points) -> np.ndarray:
        """``(n, 2)`` values in [0, 1]: radial gradient (tumor_a), linear ramp (tumor_b).

        They are fields over the whole frame; the signal models multiply them by the region's
        indicator.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        radial = np.clip(1.0 - np.hypot(*(p - self.radial_centre).T) / self.radial_radius, 0.0, 1.0)
        lo, hi = self.ramp_range
        ramp = np.clip((p @ self.ramp_direction - lo) / (hi - lo), 0.0, 1.0)
        return np.stack([radial, ramp], axis=1)

    def boundary_points(self) -> np.ndarray:
        """Corners of the tissue's boundary label pixels, µm: the tissue lies inside their hull."""
        from scipy.ndimage import binary_erosion

        tissue = self.labels >= 0
        edge = tissue & ~binary_erosion(tissue, border_value=0)
        rows, cols = np.nonzero(edge)
        s = self.label_pixel_size_um
        corners = []
        for dr in (0, 1):
            for dc in (0, 1):
                corners.append(np.stack([(cols + dc) * s, (rows + dr) * s], axis=1))
        return np.concatenate(corners).astype(np.float64)


# --------------------------------------------------------------------------------------------------
# building the tissue


def build_tissue(
    rng: np.random.Generator, tissue_size_um: tuple[float, float], he_pixel_size_um: float
) -> Tissue:
    """Draw a tissue: outline, six regions, holes, vessels, adipocytes and gradients."""
    from scipy import ndimage

    width_t, height_t = (float(v) for v in tissue_size_um)
    small = min(width_t, height_t)
    he_px = float(he_pixel_size_um)
    k = max(1, round(LABEL_PIXEL_TARGET_UM / he_px))
    lp = k * he_px
    margin = 0.06 * max(width_t, height_t) + 100.0
    cols = math.ceil((width_t + 2 * margin) / lp)
    rows = math.ceil((height_t + 2 * margin) / lp)
    xs = (np.arange(cols) + 0.5) * lp
    ys = (np.arange(rows) + 0.5) * lp
    cx, cy = cols * lp / 2.0, rows * lp / 2.0

    # -- outline: a superellipse with a wobbly border, cut to the nominal size -----------------
    u = np.abs((xs - cx) / (width_t / 2.0)).astype(np.float32) ** 2.3
    v = np.abs((ys - cy) / (height_t / 2.0)).astype(np.float32) ** 2.3
    radius = (v[:, None] + u[None, :]) ** (1.0 / 2.3)
    wobble = 0.06 * FourierField(rng, 0.18 * small).grid(xs, ys) + 0.05 * FourierField(
        rng, 0.5 * small
    ).grid(xs, ys)
    tissue = (radius + wobble.astype(np.float32) < 0.93) & (radius < 1.0)
    components, n_components = ndimage.label(tissue)
    if n_components > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        tissue = components == int(np.argmax(sizes))
    tissue = ndimage.binary_fill_holes(tissue)

    # -- regions: a warped power diagram of three columns of adjacent look-alike pairs ---------
    # Seeds sit on a 3 × 2 layout (pairs that look alike in one modality are neighbours); the
    # plane is warped by a smooth field, and additive weights, tuned on a coarse grid, give every
    # region a drawn share of the tissue (8-28 %).
    amplitude = 0.13 * small
    warp_x = FourierField(rng, 0.22 * small)
    warp_y = FourierField(rng, 0.22 * small)
    along_x = width_t >= height_t
    long_side, short_side = (width_t, height_t) if along_x else (height_t, width_t)
    pair_of_column = rng.permutation(3)
    flips = rng.random(3) < 0.5
    seeds = np.zeros((6, 2))
    for column, pair in enumerate(pair_of_column):
        a = (column - 1) * 0.34 * long_side + rng.uniform(-0.05, 0.05) * long_side
        for member in (0, 1):
            side = (member == 0) != flips[column]
            b = (0.22 if side else -0.22) * short_side + rng.uniform(-0.05, 0.05) * short_side
            seeds[2 * pair + member] = (cx + a, cy + b) if along_x else (cx + b, cy + a)
    shares = np.clip(rng.dirichlet(np.full(6, 10.0)), 0.08, 0.28)
    shares /= shares.sum()

    def squared_distances(gx, gy):
        qx = (gx[None, :] + amplitude * warp_x.grid(gx, gy)).astype(np.float32)
        qy = (gy[:, None] + amplitude * warp_y.grid(gx, gy)).astype(np.float32)
        return [(qx - np.float32(sx)) ** 2 + (qy - np.float32(sy)) ** 2 for sx, sy in seeds]

    step = max(1, round(math.sqrt(rows * cols / 40000.0)))
    coarse_tissue = tissue[::step, ::step]
    coarse = [d[coarse_tissue] for d in squared_distances(xs[::step], ys[::step])]
    weights = np.zeros(6)
    scale = long_side**2
    for it in range(60):
        shifted = [d - np.float32(w) for d, w in zip(coarse, weights, strict=True)]
        assign = np.argmin(np.stack(shifted), axis=0)
        areas = np.bincount(assign, minlength=6) / max(1, len(assign))
        weights += 0.1 / (1.0 + it / 15.0) * (shares - areas) * scale
    region = np.zeros(tissue.shape, dtype=np.int8)
    best = None
    for i, d in enumerate(squared_distances(xs, ys)):
        d -= np.float32(weights[i])
        if best is None:
            best = d
            continue
        closer = d < best
        np.copyto(best, d, where=closer)
        region[closer] = i
    del best
    labels = np.where(tissue, region, np.int8(-1)).astype(np.int8)

    # -- holes: a few irregular blobs of background ---------------------------------------------
    norm_radius = radius
    candidates_r, candidates_c = np.nonzero(tissue & (norm_radius < 0.6))
    n_holes = int(rng.integers(3, 6))
    hole_field = FourierField(rng, 0.035 * small)
    holes: list[tuple[float, float, float]] = []
    r_max = 0.055 * small
    for _ in range(200):
        if len(holes) == n_holes or len(candidates_r) == 0:
            break
        i = int(rng.integers(len(candidates_r)))
        hx, hy = xs[candidates_c[i]], ys[candidates_r[i]]
        hr = float(rng.uniform(0.03, 0.055) * small)
        if any(math.hypot(hx - x, hy - y) < 3.5 * r_max for x, y, _ in holes):
            continue
        holes.append((float(hx), float(hy), hr))
    for hx, hy, hr in holes:
        r0, r1, c0, c1 = _window(hx, hy, 1.6 * hr, lp, rows, cols)
        gx, gy = xs[c0:c1], ys[r0:r1]
        dist = np.hypot(gx[None, :] - hx, gy[:, None] - hy) / hr
        inside = dist + 0.18 * hole_field.grid(gx, gy) < 1.0
        labels[r0:r1, c0:c1][inside] = -1

    # -- vessels: small elliptic lumens inside the vascular region ------------------------------
    lumen = np.zeros(labels.shape, dtype=bool)
    vr, vc = np.nonzero(labels == 4)
    if len(vr):
        area = len(vr) * lp * lp
        n_vessels = int(rng.poisson(area / 150.0**2))
        picks = rng.integers(0, len(vr), size=n_vessels)
        sizes = rng.uniform(8.0, 22.0, size=n_vessels)
        aspects = rng.uniform(1.0, 1.8, size=n_vessels)
        angles = rng.uniform(0.0, np.pi, size=n_vessels)
        for i in range(n_vessels):
            x0, y0 = xs[vc[picks[i]]], ys[vr[picks[i]]]
            a, b = sizes[i] * aspects[i], sizes[i]
            r0, r1, c0, c1 = _window(x0, y0, a + lp, lp, rows, cols)
            gx = xs[c0:c1][None, :] - x0
            gy = ys[r0:r1][:, None] - y0
            ca, sa = math.cos(angles[i]), math.sin(angles[i])
            inside = ((gx * ca + gy * sa) / a) ** 2 + ((-gx * sa + gy * ca) / b) ** 2 < 1.0
            inside &= labels[r0:r1, c0:c1] == 4
            lumen[r0:r1, c0:c1] |= inside
        labels[lumen] = -1

    # -- adipocytes: a jittered hexagonal lattice of cell centres -------------------------------
    spacing = 55.0
    ar, ac = np.nonzero(labels == 5)
    if len(ar):
        x_lo, x_hi = xs[ac.min()] - spacing, xs[ac.max()] + spacing
        y_lo, y_hi = ys[ar.min()] - spacing, ys[ar.max()] + spacing
        gy_idx = np.arange(int((y_hi - y_lo) / (spacing * 0.866)) + 1)
        gx_idx = np.arange(int((x_hi - x_lo) / spacing) + 1)
        jj, ii = np.meshgrid(gx_idx, gy_idx)
        seeds_x = x_lo + (jj + 0.5 * (ii % 2)) * spacing
        seeds_y = y_lo + ii * spacing * 0.866
        adipose = np.stack([seeds_x.ravel(), seeds_y.ravel()], axis=1)
        adipose += rng.normal(0.0, 0.17 * spacing, size=adipose.shape)
    else:
        adipose = np.zeros((0, 2))

    # -- points of interest ---------------------------------------------------------------------
    centroids = np.zeros((6, 2))
    for i in range(6):
        rr, cc = np.nonzero(labels == i)
        pts = np.stack([xs[cc], ys[rr]], axis=1)
        mean = pts.mean(axis=0)
        centroids[i] = pts[np.argmin(((pts - mean) ** 2).sum(axis=1))]
    tr, tc = np.nonzero(labels >= 0)
    order = (np.argmin(tc), np.argmax(tc), np.argmin(tr), np.argmax(tr))
    extremes = np.array([(xs[tc[i]], ys[tr[i]]) for i in order])

    rr, cc = np.nonzero(labels == 0)
    pts0 = np.stack([xs[cc], ys[rr]], axis=1)
    radial_radius = float(np.percentile(np.hypot(*(pts0 - centroids[0]).T), 95)) + lp
    angle = rng.uniform(0.0, 2.0 * np.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])
    rr, cc = np.nonzero(labels == 1)
    proj = np.stack([xs[cc], ys[rr]], axis=1) @ direction
    ramp_range = (float(np.percentile(proj, 3)), float(np.percentile(proj, 97)))

    return Tissue(
        labels=labels,
        lumen=lumen,
        label_pixel_size_um=lp,
        he_pixel_size_um=he_px,
        k=k,
        tissue_size_um=(width_t, height_t),
        centroids=centroids,
        holes=np.array(holes, dtype=np.float64).reshape(-1, 3),
        extremes=extremes,
        adipose_seeds=adipose,
        orientation=FourierField(rng, 250.0),
        radial_centre=centroids[0].copy(),
        radial_radius=radial_radius,
        ramp_direction=direction,
        ramp_range=ramp_range,
    )


def _window(x, y, half, lp, rows, cols) -> tuple[int, int, int, int]:
    c0 = max(0, int((x - half) / lp))
    c1 = min(cols, int((x + half) / lp) + 2)
    r0 = max(0, int((y - half) / lp))
    r1 = min(rows, int((y + half) / lp) + 2)
    return r0, r1, c0, c1


# --------------------------------------------------------------------------------------------------
# H&E rendering


def _colour_table() -> np.ndarray:
    """``uint32`` look-up table: index ``qh · 512 + qe`` → packed RGB0 bytes."""
    q = np.arange(_QMAX + 1) / _Q
    od = q[:, None, None] * _HEMATOXYLIN + q[None, :, None] * _EOSIN  # (512, 512, 3)
    rgb = np.clip(np.rint(255.0 * np.exp(-(od + _GLASS_OD))), 0, 255).astype(np.uint8)
    packed = np.zeros(((_QMAX + 1) ** 2, 4), dtype=np.uint8)
    packed[:, :3] = rgb.reshape(-1, 3)
    return packed.view(np.uint32).ravel()


def _kernel(kind: str, a: float, b: float, angle: float):
    """Pixel offsets and anti-aliased coverage of a shape rotated by ``angle``.

    ``kind`` is ``"ellipse"`` (semi-axes ``a``, ``b`` in pixels) or ``"capsule"`` (half-length
    ``a``, half-width ``b``).
    """
    reach = math.ceil(max(a, b) + 1.0)
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    dy, dx = offsets[:, None], offsets[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    along = dx * ca + dy * sa
    across = -dx * sa + dy * ca
    if kind == "ellipse":
        rho = np.sqrt((along / a) ** 2 + (across / b) ** 2)
        distance = (rho - 1.0) * min(a, b)
    else:
        distance = np.hypot(np.maximum(np.abs(along) - a, 0.0), across) - b
    coverage = np.clip(0.5 - distance, 0.0, 1.0)
    rows, cols = np.nonzero(coverage > 0.02)
    return rows - reach, cols - reach, coverage[rows, cols]


def _snap(values: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    """Snap values in ``[lo, hi]`` to ``levels`` evenly spaced values (few stamp shapes)."""
    if levels < 2 or hi <= lo:
        return np.full_like(values, (lo + hi) / 2.0)
    t = np.clip(np.rint((values - lo) / (hi - lo) * (levels - 1)), 0, levels - 1)
    return lo + t * (hi - lo) / (levels - 1)


_ANGLE_BINS = 16


def _stamps(kind, centres_px, semi_a, semi_b, angles, strength, shape, allowed=None, k=1):
    """Flat indices and weights of many stamped shapes, grouped by shape.

    ``semi_a`` and ``semi_b`` are already snapped to a few values; angles are binned. With
    ``allowed`` (a label-resolution mask, ``k`` pixels per label pixel), pixels outside it are
    left out.
    """
    height, width = shape
    n = len(centres_px)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    _, ia = np.unique(semi_a, return_inverse=True)
    _, ib = np.unique(semi_b, return_inverse=True)
    it = np.rint(np.mod(angles, np.pi) / np.pi * _ANGLE_BINS).astype(np.int64) % _ANGLE_BINS
    keys = (ia.ravel() * (ib.max() + 1) + ib.ravel()) * _ANGLE_BINS + it
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], n]
    flats, weights = [], []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        members = order[s:e]
        first = members[0]
        dy, dx, cov = _kernel(
            kind, float(semi_a[first]), float(semi_b[first]), it[first] * np.pi / _ANGLE_BINS
        )
        r = centres_px[members, 1, None] + dy[None, :]
        c = centres_px[members, 0, None] + dx[None, :]
        ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        if allowed is not None:
            ok[ok] = allowed[r[ok] // k, c[ok] // k]
        flats.append((r * width + c)[ok])
        weights.append((strength[members, None] * cov[None, :])[ok])
    return np.concatenate(flats), np.concatenate(weights)


def _apply_stamps(index: np.ndarray, flat, weight_h, weight_e) -> None:
    """Add OD stamps to the packed index image (in place; overlapping stamps: the last wins)."""
    if len(flat) == 0:
        return
    current = index[flat]
    if weight_h is not None:
        add = np.rint(weight_h * _Q).astype(np.uint32)
        current = (np.minimum((current >> 9) + add, _QMAX) << 9) | (current & _QMAX)
    if weight_e is not None:
        add = np.rint(weight_e * _Q).astype(np.uint32)
        current = (current & ~np.uint32(_QMAX)) | np.minimum((current & _QMAX) + add, _QMAX)
    index[flat] = current


def _sample_points(rng, texture, lp, density, cls):
    """Poisson points of ``density`` (1/µm²) restricted to label pixels of texture ``cls``."""
    rows, cols = texture.shape
    n = int(rng.poisson(rows * cols * lp * lp * density))
    pts = rng.uniform(0.0, 1.0, size=(n, 2)) * (cols * lp, rows * lp)
    c = np.minimum((pts[:, 0] / lp).astype(np.int64), cols - 1)
    r = np.minimum((pts[:, 1] / lp).astype(np.int64), rows - 1)
    return pts[texture[r, c] == cls]


def render_he(
    labels: np.ndarray,
    lumen: np.ndarray,
    membrane: np.ndarray,
    *,
    k: int,
    he_pixel_size_um: float,
    rng: np.random.Generator,
    orientation_fn,
    stain: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Render an H&E-like RGB ``uint8`` image of ``labels`` (a label map in this image's frame).

    Parameters
    ----------
    labels, lumen, membrane
        Label-resolution maps in the image's own frame: region labels (``-1`` background), vessel
        lumens, adipocyte membrane weights.
    k
        H&E pixels per label pixel along each axis; the image is ``k`` times the label map.
    he_pixel_size_um
        H&E pixel size.
    rng
        Random stream for the texture (nuclei, fibres, grain).
    orientation_fn
        Fibre angle (radians, in this frame) at ``(n, 2)`` µm points.
    stain
        Multipliers of the hematoxylin and eosin densities (staining batch).
    """
    from scipy.ndimage import binary_dilation

    rows, cols = labels.shape
    lp = k * he_pixel_size_um
    texture = np.where(labels >= 0, REGION_TEXTURE[np.maximum(labels, 0)], -1).astype(np.int8)
    tissue = texture >= 0
    tex_index = np.maximum(texture, 0)
    base_h = np.where(tissue, _BASE_H[tex_index], 0.0).astype(np.float32)
    base_e = np.where(tissue, _BASE_E[tex_index], 0.0).astype(np.float32)
    adipose = texture == 3
    base_e = np.where(adipose, 0.03 + 0.5 * membrane, base_e)
    base_h = np.where(adipose, 0.01 + 0.06 * membrane, base_h)
    reach = max(1, round(4.0 / lp))
    rim = binary_dilation(lumen, iterations=reach) & tissue
    base_e = base_e + 0.35 * rim
    base_h = base_h + 0.06 * rim
    xs = (np.arange(cols) + 0.5) * lp
    ys = (np.arange(rows) + 0.5) * lp
    modulation = (1.0 + 0.1 * FourierField(rng, 350.0).grid(xs, ys)).astype(np.float32)
    grain_h = 1.0 + 0.12 * rng.standard_normal((rows, cols), dtype=np.float32)
    grain_e = 1.0 + 0.10 * rng.standard_normal((rows, cols), dtype=np.float32)
    od_h = base_h * modulation * grain_h * np.float32(stain[0])
    od_e = base_e * modulation * grain_e * np.float32(stain[1])
    qh = np.clip(np.rint(od_h * _Q), 0, _QMAX).astype(np.uint32)
    qe = np.clip(np.rint(od_e * _Q), 0, _QMAX).astype(np.uint32)
    packed = (qh << 9) | qe
    if k > 1:
        packed = np.repeat(np.repeat(packed, k, axis=0), k, axis=1)
    height, width = packed.shape
    index = packed.ravel()
    he_px = he_pixel_size_um

    # eosin fibres, then nuclei on top
    for cls, params in enumerate(_FIBRES):
        if params is None:
            continue
        density, half_length, half_width, od = params
        pts = _sample_points(rng, texture, lp, density, cls)
        n = len(pts)
        angles = orientation_fn(pts) + rng.normal(0.0, 0.2, size=n)
        a = _snap(rng.uniform(*half_length, size=n), *half_length, 4) / he_px
        b = _snap(rng.uniform(*half_width, size=n), *half_width, 3) / he_px
        strength = rng.uniform(*od, size=n) * stain[1]
        centres = np.floor(pts / he_px).astype(np.int64)
        flat, weight = _stamps(
            "capsule", centres, a, b, angles, strength, (height, width), allowed=tissue, k=k
        )
        weight = weight * rng.uniform(0.8, 1.2, size=len(weight))
        _apply_stamps(index, flat, None, weight)
    for cls, (density, semi_major, elongation, od, aligned) in enumerate(_NUCLEI):
        pts = _sample_points(rng, texture, lp, density, cls)
        n = len(pts)
        a = _snap(rng.uniform(*semi_major, size=n), *semi_major, 5)
        b = a / _snap(rng.uniform(*elongation, size=n), *elongation, 3)
        if aligned:
            angles = orientation_fn(pts) + rng.normal(0.0, 0.15, size=n)
        else:
            angles = rng.uniform(0.0, np.pi, size=n)
        strength = rng.uniform(*od, size=n) * stain[0]
        centres = np.floor(pts / he_px).astype(np.int64)
        flat, weight = _stamps(
            "ellipse", centres, a / he_px, b / he_px, angles, strength, (height, width)
        )
        weight = weight * rng.uniform(0.75, 1.25, size=len(weight))
        _apply_stamps(index, flat, weight, None)

    rgb = _colour_table()[index].view(np.uint8).reshape(height, width, 4)[..., :3]
    return np.ascontiguousarray(rgb)
