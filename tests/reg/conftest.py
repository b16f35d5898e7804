"""A small tissue-like image pair under a known transform, for registration tests."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from spatialfuse.reg import AffineTransform, RegistrationImage, compose, resample
from spatialfuse.reg._images import otsu_mask

FIXED_PIXEL_UM = 20.0
MOVING_PIXEL_UM = 50.0


def tissue_image(seed: int = 1, shape=(150, 180)) -> np.ndarray:
    """One irregular tissue piece with holes and textured regions on a dark background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    radius = np.hypot(
        (yy - shape[0] / 2) / (shape[0] * 0.36), (xx - shape[1] / 2) / (shape[1] * 0.4)
    )
    wobble = gaussian_filter(rng.normal(size=shape), 10)
    outline = radius + 2.5 * wobble / np.abs(wobble).max() * 0.3 < 1
    holes = (
        gaussian_filter(rng.normal(size=shape), 4)
        > 2.2 * gaussian_filter(rng.normal(size=shape), 4).std()
    )
    regions = gaussian_filter(rng.normal(size=shape), 12)
    texture = gaussian_filter(rng.normal(size=shape), 1.2)
    image = 0.55 + 0.2 * np.tanh(regions / regions.std()) + 0.1 * texture / texture.std()
    return np.where(outline & ~holes, np.clip(image, 0.3, 1.0), 0.05)


def make_pair(seed: int, *, warp=None):
    """Fixed at 20 µm, moving at 50 µm under a random affine (maybe mirrored) and optional warp."""
    rng = np.random.default_rng(seed)
    fixed_array = tissue_image()
    fixed = RegistrationImage(
        fixed_array.astype(np.float32),
        otsu_mask(fixed_array)[0],
        (FIXED_PIXEL_UM, FIXED_PIXEL_UM),
        modality="histology",
    )
    centre = np.array(fixed_array.shape[::-1]) * FIXED_PIXEL_UM / 2
    truth = AffineTransform.from_params(
        rotation_deg=rng.uniform(0, 360),
        scale=rng.uniform(0.9, 1.1, 2),
        shear=rng.uniform(-0.05, 0.05),
        mirror=bool(rng.integers(2)),
        center=tuple(centre),
    )
    shape = (80, 80)
    moving_centre = truth.inverse().apply(centre[None])[0]
    shift = AffineTransform.from_params(
        translation=tuple(moving_centre - np.array(shape[::-1]) * MOVING_PIXEL_UM / 2)
    )
    truth = compose(truth, shift)
    if warp is not None:
        truth = compose(truth, warp)
    moving_array = resample(
        fixed_array,
        truth.inverse(),
        pixel_size_um=FIXED_PIXEL_UM,
        output_shape=shape,
        output_pixel_size_um=MOVING_PIXEL_UM,
        fill=0.05,
    )
    moving_array = np.sqrt(np.clip(moving_array, 0, None)) + rng.normal(0, 0.02, shape)
    moving = RegistrationImage(
        moving_array.astype(np.float32),
        otsu_mask(moving_array)[0],
        (MOVING_PIXEL_UM, MOVING_PIXEL_UM),
        modality="msi",
    )
    return moving, fixed, truth


@pytest.fixture
def pair():
    return make_pair


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextlib.contextmanager
def benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` for the duration of the block (a module fixture's body)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
