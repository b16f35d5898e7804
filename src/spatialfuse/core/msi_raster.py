"""The MSI raster of an AnnData read by ``read_imzml``: pixel squares and O(1) point lookup.

An MSI pixel at 1-based grid position ``(x, y)`` covers ``[(x − 1)·px, x·px] × [(y − 1)·py, y·py]``
µm of the MSI frame (``docs/coordinates.md``), so the pixel under a point ``(u, v)`` µm is at grid
position ``(⌊u / px⌋ + 1, ⌊v / py⌋ + 1)``: finding it is a floor and one table look-up, whatever
the number of pixels. The table is a dense array over the bounding box of the grid positions
(``-1`` where there is no spectrum) unless that box is much larger than the number of spectra
(combined acquisitions far apart), in which case sorted keys and a binary search replace it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.core.adata import check_adata
from spatialfuse.errors import CalibrationError, FileFormatError

if TYPE_CHECKING:
    import anndata

# A dense look-up table may hold this many entries per spectrum (plus a fixed allowance) before
# sorted keys replace it.
_DENSE_FACTOR = 4
_DENSE_ALLOWANCE = 1 << 22


class MsiRaster:
    """Pixel geometry of an MSI AnnData (``read_imzml`` layout).

    Parameters
    ----------
    grid_x, grid_y
        1-based grid positions of the spectra (``obs["imzml_x"]``, ``obs["imzml_y"]``).
    pixel_size_um
        ``(px, py)`` in µm.
    """

    def __init__(self, grid_x, grid_y, pixel_size_um) -> None:
        self.grid_x = np.asarray(grid_x, dtype=np.int64)
        self.grid_y = np.asarray(grid_y, dtype=np.int64)
        self.pixel_size_um = (float(pixel_size_um[0]), float(pixel_size_um[1]))
        self.n = int(self.grid_x.size)
        if self.n:
            self.origin = (int(self.grid_x.min()), int(self.grid_y.min()))
            self.shape = (
                int(self.grid_x.max()) - self.origin[0] + 1,
                int(self.grid_y.max()) - self.origin[1] + 1,
            )
        else:
            self.origin, self.shape = (1, 1), (0, 0)
        keys = (self.grid_y - self.origin[1]) * self.shape[0] + (self.grid_x - self.origin[0])
        n_cells = self.shape[0] * self.shape[1]
        self._table: np.ndarray | None = None
        self._sorted_keys: np.ndarray | None = None
        self._sorted_rows: np.ndarray | None = None
        if n_cells <= _DENSE_FACTOR * self.n + _DENSE_ALLOWANCE:
            dtype = np.int32 if self.n < 2**31 - 1 else np.int64
            table = np.full(n_cells, -1, dtype=dtype)
            table[keys] = np.arange(self.n, dtype=dtype)
            if self.n and int(np.count_nonzero(table >= 0)) != self.n:
                raise FileFormatError(None, _duplicate_message(keys, self.grid_x, self.grid_y))
            self._table = table
        else:
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            if sorted_keys.size > 1 and (np.diff(sorted_keys) == 0).any():
                raise FileFormatError(None, _duplicate_message(keys, self.grid_x, self.grid_y))
            self._sorted_keys, self._sorted_rows = sorted_keys, order

    @classmethod
    def from_anndata(
        cls, msi: anndata.AnnData, name: str = "msi", *, need_spectra: bool = False
    ) -> MsiRaster:
        """Validate the ``read_imzml`` layout of ``msi`` and build its raster.

        The one reading of the MSI frame: ``uns["spatialfuse"]["pixel_size_um"]``,
        ``obs["imzml_x"/"imzml_y"]`` and, where present, ``obsm["spatial"]`` (which must be the
        pixel centres) and ``obs["imzml_z"]`` (one section only).

        Parameters
        ----------
        msi
            An MSI AnnData as :func:`spatialfuse.io.read_imzml` returns it.
        name
            What to call ``msi`` in error messages.
        need_spectra
            Refuse a table without rows (a raster of no pixels).

        Returns
        -------
        MsiRaster
            The pixel grid of ``msi``, rows in ``msi.obs`` order.

        Raises
        ------
        TypeError
            ``msi`` is not an AnnData.
        spatialfuse.errors.CalibrationError
            The pixel size is missing, not positive or not finite.
        spatialfuse.errors.FileFormatError
            Grid positions missing, not integers, shared by several spectra or from several
            sections; ``obsm["spatial"]`` not the pixel centres; no rows with ``need_spectra``.
        """
        check_adata(msi, name, reader="read_imzml", need_x=False)
        info = msi.uns.get("spatialfuse", None)
        size = None if not isinstance(info, dict) else info.get("pixel_size_um", None)
        if size is None:
            raise CalibrationError(
                None,
                f"{name} has no MSI pixel size: uns['spatialfuse']['pixel_size_um'] is missing. "
                "Read the data with sf.io.read_imzml (pass pixel_size_um= there if the file lacks "
                f"it), or set {name}.uns['spatialfuse'] = {{'pixel_size_um': [px, py]}} in µm",
            )
        try:
            size = np.broadcast_to(np.asarray(size, dtype=np.float64).ravel(), (2,))
        except (TypeError, ValueError):
            raise CalibrationError(
                None,
                f"{name}: uns['spatialfuse']['pixel_size_um'] must be one number or [px, py] in "
                f"µm, got {size!r}",
            ) from None
        if not (np.isfinite(size).all() and (size > 0).all()):
            raise CalibrationError(
                None, f"{name}: pixel_size_um must be positive and finite, got {size}"
            )
        missing = [c for c in ("imzml_x", "imzml_y") if c not in msi.obs]
        if missing:
            raise FileFormatError(
                None,
                f"{name} has no MSI grid positions (obs {missing} missing); expected the layout "
                "of sf.io.read_imzml: obs['imzml_x'], obs['imzml_y'] = 1-based grid positions",
            )
        try:
            gx = np.asarray(msi.obs["imzml_x"], dtype=np.float64)
            gy = np.asarray(msi.obs["imzml_y"], dtype=np.float64)
        except (TypeError, ValueError):
            gx = gy = np.array([np.nan])
        if not (np.isfinite(gx).all() and np.isfinite(gy).all()) or (
            (gx != np.round(gx)).any() or (gy != np.round(gy)).any()
        ):
            raise FileFormatError(
                None, f"{name}: obs['imzml_x'/'imzml_y'] must be integer grid positions"
            )
        if need_spectra and not gx.size:
            raise FileFormatError(None, f"{name} has no spectra (no rows): no MSI image to make")
        if "imzml_z" in msi.obs:
            gz = np.asarray(msi.obs["imzml_z"])
            if gz.size and (gz != gz[0]).any():
                raise FileFormatError(
                    None,
                    f"{name} holds 3-D MSI data (several obs['imzml_z'] values); map one section "
                    f"at a time, e.g. {name}[{name}.obs['imzml_z'] == z]",
                )
        raster = cls(gx.astype(np.int64), gy.astype(np.int64), size)
        if "spatial" in msi.obsm and raster.n:
            spatial = np.asarray(msi.obsm["spatial"], dtype=np.float64)
            expected = raster.centres_um()
            tolerance = 1e-6 * max(raster.pixel_size_um) + 1e-9
            if spatial.shape != expected.shape or not (
                np.abs(spatial - expected).max() <= tolerance
            ):
                raise FileFormatError(
                    None,
                    f"{name}.obsm['spatial'] is not the MSI pixel centres ((x - 0.5)·px, "
                    "(y - 0.5)·py) µm of obs['imzml_x'/'imzml_y'] at pixel size "
                    f"{list(raster.pixel_size_um)} µm; spatialfuse needs the MSI in its own frame, "
                    "as sf.io.read_imzml writes it, and a transform to carry it into another",
                )
        return raster

    def centres_um(self, rows=None) -> np.ndarray:
        """Pixel centres ``((x − ½)·px, (y − ½)·py)`` in µm, ``(n, 2)`` (or of ``rows``)."""
        gx, gy = self.grid_x, self.grid_y
        if rows is not None:
            gx, gy = gx[rows], gy[rows]
        return np.stack(
            [(gx - 0.5) * self.pixel_size_um[0], (gy - 0.5) * self.pixel_size_um[1]], axis=1
        )

    def locate(self, points_um: np.ndarray) -> np.ndarray:
        """Row index of the spectrum whose pixel holds each point, ``-1`` where none does."""
        p = np.asarray(points_um, dtype=np.float64)
        out = np.full(len(p), -1, dtype=np.int64)
        if not self.n or not len(p):
            return out
        with np.errstate(invalid="ignore"):
            col = np.floor(p[:, 0] / self.pixel_size_um[0]) + (1 - self.origin[0])
            row = np.floor(p[:, 1] / self.pixel_size_um[1]) + (1 - self.origin[1])
            inside = (col >= 0) & (col < self.shape[0]) & (row >= 0) & (row < self.shape[1])
        keys = row[inside].astype(np.int64) * self.shape[0] + col[inside].astype(np.int64)
        if self._table is not None:
            out[inside] = self._table[keys]
        else:
            pos = np.searchsorted(self._sorted_keys, keys)
            pos = np.minimum(pos, self._sorted_keys.size - 1)
            found = self._sorted_keys[pos] == keys
            out[np.flatnonzero(inside)[found]] = self._sorted_rows[pos[found]]
        return out


def _duplicate_message(keys: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> str:
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    i = int(first[np.argmax(counts)])
    return (
        f"several spectra share the grid position ({int(gx[i])}, {int(gy[i])}); combined runs "
        "must use offset coordinates (or be mapped one at a time)"
    )
