"""Registration images: one grey-level image and a tissue mask per modality, in its µm frame.

Registration never works on raw data. Each input becomes a :class:`RegistrationImage`:

- **MSI** (``read_imzml`` AnnData): candidate images from the normalised spectra (first and second
  principal components of log TIC-normalised intensities, and the TIC); the one that best separates
  tissue from background (largest Otsu between-class variance ratio) is used, unless chosen;
- **histology** (``read_histology``): every candidate channel (optical density, gray,
  hematoxylin, eosin; or the one channel of a fluorescence image), downsampled to the working
  resolution without reading full resolution;
- **Visium** (``read_visium`` AnnData): its hires (or lowres) H&E in the full-resolution µm frame.

Candidate images are kept in ``extra["channels"]``; :func:`~spatialfuse.reg.register` picks the
pair to compare. MSI masks come from an Otsu threshold inside the measured pixels (the tissue side
being the class that touches the border least); optical masks from
:func:`spatialfuse.reg._tissue.tissue_mask`, whatever the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RegistrationImage:
    """A float image with a tissue mask, placed in a µm frame.

    Pixel ``(col, row)`` covers ``origin + [col·sx, (col+1)·sx] × [row·sy, (row+1)·sy]`` µm.
    """

    image: np.ndarray
    mask: np.ndarray
    pixel_size_um: tuple[float, float]
    origin_um: tuple[float, float] = (0.0, 0.0)
    modality: str = "image"
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.image.shape[:2]

    def centres_um(self, mask_only: bool = False) -> np.ndarray:
        """Pixel centres in µm, ``(n, 2)`` ``(x, y)``, row-major (only masked ones if asked)."""
        rows, cols = np.nonzero(self.mask) if mask_only else np.indices(self.shape).reshape(2, -1)
        return np.stack(
            [
                self.origin_um[0] + (cols + 0.5) * self.pixel_size_um[0],
                self.origin_um[1] + (rows + 0.5) * self.pixel_size_um[1],
            ],
            axis=1,
        )

    def to_sitk(self, *, mask: bool = False):
        """The image (or mask) as a SimpleITK image whose physical space is this µm frame."""
        import SimpleITK as sitk

        data = self.mask.astype(np.uint8) if mask else self.image.astype(np.float32)
        out = sitk.GetImageFromArray(data)
        out.SetSpacing(tuple(float(s) for s in self.pixel_size_um))
        # ITK's origin is the centre of pixel (0, 0).
        out.SetOrigin(
            (
                self.origin_um[0] + 0.5 * self.pixel_size_um[0],
                self.origin_um[1] + 0.5 * self.pixel_size_um[1],
            )
        )
        return out

    @classmethod
    def from_array(
        cls,
        image: np.ndarray,
        pixel_size_um: float | tuple[float, float],
        *,
        modality: str = "image",
        description: str = "",
        valid: np.ndarray | None = None,
        origin_um: tuple[float, float] = (0.0, 0.0),
    ) -> RegistrationImage:
        """A registration image from a plain array: an ion image, a fluorescence channel, a mask.

        Parameters
        ----------
        image
            ``(rows, cols)`` values, or ``(rows, cols, 3)`` RGB; pixel ``(col, row)`` covers
            ``origin + [col·sx, (col+1)·sx] × [row·sy, (row+1)·sy]`` µm.
        pixel_size_um
            µm per pixel, a number or ``(x, y)``.
        modality
            ``"msi"`` makes the image's pixel size set the working resolution of registration
            (as an MSI's does); anything else is treated as an optical image.
        valid
            Pixels that carry data (an MSI's measured pixels); default: all.

        The tissue mask is found as for optical images
        (:func:`spatialfuse.reg._tissue.tissue_mask`): where nothing looks like background,
        every valid pixel is tissue.
        """
        from spatialfuse.reg._tissue import tissue_mask

        values = np.asarray(image, dtype=np.float64)
        if values.ndim == 3:
            values = values[..., :3]
            grey = (-np.log(np.clip(values / max(values.max(), 1e-12), 1 / 255, 1))).sum(axis=2)
        elif values.ndim == 2:
            grey = values
        else:
            raise ValueError(f"image must be (rows, cols) or (rows, cols, 3), got {values.shape}")
        size = (
            (float(pixel_size_um), float(pixel_size_um))
            if np.isscalar(pixel_size_um)
            else tuple(float(v) for v in pixel_size_um)
        )
        if not all(np.isfinite(v) and v > 0 for v in size):
            raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um!r}")
        valid = np.ones(grey.shape, bool) if valid is None else np.asarray(valid, bool)
        finite = np.isfinite(grey)
        grey = np.where(finite, grey, 0.0)
        valid = valid & finite
        mask, info = tissue_mask(values if values.ndim == 3 else grey, valid)
        picture = _normalised(grey, valid)
        extra = {
            "separability": info.get("separation", 0.0),
            "background": info.get("background"),
            "channels": {"intensity": picture},
            "channel": "intensity",
        }
        if not valid.all():
            extra["valid"] = valid
        return cls(picture, mask, size, tuple(origin_um), modality, description or modality, extra)

    def mirrored(self) -> tuple[RegistrationImage, object]:
        """The image flipped left-right about its own centre, and the flip as a transform."""
        from spatialfuse.core.transforms import AffineTransform

        width = self.shape[1] * self.pixel_size_um[0]
        centre_x = self.origin_um[0] + width / 2
        flip = AffineTransform([[-1, 0, 2 * centre_x], [0, 1, 0], [0, 0, 1]], model="rigid")
        extra = dict(self.extra)
        if "valid" in extra:
            extra["valid"] = extra["valid"][:, ::-1].copy()
        if "channels" in extra:
            extra["channels"] = {k: v[:, ::-1].copy() for k, v in extra["channels"].items()}
        out = RegistrationImage(
            self.image[:, ::-1].copy(),
            self.mask[:, ::-1].copy(),
            self.pixel_size_um,
            self.origin_um,
            self.modality,
            self.description + " (mirrored)",
            extra,
        )
        return out, flip

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The candidate images registration may choose from (the current one if none)."""
        return tuple(self.extra.get("channels", {})) or (self.extra.get("channel", "image"),)

    def with_channel(self, name: str) -> RegistrationImage:
        """The same image showing candidate ``name`` instead (same mask, frame and extras)."""
        from dataclasses import replace

        channels = self.extra.get("channels", {})
        if name == self.extra.get("channel") or name not in channels:
            return self
        base = self.description.rsplit(" ", 1)[0] if " " in self.description else self.description
        return replace(
            self,
            image=channels[name],
            description=f"{base} {name}",
            extra={**self.extra, "channel": name},
        )


def otsu_mask(image: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Tissue mask by Otsu's threshold and the separability (between-class / total variance).

    The tissue class is the one touching the image border less; the mask is lightly cleaned.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    valid = np.ones(image.shape, bool) if valid is None else valid
    # Smooth first so that texture inside the tissue cannot split it: the mask is about where
    # tissue is, not what it looks like.
    image = ndimage.gaussian_filter(np.where(valid, image, np.median(image[valid])), 1.5)
    values = image[valid]
    if values.size < 4 or np.ptp(values) == 0:
        return valid.copy(), 0.0
    threshold = threshold_otsu(values)
    high = (image > threshold) & valid
    low = (~high) & valid
    total = values.var()
    w1 = high[valid].mean()
    separability = float(w1 * (1 - w1) * (image[high].mean() - image[low].mean()) ** 2 / total)
    border = np.zeros(image.shape, bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    high_border = (high & border).sum() / max(high.sum(), 1)
    low_border = (low & border).sum() / max(low.sum(), 1)
    mask = high if high_border <= low_border else low
    radius = 1 if min(image.shape) < 200 else 2
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    mask = ndimage.binary_opening(mask, structure=disk)
    mask = ndimage.binary_closing(mask, structure=disk)
    if mask.sum() < 0.01 * valid.sum():
        mask = high if mask is not high else low
    return mask & valid, separability


def _normalised(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape, dtype=np.float32)
    v = values[valid]
    if v.size:
        lo, hi = np.percentile(v, [0.5, 99.5])
        out[valid] = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)
    return out


def msi_image(adata, *, image: str | list[float] = "auto") -> RegistrationImage:
    """Registration image of an MSI AnnData from :func:`~spatialfuse.io.read_imzml`.

    ``image``: ``"auto"`` (best tissue/background separation among ``"pc1"``, ``"pc2"``,
    ``"tic"``), one of those names, ``"labels"`` (k-means clusters of the spectra on their
    principal components), or a list of m/z values whose nearest features are summed.
    """
    from spatialfuse.core.adata import feature_matrix
    from spatialfuse.core.msi_raster import MsiRaster
    from spatialfuse.reg._msi_components import SpectralComponents

    raster = MsiRaster.from_anndata(adata, "msi", need_spectra=True)
    size = raster.pixel_size_um
    x, y = raster.grid_x, raster.grid_y
    (x0, y0), (cols, rows) = raster.origin, raster.shape
    columns = None
    if not isinstance(image, str):
        mz = np.asarray(adata.var["mz"], dtype=np.float64)
        columns = [int(np.argmin(np.abs(mz - m))) for m in image]
    # Streamed over blocks of rows (dense, sparse or dask alike): the table is never densified.
    spectra = SpectralComponents(
        feature_matrix(adata, name="MSI AnnData"),
        # Only the log-scale components used: PC1 and PC2, the footprint's, the labels' 8.
        n_log=max(2, N_SPECTRAL_COMPONENTS - N_FOOTPRINT_LINEAR, 8 if image == "labels" else 0),
        n_linear=N_FOOTPRINT_LINEAR,
        ion_columns=columns,
    )
    candidates: dict[str, np.ndarray] = {"tic": spectra.tic}
    scores = spectra.log_scores
    # The footprint stage models colour, which mixes linearly with the tissue under a pixel, from
    # the spectra: components of the linear-scale spectra track that mixing (log-scale ones alone
    # bias a pixel half on tissue, and the fit shrinks the tissue by 0.5-0.8 %); a few log-scale
    # components keep the weak ions that intense peaks drown on the linear scale.
    footprint_scores = _float32_columns(
        spectra.linear_scores, scores[:, : N_SPECTRAL_COMPONENTS - N_FOOTPRINT_LINEAR]
    )
    spectra.linear_scores = None  # 56 bytes a pixel, 112 MB at 2 million pixels: no longer needed
    if isinstance(image, str):
        if scores.shape[1] >= 2:
            candidates["pc1"], candidates["pc2"] = scores[:, 0], scores[:, 1]
            if image == "labels":
                candidates["labels"] = _cluster_labels(scores[:, :8])
    else:
        candidates = {"ions": spectra.ions}
        image = "ions"
    valid = np.zeros((rows, cols), bool)
    valid[y - y0, x - x0] = True
    grids = {}
    for name, values in candidates.items():
        grid = np.zeros((rows, cols))
        grid[y - y0, x - x0] = values
        grids[name] = grid
    # The scores are on the grids now (80 bytes a pixel: 160 MB at 2 million pixels).
    candidates = scores = spectra.log_scores = None
    masks = {name: otsu_mask(grid, valid) for name, grid in grids.items()}
    if image == "auto":
        chosen = max(masks, key=lambda name: masks[name][1])
    elif image == "labels":
        # Labels carry regions, not a tissue/background contrast: take the mask from PC1.
        chosen = image
        masks["labels"] = masks["pc1"]
    elif image in grids:
        chosen = image
    else:
        raise ValueError(f"image must be 'auto', 'pc1', 'pc2', 'tic' or m/z values, got {image!r}")
    mask = masks[chosen][0]
    picture = grids[chosen]
    if image == "auto" and mask.sum() > 10 and isinstance(image, str):
        # The contrast that best separates tissue from background is flat inside the tissue;
        # registration needs the regions too. Take the first principal component of the tissue
        # spectra alone and set the background apart below it.
        inside = mask[y - y0, x - x0]
        component = spectra.tissue_component(inside)
        lo, hi = np.percentile(component, [1, 99])
        scaled = 0.25 + 0.75 * np.clip((component - lo) / max(hi - lo, 1e-12), 0, 1)
        picture = np.zeros((rows, cols))
        picture[(y - y0)[inside], (x - x0)[inside]] = scaled
        chosen = f"{chosen} mask + tissue PC1"
        grids["tissue"] = picture
    # Orient so tissue is bright (MI does not care; the plots and moments do).
    if not chosen.endswith("tissue PC1") and valid.any() and mask.any() and (~mask & valid).any():
        if picture[mask].mean() < picture[~mask & valid].mean():
            picture = -picture
    channels = {name: _normalised(grid, valid) for name, grid in grids.items() if name != "tissue"}
    if "tissue" in grids:
        channels["tissue_pc1"] = _normalised(grids["tissue"], valid)
    default = "tissue_pc1" if "tissue" in grids else chosen
    channels[default] = _normalised(picture, valid)
    return RegistrationImage(
        channels[default],
        mask,
        size,
        ((x0 - 1) * size[0], (y0 - 1) * size[1]),
        "msi",
        f"MSI {chosen}",
        {
            "choice": chosen,
            "separability": {k: v[1] for k, v in masks.items()},
            "valid": valid,
            # Principal components of every spectrum, with its (row, col): the footprint stage
            # of registration models the H&E under each pixel from them.
            "spectral_components": footprint_scores,
            "spectral_pixels": (y - y0, x - x0),
            "channels": channels,
            "channel": default,
        },
    )


def _float32_columns(*blocks: np.ndarray) -> np.ndarray:
    """``np.hstack(blocks).astype(np.float32)`` without the float64 copy of the whole."""
    out = np.empty((len(blocks[0]), sum(b.shape[1] for b in blocks)), dtype=np.float32)
    start = 0
    for block in blocks:
        out[:, start : start + block.shape[1]] = block
        start += block.shape[1]
    return out


#: Principal components of the spectra kept for the footprint stage of registration, and how many
#: of them come from the linear-scale spectra (the rest: log scale). On the registration
#: benchmark's 20 affine seeds, 10 log-scale components gave a median TRE of 0.157 MSI px, 10
#: linear 0.110, 7 linear + 3 log 0.099.
N_SPECTRAL_COMPONENTS = 10
N_FOOTPRINT_LINEAR = 7


def _cluster_labels(scores: np.ndarray, k: int = 6) -> np.ndarray:
    """k-means labels of spectra on their principal components, ordered by mean PC1.

    A label image shows every region the spectra distinguish, where one principal component shows
    only the strongest contrast; mutual information does not care which label is which.
    """
    from scipy.cluster.vq import kmeans2

    standard = scores / np.maximum(scores.std(axis=0), 1e-12)
    _, labels = kmeans2(standard, k, seed=0, minit="++")
    order = np.argsort(
        np.argsort([scores[labels == j, 0].mean() if (labels == j).any() else 0 for j in range(k)])
    )
    return order[labels].astype(np.float64)


#: The optical channels registration can use; ``channel="auto"`` picks one per pair.
OPTICAL_CHANNELS = ("od", "gray", "hematoxylin", "eosin")


def _rgb_to_channel(rgb: np.ndarray, channel: str) -> np.ndarray:
    rgb = rgb[..., :3].astype(np.float64)
    if rgb.max() > 1.5:
        rgb = rgb / (255.0 if rgb.max() <= 255 else 65535.0)
    if channel == "od":
        return (-np.log(np.clip(rgb, 1 / 255, 1))).sum(axis=2)
    if channel in ("hematoxylin", "eosin"):
        from skimage.color import rgb2hed

        return rgb2hed(np.clip(rgb, 0, 1))[..., 0 if channel == "hematoxylin" else 1]
    if channel == "gray":
        return 1.0 - rgb.mean(axis=2)
    raise ValueError(
        f"channel must be 'auto', 'od', 'gray', 'hematoxylin' or 'eosin', got {channel!r}"
    )


def _check_channel(channel: str) -> None:
    if channel != "auto" and channel not in OPTICAL_CHANNELS:
        _rgb_to_channel(np.zeros((1, 1, 3)), channel)  # raises the error naming the choices


def _resized(array: np.ndarray, size_um, target_um) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample ``array`` (pixel size ``size_um``) to about ``target_um``, keeping its extent."""
    from skimage.transform import resize

    rows, cols = array.shape[:2]
    extent = (cols * size_um[0], rows * size_um[1])
    new_cols = max(8, round(extent[0] / target_um))
    new_rows = max(8, round(extent[1] / target_um))
    if (new_rows, new_cols) == (rows, cols):
        return array, tuple(size_um)
    out = resize(array, (new_rows, new_cols), anti_aliasing=new_cols < cols, preserve_range=True)
    return out, (extent[0] / new_cols, extent[1] / new_rows)


def _optical_densities(rgb: np.ndarray, size_um, target_um: float) -> dict:
    """Optical density per colour channel at about ``target_um`` (for the footprint stage)."""
    rgb = rgb[..., :3].astype(np.float32)
    rgb = rgb / (255.0 if rgb.max() <= 255 else 65535.0) if rgb.max() > 1.5 else rgb
    od = -np.log(np.clip(rgb, 1 / 255, 1))
    od, size = _resized(od, size_um, target_um)
    return {"optical_density": od.astype(np.float32), "optical_density_pixel_um": size}


#: Largest side (pixels) of the grid an optical tissue mask is found on. The rules of
#: :func:`spatialfuse.reg._tissue.tissue_mask` are in pixels (a smoothing of 2, a texture window of
#: 5, 3 erosions) and were written on images of 150-610 pixels a side, where every real pair works.
#: On finer grids the smoothing averages less of the slide's noise, the background's spread grows
#: and pale tissue falls below the cut: a synthetic trio's faintly stained region (a quarter of
#: its tissue) was in the mask at working pixels of 5.6 µm and coarser (636 pixels a side and
#: fewer) and out of it at 4.5 µm and finer, so the start search matched the wrong centroid
#: (~200 µm off) and scale (0.97 instead of 1.11) once an MSI of 500,000 pixels made the working
#: pixel small, and the result depended on luck (issue 17).
MASK_MAX_SIDE_PX = 640
#: Images up to this many pixels a side are masked on their own grid, as before the bound: issue
#: 20's speed case (an H&E of 724 working pixels a side) gave the same result on the 640-pixel
#: copy but took ~1 s (10 %) longer, the optimisers following a slightly different mask.
MASK_FROM_SIDE_PX = 768


def bounded_tissue_mask(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """:func:`~spatialfuse.reg._tissue.tissue_mask` on a grid of at most ``MASK_MAX_SIDE_PX``.

    Images over ``MASK_FROM_SIDE_PX`` a side are reduced (anti-aliased) to ``MASK_MAX_SIDE_PX``,
    masked there, and the mask brought back to the image's grid (bilinear, cut at 0.5): the mask
    is where the tissue is, the same whatever the resolution registration works at.
    """
    from skimage.transform import resize

    from spatialfuse.reg._tissue import tissue_mask

    rows, cols = image.shape[:2]
    longest = max(rows, cols)
    if longest <= MASK_FROM_SIDE_PX:
        return tissue_mask(image)
    shrink = MASK_MAX_SIDE_PX / longest
    small_shape = (max(8, round(rows * shrink)), max(8, round(cols * shrink)))
    small = resize(image, small_shape + image.shape[2:], anti_aliasing=True, preserve_range=True)
    mask, info = tissue_mask(small)
    back = resize(mask.astype(np.float32), (rows, cols), order=1, anti_aliasing=False)
    return back >= 0.5, {**info, "mask_shape": small_shape}


def _optical_image(
    rgb: np.ndarray,
    size_um,
    working_pixel_size_um: float,
    channel: str,
    *,
    modality: str,
    description: str,
    extra: dict,
) -> RegistrationImage:
    """Registration image of an optical array: every channel, one tissue mask for all of them.

    The mask (:func:`spatialfuse.reg._tissue.tissue_mask`) is a property of the image, not of
    the channel: it comes from the colour image. ``channel="auto"`` starts from optical
    density; :func:`~spatialfuse.reg.register` then picks the channel per pair.
    """
    _check_channel(channel)
    working, size = _resized(rgb.astype(np.float32), size_um, working_pixel_size_um)
    single = working.ndim == 2 or working.shape[2] == 1 or _is_grey(working)
    if single:
        grey = working if working.ndim == 2 else working[..., 0]
        mask, info = bounded_tissue_mask(grey)
        channels = {"intensity": _normalised(grey, np.ones(grey.shape, bool))}
        default = "intensity"
    else:
        mask, info = bounded_tissue_mask(working[..., :3])
        channels = {
            name: _normalised(_rgb_to_channel(working, name), np.ones(working.shape[:2], bool))
            for name in OPTICAL_CHANNELS
        }
        default = "od" if channel == "auto" else channel
    return RegistrationImage(
        channels[default],
        mask,
        size,
        (0.0, 0.0),
        modality,
        f"{description} {default}",
        {
            "separability": info.get("separation", 0.0),
            "background": info.get("background"),
            "channels": channels,
            "channel": default,
            **extra,
        },
    )


def _is_grey(rgb: np.ndarray) -> bool:
    """Whether a 3-channel image carries one channel three times (a grey or fluorescence image)."""
    sample = rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64), :3]
    first = sample[..., 0]
    return bool(np.allclose(first, sample[..., 1]) and np.allclose(first, sample[..., 2]))


def histology_image(
    he, *, working_pixel_size_um: float, channel: str = "auto"
) -> RegistrationImage:
    """Registration image of a :class:`~spatialfuse.io.HistologyImage` at a working resolution.

    ``extra["optical_density"]`` holds the three colour channels' optical densities at half the
    working pixel (the footprint stage of registration integrates them over MSI pixels);
    ``extra["channels"]`` every candidate channel at the working resolution.
    """
    _check_channel(channel)
    longest_um = max(he.extent_um)
    max_size = int(np.ceil(longest_um / working_pixel_size_um)) * 2
    # A finer read for the footprint stage: from the working read alone (pixel ½–1 working
    # pixel, block means) the affine sweep's median TRE was 0.189 MSI px instead of 0.164.
    array, size = he.downsampled(max_size=max(2 * max_size, 16))
    if array.ndim == 3 and array.shape[2] >= 3:
        rgb = array
    else:
        rgb = np.dstack([array.reshape(array.shape[:2])] * 3)
    densities = _optical_densities(rgb, size, working_pixel_size_um / 2)
    # The working image from the same read by 2 × 2 block means (a large H&E is read once).
    rows, cols = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    if min(rows, cols) >= 32:
        rgb = rgb[:rows, :cols].astype(np.float32)
        rgb = rgb.reshape(rows // 2, 2, cols // 2, 2, -1).mean(axis=(1, 3))
        size = (2 * size[0], 2 * size[1])
    return _optical_image(
        rgb,
        size,
        working_pixel_size_um,
        channel,
        modality="histology",
        description="H&E",
        extra={"path": str(he.path), **densities},
    )


def visium_image(
    adata, *, working_pixel_size_um: float, channel: str = "auto", library_id: str | None = None
) -> RegistrationImage:
    """Registration image of a Visium AnnData: its H&E in the full-resolution µm frame."""
    from spatialfuse.core.visium_geometry import visium_um_per_px
    from spatialfuse.io.visium import tissue_image

    _check_channel(channel)
    um_per_px = visium_um_per_px(adata)
    library_id = library_id or next(iter(adata.uns.get("spatial", {}) or {}), None)
    found = tissue_image(adata, library_id=library_id)
    if found is None:
        raise ValueError(f"Visium library {library_id!r} has no hires or lowres image to register")
    array, scale, res = found
    pixel = um_per_px / scale
    rgb = array if array.ndim == 3 else np.dstack([array] * 3)
    densities = _optical_densities(rgb, (pixel, pixel), max(working_pixel_size_um / 2, pixel))
    return _optical_image(
        rgb,
        (pixel, pixel),
        max(working_pixel_size_um, pixel),
        channel,
        modality="visium",
        description=f"Visium {res}",
        extra={"library_id": library_id, **densities},
    )


def as_registration_image(
    obj, *, working_pixel_size_um: float | None, channel: str = "auto", msi_image_kind="auto"
) -> RegistrationImage:
    """Build the registration image of ``obj``, whatever its kind: what registration compares.

    Parameters
    ----------
    obj
        An MSI AnnData, a Visium AnnData, a HistologyImage, or a ready
        :class:`RegistrationImage` (returned as it is).
    working_pixel_size_um
        Pixel size (µm) of optical images; MSI images keep their own grid.
    channel, msi_image_kind
        The optical channel and the MSI image shown (``"auto"``: the defaults;
        :func:`~spatialfuse.reg.register` chooses per pair among ``extra["channels"]``).

    Returns
    -------
    RegistrationImage
        The image, its tissue mask and its µm frame, with every candidate channel in
        ``extra["channels"]``.
    """
    if isinstance(obj, RegistrationImage):
        return obj
    uns = getattr(obj, "uns", None)
    if uns is not None:
        if uns.get("spatialfuse", {}).get("modality") == "msi":
            return msi_image(obj, image=msi_image_kind)
        if "spatial" in uns:
            return visium_image(obj, working_pixel_size_um=working_pixel_size_um, channel=channel)
    if hasattr(obj, "downsampled") and hasattr(obj, "extent_um"):
        return histology_image(obj, working_pixel_size_um=working_pixel_size_um, channel=channel)
    raise TypeError(
        "register() takes an MSI AnnData (read_imzml), a Visium AnnData (read_visium), a "
        f"HistologyImage (read_histology) or a RegistrationImage, not {type(obj).__name__}"
    )


def native_pixel_size(obj) -> float | None:
    """The input's own pixel size in µm where it has one that registration should respect."""
    uns = getattr(obj, "uns", None)
    if uns is not None and uns.get("spatialfuse", {}).get("modality") == "msi":
        return float(min(uns["spatialfuse"]["pixel_size_um"]))
    if isinstance(obj, RegistrationImage) and obj.modality == "msi":
        return float(min(obj.pixel_size_um))
    return None


def extent_um(obj) -> float | None:
    """Longest side of the input in µm, where cheap to know."""
    if hasattr(obj, "extent_um"):
        return float(max(obj.extent_um))
    if isinstance(obj, RegistrationImage):
        return float(max(obj.shape[1] * obj.pixel_size_um[0], obj.shape[0] * obj.pixel_size_um[1]))
    uns = getattr(obj, "uns", None)
    if uns is not None and "spatial" in uns and "spatialfuse" in uns:
        coords = np.asarray(obj.obsm["spatial_um"])
        return float(np.ptp(coords, axis=0).max() * 1.2) if len(coords) else None
    if uns is not None and uns.get("spatialfuse", {}).get("modality") == "msi":
        coords = np.asarray(obj.obsm["spatial"])
        return float(np.ptp(coords, axis=0).max()) if len(coords) else None
    return None
