"""Resource limits: sizes an input may declare or need before spatialfuse refuses it.

A file can declare sizes its bytes do not hold (the readers refuse those, see docs/fuzzing.md),
but a valid, highly compressible file can also need more memory or time than any machine has:
a 100,000 × 100,000 PNG of one colour is 30 GB decoded from 30 MB. These limits refuse such
inputs at once, with a :class:`~spatialfuse.errors.LimitExceededError` that names the file, the
size and the limit, instead of a ``MemoryError`` minutes later. Each has a documented default
(docs/config.md), can be set for a run (the config's ``limits:`` section), for a block of code
(:func:`limits`) or for the process (environment variables ``SPATIALFUSE_MAX_*``).

Also here: :func:`require_regular_file`, which refuses a FIFO, socket or device before a reader
opens it (opening a FIFO for reading waits, forever, for a writer).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import stat
from collections.abc import Callable, Iterator

from spatialfuse.errors import FileFormatError, LimitExceededError, MissingFileError


@dataclasses.dataclass(frozen=True)
class Limits:
    """The resource limits in force.

    Attributes
    ----------
    max_decoded_image_bytes
        Most bytes of pixels decoded at once from an image (a whole PNG or JPEG, a level or region
        of a TIFF). Default 4 GiB: a 1 µm/px H&E of a whole Visium capture area (6.5 mm square)
        is 127 MB; larger slides are pyramidal TIFFs read by level or region.
    max_spots
        Most barcodes a Visium count matrix may declare. Default 20 million (Visium HD at 2 µm
        bins has about 11 million).
    max_config_bytes
        Largest run config file. Default 1 MiB (the annotated example is 4 KB).
    max_config_nodes
        Most values a config may expand to, counting every use of a YAML alias. Default 100,000.
    max_block_bytes
        Most bytes of a store-backed (dask) MSI table that a streaming step reads and holds at
        once, as float64 (:func:`spatialfuse.tl.map_to_spots` reads such a table one block of
        stored chunks at a time). Default 256 MiB. Not a refusal: a step works in more, smaller
        blocks under a lower limit (one stored chunk at least).
    """

    max_decoded_image_bytes: int = 4 << 30
    max_spots: int = 20_000_000
    max_config_bytes: int = 1 << 20
    max_config_nodes: int = 100_000
    max_block_bytes: int = 256 << 20


#: Environment variable of each limit.
ENVIRONMENT = {f.name: "SPATIALFUSE_" + f.name.upper() for f in dataclasses.fields(Limits)}

_CURRENT: contextvars.ContextVar[Limits | None] = contextvars.ContextVar(
    "spatialfuse_limits", default=None
)


def _positive_int(name: str, value: object, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
    return number


def _from_environment() -> Limits:
    found = {}
    for name, variable in ENVIRONMENT.items():
        raw = os.environ.get(variable)
        if raw:
            found[name] = _positive_int(name, raw.strip(), f"${variable}")
    return Limits(**found)


def current_limits() -> Limits:
    """The limits in force here.

    Those of the innermost :func:`limits` block, else the defaults changed by any
    ``SPATIALFUSE_MAX_*`` environment variables.
    """
    return _CURRENT.get() or _from_environment()


@contextlib.contextmanager
def limits(**changes: int | None) -> Iterator[Limits]:
    """Change some limits for the block (this thread or task); None keeps a limit as it is.

    Parameters
    ----------
    **changes
        Field names of :class:`Limits` and their new values (positive integers).

    Yields
    ------
    Limits
        The limits in force inside the block.
    """
    known = {f.name for f in dataclasses.fields(Limits)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown limits {unknown}; known: {sorted(known)}")
    given = {k: _positive_int(k, v, "limits") for k, v in changes.items() if v is not None}
    new = dataclasses.replace(current_limits(), **given)
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes of an array of ``shape`` with ``itemsize``-byte values (Python ints: no overflow)."""
    n = int(itemsize)
    for side in shape:
        n *= int(side)
    return n


def check_decoded_image(path: os.PathLike | str, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse decoding ``shape`` pixels of ``itemsize`` bytes at once from ``path``.

    Raises
    ------
    LimitExceededError
        The decoded pixels would exceed ``max_decoded_image_bytes``.
    """
    dims = " × ".join(str(int(s)) for s in shape)
    _refuse_image_bytes(
        path,
        shape,
        itemsize,
        lambda need, limit: (
            f"decoding {dims} pixels needs {need}, more than the limit of {limit} "
            "(max_decoded_image_bytes); read a downsampled copy or a region, or raise the "
            f"limit ({_IMAGE_LIMIT_SETTINGS})"
        ),
    )


#: Where ``max_decoded_image_bytes`` is raised (named in the errors).
_IMAGE_LIMIT_SETTINGS = f"the config's limits: section or ${ENVIRONMENT['max_decoded_image_bytes']}"


def _refuse_image_bytes(
    path: os.PathLike | str | None,
    shape: tuple[int, ...],
    itemsize: int,
    message: Callable[[str, str], str],
) -> None:
    """Raise ``LimitExceededError(path, message(needed, limit))`` over max_decoded_image_bytes."""
    n = _nbytes(shape, itemsize)
    limit = current_limits().max_decoded_image_bytes
    if n > limit:
        raise LimitExceededError(path, message(_size(n), _size(limit)))


def check_resampled_image(
    path: os.PathLike | str | None, shape: tuple[int, ...], itemsize: int, why: str
) -> None:
    """Refuse resampling an image to ``shape`` pixels of ``itemsize`` bytes (before allocating).

    Registration resamples images to a working resolution that another input sets (half the MSI
    pixel); a pixel size given in the wrong unit can make that grid absurd (an imzML pixel size of
    50 nm where 50 µm was meant asks for a 70 GiB H&E). The same limit as for decoding applies.

    Parameters
    ----------
    path
        The file whose value set the resolution (named in the error).
    shape
        ``(rows, cols, channels)`` of the resampled image.
    itemsize
        Bytes per value.
    why
        What is resampled and why at that resolution (a clause of the message).

    Raises
    ------
    LimitExceededError
        The resampled image would exceed ``max_decoded_image_bytes``.
    """
    dims = " × ".join(f"{int(s):,}" for s in shape)
    _refuse_image_bytes(
        path,
        shape,
        itemsize,
        lambda need, limit: (
            f"{why}: {dims} values need {need}, more than the limit of {limit} "
            "(max_decoded_image_bytes). Check the pixel sizes (a unit of nm where µm was meant?) "
            "or give pixel_size_um; raise the limit only if that resolution is meant "
            f"({_IMAGE_LIMIT_SETTINGS})"
        ),
    )


def check_count(path: os.PathLike | str, what: str, n: int, name: str) -> None:
    """Refuse ``n`` of ``what`` declared in ``path`` where the limit ``name`` is lower.

    Raises
    ------
    LimitExceededError
        ``n`` exceeds the limit.
    """
    limit = getattr(current_limits(), name)
    if n > limit:
        raise LimitExceededError(
            path,
            f"declares {n:,} {what}, more than the limit of {limit:,} ({name}; raise it in the "
            f"config's limits: section or with ${ENVIRONMENT[name]})",
        )


_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def require_regular_file(path: os.PathLike | str, what: str = "file") -> None:
    """Refuse ``path`` unless it is a regular file (after following symbolic links).

    Raises
    ------
    MissingFileError
        Nothing exists at ``path``.
    FileFormatError
        It is a FIFO, socket, device or folder: reading it could block forever or never end.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingFileError(path, f"no such {what}") from None
    kind = stat.S_IFMT(mode)
    if kind != stat.S_IFREG:
        raise FileFormatError(
            path,
            f"is {_KINDS.get(kind, 'not a regular file')}, not a regular {what}; give the path "
            "of a file (reading a pipe or device could wait forever)",
        )
