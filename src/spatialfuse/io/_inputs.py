"""Which files a reader opens for a path: the one answer the readers and the pipeline's cache share.

The readers resolve partner files themselves (an ``.imzML`` and its ``.ibd`` in any of the cases
the reader accepts, a Space Ranger folder's positions file, scale factors, images and count
matrix). :func:`input_files` asks the same resolution functions, so a step cache keyed on these
files covers every byte the reader reads, whatever path the config names.
"""

from __future__ import annotations

import os
from pathlib import Path

from spatialfuse.errors import ConfigError

#: The kinds of input :func:`input_files` knows (the pipeline's modality kinds).
INPUT_KINDS = ("imzml", "msi_zarr", "histology", "visium")


def input_files(
    path: str | os.PathLike, kind: str, *, counts_file: str | os.PathLike | None = None
) -> list[Path]:
    """The files the reader of ``kind`` opens when given ``path``.

    Parameters
    ----------
    path
        What a config or a caller names: an ``.imzML``, its ``.ibd`` (any case the reader
        accepts) or their stem; a histology image; a Space Ranger folder (or anything
        :func:`~spatialfuse.io.read_visium` accepts).
    kind
        ``"imzml"``, ``"msi_zarr"``, ``"histology"`` or ``"visium"``.
    counts_file
        ``visium``: the count matrix the reader is given (None: its default).

    Returns
    -------
    list of Path
        ``imzml``: ``[.imzML, .ibd]`` as :func:`~spatialfuse.io.imzml.resolve_pair` finds them;
        ``msi_zarr``: the store's metadata files (every ``zarr.json``), not its chunks: a
        store is written once and replaced as a whole (``convert_imzml`` renames a complete
        store into place), which gives each of these files a new inode and ctime;
        ``histology``: the image; ``visium``: :func:`~spatialfuse.io.visium.visium_files`.

    Raises
    ------
    MissingFileError
        A file the reader needs is absent.
    ConfigError
        ``kind`` is not one of :data:`INPUT_KINDS`.
    """
    if kind == "imzml":
        from spatialfuse.io.imzml import resolve_pair

        return list(resolve_pair(path))
    if kind == "visium":
        from spatialfuse.io.visium import visium_files

        return (
            visium_files(path)
            if counts_file is None
            else visium_files(path, counts_file=counts_file)
        )
    if kind == "histology":
        return [Path(path)]
    if kind == "msi_zarr":
        return _store_metadata(Path(path))
    raise ConfigError(
        None, f"unknown input kind {kind!r}; expected one of {', '.join(INPUT_KINDS)}"
    )


def _store_metadata(path: Path) -> list[Path]:
    """Every ``zarr.json`` of a zarr (v3) store, sorted; the store must exist."""
    from spatialfuse.errors import MissingFileError

    if not (path / "zarr.json").is_file():
        raise MissingFileError(path, "no such MSI store (spatialfuse convert writes one)")
    return sorted(p for p in path.rglob("zarr.json") if p.is_file())
