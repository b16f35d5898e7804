"""``spatialfuse convert``: an imzML file into a chunked zarr store, out of core."""

from __future__ import annotations

from pathlib import Path

import click

from spatialfuse.cli._echo import echo, failure
from spatialfuse.cli._options import choice_option


def _parse_chunks(ctx, param, value):
    if value is None:
        return None
    try:
        rows, cols = (int(part) for part in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected ROWS,COLS (e.g. 4096,32), got {value!r}") from None
    return rows, cols


@click.command("convert")
@click.argument("input", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option(
    "--max-memory",
    default="2GB",
    show_default=True,
    help="Most memory the conversion holds at once (per task on a cluster), e.g. 512MB.",
)
@click.option(
    "--mz",
    "mz",
    type=float,
    multiple=True,
    help="An m/z to extract (repeatable); each feature sums ± --ppm / --tol around it.",
)
@click.option("--ppm", type=float, default=None, help="Window half-width in ppm.")
@click.option("--tol", type=float, default=None, help="Window half-width in m/z units.")
@click.option(
    "--pixel-size", type=float, default=None, help="Pixel size in µm, where the file has none."
)
@click.option(
    "--chunks",
    callback=_parse_chunks,
    default=None,
    help="Stored chunk shape ROWS,COLS (pixels, m/z); default 32 m/z × up to 8 MiB.",
)
@choice_option(
    "--compression",
    ["auto", "lz4", "zstd", "none"],
    "auto",
    help="auto: none for continuous data on its own axis, lz4 for binned tables.",
)
@click.option(
    "--shards/--no-shards",
    default=True,
    show_default=True,
    help="Store chunks side by side in shards of ~128 MB (zarr v3), one file each.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run on a dask.distributed scheduler, e.g. tcp://10.0.0.5:8786 (shared filesystem).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing store at OUTPUT.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def convert(
    input: Path,
    output: Path,
    max_memory: str,
    mz: tuple[float, ...],
    ppm: float | None,
    tol: float | None,
    pixel_size: float | None,
    chunks: tuple[int, int] | None,
    compression: str,
    shards: bool,
    scheduler: str | None,
    overwrite: bool,
    progress: bool,
) -> None:
    """Convert INPUT (.imzML) into the zarr store OUTPUT, in bounded memory.

    Continuous files keep their m/z axis; processed files are binned onto a common axis (or
    onto --mz windows). The store is written beside OUTPUT under a hidden name and renamed
    when complete. Read it with spatialfuse.io.read_msi_zarr.
    """
    from spatialfuse.errors import SpatialfuseError
    from spatialfuse.io.zarr_msi import convert_imzml

    try:
        path = convert_imzml(
            input,
            output,
            mz=list(mz) if mz else None,
            ppm=ppm,
            tol=tol,
            pixel_size_um=pixel_size,
            max_memory=max_memory,
            chunks=chunks,
            compression=compression,
            shards=shards,
            client=scheduler,
            overwrite=overwrite,
            show_progress=progress,
        )
    except (SpatialfuseError, ValueError, FileExistsError, ImportError, OSError) as exc:
        raise failure(exc) from exc
    echo(f"wrote {path}")
