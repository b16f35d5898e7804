"""Rebuild the real Bruker timsTOF test files of ``imzml/bruker_timstof_imzy`` (shared data).

The inputs are the two test acquisitions and Bruker's SDK library shipped in the **source
distribution of imzy 0.3.0 on PyPI** (``imzy-0.3.0.tar.gz``, vandeplaslab/imzy; sha256
``40999e6610d1fac3e67f9946121dd4bc8d93953fae3fe024bd331dbc9dfd8f71``). This script downloads
nothing; fetch and unpack the sdist first::

    pip download imzy==0.3.0 --no-deps --no-binary :all: -d /tmp/imzy
    tar xzf /tmp/imzy/imzy-0.3.0.tar.gz -C /tmp/imzy
    python benchmarks/convert_bruker_imzy.py --sdist-dir /tmp/imzy/imzy-0.3.0 --out /tmp/bruker_out

Paths used inside the unpacked sdist (``--sdist-dir``):

- ``tests/_test_data/example_tdf.d``: timsTOF with TIMS (TDF), a human kidney section
  ("VAN0025-LK-3-2"), negative ions, m/z 400-2200, 342 pixels (19 x 18), 411 mobility scans a
  pixel;
- ``tests/_test_data/example_tsf.d``: timsTOF fleX (TSF, no TIMS), negative, m/z 300-1500,
  20 x 20 pixels;
- ``src/imzy/_readers/bruker/libtimsdata.so``: Bruker's TDF/TSF SDK (Linux x86-64), loaded with
  ctypes; only its documented calls are used, and its m/z calibration (``tims_index_to_mz``,
  ``tsf_index_to_mz``) gives every m/z value.

Written to ``--out`` with pyimzML's ``ImzMLWriter`` (the shared files were made with pyimzML
1.5.5), each a processed imzML (float64 m/z, float32 intensities) plus its ``.ibd``:

- ``kidney_tdf_profile.imzML``: each pixel's profile is the intensities of all its mobility
  scans (``tims_read_scans_v2``) summed per TOF index (the digitizer grid of 339,825 points);
  pixel size 10 um;
- ``fleX_tsf_profile.imzML``: each pixel's stored profile (``tsf_read_profile_spectrum_v2``,
  273,696 points); pixel size 20 um;
- ``fleX_tsf_bruker_centroids.imzML``: Bruker's own line spectra (centroids) of the same run
  (``tsf_read_line_spectrum_v2``), processed centroid imzML.

Only the points with a non-zero intensity and their two neighbours are written (the profile is
zero elsewhere), so each pixel has its own m/z array (processed mode). A TSF pixel with no signal
at all is left out of both fleX files, one with no line peak out of the centroid file. Pixel
coordinates are the acquisition's ``XIndexPos``/``YIndexPos`` shifted so that the first is 1.
pyimzML writes no pixel size, so the script adds IMS:1000046/IMS:1000047 to the
``scanSettings1`` element afterwards. The whole conversion takes a few seconds (the kidney is
skipped with ``--tsf-only``).

A rebuild matches the shared files byte for byte except where pyimzML writes something of the
run: a random UUID (the first 16 bytes of each ``.ibd`` and the ``IMS:1000080`` line of the
``.imzML``), the ``.ibd``'s SHA-1 (``IMS:1000091``), which covers that UUID, and the ``<run id>``,
which is the output path without its extension (the shared files were written to
``/tmp/bruker/out``). Every spectrum (m/z and intensity arrays, coordinates) is identical.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sqlite3
from pathlib import Path

import numpy as np
from pyimzml.ImzMLWriter import ImzMLWriter

TEST_DATA = Path("tests") / "_test_data"
LIBRARY = Path("src") / "imzy" / "_readers" / "bruker" / "libtimsdata.so"

#: Mobility scans per TDF frame (``Frames.NumScans`` of example_tdf.d).
TDF_SCANS = 411
#: Length of a TDF frame's TOF grid (``GlobalMetadata.DigitizerNumSamples`` of example_tdf.d).
TDF_GRID = 339_825
#: Buffer (uint32 values) for one TDF frame's scans: the scan counts, then indices and intensities.
TDF_BUFFER = 1 << 22
#: Points of a TSF profile spectrum (``GlobalMetadata.DigitizerNumSamples`` of example_tsf.d).
TSF_PROFILE = 273_696
#: Room for one TSF frame's line spectrum (peaks).
TSF_LINES = 20_000

DOUBLE_P = ctypes.POINTER(ctypes.c_double)
FLOAT_P = ctypes.POINTER(ctypes.c_float)
UINT32_P = ctypes.POINTER(ctypes.c_uint32)


def load_library(path: Path) -> ctypes.CDLL:
    """Load Bruker's libtimsdata.so and declare the signatures of the calls used here."""
    lib = ctypes.cdll.LoadLibrary(str(path))
    lib.tims_open_v2.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.tims_open_v2.restype = ctypes.c_uint64
    lib.tims_read_scans_v2.argtypes = [
        ctypes.c_uint64,
        ctypes.c_int64,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_uint32,
    ]
    lib.tims_read_scans_v2.restype = ctypes.c_uint32
    for name in ("tims_index_to_mz", "tsf_index_to_mz"):
        func = getattr(lib, name)
        func.argtypes = [ctypes.c_uint64, ctypes.c_int64, DOUBLE_P, DOUBLE_P, ctypes.c_uint32]
        func.restype = ctypes.c_uint32
    lib.tsf_open.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
    lib.tsf_open.restype = ctypes.c_uint64
    lib.tsf_read_profile_spectrum_v2.argtypes = [
        ctypes.c_uint64,
        ctypes.c_int64,
        UINT32_P,
        ctypes.c_int32,
    ]
    lib.tsf_read_profile_spectrum_v2.restype = ctypes.c_int32
    lib.tsf_read_line_spectrum_v2.argtypes = [
        ctypes.c_uint64,
        ctypes.c_int64,
        DOUBLE_P,
        FLOAT_P,
        ctypes.c_int32,
    ]
    lib.tsf_read_line_spectrum_v2.restype = ctypes.c_int32
    return lib


def index_to_mz(func, handle: int, frame: int, index: np.ndarray) -> np.ndarray:
    """m/z of TOF indices of one frame, by Bruker's calibration (``*_index_to_mz``)."""
    index = np.ascontiguousarray(index, np.float64)
    mz = np.empty_like(index)
    ok = func(
        handle, frame, index.ctypes.data_as(DOUBLE_P), mz.ctypes.data_as(DOUBLE_P), index.size
    )
    if ok == 0:
        raise RuntimeError(f"{func.__name__} failed on frame {frame}")
    return mz


def kept_points(profile: np.ndarray) -> np.ndarray:
    """Indices of the non-zero points of a profile and of their two neighbours."""
    nonzero = profile > 0
    keep = nonzero.copy()
    keep[1:] |= nonzero[:-1]
    keep[:-1] |= nonzero[1:]
    return np.flatnonzero(keep)


def maldi_frames(sql_path: Path) -> np.ndarray:
    """(frame id, x index, y index) of every MALDI frame, by frame id."""
    with sqlite3.connect(sql_path) as con:
        rows = con.execute(
            "select Frame, XIndexPos, YIndexPos from MaldiFrameInfo order by Frame"
        ).fetchall()
    return np.array(rows)


def metadata_int(sql_path: Path, query: str) -> list[int]:
    """The distinct integer values one query of an analysis database returns."""
    with sqlite3.connect(sql_path) as con:
        return sorted({int(row[0]) for row in con.execute(query)})


def add_pixel_size(path: Path, um: float) -> None:
    """Add the pixel size (IMS:1000046/47, micrometre) to the scanSettings1 element."""
    text = path.read_text(encoding="utf-8")
    unit = 'unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>\n'
    add = (
        f'      <cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size (x)" value="{um}" '
        + unit
        + f'      <cvParam cvRef="IMS" accession="IMS:1000047" name="pixel size y" value="{um}" '
        + unit
    )
    text, n = re.subn(r'(<scanSettings id="scanSettings1">\n)', r"\1" + add, text)
    if n != 1:
        raise RuntimeError(f"{path}: no single scanSettings1 element to add the pixel size to")
    path.write_text(text, encoding="utf-8")


def pixel_coordinates(x: int, y: int, x0: int, y0: int) -> tuple[int, int, int]:
    """imzML coordinates (1-based) of an acquisition's index position."""
    return (int(x - x0 + 1), int(y - y0 + 1), 1)


def convert_tdf(lib: ctypes.CDLL, d_folder: Path, out: Path, um: float) -> None:
    """TDF run → processed profile imzML: each pixel's mobility scans summed per TOF index."""
    sql = d_folder / "analysis.tdf"
    if metadata_int(sql, "select NumScans from Frames") != [TDF_SCANS]:
        raise RuntimeError(f"{sql}: expected {TDF_SCANS} mobility scans in every frame")
    grid = "select Value from GlobalMetadata where Key = 'DigitizerNumSamples'"
    if metadata_int(sql, grid) != [TDF_GRID]:
        raise RuntimeError(f"{sql}: expected a TOF grid of {TDF_GRID} points")
    handle = lib.tims_open_v2(str(d_folder).encode(), 0, 0)
    if not handle:
        raise RuntimeError(f"tims_open_v2 could not open {d_folder}")
    frames = maldi_frames(sql)
    x0, y0 = frames[:, 1].min(), frames[:, 2].min()
    with ImzMLWriter(
        str(out),
        mz_dtype=np.float64,
        intensity_dtype=np.float32,
        mode="processed",
        spec_type="profile",
        polarity="negative",
    ) as writer:
        for frame, x, y in frames:
            buf = np.empty(TDF_BUFFER, np.uint32)
            read = lib.tims_read_scans_v2(
                handle, int(frame), 0, TDF_SCANS, buf.ctypes.data, TDF_BUFFER
            )
            if not 0 < read <= TDF_BUFFER:
                raise RuntimeError(f"tims_read_scans_v2 failed on frame {frame}")
            # Layout: the number of peaks of each scan, then per scan its TOF indices followed
            # by their intensities.
            counts = buf[:TDF_SCANS].astype(np.int64)
            pos = TDF_SCANS
            indices = []
            intensities = []
            for k in counts:
                indices.append(buf[pos : pos + k])
                intensities.append(buf[pos + k : pos + 2 * k])
                pos += 2 * k
            profile = np.bincount(
                np.concatenate(indices), weights=np.concatenate(intensities), minlength=TDF_GRID
            )
            kept = kept_points(profile)
            mz = index_to_mz(lib.tims_index_to_mz, handle, int(frame), kept)
            writer.addSpectrum(
                mz, profile[kept].astype(np.float32), pixel_coordinates(x, y, x0, y0)
            )
    add_pixel_size(out, um)


def convert_tsf(
    lib: ctypes.CDLL, d_folder: Path, out_profile: Path, out_lines: Path, um: float
) -> None:
    """TSF run → processed profile imzML, and Bruker's line spectra → processed centroid imzML."""
    sql = d_folder / "analysis.tsf"
    grid = "select Value from GlobalMetadata where Key = 'DigitizerNumSamples'"
    if metadata_int(sql, grid) != [TSF_PROFILE]:
        raise RuntimeError(f"{sql}: expected profiles of {TSF_PROFILE} points")
    handle = lib.tsf_open(str(d_folder).encode(), 0)
    if not handle:
        raise RuntimeError(f"tsf_open could not open {d_folder}")
    frames = maldi_frames(sql)
    x0, y0 = frames[:, 1].min(), frames[:, 2].min()
    empty = []
    no_lines = []
    with (
        ImzMLWriter(
            str(out_profile), mode="processed", spec_type="profile", polarity="negative"
        ) as profile_writer,
        ImzMLWriter(
            str(out_lines), mode="processed", spec_type="centroid", polarity="negative"
        ) as line_writer,
    ):
        for frame, x, y in frames:
            coords = pixel_coordinates(x, y, x0, y0)
            buf = np.empty(TSF_PROFILE, np.uint32)
            read = lib.tsf_read_profile_spectrum_v2(
                handle, int(frame), buf.ctypes.data_as(UINT32_P), TSF_PROFILE
            )
            if read != TSF_PROFILE:
                raise RuntimeError(f"tsf_read_profile_spectrum_v2 failed on frame {frame}")
            kept = kept_points(buf)
            if kept.size == 0:  # no signal at all in this pixel: left out of both files
                empty.append(coords)
                continue
            mz = index_to_mz(lib.tsf_index_to_mz, handle, int(frame), kept)
            profile_writer.addSpectrum(mz, buf[kept].astype(np.float32), coords)

            line_index = np.empty(TSF_LINES)
            line_intensity = np.empty(TSF_LINES, np.float32)
            n_lines = lib.tsf_read_line_spectrum_v2(
                handle,
                int(frame),
                line_index.ctypes.data_as(DOUBLE_P),
                line_intensity.ctypes.data_as(FLOAT_P),
                TSF_LINES,
            )
            if not 0 <= n_lines <= TSF_LINES:
                raise RuntimeError(f"tsf_read_line_spectrum_v2 failed on frame {frame}")
            if n_lines == 0:  # no line (centroid) peak in this pixel: left out of that file
                no_lines.append(coords)
                continue
            line_mz = index_to_mz(lib.tsf_index_to_mz, handle, int(frame), line_index[:n_lines])
            line_writer.addSpectrum(line_mz, line_intensity[:n_lines], coords)
    for path in (out_profile, out_lines):
        add_pixel_size(path, um)
    print(f"TSF pixels without any signal (left out): {len(empty)}", end="; ")
    print(f"without line peaks: {len(no_lines)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sdist-dir",
        type=Path,
        required=True,
        help="the unpacked imzy 0.3.0 source distribution (the folder holding src/ and tests/)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the imzML files")
    parser.add_argument(
        "--tsf-only", action="store_true", help="write only the two fleX (TSF) files"
    )
    args = parser.parse_args(argv)

    data = args.sdist_dir / TEST_DATA
    library = args.sdist_dir / LIBRARY
    for path in (data / "example_tdf.d", data / "example_tsf.d", library):
        if not path.exists():
            parser.error(f"{path} not found: is --sdist-dir the unpacked imzy-0.3.0 sdist?")
    args.out.mkdir(parents=True, exist_ok=True)
    lib = load_library(library.resolve())
    if not args.tsf_only:
        convert_tdf(lib, data / "example_tdf.d", args.out / "kidney_tdf_profile.imzML", 10)
    convert_tsf(
        lib,
        data / "example_tsf.d",
        args.out / "fleX_tsf_profile.imzML",
        args.out / "fleX_tsf_bruker_centroids.imzML",
        20,
    )


if __name__ == "__main__":
    main()
