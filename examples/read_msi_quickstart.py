"""Read an MSI acquisition in micrometres: write a small imzML file, open it, make an ion image.

Runs anywhere (no data download): the file is generated with pyimzML's writer.

    python examples/read_msi_quickstart.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from pyimzml.ImzMLWriter import ImzMLWriter

import spatialfuse as sf


def write_example(path: Path, *, width: int = 40, height: int = 30) -> Path:
    """A processed imzML file: one ion whose intensity grows left to right, one top to bottom."""
    rng = np.random.default_rng(0)
    with ImzMLWriter(str(path), mode="processed") as writer:
        for y in range(1, height + 1):
            for x in range(1, width + 1):
                mz = np.sort(np.r_[rng.uniform(100, 1000, 50), 500.25, 760.58])
                intensity = rng.random(mz.size).astype(np.float32)
                intensity[mz == 500.25] = 10.0 * x
                intensity[mz == 760.58] = 10.0 * y
                writer.addSpectrum(mz, intensity, (x, y))
    return path


def main(out_dir: Path) -> None:
    path = write_example(out_dir / "example.imzML")
    with sf.io.ImzMLReader(path) as reader:
        print(reader)
        image = reader.ion_image(500.25, ppm=10)
        print(f"ion image at m/z 500.25: shape {image.shape}, row 0 = {image[0, :5]} ...")
    adata = sf.io.read_imzml(path, mz=[500.25, 760.58], ppm=10, pixel_size_um=50)
    print(adata)
    print("first pixel centres in µm:", adata.obsm["spatial"][:2].tolist())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="spatialfuse-"))
    out.mkdir(parents=True, exist_ok=True)
    main(out)
