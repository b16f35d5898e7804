"""``convert_imzml``: an imzML file as a chunked zarr store, out of core, here or on a cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from spatialfuse._logging import logger, progress
from spatialfuse.io.imzml import _finite
from spatialfuse.io.imzml._axis import DEFAULT_MAX_FEATURES
from spatialfuse.io.imzml._features import FeatureOptions
from spatialfuse.io.imzml._read import feature_var, msi_obs, msi_provenance
from spatialfuse.io.zarr_msi._memory import format_bytes, parse_memory, plan_tiles, usable_memory
from spatialfuse.io.zarr_msi._partial import create_partial, remove_abandoned_partials, seal_partial
from spatialfuse.io.zarr_msi._tiles import TileSpec, open_shared, run_tile, share_table

#: Format marker written into the store's root attributes.
STORE_FORMAT = "spatialfuse.msi.zarr"
STORE_VERSION = 1
#: ``compression=`` choices; see docs/out_of_core.md for the measurements behind the default.
COMPRESSIONS = ("auto", "lz4", "zstd", "none")
DEFAULT_COMPRESSION = "auto"
#: Metadata arrays are small: one chunk each, no shards (and no anndata warning about them).
_NO_SHARDS = {"shards": None}


def _require_zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "writing and reading MSI zarr stores needs zarr>=3 (pip install 'zarr>=3')"
        ) from exc
    if int(zarr.__version__.split(".")[0]) < 3:  # pragma: no cover
        raise ImportError(f"zarr>=3 is needed, found zarr {zarr.__version__}")
    return zarr


def _compression_name(compression: str | None, kind: str | None = None) -> str:
    """``compression`` checked and, for ``"auto"``, resolved for a table of ``kind``.

    ``"auto"``: none for a continuous file on its own axis (fastest: the 400 MB/s path; random or
    noisy intensities barely compress), LZ4 for binned tables (mostly zeros: 6x smaller, at the
    same speed, since binning dominates).
    """
    name = "none" if compression is None else str(compression).lower()
    if name not in COMPRESSIONS:
        raise ValueError(
            f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}"
        )
    if name == "auto" and kind is not None:
        return "none" if kind == "identity" else "lz4"
    return name


def _compressors(name: str):
    """The zarr v3 codecs for a resolved compression name (``"none"``: stored raw)."""
    zarr = _require_zarr()
    if name == "none":
        return None
    if name == "lz4":
        # Blosc's LZ4 behind a byte shuffle: ~1 GB/s on data that does not compress (stored
        # as is), 2-10x smaller for profile counts and binned peaks (docs/out_of_core.md).
        return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)
    if name == "zstd":
        return zarr.codecs.ZstdCodec(level=1)
    raise ValueError(f"unresolved compression {name!r}")


def _is_store(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray")
    )


def _check_output(output: Path, overwrite: bool) -> None:
    if not (output.exists() or output.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{output}: already exists; pass overwrite=True (--overwrite on the command line) "
            "to replace it"
        )
    if output.is_symlink() or not output.is_dir():
        raise FileExistsError(f"{output}: exists and is not a zarr store; refusing to replace it")
    if not _is_store(output) and any(output.iterdir()):
        raise FileExistsError(
            f"{output}: exists and is a folder that is not a zarr store; refusing to replace it"
        )


def _publish(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the finished store ``tmp`` to ``output`` (replacing an old store when allowed)."""
    _check_output(output, overwrite)
    if not (output.exists() or output.is_symlink()):
        os.rename(tmp, output)
        return
    old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(output, old)
    try:
        os.rename(tmp, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _run_local(spec, tiles, reader, tic, found, show_progress):
    for tile in progress(tiles, show=show_progress, desc="convert"):
        r0, r1, part, nonfinite = run_tile(spec, tile, reader=reader)
        if part is not None:
            tic[r0:r1] = part
        found.update(nonfinite)


def _run_tile_task(tile, spec):
    """:func:`run_tile` with the arguments in the order ``Client.map`` passes them."""
    return run_tile(spec, tuple(tile))


@contextlib.contextmanager
def _client_of(client):
    """A ``distributed.Client`` from a client or a scheduler address."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("client= needs dask.distributed (pip install 'distributed')") from exc
    if isinstance(client, (str, os.PathLike)):
        own = distributed.Client(os.fspath(client))
        try:
            yield own
        finally:
            own.close()
    elif isinstance(client, distributed.Client):
        yield client
    else:
        raise TypeError(
            f"client must be a distributed.Client or a scheduler address, got {type(client)!r}"
        )


def _map_on(c):
    """``map_ranges`` for :class:`ImzMLReader`: the XML scan's byte ranges on the workers."""

    def map_ranges(function, tasks):
        futures = c.map(function, tasks, pure=False)
        try:
            return c.gather(futures)
        finally:
            c.cancel(futures)

    return map_ranges


def _axis_block_task(block, source, grid):
    """The m/z-axis histogram of one block of spectra, on a worker."""
    from spatialfuse.io.imzml._axis import axis_partial

    return axis_partial(open_shared(source), grid, *block)


def _axis_on(c, source, reader):
    """``map_blocks`` for :func:`build_mz_axis`: blocks on the workers, results in order."""

    def map_blocks(grid, blocks):
        if len(blocks) < 2:  # nothing to share out: here, without the round trip
            from spatialfuse.io.imzml._axis import axis_partial

            yield from (axis_partial(reader, grid, *b) for b in blocks)
            return
        futures = c.map(_axis_block_task, blocks, source=source, grid=grid, pure=False)
        try:
            for future in futures:  # in block order: the sums are the serial pass's
                yield future.result()
                future.release()
        finally:
            c.cancel(futures)

    return map_blocks


def _run_distributed(c, spec, tiles, tic, found, show_progress):
    from distributed import as_completed

    shared = c.scatter(spec, broadcast=True, hash=False)
    futures = c.map(_run_tile_task, tiles, spec=shared, pure=False)
    try:
        done = as_completed(futures, with_results=True)
        for _future, (r0, r1, part, nonfinite) in progress(
            done, show=show_progress, total=len(futures), desc="convert"
        ):
            if part is not None:
                tic[r0:r1] = part
            found.update(nonfinite)
    except BaseException:
        c.cancel(futures)
        raise
    finally:
        c.cancel(shared)


def convert_imzml(
    input: str | os.PathLike,
    output_zarr: str | os.PathLike,
    *,
    mz=None,
    ppm: float | None = None,
    tol: float | None = None,
    pixel_size_um: float | tuple[float, float] | None = None,
    min_frequency: float = 0.01,
    max_features: int | None = DEFAULT_MAX_FEATURES,
    features: FeatureOptions | None = None,
    max_memory: str | int = "2GB",
    chunks: tuple[int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    shards: bool = True,
    client=None,
    overwrite: bool = False,
    cache: bool = True,
    show_progress: bool = False,
) -> Path:
    """Convert an imzML file into a chunked zarr store, with memory bounded by ``max_memory``.

    The store holds the same table as :func:`~spatialfuse.io.read_imzml` (same features, same
    float32 values, same ``obs``/``var``/``obsm``/``uns``) in AnnData's zarr layout, so
    :func:`~spatialfuse.io.read_msi_zarr` opens it lazily (``X`` a dask array) and
    ``anndata.read_zarr`` in memory.

    Parameters
    ----------
    input
        The ``.imzML`` file (its ``.ibd`` beside it).
    output_zarr
        The store to create (a folder, conventionally ``*.zarr``).
    mz, ppm, tol, pixel_size_um, min_frequency, max_features
        Features as in :func:`~spatialfuse.io.read_imzml`: continuous files keep their shared m/z
        axis, processed files are binned onto a common axis (:func:`build_mz_axis`); ``mz=``
        values give ``± ppm`` / ``± tol`` windows instead. ``mz`` may also be an
        :class:`~spatialfuse.io.MzAxis`, whose own windows are then used.
    features
        The feature options as one :class:`~spatialfuse.io.FeatureOptions` (shared with
        :func:`~spatialfuse.io.read_imzml`), instead of the keywords.
    max_memory
        Most memory the conversion holds at once, as ``"2GB"``, ``"512MiB"`` or bytes
        (:class:`ValueError` for anything else). About 700 bytes per spectrum go to the offset
        table and per-pixel metadata (a budget too small for them is refused, saying what would
        do); the rest sizes the chunk-aligned tiles spectra are processed in. For processed
        files without ``mz=``, the common-axis builder, which runs first, comes on top. With
        ``client=``, each task on a worker keeps within it.
    chunks
        ``(rows, cols)`` of a stored chunk. Default: 32 m/z columns and all pixels, up to
        8 MiB per chunk (fewer rows for processed files where a band of rows × all features
        would not fit ``max_memory``). See docs/out_of_core.md for the trade-off.
    compression
        ``"lz4"`` (Blosc LZ4, byte shuffle), ``"zstd"`` (level 1), ``"none"``, or ``"auto"``
        (the default): none for a continuous file on its own axis (fastest), LZ4 for binned
        tables (mostly zeros). Profile spectra shrink ~3-4x with LZ4, ~6x with zstd, at a cost
        in speed (docs/out_of_core.md).
    shards
        Store ``X``'s chunks side by side in shards, one file of about 128 MB each (zarr v3
        sharding; the chunks, the unit reads use, are unchanged): a store of thousands of files,
        not millions. Each shard holds as many chunks as a quarter of ``max_memory`` can encode
        at once (at most 1,024). False: one file per chunk.
    client
        A ``dask.distributed.Client`` or a scheduler address (``"tcp://host:8786"``): tiles run
        on the cluster's workers, each opening the input itself and writing its own chunks.
        The XML scan (its byte ranges) and the common m/z axis (its blocks of spectra) run on
        the workers too, with the same results as here; the offset table is built once and
        written beside the output for the workers (none of them scans the XML). Input and
        output must be on a filesystem every worker sees at the same path.
    overwrite
        Replace an existing store at ``output_zarr`` (never a folder that is not a zarr store).
    cache
        Use the offset-table cache here (workers use the table this process shares).
    show_progress
        Show progress bars.

    Returns
    -------
    pathlib.Path
        The path of the store.

    Notes
    -----
    The store is written under a hidden temporary name beside ``output_zarr`` and renamed when
    complete: an interrupted conversion leaves nothing at ``output_zarr``.
    """
    from spatialfuse.io.imzml import _kernels
    from spatialfuse.io.imzml._reader import ImzMLReader

    budget = parse_memory(max_memory)
    options = FeatureOptions.resolve(
        features, mz=mz, ppm=ppm, tol=tol, min_frequency=min_frequency, max_features=max_features
    )
    output = Path(output_zarr).absolute()
    _check_output(output, overwrite)
    _compression_name(compression)  # a bad name fails before any work
    zarr = _require_zarr()
    from anndata.io import write_elem

    with contextlib.ExitStack() as stack:
        # Connect first: an unreachable scheduler fails before any work.
        dask_client = None if client is None else stack.enter_context(_client_of(client))
        # On a cluster, the fast XML scan runs in byte ranges on the workers.
        reader = stack.enter_context(
            ImzMLReader(
                input,
                cache=cache,
                map_ranges=None if dask_client is None else _map_on(dask_client),
            )
        )
        reader._acc.stream = True  # each pass reads a block once: its pages need not stay
        size = reader.require_pixel_size(pixel_size_um)
        size_source = "argument" if pixel_size_um is not None else "file"
        usable_memory(reader.n_spectra, budget)  # too small a budget fails before any pass
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_partials(output.parent)
        partial, marker = create_partial(output)
        tmp = partial / "store"
        try:
            # Workers open the input with this offset table, written once beside the store
            # (none of them scans the XML); a local run uses the reader it has.
            source = share_table(
                reader, None if dask_client is None else partial / "offsets.npz", cache=cache
            )
            kind, centres, lo, hi, rule = options.choose(
                reader,
                show_progress=show_progress,
                map_blocks=None if dask_client is None else _axis_on(dask_client, source, reader),
            )
            compression_name = _compression_name(compression, kind)
            streamed = kind == "identity" and _kernels.intensity_matrix(reader._acc) is not None
            n, k = reader.n_spectra, centres.size
            plan = plan_tiles(
                n,
                k,
                budget,
                chunks=chunks,
                whole_band=kind != "identity",
                streamed=streamed,
                shards=shards,
            )
            logger.debug(
                "converting %s (%d × %d, %s): chunks %d × %d, tiles of %d columns, budget %s",
                reader.path,
                n,
                k,
                kind,
                plan.chunk_rows,
                plan.chunk_cols,
                plan.tile_cols,
                format_bytes(budget),
            )
            provenance = msi_provenance(reader, size, size_source, rule, made_by="convert_imzml")
            coords = reader.coordinates
            root = zarr.open_group(tmp, mode="w-", zarr_format=3)
            x = root.create_array(
                "X",
                shape=(n, k),
                chunks=(plan.chunk_rows, plan.chunk_cols),
                shards=plan.shards,
                dtype="float32",
                fill_value=0.0,
                compressors=_compressors(compression_name),
            )
            x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
            write_elem(root, "var", feature_var(centres, lo, hi), dataset_kwargs=_NO_SHARDS)
            spatial = np.stack(
                [(coords[:, 0] - 0.5) * size[0], (coords[:, 1] - 0.5) * size[1]], axis=1
            ).astype(np.float64)
            write_elem(root, "obsm", {"spatial": spatial}, dataset_kwargs=_NO_SHARDS)
            del spatial
            write_elem(root, "uns", {"spatialfuse": provenance}, dataset_kwargs=_NO_SHARDS)

            spec = TileSpec(
                source=source,
                store=str(tmp),
                kind=kind,
                plan=plan,
                lo=None if kind == "identity" else np.asarray(lo, dtype=np.float64),
                hi=None if kind == "identity" else np.asarray(hi, dtype=np.float64),
            )
            tiles = plan.tiles()
            tic = np.zeros(n, dtype=np.float64)
            found: dict[int, int] = {}
            if dask_client is None:
                _run_local(spec, tiles, reader, tic, found, show_progress)
            else:
                _run_distributed(dask_client, spec, tiles, tic, found, show_progress)

            write_elem(root, "obs", msi_obs(coords, tic), dataset_kwargs=_NO_SHARDS)
            store_info = {
                "format": STORE_FORMAT,
                "version": STORE_VERSION,
                "chunks": [plan.chunk_rows, plan.chunk_cols],
                "shards": None if plan.shards is None else list(plan.shards),
                "compression": compression_name,
                "max_memory": budget,
                "converted_with": "dask.distributed" if client is not None else "local",
                # NaN/±inf intensities of the imzML, stored as 0 (read_msi_zarr warns of them)
                "nonfinite_intensities": [sum(found.values()), len(found)],
            }
            root.attrs.update(
                {
                    "encoding-type": "anndata",
                    "encoding-version": "0.1.0",
                    "spatialfuse": provenance,
                    "spatialfuse_store": store_info,
                }
            )
            _publish(tmp, output, overwrite)
            _finite.warn_nonfinite(reader.path, found)
        finally:  # the folder first: a kill in between leaves it marked, so removable later
            shutil.rmtree(partial, ignore_errors=True)
            seal_partial(partial, marker)
    return output
