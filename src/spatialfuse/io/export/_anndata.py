"""Atomic ``.h5ad`` and ``.h5mu`` files: anndata's and mudata's writers through a temporary file."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialfuse._docs import fill_doc, object_and_path
from spatialfuse._io_utils import atomic_path
from spatialfuse.errors import OutputWriteError

if TYPE_CHECKING:
    import anndata
    import mudata

__all__ = ["write_h5ad", "write_h5mu"]


@fill_doc(object_and_path=object_and_path("adata"))
def write_h5ad(
    adata: anndata.AnnData,
    path: str | os.PathLike,
    *,
    compression: str | None = None,
    **kwargs: Any,
) -> Path:
    """Write an AnnData to ``.h5ad`` atomically.

    :func:`anndata.io.write_h5ad` writes to a temporary file beside ``path`` that replaces
    ``path`` only once complete, so an interrupted write leaves the previous file (or none), never
    a truncated one. ``adata`` itself is not modified: anndata's writer turns string columns into
    categoricals in place, so it is handed a shallow copy (new ``obs``/``var`` frames, the same
    data arrays).

    Parameters
    ----------
    {object_and_path}
    compression
        ``"gzip"``, ``"lzf"`` or None, as in :meth:`anndata.AnnData.write_h5ad`.
    **kwargs
        Further arguments of :func:`anndata.io.write_h5ad` (``compression_opts``, ``as_dense``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}")
    path = Path(path)
    target = _shallow_anndata(adata)
    with _hdf5_write_errors(path), atomic_path(path) as tmp:
        target.write_h5ad(tmp, compression=compression, **kwargs)
    return path


@fill_doc(object_and_path=object_and_path("mdata"))
def write_h5mu(
    mdata: mudata.MuData, path: str | os.PathLike, *, images_once: bool = False, **kwargs: Any
) -> Path:
    """Write a MuData to ``.h5mu`` atomically.

    Like :func:`write_h5ad`: :func:`mudata.write_h5mu` writes a temporary file beside ``path``
    that replaces it once complete. mudata's writer converts the string columns of every
    modality to categoricals and refreshes the global annotation in place, so it is handed a
    shallow copy and ``mdata`` is left as it was.

    Parameters
    ----------
    {object_and_path}
    images_once
        Store the Visium images (``uns["spatial"]``) once, in the first modality that holds
        them: the copies in the other modalities and in the global ``uns`` are left out when
        they are the same images (mudata keeps one per modality and one global: three copies
        of each H&E in a joint table of RNA and MSI on the same spots).
    **kwargs
        Passed to :func:`mudata.write_h5mu` (HDF5 dataset options such as ``compression``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import mudata as md

    if not isinstance(mdata, md.MuData):
        raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}")
    path = Path(path)
    target = _shallow_mudata(mdata)
    if images_once:
        _drop_repeated_images(target)
    with _hdf5_write_errors(path), atomic_path(path) as tmp:
        md.write_h5mu(tmp, target, **kwargs)
    return path


@contextlib.contextmanager
def _hdf5_write_errors(path: Path) -> Iterator[None]:
    """Turn the errors HDF5 raises while writing (a full disk, a quota) into OutputWriteError.

    h5py reports a failed ``write()`` as an ``OSError`` carrying the errno (``[Errno 28] Can't
    synchronously write data``) and a failure while flushing or closing, where HDF5 writes too,
    as a bare ``RuntimeError``. ``atomic_path`` has removed the temporary file by then, so
    ``path`` holds what it held before.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, FileExistsError | IsADirectoryError | NotADirectoryError):
            raise
        text = str(exc)
        full = getattr(exc, "errno", None) == errno.ENOSPC or "errno = 28" in text
        reason = "the disk is full" if full else f"{type(exc).__name__}: {text.splitlines()[0]}"
        raise OutputWriteError(
            path,
            f"could not be written ({reason}); its temporary file was removed and any earlier "
            "file at this path is unchanged",
        ) from exc


def _shallow_anndata(adata: anndata.AnnData) -> anndata.AnnData:
    """A new AnnData with copied annotation frames and mappings but the same data arrays."""
    from anndata import AnnData

    if adata.is_view or adata.isbacked:
        return adata.copy() if adata.is_view else adata
    return AnnData(
        X=adata.X,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        raw=adata.raw.to_adata() if adata.raw is not None else None,
        **_mapping_copies(adata, ("uns", "obsm", "varm", "obsp", "varp", "layers")),
    )


def _mapping_copies(data, slots: tuple[str, ...]) -> dict[str, dict]:
    """Each of ``data``'s mapping ``slots`` as a new dict holding the same values."""
    return {slot: dict(getattr(data, slot)) for slot in slots}


def _shallow_mudata(mdata: mudata.MuData) -> mudata.MuData:
    """A MuData over shallow copies of the modalities, with copies of the global annotation.

    Built the way :func:`mudata.read_h5mu` builds one (modalities plus global slots as keywords).
    """
    import mudata as md

    if mdata.is_view:
        return mdata.copy()
    return md.MuData(
        {name: _shallow_anndata(modality) for name, modality in mdata.mod.items()},
        obs=mdata.obs.copy(),
        var=mdata.var.copy(),
        axis=mdata.axis,
        **_mapping_copies(mdata, ("obsm", "varm", "obsp", "varp", "obsmap", "varmap", "uns")),
    )


def _drop_repeated_images(mdata: mudata.MuData) -> None:
    """Delete ``uns["spatial"]`` where it repeats the first modality's (a shallow copy's uns)."""
    holders = [name for name, adata in mdata.mod.items() if "spatial" in adata.uns]
    if not holders:
        return
    first = mdata.mod[holders[0]].uns["spatial"]
    for name in holders[1:]:
        if _same_images(mdata.mod[name].uns["spatial"], first):
            del mdata.mod[name].uns["spatial"]
    if _same_images(mdata.uns.get("spatial"), first):
        del mdata.uns["spatial"]


def _same_images(a: Any, b: Any) -> bool:
    """Whether two ``uns["spatial"]`` entries hold the same libraries with equal images."""
    import numpy as np

    if not isinstance(a, Mapping) or not isinstance(b, Mapping) or set(a) != set(b):
        return False
    for library in a:
        ia = dict((a[library] or {}).get("images", {}) or {})
        ib = dict((b[library] or {}).get("images", {}) or {})
        if set(ia) != set(ib) or not all(np.array_equal(ia[k], ib[k]) for k in ia):
            return False
    return True
