"""``ImzMLReader``: fast, exact access to an imzML + ibd pair."""

from __future__ import annotations

import mmap
import os
import time
import warnings
from pathlib import Path

import numpy as np

from spatialfuse import _cache
from spatialfuse._limits import require_regular_file
from spatialfuse._logging import logger
from spatialfuse.core.mz import mz_windows
from spatialfuse.errors import CalibrationError, DataWarning, FileFormatError, MissingFileError
from spatialfuse.io.imzml import _finite, _kernels
from spatialfuse.io.imzml._access import IbdAccess
from spatialfuse.io.imzml._header import ImzMLHeader, parse_header
from spatialfuse.io.imzml._positions import check_unique_positions
from spatialfuse.io.imzml._scan_fast import NotRegular, scan_fast
from spatialfuse.io.imzml._scan_generic import scan_generic
from spatialfuse.io.imzml._table import DTYPE_CODES, SpectrumTable

#: Bump when the offset-table format or the scanners' output changes: old cache entries then miss.
SCAN_VERSION = "1"
#: Largest image (grid cells) that to_image/ion_image will allocate.
MAX_IMAGE_PIXELS = 400_000_000
#: Images may hold this many grid cells per spectrum (sparse or multi-region acquisitions) ...
MAX_CELLS_PER_SPECTRUM = 64
#: ... or this many cells whatever the spectrum count: positions beyond either are implausible.
MIN_IMAGE_PIXELS_ALLOWED = 1 << 24


def check_grid_size(path, rows: int, cols: int, n_spectra: int, hint: str = "") -> None:
    """Refuse an image of ``rows × cols`` grid cells that ``n_spectra`` spectra cannot fill.

    Positions that far apart are damage, not an acquisition, and would allocate gigabytes: the
    limit is ``max(MIN_IMAGE_PIXELS_ALLOWED, MAX_CELLS_PER_SPECTRUM × n_spectra)`` cells, at most
    ``MAX_IMAGE_PIXELS``.
    """
    allowed = min(
        MAX_IMAGE_PIXELS, max(MIN_IMAGE_PIXELS_ALLOWED, MAX_CELLS_PER_SPECTRUM * n_spectra)
    )
    if rows * cols > allowed:
        raise FileFormatError(
            path,
            f"positions span {cols:,} × {rows:,} grid cells for {n_spectra:,} spectra; an image "
            f"of that size (over {allowed:,} pixels) is refused as implausible — check the "
            f"positions (IMS:1000050/IMS:1000051){', ' + hint if hint else ''}",
        )


def resolve_pair(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return the ``(.imzML, .ibd)`` pair for a path to either file (or to their common stem)."""
    path = Path(path)
    candidates = [path]
    if path.suffix.lower() not in (".imzml", ".ibd"):
        candidates = [path.with_suffix(s) for s in (".imzML", ".imzml", ".IMZML")]
    elif path.suffix.lower() == ".ibd":
        candidates = [path.with_suffix(s) for s in (".imzML", ".imzml", ".IMZML")]
    xml = next((c for c in candidates if c.is_file()), None)
    if xml is None:
        if path.exists() and path.is_dir():
            raise FileFormatError(path, "is a folder, not an imzML file")
        for candidate in candidates:  # a FIFO or device: refused, never opened (it could block)
            if os.path.exists(candidate):
                require_regular_file(candidate, "imzML file")
        raise MissingFileError(path, "no such imzML file")
    ibd = next(
        (xml.with_suffix(s) for s in (".ibd", ".IBD", ".Ibd") if xml.with_suffix(s).is_file()),
        None,
    )
    if ibd is None:
        for suffix in (".ibd", ".IBD", ".Ibd"):
            if os.path.exists(xml.with_suffix(suffix)):
                require_regular_file(xml.with_suffix(suffix), ".ibd file")
        raise MissingFileError(
            xml.with_suffix(".ibd"),
            f"the binary data file that belongs to {xml.name} is missing "
            "(an imzML file always comes with a .ibd of the same name)",
        )
    return xml, ibd


def _open_map(path: Path):
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return b""
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


#: Spectra per block where :meth:`ImzMLReader.mz_range` reads first and last m/z values.
_MZ_RANGE_BLOCK = 1 << 13


class ImzMLReader:
    """Read an imzML file (continuous or processed) exactly and fast.

    The XML is scanned once into an offset table (cached on disk, keyed on both files' identity, so
    a second open is near-instant and an edited file is rescanned); the ``.ibd`` is memory-mapped
    and read with vectorised numpy. Values come back exactly as stored: same numbers, same dtypes.

    Parameters
    ----------
    path
        The ``.imzML`` file (or its ``.ibd``, or their common stem).
    cache
        Use and fill the offset-table cache (see :mod:`spatialfuse._cache`).
    check_uuid
        Refuse a ``.ibd`` whose UUID differs from the one the ``.imzML`` declares.
    validate
        Parse the whole XML with lxml (slower: about pyimzML's speed) so that a document that is
        malformed anywhere is refused. By default the fast scanner checks, exactly, only the text
        it reads (positions, offsets, lengths, array declarations); damage elsewhere in a spectrum
        does not change what is read.
    offsets
        The offset table of this very file, built already (by another reader: a conversion's
        client shares its table with the workers): the XML's spectra are not scanned, and the
        cache is not used. It is checked against the ``.ibd`` like a scanned one.
    map_ranges
        Share the fast scan out in byte ranges of the XML: ``map_ranges(function, tasks)`` runs
        ``function`` on each task and returns the results in order, such as
        ``concurrent.futures.ProcessPoolExecutor().map`` (``convert_imzml(..., client=)`` passes
        one that runs them on the dask workers). The table is the one a scan here gives. Files
        the fast scanner does not take (and ``validate=True``) are scanned here, serially.

    Attributes
    ----------
    path, ibd_path
        The two files.
    n_spectra
        Number of spectra.
    coordinates
        ``(n_spectra, 3)`` int64 array of grid positions ``(x, y, z)`` exactly as written in the
        file (1-based by the imzML convention; ``z`` is 1 where the file gives none).
    pixel_size_um
        ``(x, y)`` pixel size in µm from the file, or None where the file does not state it.
    mode
        ``"continuous"`` (one shared m/z array) or ``"processed"`` (an m/z array per spectrum).
    mz_dtype, intensity_dtype
        numpy dtypes of the stored arrays.
    uuid
        The 32-hex-digit UUID shared by the two files, or None.
    scan_method
        ``"cache"``, ``"fast"``, ``"generic"`` or ``"shared"`` (given as ``offsets``): how the
        offset table was obtained.

    Notes
    -----
    Pixel ``(x, y)`` covers ``[(x-1)·px, x·px] × [(y-1)·py, y·py]`` µm; see ``docs/coordinates.md``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        cache: bool = True,
        check_uuid: bool = True,
        validate: bool = False,
        offsets: SpectrumTable | None = None,
        map_ranges=None,
    ):
        self.path, self.ibd_path = resolve_pair(path)
        self._ibd_mm = None
        self._acc: IbdAccess | None = None
        t0 = time.perf_counter()
        try:
            xml_mm = _open_map(self.path)
        except OSError as exc:
            raise FileFormatError(self.path, f"cannot be read: {exc}") from exc
        try:
            self._header: ImzMLHeader = parse_header(xml_mm, self.path)
            if offsets is not None:
                # A copy: finalise() fills its encoded lengths in place.
                table = SpectrumTable.from_arrays(
                    {name: np.array(v) for name, v in offsets.to_arrays().items()}
                )
                self.scan_method = "shared"
            else:
                table, self.scan_method = self._offset_table(
                    xml_mm, cache=cache, validate=validate, map_ranges=map_ranges
                )
        finally:
            if isinstance(xml_mm, mmap.mmap):
                try:
                    xml_mm.close()
                except BufferError:
                    pass  # a view is still alive somewhere; the map goes with it
        try:
            self._ibd_mm = _open_map(self.ibd_path)
        except OSError as exc:
            raise FileFormatError(self.ibd_path, f"cannot be read: {exc}") from exc
        ibd_size = len(self._ibd_mm)
        if ibd_size < 16:
            raise FileFormatError(
                self.ibd_path, f"has {ibd_size} bytes, fewer than its 16-byte UUID: it is truncated"
            )
        self._check_uuid(check_uuid)
        table.finalise(ibd_size, self.path, self.ibd_path)
        check_unique_positions(np.stack([table.x, table.y, table.z], axis=1), self.path)
        self._table = table
        self._mz_range: tuple[float, float] | None = None
        self._acc = IbdAccess(self._ibd_mm, table, self.ibd_path)
        if self._acc.mismatched.size:
            first = int(self._acc.mismatched[0])
            warnings.warn(
                f"{self.path}: {self._acc.mismatched.size} spectra (first: {first}) have m/z and "
                "intensity arrays of different lengths; peaks are paired by index over the "
                "shorter array",
                DataWarning,
                stacklevel=2,
            )
        self._resolve_mode()
        logger.debug(
            "opened %s: %d spectra in %.3f s (%s)",
            self.path,
            table.n,
            time.perf_counter() - t0,
            self.scan_method,
        )

    # ------------------------------------------------------------------ opening
    def _offset_table(
        self, xml_mm, *, cache: bool, validate: bool, map_ranges=None
    ) -> tuple[SpectrumTable, str]:
        if validate:
            return scan_generic(self.path, self._header), "generic"

        def scan() -> tuple[SpectrumTable, str]:
            try:
                table = scan_fast(xml_mm, self._header, map_ranges=map_ranges, path=self.path)
                return table, "fast"
            except NotRegular as why:
                logger.debug("%s: general scanner used (%s)", self.path, why)
                return scan_generic(self.path, self._header), "generic"

        if not cache:
            table, method = scan()
        else:
            key = _cache.cache_key(
                SCAN_VERSION,
                _cache.file_fingerprint(self.path),
                _cache.file_fingerprint(self.ibd_path),
            )

            def lookup() -> tuple[SpectrumTable, str] | None:
                arrays = _cache.load_npz("imzml", key)
                try:
                    return None if arrays is None else (SpectrumTable.from_arrays(arrays), "cache")
                except (KeyError, TypeError, ValueError):
                    return None  # a damaged entry is a miss

            (table, method), _ = _cache.cached(
                lookup, scan, lambda found: _cache.save_npz("imzml", key, found[0].to_arrays())
            )
        count = self._header.spectrum_count
        if method != "cache" and count is not None and table.n != count:
            warnings.warn(
                f"{self.path}: spectrumList count says {count} spectra, "
                f"the file holds {table.n}; all {table.n} are read",
                DataWarning,
                stacklevel=3,
            )
        return table, method

    def _check_uuid(self, check: bool) -> None:
        ibd_uuid = bytes(self._ibd_mm[:16]).hex()
        if self._header.uuid is None:
            warnings.warn(
                f"{self.path}: declares no UUID (IMS:1000080); cannot check that "
                f"{self.ibd_path.name} belongs to it",
                DataWarning,
                stacklevel=3,
            )
        elif check and ibd_uuid != self._header.uuid:
            raise FileFormatError(
                self.ibd_path,
                f"UUID {ibd_uuid} does not match {self._header.uuid} declared in {self.path.name}: "
                "the .ibd belongs to another acquisition (pass check_uuid=False to read anyway)",
            )

    def _resolve_mode(self) -> None:
        mode = self._header.mode
        shared = _kernels.shared_mz_axis(self._acc) is not None
        if mode in (None, "conflicting"):
            inferred = "continuous" if shared else "processed"
            what = "declares neither" if mode is None else "declares both"
            warnings.warn(
                f"{self.path}: {what} continuous (IMS:1000030) nor processed (IMS:1000031); "
                f"the arrays say {inferred}",
                DataWarning,
                stacklevel=3,
            )
            mode = inferred
        self.mode: str = mode

    # ------------------------------------------------------------------ metadata
    @property
    def n_spectra(self) -> int:
        """Number of spectra."""
        return self._table.n

    @property
    def peak_counts(self) -> np.ndarray:
        """Points (peaks, or profile points) in each spectrum's m/z array, ``(n_spectra,)``."""
        return self._table.mz_length

    @property
    def coordinates(self) -> np.ndarray:
        """``(n_spectra, 3)`` grid positions ``(x, y, z)`` exactly as written in the file."""
        t = self._table
        return np.stack([t.x, t.y, t.z], axis=1)

    @property
    def pixel_size_um(self) -> tuple[float, float] | None:
        """``(x, y)`` pixel size in µm as stated by the file, or None."""
        return self._header.pixel_size_um

    @property
    def spectrum_type(self) -> str | None:
        """``"centroid"`` (MS:1000127), ``"profile"`` (MS:1000128) as the file declares, else None.

        ``"conflicting"`` where it declares both. Read from ``fileContent``, else from the
        referenceable param groups. Writers do not always state it right.
        """
        return self._header.spectrum_type

    def spectrum_kind(self) -> tuple[str, str]:
        """``("centroid" | "profile", how it was decided)``: what the spectra hold.

        A sample of spectra decides where they show peaks sampled across their width (profile),
        whatever the file declares; otherwise the declaration (:attr:`spectrum_type`), and
        centroid where there is none. Writers mislabel, so the data come first.
        """
        from spatialfuse.io.imzml._spectrum_kind import spectrum_kind

        return spectrum_kind(self)

    @property
    def uuid(self) -> str | None:
        """The UUID the ``.imzML`` declares (32 lowercase hex digits), or None."""
        return self._header.uuid

    @property
    def mz_dtype(self) -> np.dtype:
        """Dtype of the stored m/z arrays."""
        return self._dtype("mz")

    @property
    def intensity_dtype(self) -> np.dtype:
        """Dtype of the stored intensity arrays."""
        return self._dtype("int")

    def _dtype(self, prefix: str) -> np.dtype:
        codes = np.unique(getattr(self._table, f"{prefix}_dtype"))
        if codes.size == 0:
            return DTYPE_CODES[0]
        return np.result_type(*[DTYPE_CODES[c] for c in codes.tolist()])

    @property
    def compression(self) -> str:
        """``"none"`` or ``"zlib"`` (where any array is compressed)."""
        return "zlib" if self._acc.compressed else "none"

    @property
    def grid_origin(self) -> tuple[int, int]:
        """``(x, y)`` grid position of the top-left pixel of images returned by this reader."""
        if self.n_spectra == 0:
            return (1, 1)
        return (int(self._table.x.min()), int(self._table.y.min()))

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of images returned by this reader: the bounding box of all positions."""
        if self.n_spectra == 0:
            return (0, 0)
        t = self._table
        # Python ints: positions near the int64 limits must not wrap around.
        return (int(t.y.max()) - int(t.y.min()) + 1, int(t.x.max()) - int(t.x.min()) + 1)

    def shared_mz_axis(self) -> np.ndarray | None:
        """The m/z array every spectrum shares (continuous data), or None when each has its own."""
        return _kernels.shared_mz_axis(self._acc)

    def mz_range(self) -> tuple[float, float]:
        """Smallest and largest m/z over all spectra (reads the first and last value of each)."""
        if self._mz_range is None:
            self._mz_range = self._read_mz_range()
        return self._mz_range

    def _read_mz_range(self) -> tuple[float, float]:
        t = self._table
        nonempty = np.flatnonzero(t.mz_length > 0)
        if nonempty.size == 0:
            return (float("nan"), float("nan"))
        if self._acc.compressed or (t.mz_dtype != t.mz_dtype[0]).any():
            lows, highs = [], []
            for i in nonempty.tolist():
                mz = self._acc.array(i, "mz")
                lows.append(mz.min())
                highs.append(mz.max())
            return (float(min(lows)), float(max(highs)))
        dtype = DTYPE_CODES[int(t.mz_dtype[0])]
        lows, highs = [], []
        # In blocks of spectra, so that a streaming read gives each block's pages back.
        for a in range(0, nonempty.size, _MZ_RANGE_BLOCK):
            rows = nonempty[a : a + _MZ_RANGE_BLOCK]
            first = self._acc.gather(dtype, t.mz_offset[rows])
            last = self._acc.gather(
                dtype, t.mz_offset[rows] + (t.mz_length[rows] - 1) * dtype.itemsize
            )
            self._acc.done_with(int(rows[0]), int(rows[-1]) + 1)
            both = np.concatenate([first, last]).astype(np.float64)
            lows.append(both.min())  # NaN where a value is NaN, as over the whole at once
            highs.append(both.max())
        return (float(np.min(lows)), float(np.max(highs)))

    def require_pixel_size(self, pixel_size_um=None) -> tuple[float, float]:
        """The pixel size to use: ``pixel_size_um`` if given, else the file's; error if neither."""
        if pixel_size_um is not None:
            size = np.broadcast_to(np.asarray(pixel_size_um, dtype=np.float64), (2,))
            if not (np.isfinite(size).all() and (size > 0).all()):
                raise CalibrationError(
                    self.path, f"pixel_size_um must be positive numbers, got {pixel_size_um!r}"
                )
            return (float(size[0]), float(size[1]))
        if self.pixel_size_um is None:
            raise CalibrationError(
                self.path,
                "the file does not state its pixel size (IMS:1000046/IMS:1000047); pass it as "
                "pixel_size_um= (e.g. pixel_size_um=50 for 50 µm square pixels)",
            )
        return self.pixel_size_um

    # ------------------------------------------------------------------ data
    def _check_index(self, i) -> int:
        try:
            index = int(i)
        except (TypeError, ValueError):
            raise TypeError(f"spectrum index must be an integer, got {i!r}") from None
        if index != i:
            raise TypeError(f"spectrum index must be an integer, got {i!r}")
        n = self.n_spectra
        if not -n <= index < n:
            raise IndexError(f"spectrum index {index} out of range for {n} spectra in {self.path}")
        return index % n

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """m/z and intensity arrays of spectrum ``i`` (0-based), as stored (copies; NaN kept)."""
        index = self._check_index(i)
        return self._acc.array(index, "mz").copy(), self._acc.array(index, "int").copy()

    def to_image(self, values, *, fill: float = np.nan) -> np.ndarray:
        """Place per-spectrum ``values`` (length ``n_spectra``, or ``(n_spectra, k)``) on the grid.

        Returns an array of shape ``grid_shape`` (or ``(k, *grid_shape)``); image row ``r``,
        column ``c`` holds the spectrum at grid position ``(x0 + c, y0 + r)`` with
        ``(x0, y0) = grid_origin``.
        Positions without a spectrum hold ``fill``. An image of more than
        ``max(MIN_IMAGE_PIXELS_ALLOWED, MAX_CELLS_PER_SPECTRUM × n_spectra)`` cells (at most
        ``MAX_IMAGE_PIXELS``) is refused with :class:`~spatialfuse.errors.FileFormatError`:
        positions that far apart are damage, not an acquisition, and would allocate gigabytes.
        """
        values = np.asarray(values)
        if values.shape[0] != self.n_spectra:
            raise ValueError(f"expected {self.n_spectra} values, got {values.shape[0]}")
        x0, y0 = self.grid_origin
        rows, cols = self.grid_shape
        self._check_image_size(rows * cols)
        dtype = np.result_type(values.dtype, np.float32 if np.isnan(fill) else values.dtype)
        t = self._table
        if values.ndim == 1:
            image = np.full((rows, cols), fill, dtype=dtype)
            image[t.y - y0, t.x - x0] = values
            return image
        image = np.full((values.shape[1], rows, cols), fill, dtype=dtype)
        image[:, t.y - y0, t.x - x0] = values.T
        return image

    def _check_image_size(self, cells: int) -> None:
        rows, cols = self.grid_shape
        check_grid_size(
            self.path, rows, cols, self.n_spectra, "or use window_sums() for per-spectrum values"
        )

    def ion_image(
        self,
        mz: float,
        *,
        tol: float | None = None,
        ppm: float | None = None,
        fill: float = np.nan,
    ) -> np.ndarray:
        """Summed intensity within ``mz ± tol`` (or ``± ppm``) for every pixel, as a 2-D image.

        Parameters
        ----------
        mz
            Centre of the window.
        tol, ppm
            Half-width of the window in m/z units or in parts per million; with neither, 10 ppm.
        fill
            Value of grid positions without a spectrum.

        Returns
        -------
        ``grid_shape`` float64 image (see :meth:`to_image` for the layout).

        Warns
        -----
        DataWarning
            The window holds NaN or infinite intensities: they are read as 0.
        """
        images, found = self._ion_images([mz], tol=tol, ppm=ppm, fill=fill)
        _finite.warn_nonfinite(self.path, found)
        return images[0]

    def ion_images(
        self,
        mzs,
        *,
        tol: float | None = None,
        ppm: float | None = None,
        fill: float = np.nan,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Ion images for many m/z values in one pass over the data: ``(len(mzs), rows, cols)``.

        NaN or infinite intensities are read as 0, with a :class:`DataWarning`.
        """
        images, found = self._ion_images(
            mzs, tol=tol, ppm=ppm, fill=fill, show_progress=show_progress
        )
        _finite.warn_nonfinite(self.path, found)
        return images

    def _ion_images(self, mzs, *, tol, ppm, fill, show_progress=False):
        rows, cols = self.grid_shape
        self._check_image_size(rows * cols)
        _, lo, hi = mz_windows(mzs, tol=tol, ppm=ppm)
        sums, found = self._window_sums(lo, hi, show_progress=show_progress)
        return self.to_image(sums, fill=fill), found

    def window_sums(
        self,
        mzs,
        *,
        tol: float | None = None,
        ppm: float | None = None,
        dtype=np.float64,
        sparse: bool = False,
        show_progress: bool = False,
    ):
        """Per-spectrum summed intensity in each m/z window, in one pass over the data.

        Parameters
        ----------
        mzs
            Window centres.
        tol, ppm
            Half-width in m/z units or in parts per million; with neither, 10 ppm.
        dtype
            dtype of the result (sums accumulate in float64 either way).
        sparse
            Return a ``scipy.sparse.csr_matrix``, built without a dense intermediate: much less
            memory and time for peak-picked (processed) data, where most cells are empty.
        show_progress
            Show a progress bar.

        Returns
        -------
        ``(n_spectra, len(mzs))`` array (or CSR matrix); row ``i`` is spectrum ``i`` (see
        :attr:`coordinates`).

        Warns
        -----
        DataWarning
            The windows hold NaN or infinite intensities: they are read as 0.
        """
        _, lo, hi = mz_windows(mzs, tol=tol, ppm=ppm)
        sums, found = self._window_sums(
            lo, hi, dtype=dtype, sparse=sparse, show_progress=show_progress
        )
        _finite.warn_nonfinite(self.path, found)
        return sums

    def _window_sums(self, lo, hi, *, dtype=np.float64, sparse=False, show_progress=False):
        """Sums over windows ``[lo, hi]``, and ``found`` (NaN/±inf intensities read as 0)."""
        work = dtype if np.dtype(dtype).kind == "f" else np.float64  # NaN must fit until repaired
        with np.errstate(invalid="ignore"):
            if sparse:
                sums = _kernels.window_sums_sparse(
                    self._acc, lo, hi, dtype=work, show_progress=show_progress
                )
                found = _finite.repair_csr(self._acc, lo, hi, sums)
            else:
                sums = _kernels.window_sums(
                    self._acc, lo, hi, dtype=work, show_progress=show_progress
                )
                found = _finite.repair_window_sums(self._acc, lo, hi, sums)
        return sums.astype(dtype, copy=False), found

    def tic(self, *, show_progress: bool = False) -> np.ndarray:
        """Total ion count (sum of intensities) of every spectrum, float64, length ``n_spectra``.

        NaN or infinite intensities are read as 0, with a :class:`DataWarning`.
        """
        tic, found = self._tic(show_progress=show_progress)
        _finite.warn_nonfinite(self.path, found)
        return tic

    def _tic(self, *, show_progress: bool = False) -> tuple[np.ndarray, dict[int, int]]:
        with np.errstate(invalid="ignore"):
            tic = _kernels.spectrum_sums(self._acc, show_progress=show_progress)
        return tic, _finite.repair_tic(self._acc, tic)

    def mean_spectrum(
        self, *, mz=None, ppm: float = 5.0, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean intensity over all spectra, as ``(mz, mean_intensity)`` float64 arrays.

        Continuous files average over their shared m/z axis. Processed files are first put on a
        common axis: ``mz`` if given (each value the centre of a ``± ppm`` window), else one built
        by merging peaks within ``ppm`` (:func:`spatialfuse.io.imzml.build_mz_axis`). NaN or
        infinite intensities are read as 0, with a :class:`DataWarning`.
        """
        axis = _kernels.shared_mz_axis(self._acc)
        if axis is not None and mz is None:
            with np.errstate(invalid="ignore"):
                mean, found = _kernels.mean_of_rows(self._acc, show_progress=show_progress)
            _finite.warn_nonfinite(self.path, found)
            return axis, mean
        if mz is None:
            from spatialfuse.io.imzml._axis import build_mz_axis

            common = build_mz_axis(self, ppm=ppm, show_progress=show_progress)
            centres, lo, hi = common.mz, common.lo, common.hi
        else:
            centres, lo, hi = mz_windows(mz, ppm=ppm)
        sums, found = self._window_sums(lo, hi, show_progress=show_progress)
        _finite.warn_nonfinite(self.path, found)
        return np.asarray(centres, dtype=np.float64), sums.mean(axis=0)

    def spectra_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mz, intensity, lengths)`` of spectra ``start:stop`` as flat arrays.

        ``lengths[i]`` points of spectrum ``start + i`` follow each other in ``mz`` and
        ``intensity``; where a spectrum's two arrays differ in length (some writers emit such
        files), points are paired by index over the shorter one.
        """
        return self._acc.concatenated(start, stop)

    def iter_chunks(self, *, chunk_spectra: int = 4096):
        """Yield ``(start, stop, mz, intensity, lengths)`` as flat arrays, chunk by chunk."""
        for a in range(0, self.n_spectra, chunk_spectra):
            b = min(self.n_spectra, a + chunk_spectra)
            yield (a, b, *self.spectra_block(a, b))

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Let go of the ``.ibd`` memory map.

        The map is not unmapped explicitly: arrays handed out earlier may still view it, and
        unmapping under them would crash the interpreter. It is released when the last of them
        is garbage-collected.
        """
        if self._acc is not None:
            self._acc.close()
        self._acc = None
        self._ibd_mm = None

    def __enter__(self) -> ImzMLReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_spectra

    def __repr__(self) -> str:
        size = self.pixel_size_um
        px = f"{size[0]:g}×{size[1]:g} µm" if size else "unknown pixel size"
        return (
            f"ImzMLReader({self.path.name!r}: {self.n_spectra} spectra, {self.mode}, "
            f"grid {self.grid_shape[1]}×{self.grid_shape[0]}, {px})"
        )
