"""An imzML opened on dask workers with the offset table the client built: no worker scans it.

The client writes its reader's offset table once (:func:`share_table`), to a file every worker
sees at the same path (beside the output of a conversion), with the identity of both files. Each
worker process opens the imzML with that table (:func:`open_shared`) and keeps the reader for its
next tasks; a file that changed since the table was written is refused.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialfuse.errors import FileFormatError

#: Readers a worker process keeps open (the newest ones).
_KEEP = 2
_READERS: dict[tuple, object] = {}
_READERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class SharedInput:
    """What a task needs to open the input: paths and a few numbers, never an open reader.

    Attributes
    ----------
    imzml
        Absolute path of the ``.imzML`` file.
    offsets
        The shared offset table (``.npz`` written by :func:`share_table`), or None: the worker
        opens the file as usual (its own offset-table cache, else a scan).
    n_spectra, ibd_size
        The input as the client saw it, to refuse a file that changed since.
    cache
        Use the offset-table cache where ``offsets`` is None.
    """

    imzml: str
    offsets: str | None
    n_spectra: int
    ibd_size: int
    cache: bool = True


def _identity(reader) -> np.ndarray:
    stats = [os.stat(reader.path), os.stat(reader.ibd_path)]
    return np.array([v for s in stats for v in (s.st_size, s.st_mtime_ns)], dtype=np.int64)


def share_table(reader, path: str | os.PathLike | None, *, cache: bool = True) -> SharedInput:
    """Write ``reader``'s offset table to ``path`` (``.npz``) once; return what tasks need.

    Parameters
    ----------
    reader
        An open :class:`~spatialfuse.io.imzml.ImzMLReader`.
    path
        Where to write the table (a filesystem every worker sees at the same path), or None to
        write nothing: workers then open the file themselves.
    cache
        Where ``path`` is None: whether workers use their offset-table cache.

    Returns
    -------
    SharedInput
        The paths and sizes a task opens the input from.
    """
    offsets = None
    if path is not None:
        path = Path(path)
        with open(path, "wb") as handle:
            np.savez(handle, _identity=_identity(reader), **reader._table.to_arrays())
        offsets = str(path)
    return SharedInput(
        imzml=str(reader.path.absolute()),
        offsets=offsets,
        n_spectra=int(reader.n_spectra),
        ibd_size=int(reader._acc.size),
        cache=bool(cache),
    )


def _load(source: SharedInput):
    from spatialfuse.io.imzml._reader import ImzMLReader
    from spatialfuse.io.imzml._table import SpectrumTable

    if source.offsets is None:
        return ImzMLReader(source.imzml, cache=source.cache)
    try:
        with open(source.offsets, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        identity = arrays.pop("_identity")
        table = SpectrumTable.from_arrays(arrays)
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(
            source.offsets, f"the offset table shared for {source.imzml} cannot be read: {exc}"
        ) from exc
    reader = ImzMLReader(source.imzml, offsets=table)
    if not np.array_equal(_identity(reader), identity):
        raise FileFormatError(
            source.imzml,
            "changed (size or modification time of the .imzML or .ibd) since its offset table "
            f"was shared in {source.offsets}",
        )
    return reader


def open_shared(source: SharedInput):
    """The reader of ``source``, opened once per process and kept for the next tasks.

    Raises
    ------
    FileFormatError
        The input changed since the client opened it, or the shared table is unreadable.
    """
    stat = os.stat(source.imzml)
    key = (source.imzml, stat.st_size, stat.st_mtime_ns, source.offsets, source.cache)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            # Forget older files (not closed: a task in another thread may still use them; the
            # map goes when the last of them is done).
            while len(_READERS) >= _KEEP:
                _READERS.pop(next(iter(_READERS)))
            reader = _load(source)
            _READERS[key] = reader
    if reader.n_spectra != source.n_spectra or reader._acc.size != source.ibd_size:
        raise FileFormatError(
            source.imzml,
            f"changed during the conversion: {reader.n_spectra} spectra now, "
            f"{source.n_spectra} when it began",
        )
    return reader
