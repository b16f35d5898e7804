"""Resource limits and non-regular files: the readers refuse at once, with a clear error.

Each limit is checked with a small input and a lowered limit (the default-size inputs, such as a
100,000 × 100,000 PNG, take minutes to write); the attack suite (benchmarks/sf_fuzz/pipeline.py)
runs the full-size ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import zlib

import h5py
import numpy as np
import pytest
from imzml_factory import write_simple
from test_visium import make_visium

import spatialfuse as sf
from spatialfuse._limits import Limits, current_limits, limits
from spatialfuse.errors import FileFormatError, LimitExceededError


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) where the block blocks on a FIFO."""

    def fail(*_):
        raise AssertionError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _compressible_png(path, width: int, height: int) -> None:
    """A valid gray PNG of one colour, written row by row (tiny file, large decode)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    packer = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_defaults_and_environment(monkeypatch):
    assert current_limits() == Limits()
    assert Limits().max_decoded_image_bytes == 4 << 30
    monkeypatch.setenv("SPATIALFUSE_MAX_SPOTS", "12")
    assert current_limits().max_spots == 12
    with limits(max_spots=5, max_decoded_image_bytes=None) as inner:
        assert inner.max_spots == 5 and inner.max_decoded_image_bytes == 4 << 30
    monkeypatch.setenv("SPATIALFUSE_MAX_SPOTS", "-1")
    with pytest.raises(ValueError, match="SPATIALFUSE_MAX_SPOTS"):
        current_limits()
    with pytest.raises(TypeError, match="unknown limits"):
        with limits(max_pixels=3):
            pass


def test_compressible_png_is_refused_before_decoding(tmp_path):
    path = tmp_path / "flat.png"
    _compressible_png(path, 6000, 5000)  # 30 MB of pixels in about 30 KB
    assert path.stat().st_size < 100_000
    image = sf.io.read_histology(path, pixel_size_um=1.0)
    with limits(max_decoded_image_bytes=10 << 20):
        with pytest.raises(LimitExceededError, match="max_decoded_image_bytes") as info:
            image.read()
        assert str(path) in str(info.value)
        assert "6000" in str(info.value)
        with pytest.raises(LimitExceededError):
            image.downsampled(256)  # PNG has no random access: the whole image is decoded
    assert image.read().shape == (5000, 6000, 1)  # under the default limit it reads


def test_tiff_level_and_region_reads_are_limited(tmp_path):
    import tifffile

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((2048, 2048, 3), np.uint8), tile=(256, 256), compression="zlib")
    image = sf.io.read_histology(path, pixel_size_um=0.5)
    with limits(max_decoded_image_bytes=1 << 20):
        with pytest.raises(LimitExceededError, match="2048 × 2048 × 3"):
            image.read()
        assert image.read_region(0, 0, 256, 256).shape == (256, 256, 3)
        small, _ = image.downsampled(256)  # strip by strip: never the whole level at once
        assert small.shape[:2] == (256, 256)


def test_visium_matrix_declaring_too_many_barcodes_is_refused(tmp_path):
    make_visium(tmp_path / "outs")
    with limits(max_spots=10):
        with pytest.raises(LimitExceededError, match="barcodes, more than the limit of 10"):
            sf.io.read_visium(tmp_path / "outs")


def test_visium_matrix_declaring_150_million_barcodes_is_refused_quickly(tmp_path):
    import time

    make_visium(tmp_path / "outs")
    h5 = tmp_path / "outs" / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "a") as fh:
        del fh["matrix/barcodes"]
        fh["matrix"].create_dataset(
            "barcodes", shape=(150_000_000,), dtype="S18", chunks=(1 << 16,), compression="gzip"
        )
        fh["matrix/shape"][1] = 150_000_000
    start = time.perf_counter()
    with pytest.raises((LimitExceededError, FileFormatError), match=str(h5)):
        sf.io.read_visium(tmp_path / "outs")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("which", ["image", "imzml", "ibd", "visium_h5", "visium_mtx"])
def test_fifo_inputs_are_refused_not_read(tmp_path, which):
    folder = tmp_path / "in"
    folder.mkdir()
    if which == "image":
        target = path = folder / "he.png"
        read = lambda: sf.io.read_histology(path, pixel_size_um=1.0)  # noqa: E731
    elif which in ("imzml", "ibd"):
        write_simple(folder, "msi")
        path = folder / "msi.imzML"
        target = folder / ("msi.imzML" if which == "imzml" else "msi.ibd")
        target.unlink()
        read = lambda: sf.io.read_imzml(path)  # noqa: E731
    elif which == "visium_h5":
        make_visium(folder / "outs")
        target = folder / "outs" / "filtered_feature_bc_matrix.h5"
        target.unlink()
        read = lambda: sf.io.read_visium(folder / "outs")  # noqa: E731
    else:
        make_visium(folder / "outs", counts_name=None)
        mtx = folder / "outs" / "filtered_feature_bc_matrix"
        mtx.mkdir()
        target = mtx / "matrix.mtx"
        (mtx / "barcodes.tsv").write_text("AAAC-1\n")
        (mtx / "features.tsv").write_text("g1\tG1\tGene Expression\n")
        read = lambda: sf.io.read_visium(folder / "outs", counts_file=mtx.name)  # noqa: E731
    os.mkfifo(target)
    with no_hang(), pytest.raises(FileFormatError, match="named pipe") as info:
        read()
    assert str(target) in str(info.value)
