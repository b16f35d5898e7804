"""read_imzml gives the .ibd's pages back as it goes: same table, bounded resident memory."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest
from imzml_factory import grid_coords, write_imzml, write_simple

from spatialfuse.io import ImzMLReader, read_imzml
from spatialfuse.io.imzml._access import IbdAccess

NX = NY = 40


def _processed(folder: Path):
    rng = np.random.default_rng(3)
    spectra = []
    for _ in range(NX * NY):
        mz = np.sort(rng.uniform(100, 1000, 400))
        spectra.append((mz, rng.gamma(2.0, 50.0, mz.size)))
    return write_imzml(folder / "processed", spectra, grid_coords(NX, NY), mode="processed")


def _continuous(folder: Path):
    rng = np.random.default_rng(4)
    mz = np.linspace(100, 1000, 2000)
    spectra = [(mz, rng.gamma(2.0, 50.0, mz.size)) for _ in range(NX * NY)]
    return write_imzml(folder / "continuous", spectra, grid_coords(NX, NY), mode="continuous")


@pytest.fixture(scope="module", params=["processed", "continuous"])
def written(request, tmp_path_factory):
    make = _processed if request.param == "processed" else _continuous
    return make(tmp_path_factory.mktemp(request.param))


def _read_without_release(path, monkeypatch, **kw):
    with monkeypatch.context() as patch:
        patch.setattr(IbdAccess, "done_with", lambda self, start, stop: None)
        return read_imzml(path, cache=False, **kw)


@pytest.mark.parametrize("kw", [{}, {"max_features": 50}])
def test_streaming_read_gives_every_spectrum_back_and_the_same_table(written, monkeypatch, kw):
    released: list[tuple[int, int]] = []
    original = IbdAccess.done_with

    def recording(self, start, stop):
        if self.stream:
            released.append((start, stop))
        return original(self, start, stop)

    monkeypatch.setattr(IbdAccess, "done_with", recording)
    streamed = read_imzml(written.imzml, cache=False, **kw)
    kept = _read_without_release(written.imzml, monkeypatch, **kw)

    covered = np.zeros(NX * NY, dtype=int)
    for start, stop in released:
        covered[start:stop] += 1
    assert (covered >= 1).all(), "every spectrum's pages are given back in at least one pass"
    assert covered.max() >= 2, "each pass (TIC, windows, ...) gives its blocks back"
    a = streamed.X.toarray() if hasattr(streamed.X, "toarray") else streamed.X
    b = kept.X.toarray() if hasattr(kept.X, "toarray") else kept.X
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(streamed.obs["tic"], kept.obs["tic"])
    assert streamed.uns["spatialfuse"]["mz_range"] == kept.uns["spatialfuse"]["mz_range"]


class _RecordingMap:
    def __init__(self, size):
        self.size, self.calls = size, []

    def __len__(self):
        return self.size

    def madvise(self, option, start, length):
        self.calls.append((option, start, length))


def test_done_with_unmaps_whole_pages_spanning_both_arrays_of_the_block(written):
    with ImzMLReader(written.imzml, cache=False) as reader:
        table = reader._acc.table
        fake = _RecordingMap(reader._acc.size)
        acc = IbdAccess.__new__(IbdAccess)
        acc.mm, acc.table, acc.size = fake, table, reader._acc.size
        acc.done_with(5, 9)
        assert fake.calls == [], "nothing is given back unless streaming"
        acc.stream = True
        acc.done_with(5, 9)
    ((option, start, length),) = fake.calls
    assert option == mmap.MADV_DONTNEED
    assert start % mmap.PAGESIZE == 0
    first = min(table.mz_offset[5:9].min(), table.int_offset[5:9].min())
    ends = np.concatenate(
        [
            table.mz_offset[5:9] + table.mz_length[5:9] * written.mzs[0].itemsize,
            table.int_offset[5:9] + table.int_length[5:9] * written.intensities[0].itemsize,
        ]
    )
    assert start <= first < start + mmap.PAGESIZE
    assert start + length == ends.max()


def _mapped_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (Linux ``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_a_streaming_pass_leaves_few_pages_of_the_ibd_resident(written):
    size_kib = written.ibd.stat().st_size // 1024
    resident = {}
    for stream in (False, True):
        with ImzMLReader(written.imzml, cache=False) as reader:
            reader._acc.stream = stream
            for _chunk in reader.iter_chunks(chunk_spectra=100):
                pass
            resident[stream] = _mapped_rss_kib(written.ibd.resolve())
    assert resident[False] >= 0.9 * size_kib  # every page read stays mapped...
    assert resident[True] <= 0.1 * size_kib  # ...unless given back block by block


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_a_large_document_is_scanned_range_by_range_to_the_same_table(tmp_path, monkeypatch, mode):
    from spatialfuse.io.imzml import _scan_fast

    truth = write_simple(tmp_path, mode, coords=grid_coords(30, 20), mode=mode, seed=2)
    with ImzMLReader(truth.imzml, cache=False) as reader:
        whole = reader._table.to_arrays()
        assert reader.scan_method == "fast"
    given_back = []
    original = _scan_fast._give_back

    def recording(buf, start, stop):
        given_back.append((start, stop))
        return original(buf, start, stop)

    # Ranges of 8 KiB: "large" for this ~1 MB document, so it is cut and given back as it goes.
    monkeypatch.setattr(_scan_fast, "RANGE_BYTES", 8 << 10)
    monkeypatch.setattr(_scan_fast, "_give_back", recording)
    with ImzMLReader(truth.imzml, cache=False) as reader:
        ranged = reader._table.to_arrays()
        assert reader.scan_method == "fast"
    size = truth.imzml.stat().st_size
    assert len(given_back) > size // (8 << 10) // 2
    for name, values in whole.items():
        np.testing.assert_array_equal(ranged[name], values, err_msg=name)


def test_conversion_gives_the_pages_back_and_writes_the_same_store(written, tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr", minversion="3")
    from spatialfuse.io import convert_imzml

    released = np.zeros(NX * NY, dtype=int)
    original = IbdAccess.done_with

    def recording(self, start, stop):
        if self.stream:
            released[start:stop] += 1
        return original(self, start, stop)

    monkeypatch.setattr(IbdAccess, "done_with", recording)
    streamed = convert_imzml(written.imzml, tmp_path / "streamed.zarr", cache=False)
    monkeypatch.setattr(IbdAccess, "done_with", lambda self, start, stop: None)
    kept = convert_imzml(written.imzml, tmp_path / "kept.zarr", cache=False)
    assert (released >= 1).all()
    np.testing.assert_array_equal(
        zarr.open_group(streamed, mode="r")["X"][:], zarr.open_group(kept, mode="r")["X"][:]
    )
