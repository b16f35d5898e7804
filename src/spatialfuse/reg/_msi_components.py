"""The spectral summaries an MSI registration image is made of, in bounded memory.

:func:`~spatialfuse.reg._images.msi_image` needs, for every pixel, its TIC and its scores on the
first principal components of its TIC-normalised spectrum (log and linear scale), and later the
first principal component of the tissue pixels alone. None of that needs the pixels × features
table densified: every quantity here is computed from blocks of rows
(:func:`spatialfuse.core.adata.row_blocks`), dense, sparse and dask-backed alike, and the largest
thing held besides one block is the sample of rows the principal axes come from (at most
:data:`MAX_AXIS_ROWS` × :data:`MAX_COLUMNS`, 320 MB in float64; 16 MB at 100 features).

The numbers are those of the dense computation they replace: the features kept are the
:data:`MAX_COLUMNS` with the largest variance over every pixel; the principal axes are the right
singular vectors of every ``n // MAX_AXIS_ROWS``-th pixel centred on the mean of all pixels (that
sample, at most ``MAX_AXIS_ROWS × MAX_COLUMNS``, is held: its SVD keeps the dense code's signs);
the scores are every pixel's projection.
"""

from __future__ import annotations

import numpy as np

from spatialfuse.core.adata import ROW_BLOCK_BYTES, row_blocks

#: Features taking part in a principal component analysis: the most variable ones.
MAX_COLUMNS = 2000
#: Pixels the principal axes come from (a regular subset of larger images).
MAX_AXIS_ROWS = 20000


class SpectralComponents:
    """TIC and principal components of an MSI table's normalised spectra, from row blocks.

    Parameters
    ----------
    x
        ``(n_pixels, n_features)`` intensities: numpy, scipy sparse or dask.
    n_log, n_linear
        Principal components of the log-scale (``log1p``) and linear-scale TIC-normalised
        spectra to compute.
    ion_columns
        Columns whose intensities are summed per pixel (``ions``), or None.
    max_bytes
        Bytes of one block of rows' work: what bounds memory besides the rows the axes come
        from.

    Attributes
    ----------
    tic, ions
        Per pixel: summed intensity; summed intensity of ``ion_columns`` (None without).
    log_scores, linear_scores
        ``(n_pixels, ≤ n_log)`` and ``(n_pixels, ≤ n_linear)`` principal component scores (no
        columns where the data have fewer than 2 features or 3 pixels).
    """

    def __init__(
        self,
        x,
        *,
        n_log: int,
        n_linear: int,
        ion_columns: list[int] | None = None,
        max_bytes: int = ROW_BLOCK_BYTES,
    ):
        self.x = x
        self.max_bytes = int(max_bytes)
        n, p = x.shape
        self.n, self.p = n, p
        self.tic = np.zeros(n)
        self.ions = None if ion_columns is None else np.zeros(n)
        for idx, block in self._blocks():
            self.tic[idx] = np.asarray(block.sum(axis=1)).ravel()
            if ion_columns is not None:
                self.ions[idx] = np.asarray(block[:, ion_columns].sum(axis=1)).ravel()
        self.median = float(np.median(self.tic)) if n else 0.0
        self.factor = self.median / np.maximum(self.tic, 1e-12)
        self._select_columns()
        self.log_scores, self.linear_scores = self._scores(n_log, n_linear)

    # -- passes over the rows ------------------------------------------------------------------

    def _blocks(self, rows=None, width: int | None = None):
        """Row blocks of ``x`` whose work is about ``width`` float64 values a row."""
        row_bytes = 8 * (self.p if width is None else width) * 4
        return row_blocks(self.x, rows=rows, row_bytes=row_bytes, max_bytes=self.max_bytes)

    def _normalised(self, idx: np.ndarray, block, columns: np.ndarray, log: bool) -> np.ndarray:
        """Dense ``(rows, columns)`` TIC-normalised intensities of a block (log1p if asked)."""
        sub = block if columns.size == self.p else block[:, columns]
        sub = sub.toarray() if hasattr(sub, "toarray") else np.array(sub, dtype=np.float64)
        sub *= self.factor[idx][:, None]
        return np.log1p(sub, out=sub) if log else sub

    def _select_columns(self) -> None:
        """The most variable columns of the log and linear spectra, and their means (all rows)."""
        p = self.p
        # Variances only choose columns: with every column kept, the means are all it needs.
        powers = (1, 2) if p > MAX_COLUMNS else (1,)
        sums = {(name, k): np.zeros(p) for name in ("lin", "log") for k in powers}
        for idx, block in self._blocks():
            if hasattr(block, "indices"):  # CSR: stored values only (log1p(0) = 0)
                row_of = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
                linear = block.data * self.factor[idx][row_of]
                logged = np.log1p(linear)
                for name, values in (("lin", linear), ("log", logged)):
                    for k in powers:
                        weights = values if k == 1 else values * values
                        sums[name, k] += np.bincount(block.indices, weights, minlength=p)
            else:
                linear = block * self.factor[idx][:, None]
                logged = np.log1p(linear)
                for name, values in (("lin", linear), ("log", logged)):
                    for k in powers:
                        sums[name, k] += (values if k == 1 else values * values).sum(axis=0)
        n = max(self.n, 1)
        self.columns, self.means = {}, {}
        for name in ("log", "lin"):
            mean = sums[name, 1] / n
            if p <= MAX_COLUMNS:
                columns = np.arange(p)
            else:
                variance = sums[name, 2] / n - mean * mean
                columns = np.sort(np.argsort(variance, kind="stable")[-MAX_COLUMNS:])
            self.columns[name] = columns
            self.means[name] = mean[columns]

    def _axes(self, rows: np.ndarray, name: str, mean: np.ndarray, n_comps: int) -> np.ndarray:
        """``(columns, ≤ n_comps)`` principal axes of ``rows`` centred on ``mean``."""
        columns = self.columns[name]
        k = columns.size
        if k < 2 or rows.size < 3 or n_comps < 1:
            return np.zeros((k, 0))
        # The sampled rows, centred, are at most MAX_AXIS_ROWS × MAX_COLUMNS (320 MB in
        # float64): their SVD is the dense code's own, so the axes keep its signs (a flipped
        # tissue component flips which regions are bright, and the search then starts
        # elsewhere: a 500k-pixel trio registered 49 µm off with axes of the Gram matrix).
        sample = np.empty((rows.size, k))
        position = 0
        for idx, block in self._blocks(rows, width=k):
            sample[position : position + idx.size] = self._normalised(
                idx, block, columns, name == "log"
            )
            position += idx.size
        sample -= mean
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
        return vt[: min(n_comps, len(vt))].T

    def _scores(self, n_log: int, n_linear: int) -> tuple[np.ndarray, np.ndarray]:
        sample = np.arange(0, self.n, max(1, self.n // MAX_AXIS_ROWS))
        axes = {
            "log": self._axes(sample, "log", self.means["log"], n_log),
            "lin": self._axes(sample, "lin", self.means["lin"], n_linear),
        }
        scores = {name: np.zeros((self.n, axes[name].shape[1])) for name in axes}
        if not any(a.shape[1] for a in axes.values()):
            return scores["log"], scores["lin"]
        width = self.columns["log"].size + self.columns["lin"].size
        shared = np.array_equal(self.columns["log"], self.columns["lin"])
        for idx, block in self._blocks(width=max(width, self.p)):
            # With the same columns on both scales, the block is densified and normalised once.
            linear = self._normalised(idx, block, self.columns["lin"], False) if shared else None
            for name in ("log", "lin"):
                if not axes[name].shape[1]:
                    continue
                if linear is None:
                    values = self._normalised(idx, block, self.columns[name], name == "log")
                else:
                    values = np.log1p(linear) if name == "log" else linear
                scores[name][idx] = (values - self.means[name]) @ axes[name]
        return scores["log"], scores["lin"]

    def tissue_component(self, inside: np.ndarray) -> np.ndarray:
        """Scores of the ``inside`` pixels on the first principal component of those pixels alone.

        Log-scale spectra on the same columns as :attr:`log_scores`, centred on the mean of the
        ``inside`` pixels; the axis from every ``n_inside // MAX_AXIS_ROWS``-th of them.
        """
        rows = np.flatnonzero(inside)
        columns = self.columns["log"]
        total = np.zeros(columns.size)
        for idx, block in self._blocks(rows, width=columns.size):
            total += self._normalised(idx, block, columns, True).sum(axis=0)
        mean = total / max(rows.size, 1)
        sample = rows[:: max(1, rows.size // MAX_AXIS_ROWS)]
        axis = self._axes(sample, "log", mean, 1)
        out = np.zeros(rows.size)
        if not axis.shape[1]:
            return out
        position = 0
        for idx, block in self._blocks(rows, width=columns.size):
            values = self._normalised(idx, block, columns, True)
            out[position : position + idx.size] = (values - mean) @ axis[:, 0]
            position += idx.size
        return out
