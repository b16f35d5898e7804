"""Parallel from the first byte (issue 17): one XML scan per conversion, shared with the workers."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3")
pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from imzml_factory import grid_coords, write_simple  # noqa: E402

from spatialfuse.io import convert_imzml  # noqa: E402
from spatialfuse.io.imzml import ImzMLReader  # noqa: E402


def _spy_on_scans():
    """Count the calls of both scanners in this process (until :func:`_stop_spying`)."""
    from spatialfuse.io.imzml import _reader

    counts = {"scans": 0}

    def counting(scan):
        def wrapper(*args, **kwargs):
            counts["scans"] += 1
            return scan(*args, **kwargs)

        return wrapper

    _reader._spied = (counts, _reader.scan_fast, _reader.scan_generic)
    _reader.scan_fast = counting(_reader.scan_fast)
    _reader.scan_generic = counting(_reader.scan_generic)


def _stop_spying() -> int:
    from spatialfuse.io.imzml import _reader

    counts, _reader.scan_fast, _reader.scan_generic = _reader._spied
    del _reader._spied
    return counts["scans"]


def _count_scans(client, fn):
    """Run ``fn()``; return its result and the XML scans here and on every worker."""
    client.run(_spy_on_scans)
    _spy_on_scans()
    try:
        result = fn()
    finally:
        here = _stop_spying()
        there = client.run(_stop_spying)
    return result, here, sum(there.values())


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_a_cluster_conversion_scans_the_xml_once(client, tmp_path, mode):
    peaks = 60 if mode == "continuous" else (30, 90)
    truth = write_simple(tmp_path, mode, coords=grid_coords(20, 16), mode=mode, n_peaks=peaks)
    options = dict(chunks=(32, 16), max_memory="16MiB")
    local = convert_imzml(truth.imzml, tmp_path / "local.zarr", cache=False, **options)
    for cache in (False, True):
        with distributed.get_task_stream(client) as stream:
            out, here, workers = _count_scans(
                client,
                lambda cache=cache: convert_imzml(
                    truth.imzml, tmp_path / f"r{cache}.zarr", cache=cache, client=client, **options
                ),
            )
        tiles = [t for t in stream.data if "run_tile" in t["key"]]
        assert len({t["worker"] for t in tiles}) == 2
        # One scan, on the client; the workers open the file with the table it shared.
        assert (here, workers) == (1, 0), cache
        np.testing.assert_array_equal(
            zarr.open_group(out, mode="r")["X"][:], zarr.open_group(local, mode="r")["X"][:]
        )
    # The cache filled by the previous conversion: no scan at all.
    _, here, workers = _count_scans(
        client,
        lambda: convert_imzml(truth.imzml, tmp_path / "again.zarr", client=client, **options),
    )
    assert (here, workers) == (0, 0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_shared_table_opens_without_a_scan_and_refuses_a_changed_file(tmp_path, monkeypatch):
    from spatialfuse.errors import FileFormatError
    from spatialfuse.io.imzml import _shared
    from spatialfuse.io.imzml._shared import open_shared, share_table

    monkeypatch.setattr(_shared, "_READERS", {})
    truth = write_simple(tmp_path, "shared", coords=grid_coords(6, 5), mode="processed", seed=1)
    with ImzMLReader(truth.imzml, cache=False) as reader:
        source = share_table(reader, tmp_path / "offsets.npz")
        expected = reader._table.to_arrays()
    opened = open_shared(source)
    assert opened.scan_method == "shared"
    for name, values in opened._table.to_arrays().items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)
    np.testing.assert_array_equal(opened.coordinates, truth.coords)
    # The same file changed since the table was written: refused, naming the file.
    truth.ibd.write_bytes(truth.ibd.read_bytes() + b"\0" * 8)
    _shared._READERS.clear()
    changed = type(source)(**{**source.__dict__, "ibd_size": source.ibd_size + 8})
    with pytest.raises(FileFormatError, match=r"changed .* since its offset table"):
        open_shared(changed)
