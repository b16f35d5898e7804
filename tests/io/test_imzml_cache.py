"""The offset-table cache: used on a second open, never stale, never required, never fatal."""

from __future__ import annotations

import os
import re
import time
import warnings

import numpy as np
import pytest
from imzml_factory import (
    edit_spectra,
    file_digest,
    inline_array_groups,
    set_param_value,
    write_simple,
)

from spatialfuse import _cache
from spatialfuse.errors import FileFormatError
from spatialfuse.io.imzml import ImzMLReader


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty cache folder for this test only."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(folder))
    return folder


def entries(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def read_all(reader: ImzMLReader):
    spectra = [reader.spectrum(i) for i in range(reader.n_spectra)]
    return reader.coordinates.copy(), spectra


def assert_matches(reader: ImzMLReader, truth) -> None:
    np.testing.assert_array_equal(reader.coordinates, truth.coords)
    for i in range(truth.n):
        mz, intensity = reader.spectrum(i)
        assert mz.dtype == truth.mzs[i].dtype and intensity.dtype == truth.intensities[i].dtype
        assert np.array_equal(mz, truth.mzs[i]) and np.array_equal(intensity, truth.intensities[i])


def open_reader(path, **kwargs) -> ImzMLReader:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cache problem is never a warning, let alone an error
        return ImzMLReader(path, **kwargs)


@pytest.mark.parametrize("variant", ["fast", "generic"])
@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_second_open_uses_cache(tmp_path, cache_dir, variant, mode):
    truth = write_simple(
        tmp_path / "data", mode=mode, compression="zlib" if mode == "processed" else "none"
    )
    if variant == "generic":
        truth.edit_xml(inline_array_groups)
    first = open_reader(truth.imzml)
    assert first.scan_method == variant
    assert len(entries(cache_dir)) == 1
    assert_matches(first, truth)
    second = open_reader(truth.imzml)
    assert second.scan_method == "cache"
    assert_matches(second, truth)
    for attr in ("n_spectra", "mode", "mz_dtype", "intensity_dtype", "compression", "uuid"):
        assert getattr(first, attr) == getattr(second, attr), attr
    assert first.pixel_size_um == second.pixel_size_um
    assert first.grid_origin == second.grid_origin and first.grid_shape == second.grid_shape
    centres = [float(truth.mzs[0][1]), float(truth.mzs[-1][-2])]
    np.testing.assert_array_equal(
        first.ion_images(centres, tol=0.5), second.ion_images(centres, tol=0.5)
    )
    np.testing.assert_array_equal(first.tic(), second.tic())
    assert len(entries(cache_dir)) == 1
    first.close()
    second.close()


def test_cache_is_keyed_on_path(tmp_path, cache_dir):
    truth = write_simple(tmp_path / "a")
    assert open_reader(truth.imzml).scan_method == "fast"
    copy = tmp_path / "b"
    copy.mkdir()
    for p in (truth.imzml, truth.ibd):
        (copy / p.name).write_bytes(p.read_bytes())
    assert open_reader(copy / truth.imzml.name).scan_method == "fast"
    assert open_reader(copy / truth.imzml.name).scan_method == "cache"
    assert open_reader(truth.imzml).scan_method == "cache"


def _restore_times(path, stat):
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def _swap_offsets(truth, i: int, j: int) -> None:
    """Swap the intensity offsets of spectra i and j in the XML (same digits: same file size)."""
    text = truth.read_xml()
    blocks = {}
    edit_spectra(text, lambda b, k: blocks.setdefault(k, b), indices={i, j})
    offsets = {
        k: re.search(r'ref="intensityArray"/>(.*?)</binaryDataArray>', b, re.S).group(1)
        for k, b in blocks.items()
    }
    values = {
        k: re.search(r'IMS:1000102"[^>]*value="(\d+)"', o).group(1) for k, o in offsets.items()
    }
    assert len(values[i]) == len(values[j])

    def fix(block: str, k: int) -> str:
        other = j if k == i else i
        array = offsets[k]
        return block.replace(array, set_param_value(array, "IMS:1000102", values[other]))

    truth.write_xml(edit_spectra(text, fix, indices={i, j}))
    truth.intensities[i], truth.intensities[j] = truth.intensities[j], truth.intensities[i]


@pytest.mark.parametrize("size", ["small", "large"])
def test_rewritten_imzml_with_same_size_and_mtime_is_rescanned(tmp_path, cache_dir, size):
    """Different content, same size, mtime restored: the stale entry must not be used.

    "large" is an XML far bigger than the edges the fingerprint hashes, edited in the middle.
    """
    n = 12 if size == "small" else 400
    coords = [(1 + k % 20, 1 + k // 20) for k in range(n)]
    truth = write_simple(tmp_path / "data", mode="processed", coords=coords, n_peaks=(5, 5))
    if size == "large":
        assert truth.imzml.stat().st_size > 4 * _cache._EDGE
    assert open_reader(truth.imzml).scan_method == "fast"
    assert open_reader(truth.imzml).scan_method == "cache"
    stat = truth.imzml.stat()
    time.sleep(0.05)  # let the file system clock tick past the first write
    i, j = n // 2, n // 2 + 1
    _swap_offsets(truth, i, j)
    _restore_times(truth.imzml, stat)
    reader = open_reader(truth.imzml)
    assert reader.scan_method != "cache"
    assert_matches(reader, truth)
    assert np.array_equal(reader.spectrum(i)[1], truth.intensities[i])
    assert open_reader(truth.imzml).scan_method == "cache"


def test_rewritten_coordinates_are_rescanned(tmp_path, cache_dir):
    truth = write_simple(tmp_path / "data", mode="continuous")
    assert open_reader(truth.imzml).scan_method == "fast"
    stat = truth.imzml.stat()
    time.sleep(0.05)

    def fix(block: str, _k: int) -> str:
        return set_param_value(block, "IMS:1000051", "9")

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={0}))
    truth.coords[0, 1] = 9
    _restore_times(truth.imzml, stat)
    reader = open_reader(truth.imzml)
    assert reader.scan_method == "fast"
    assert_matches(reader, truth)


def test_rewritten_imzml_different_content_different_size(tmp_path, cache_dir):
    truth = write_simple(tmp_path / "data", mode="processed")
    assert open_reader(truth.imzml).scan_method == "fast"
    new = write_simple(tmp_path / "data", mode="processed", coords=[(9, 9), (10, 9)], seed=5)
    reader = open_reader(new.imzml)
    assert reader.scan_method == "fast"
    assert_matches(reader, new)


def _corrupt_with(kind: str, path, good: dict) -> None:
    if kind == "garbage":
        path.write_bytes(b"this is not an npz file" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "missing column":
        np.savez(path, **{k: v for k, v in good.items() if k != "int_offset"})
    elif kind == "short column":
        np.savez(path, **{**good, "x": good["x"][:-1]})
    elif kind == "2-D column":
        np.savez(path, **{**good, "y": np.stack([good["y"], good["y"]])})
    elif kind == "float column":
        np.savez(path, **{**good, "mz_offset": good["mz_offset"].astype(np.float64) + 0.5})
    elif kind == "bad dtype code":
        np.savez(path, **{**good, "int_dtype": np.full_like(good["int_dtype"], 9)})
    elif kind == "negative code":
        np.savez(path, **{**good, "mz_comp": np.full(good["x"].size, -1, np.int64)})
    elif kind == "object column":
        np.savez(path, **{**good, "z": np.array([object()] * good["z"].size)}, allow_pickle=True)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "empty",
        "truncated",
        "missing column",
        "short column",
        "2-D column",
        "float column",
        "bad dtype code",
        "negative code",
        "object column",
    ],
)
def test_corrupted_cache_entry_is_ignored(tmp_path, cache_dir, kind):
    truth = write_simple(tmp_path / "data", mode="processed")
    assert open_reader(truth.imzml).scan_method == "fast"
    (entry,) = entries(cache_dir)
    with np.load(entry) as data:
        good = {k: data[k] for k in data.files}
    _corrupt_with(kind, entry, good)
    reader = open_reader(truth.imzml)
    assert reader.scan_method == "fast", kind
    assert_matches(reader, truth)
    reader.close()
    # the entry was rewritten and is good again
    again = open_reader(truth.imzml)
    assert again.scan_method == "cache"
    assert_matches(again, truth)


def test_cache_dir_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(blocker / "cache"))
    truth = write_simple(tmp_path / "data")
    for _ in range(2):
        reader = open_reader(truth.imzml)
        assert reader.scan_method == "fast"
        assert_matches(reader, truth)
    assert blocker.read_text() == "x"


def test_unwritable_cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    (folder / "imzml").mkdir(parents=True)
    folder.chmod(0o500)
    (folder / "imzml").chmod(0o500)
    try:
        if os.access(folder / "imzml", os.W_OK):
            pytest.skip("running with privileges that ignore file permissions")
        monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(folder))
        truth = write_simple(tmp_path / "data")
        for _ in range(2):
            reader = open_reader(truth.imzml)
            assert reader.scan_method == "fast"
            assert_matches(reader, truth)
        assert not list((folder / "imzml").iterdir())
    finally:
        (folder / "imzml").chmod(0o700)
        folder.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_cache_dir_that_cannot_be_created_even_by_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", "/proc/self/spatialfuse-cache")
    truth = write_simple(tmp_path / "data", mode="processed")
    for _ in range(2):
        reader = open_reader(truth.imzml)
        assert reader.scan_method == "fast"
        assert_matches(reader, truth)


def test_cache_false_never_writes_or_reads(tmp_path, cache_dir):
    truth = write_simple(tmp_path / "data", mode="processed")
    for _ in range(2):
        reader = open_reader(truth.imzml, cache=False)
        assert reader.scan_method == "fast"
        assert_matches(reader, truth)
    assert not cache_dir.exists() or not entries(cache_dir)
    # with an entry present, cache=False neither uses nor touches it
    assert open_reader(truth.imzml).scan_method == "fast"
    (entry,) = entries(cache_dir)
    before = (file_digest(entry), entry.stat().st_mtime_ns)
    assert open_reader(truth.imzml, cache=False).scan_method == "fast"
    assert entries(cache_dir) == [entry]
    assert (file_digest(entry), entry.stat().st_mtime_ns) == before


def test_cache_never_writes_next_to_inputs(tmp_path, cache_dir):
    truth = write_simple(tmp_path / "data")
    before = (file_digest(truth.imzml), file_digest(truth.ibd))
    for _ in range(2):
        open_reader(truth.imzml).close()
    assert sorted(p.name for p in truth.imzml.parent.iterdir()) == ["data.ibd", "data.imzML"]
    assert (file_digest(truth.imzml), file_digest(truth.ibd)) == before
    assert all(cache_dir in p.parents for p in entries(cache_dir))


def test_cached_table_is_still_checked_against_ibd(tmp_path, cache_dir):
    """A cached offset table does not excuse a truncated .ibd."""
    truth = write_simple(tmp_path / "data", mode="processed")
    assert open_reader(truth.imzml).scan_method == "fast"
    data = truth.ibd.read_bytes()
    truth.ibd.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"spectrum \d+ .* it is truncated"):
        ImzMLReader(truth.imzml)
