"""What several commands share: telling an input's kind from its path."""

from __future__ import annotations

from pathlib import Path


def kind_of(path: Path) -> str:
    """The kind of input at ``path``: ``"imzml"``, ``"visium"`` or ``"image"``.

    A folder, or an ``.h5`` file inside one, is a Space Ranger output; ``.imzML`` and ``.ibd``
    are imzML; anything else is read as an image.

    Parameters
    ----------
    path
        The path given on the command line.

    Returns
    -------
    str
        ``"imzml"``, ``"visium"`` or ``"image"``.
    """
    if path.is_dir():
        return "visium"
    suffix = path.suffix.lower()
    if suffix in (".imzml", ".ibd"):
        return "imzml"
    if suffix == ".h5" and path.parent.is_dir():
        return "visium"
    return "image"
