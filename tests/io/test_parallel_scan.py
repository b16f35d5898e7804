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
    from spatialfuse.io.zarr_msi import _tiles as _shared
    from spatialfuse.io.zarr_msi._tiles import open_shared, share_table

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


# ---------------------------------------------------------------------------------------------
# the m/z-axis pass in blocks of spectra


def _ion_file(folder, nx: int, ny: int, seed: int):
    """Processed spectra: 300 ions (each in ~half the spectra, ±2 ppm) and as many noise peaks."""
    from spatialfuse.datasets._writers import write_imzml

    rng = np.random.default_rng(seed)
    ions = np.sort(rng.uniform(150.0, 950.0, 300))
    coords = np.array(grid_coords(nx, ny))
    mzs, ints = [], []
    for _ in range(len(coords)):
        drawn = ions[rng.random(ions.size) < 0.5]
        mz = np.concatenate(
            [drawn * (1 + 2e-6 * rng.standard_normal(drawn.size)), rng.uniform(100, 1000, 150)]
        )
        order = np.argsort(mz)
        mzs.append(mz[order])
        ints.append(rng.gamma(2.0, 50.0, mz.size).astype(np.float32)[order])
    path = folder / f"ions{seed}.imzML"
    write_imzml(
        path,
        coords,
        mzs,
        ints,
        mode="processed",
        pixel_size_um=(10.0, 10.0),
        uuid_bytes=bytes(16),
        version="test",
    )
    return path


def _assert_same_axis(a, b):
    assert len(a) == len(b) > 0
    for name in ("mz", "lo", "hi", "frequency"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("grid", ["dense", "occupied bins"])
def test_axis_from_blocks_in_any_order_of_work_is_the_serial_axis(tmp_path, monkeypatch, grid):
    from concurrent.futures import ThreadPoolExecutor

    from spatialfuse.io.imzml import _axis

    path = _ion_file(tmp_path, 30, 20, seed=3)
    # Chunks of ~25 spectra: ~24 chunks, 6 or 7 blocks.
    monkeypatch.setattr(_axis, "_CHUNK_BYTES", 16 * 300 * 25)
    if grid != "dense":
        monkeypatch.setattr(_axis, "_DENSE_BINS", 0)
    with ImzMLReader(path, cache=False) as reader:
        found = _axis.axis_grid(reader, 5.0)
        assert found.dense == (grid == "dense") and len(found.blocks()) > 4
        serial = _axis.build_mz_axis(reader)

        def in_threads(grid, blocks):  # blocks finish in any order; results come in order
            with ThreadPoolExecutor(3) as pool:
                yield from pool.map(lambda b: _axis.axis_partial(reader, grid, *b), blocks[::-1])

        def reversed_back(grid, blocks):
            return list(in_threads(grid, blocks))[::-1]

        _assert_same_axis(_axis.build_mz_axis(reader), serial)
        _assert_same_axis(_axis.build_mz_axis(reader, map_blocks=reversed_back), serial)
        # One block for the whole file (the code before blocks): the same features and windows.
        monkeypatch.setattr(_axis, "BLOCK_CHUNKS", 1000)
        whole = _axis.build_mz_axis(reader)
        for name in ("lo", "hi", "frequency"):
            np.testing.assert_array_equal(getattr(whole, name), getattr(serial, name))
        np.testing.assert_allclose(whole.mz, serial.mz, rtol=1e-14)


def test_a_cluster_conversion_builds_the_axis_on_the_workers(client, tmp_path, monkeypatch):
    import pandas as pd

    from spatialfuse.io import read_msi_zarr
    from spatialfuse.io.imzml import _axis

    path = _ion_file(tmp_path, 24, 20, seed=7)
    monkeypatch.setattr(_axis, "_CHUNK_BYTES", 16 * 300 * 30)  # blocks are cut here, run there
    options = dict(chunks=(64, 16), max_memory="16MiB")
    local = convert_imzml(path, tmp_path / "local.zarr", **options)
    with distributed.get_task_stream(client) as stream:
        remote = convert_imzml(path, tmp_path / "remote.zarr", client=client, **options)
    blocks = [t for t in stream.data if "axis_block_task" in t["key"]]
    assert len(blocks) > 2 and len({t["worker"] for t in blocks}) == 2
    a, b = read_msi_zarr(local), read_msi_zarr(remote)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
    assert a.n_vars > 250
    np.testing.assert_array_equal(a.X.compute(), b.X.compute())


# ---------------------------------------------------------------------------------------------
# the XML scan in byte ranges


def test_byte_ranges_share_out_every_occurrence_once():
    from spatialfuse.io.imzml._scan_fast import byte_ranges, find_literals

    rng = np.random.default_rng(2)
    pieces = [b'"IMS:1000050" value="1"', b"<binaryDataArray ", b"<binaryDataArrayList>", b"x"]
    text = b"".join(pieces[i] for i in rng.integers(0, len(pieces), 400))
    arr = np.frombuffer(text, np.uint8)
    literals = (b"IMS:1000", b"<binaryDataArray")
    start, stop = 3, len(text) - 5
    whole = find_literals(arr, literals, start, stop)
    for size in (1, 7, 16, 100, len(text)):
        ranges = byte_ranges(start, stop, size)
        parts = [find_literals(arr, literals, a, b, stop=stop) for a, b in ranges]
        for k in range(len(literals)):
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def _imzml_files(shared_data):
    files = sorted(p for p in (shared_data / "imzml").rglob("*") if p.suffix.lower() == ".imzml")
    if not files:
        pytest.skip(f"no imzML files under {shared_data / 'imzml'}")
    return files


@pytest.mark.filterwarnings("ignore::spatialfuse.errors.DataWarning")
def test_ranged_scan_of_the_real_files_is_the_serial_scan(shared_data, monkeypatch):
    from spatialfuse.io.imzml import _scan_fast
    from spatialfuse.io.imzml._header import parse_header

    fast = 0
    for path in _imzml_files(shared_data):
        data = path.read_bytes()
        try:
            header = parse_header(data, path)
        except Exception:  # files every reader refuses are tested elsewhere
            continue
        try:
            serial = _scan_fast.scan_fast(data, header).to_arrays()
        except _scan_fast.NotRegular:
            serial = None
        for size in (97, 4096):
            monkeypatch.setattr(_scan_fast, "RANGE_BYTES", size)
            try:
                ranged = _scan_fast.scan_fast(data, header, map_ranges=map, path=path).to_arrays()
            except _scan_fast.NotRegular:
                ranged = None
            assert (ranged is None) == (serial is None), path
            for name in serial or {}:
                np.testing.assert_array_equal(ranged[name], serial[name], err_msg=f"{path} {name}")
        fast += serial is not None
    assert fast >= 5


@pytest.mark.filterwarnings("ignore::spatialfuse.errors.DataWarning")
def test_a_process_pool_scans_in_ranges(shared_data, monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from spatialfuse.io.imzml import _scan_fast

    path = next(
        p for p in _imzml_files(shared_data) if ImzMLReader(p, cache=False).scan_method == "fast"
    )
    serial = ImzMLReader(path, cache=False)
    monkeypatch.setattr(_scan_fast, "RANGE_BYTES", 4096)
    with ProcessPoolExecutor(2) as pool:
        ranged = ImzMLReader(path, cache=False, map_ranges=pool.map)
    assert ranged.scan_method == "fast"
    for name, values in serial._table.to_arrays().items():
        np.testing.assert_array_equal(ranged._table.to_arrays()[name], values, err_msg=name)


@pytest.mark.parametrize("regular", [True, False], ids=["fast", "refused by the fast scanner"])
def test_a_cluster_conversion_scans_the_xml_in_ranges_on_the_workers(
    client, tmp_path, monkeypatch, regular
):
    from imzml_factory import edit_spectra, get_param_value, set_param_value

    from spatialfuse.io.imzml import _scan_fast

    truth = write_simple(
        tmp_path, "ranges", coords=grid_coords(20, 16), mode="processed", n_peaks=(30, 90)
    )
    if not regular:  # "7.0" for 7: the general scanner reads it, the fast one does not
        truth.edit_xml(
            lambda t: edit_spectra(
                t,
                lambda s, i: set_param_value(
                    s, "IMS:1000050", get_param_value(s, "IMS:1000050") + ".0"
                ),
                indices=[200],
            )
        )
    size = len(truth.read_xml())
    monkeypatch.setattr(_scan_fast, "RANGE_BYTES", size // 7)  # the ranges are cut here
    options = dict(chunks=(64, 16), max_memory="16MiB", cache=False)
    local = convert_imzml(truth.imzml, tmp_path / "local.zarr", **options)
    with distributed.get_task_stream(client) as stream:
        remote, here, workers = _count_scans(
            client,
            lambda: convert_imzml(truth.imzml, tmp_path / "remote.zarr", client=client, **options),
        )
    # The fast scan (its ranges on the workers), and where it refuses the file the general
    # scanner, here: either way once per conversion, and never on a worker.
    assert (here, workers) == (1 if regular else 2, 0)
    ranges = [t for t in stream.data if "scan_range" in t["key"]]
    assert len(ranges) >= 6 and len({t["worker"] for t in ranges}) == 2
    np.testing.assert_array_equal(
        zarr.open_group(remote, mode="r")["X"][:], zarr.open_group(local, mode="r")["X"][:]
    )
    reader = ImzMLReader(truth.imzml, cache=False, map_ranges=_gather(client))
    assert reader.scan_method == ("fast" if regular else "generic")
    np.testing.assert_array_equal(reader.coordinates, truth.coords)


def _gather(client):
    def map_ranges(function, tasks):
        return client.gather(client.map(function, tasks, pure=False))

    return map_ranges
