"""Shared helpers for the benchmarks: input generation, timing, memory, reference sums, output.

Nothing in here imports spatialfuse, so the references and the baseline stay independent of the
code under test.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import mmap
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = HERE / "_data"
#: Environment variable that overrides the folder of generated inputs (the smoke test uses it).
DATA_DIR_ENV = "SPATIALFUSE_BENCH_DATA"

MZ_LOW, MZ_HIGH = 100.0, 1000.0


def data_dir(option: str | None = None) -> Path:
    """Inputs folder: ``--data-dir``, else ``$SPATIALFUSE_BENCH_DATA``, else ``_data/``."""
    path = Path(option or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# input generation (pyimzML's ImzMLWriter, seeded), cached by parameters
# ---------------------------------------------------------------------------------------------


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="spectra",
        unit_scale=True,
        leave=False,
        mininterval=0.5,
        file=sys.stderr,
    )


def _named(stem: Path, suffix: str) -> Path:
    return stem.parent / (stem.name + suffix)


def _finish(partial_stem: Path, final_stem: Path) -> None:
    # .ibd first, .imzML last: an existing final .imzML means the pair is complete.
    os.replace(_named(partial_stem, ".ibd"), _named(final_stem, ".ibd"))
    os.replace(_named(partial_stem, ".imzML"), _named(final_stem, ".imzML"))


def _cleanup(partial_stem: Path) -> None:
    for suffix in (".ibd", ".imzML"):
        try:
            _named(partial_stem, suffix).unlink()
        except FileNotFoundError:
            pass


#: Bump when generated files change: their names carry it, so stale inputs are not reused.
GENERATOR_VERSION = 3


def ion_centres(n_ions: int, seed: int) -> np.ndarray:
    """The m/z values of the "real" ions of a generated processed file (sorted float64)."""
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.uniform(MZ_LOW + 5, MZ_HIGH - 5, n_ions))


def ion_abundance(n_ions: int, seed: int) -> np.ndarray:
    """Probability of each ion (same order as :func:`ion_centres`) to be drawn for a peak.

    Zipf-like, ``1 / (rank + 10)``, over a random ranking in which the middle ion,
    :func:`benchmark_ion`, ranks first: it is present in nearly every spectrum of ~1,000 peaks.
    """
    rng = np.random.default_rng([seed, 2])
    rank = rng.permutation(n_ions)
    middle = n_ions // 2
    first = int(np.flatnonzero(rank == 0)[0])
    rank[first], rank[middle] = rank[middle], 0
    weights = 1.0 / (rank + 10.0)
    return weights / weights.sum()


def benchmark_ion(n_ions: int, seed: int) -> float:
    """The m/z of the most abundant ion, in the middle of the m/z range."""
    return float(ion_centres(n_ions, seed)[n_ions // 2])


def continuous_axis(n_mz: int) -> np.ndarray:
    """The shared m/z axis of a generated continuous file (float64)."""
    return np.linspace(MZ_LOW, MZ_HIGH, n_mz)


def ensure_continuous(folder: Path, nx: int, ny: int, n_mz: int, seed: int = 0) -> Path:
    """Continuous file: float64 m/z axis shared by all spectra, float32 intensities."""
    stem = folder / f"continuous_{nx}x{ny}_mz{n_mz}_s{seed}_v{GENERATOR_VERSION}"
    if _named(stem, ".imzML").is_file():
        return _named(stem, ".imzML")
    from pyimzml.ImzMLWriter import ImzMLWriter

    partial = folder / (stem.name + ".partial")
    _cleanup(partial)
    rng = np.random.default_rng(seed)
    axis = continuous_axis(n_mz)
    try:
        with (
            ImzMLWriter(
                str(partial) + ".imzML",
                mz_dtype=np.float64,
                intensity_dtype=np.float32,
                mode="continuous",
                spec_type="profile",
            ) as writer,
            _progress(nx * ny, stem.name) as bar,
        ):
            for y in range(1, ny + 1):
                block = rng.standard_exponential((nx, n_mz), dtype=np.float32)
                for x in range(1, nx + 1):
                    writer.addSpectrum(axis, block[x - 1], (x, y, 1))
                bar.update(nx)
    except BaseException:
        _cleanup(partial)
        raise
    _finish(partial, stem)
    return _named(stem, ".imzML")


def ensure_processed(
    folder: Path, nx: int, ny: int, min_peaks: int, max_peaks: int, n_ions: int, seed: int = 0
) -> Path:
    """Processed (centroid) file: float64 m/z sorted per spectrum, float32 intensities.

    Each spectrum has ``n ~ U{min_peaks..max_peaks}`` peaks: ``n // 2`` draws from ``n_ions`` fixed
    m/z values (:func:`ion_abundance`, ±2 ppm jitter; an ion drawn twice gives one peak), the rest
    uniform noise over ``[MZ_LOW, MZ_HIGH]``.
    """
    stem = folder / (
        f"processed_{nx}x{ny}_p{min_peaks}-{max_peaks}_i{n_ions}_s{seed}_v{GENERATOR_VERSION}"
    )
    if _named(stem, ".imzML").is_file():
        return _named(stem, ".imzML")
    from pyimzml.ImzMLWriter import ImzMLWriter

    partial = folder / (stem.name + ".partial")
    _cleanup(partial)
    rng = np.random.default_rng(seed)
    centres = ion_centres(n_ions, seed)
    cdf = np.cumsum(ion_abundance(n_ions, seed))
    cdf[-1] = 1.0
    try:
        with (
            ImzMLWriter(
                str(partial) + ".imzML",
                mz_dtype=np.float64,
                intensity_dtype=np.float32,
                mode="processed",
                spec_type="centroid",
            ) as writer,
            _progress(nx * ny, stem.name) as bar,
        ):
            for y in range(1, ny + 1):
                for x in range(1, nx + 1):
                    n = int(rng.integers(min_peaks, max_peaks + 1))
                    # An ion gives at most one centroid per spectrum: duplicates are dropped
                    # (and replaced by noise peaks, so the spectrum keeps its n peaks).
                    drawn = np.unique(np.searchsorted(cdf, rng.random(n // 2), side="right"))
                    k = drawn.size
                    ions = centres[drawn] * (1 + 2e-6 * rng.standard_normal(k))
                    mz = np.concatenate([ions, rng.uniform(MZ_LOW, MZ_HIGH, n - k)])
                    intensity = np.concatenate(
                        [
                            100 * rng.standard_exponential(k, dtype=np.float32),
                            5 * rng.standard_exponential(n - k, dtype=np.float32),
                        ]
                    )
                    order = np.argsort(mz, kind="stable")
                    writer.addSpectrum(mz[order], intensity[order], (x, y, 1))
                bar.update(nx)
    except BaseException:
        _cleanup(partial)
        raise
    _finish(partial, stem)
    return _named(stem, ".imzML")


# ---------------------------------------------------------------------------------------------
# timing and memory
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds of the timed runs (the warm-up is excluded from median and min)."""

    times: list[float]
    warmup: float
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    def as_dict(self) -> dict:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "n": self.n,
            "times_s": self.times,
            "warmup_s": self.warmup,
            "note": self.note,
        }


def time_call(
    fn: Callable[[], object],
    repeat: int,
    *,
    budget_s: float | None = None,
    min_repeat: int = 3,
) -> Timing:
    """One warm-up call, then ``repeat`` timed calls (``time.perf_counter``).

    With ``budget_s``, the number of timed calls is cut to what fits in about ``budget_s`` seconds
    judging by the warm-up, but never below ``min(repeat, min_repeat)``; the cut is noted.
    """
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    warm = time.perf_counter() - t0
    del result
    n = repeat
    note = ""
    if budget_s is not None and warm > 0:
        fit = max(min(repeat, min_repeat), int(budget_s // warm))
        if fit < repeat:
            n = fit
            note = f"{n} of {repeat} repeats (warm-up took {warm:.1f} s)"
    times = []
    for _ in range(n):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    return Timing(times, warm, note)


def traced_peak(fn: Callable[[], object]) -> tuple[object, int]:
    """``fn()`` and the peak of memory traced by tracemalloc during the call, in bytes.

    numpy reports its data buffers to tracemalloc, so every array the call allocates (its output
    included) counts; pages of memory-mapped files do not, since nothing is allocated for them.
    The peak is measured above what was already allocated when the call began.
    """
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, peak - before


class IbdPass:
    """One pass over every byte of a file through a memory map, summing it in 64 MiB chunks.

    ``np.frombuffer(map, np.uint8, count, offset).sum(dtype=np.uint64)`` per chunk: every byte is
    loaded once, nothing is copied. Call it once before timing so the file sits in the page cache
    and the map's pages are faulted in, as they are for a reader that has already been used.
    """

    CHUNK = 64 << 20
    DEFINITION = (
        "one cached pass = every byte of the .ibd read once through one mmap (reused, pages "
        "already faulted in) as np.frombuffer(mm, np.uint8, count=64 MiB, offset).sum(np.uint64), "
        "chunk after chunk, after a warm-up pass that put the file in the page cache"
    )

    def __init__(self, path: Path):
        self._file = open(path, "rb")
        self.size = os.fstat(self._file.fileno()).st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def __call__(self) -> int:
        total = 0
        for offset in range(0, self.size, self.CHUNK):
            count = min(self.CHUNK, self.size - offset)
            total += int(np.frombuffer(self._mm, np.uint8, count, offset).sum(dtype=np.uint64))
        return total

    def close(self) -> None:
        self._mm.close()
        self._file.close()


# ---------------------------------------------------------------------------------------------
# independent references (pyimzML's getspectrum + np.searchsorted; spot geometry)
# ---------------------------------------------------------------------------------------------


def reference_sums(parser, indices, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Float64 sums of intensities with ``lo[j] <= m/z <= hi[j]`` for spectra ``indices``.

    Spectra come from ``parser.getspectrum(i)`` (pyimzML), windows from ``np.searchsorted``; this
    deliberately avoids pyimzML's ``getionimage``, which counts the first peak of a spectrum whose
    first m/z lies above the window.
    """
    lo = np.atleast_1d(np.asarray(lo, np.float64))
    hi = np.atleast_1d(np.asarray(hi, np.float64))
    out = np.empty((len(indices), lo.size), np.float64)
    for row, i in enumerate(indices):
        mz, intensity = parser.getspectrum(int(i))
        mz = np.asarray(mz, np.float64)
        cumulative = np.concatenate([[0.0], np.cumsum(intensity, dtype=np.float64)])
        a = np.searchsorted(mz, lo, side="left")
        b = np.searchsorted(mz, hi, side="right")
        out[row] = cumulative[np.maximum(a, b)] - cumulative[a]
    return out


def hex_lattice(nrow: int, ncol: int, *, pitch: float = 100.0, origin=(0.0, 0.0)) -> np.ndarray:
    """Visium-like spot centres ``(x, y)``: rows ``pitch·√3/2`` apart, odd rows shifted by half."""
    row, col = np.divmod(np.arange(nrow * ncol), ncol)
    x = origin[0] + col * pitch + np.where(row % 2 == 1, pitch / 2, 0.0)
    y = origin[1] + row * pitch * math.sqrt(3.0) / 2
    return np.stack([x, y], axis=1).astype(np.float64)


def _disc_antiderivative(t: float, r: float) -> float:
    t = min(max(t, -r), r)
    return 0.5 * (t * math.sqrt(max(r * r - t * t, 0.0)) + r * r * math.asin(t / r))


def disc_rect_area(r: float, x0: float, x1: float, y0: float, y1: float) -> float:
    """Exact area of the disc ``x² + y² <= r²`` ∩ the rectangle ``[x0, x1] × [y0, y1]``.

    Closed form: the chord length ``min(y1, h(x)) − max(y0, −h(x))``, ``h = √(r² − x²)``, is
    integrated piece by piece between the abscissae where a rectangle edge meets the circle,
    with ``∫ h = (x·h + r²·asin(x / r)) / 2``.
    """
    a, b = max(x0, -r), min(x1, r)
    if a >= b:
        return 0.0
    knots = {a, b}
    for y in (y0, y1):
        if abs(y) < r:
            s = math.sqrt(r * r - y * y)
            knots.update((s, -s))
    knots = sorted(k for k in knots if a <= k <= b)
    total = 0.0
    for lo, hi in itertools.pairwise(knots):
        mid = 0.5 * (lo + hi)
        h = math.sqrt(max(r * r - mid * mid, 0.0))
        arc = _disc_antiderivative(hi, r) - _disc_antiderivative(lo, r)
        upper, upper_int = (y1, y1 * (hi - lo)) if y1 < h else (h, arc)
        lower, lower_int = (y0, y0 * (hi - lo)) if y0 > -h else (-h, -arc)
        if upper > lower:
            total += upper_int - lower_int
    return total


@dataclass
class Check:
    """A correctness check: does our result equal the reference?"""

    name: str
    passed: bool
    detail: str
    values_compared: int = 0
    nonzero_reference: int = 0
    max_rel_error: float = 0.0
    extra: dict = field(default_factory=dict)


def compare(name: str, ours: np.ndarray, ref: np.ndarray, *, rtol: float) -> Check:
    """Compare ``ours`` with ``ref`` elementwise; fail when they differ or the check is vacuous."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return Check(name, False, f"shape {ours.shape} != reference {ref.shape}")
    scale = max(float(np.abs(ref).max(initial=0.0)), 1e-300)
    err = np.abs(ours - ref)
    bad = ~(err <= rtol * np.abs(ref) + rtol * 1e-3 * scale)
    nonzero = int(np.count_nonzero(ref))
    rel = float((err / np.maximum(np.abs(ref), 1e-300)).max(initial=0.0)) if ref.size else 0.0
    if not np.isfinite(ours).all():
        return Check(name, False, "non-finite values", ref.size, nonzero, math.inf)
    if bad.any():
        k = int(np.flatnonzero(bad.ravel())[0])
        return Check(
            name,
            False,
            f"{int(bad.sum())} of {ref.size} values differ "
            f"(first: ours {float(ours.ravel()[k])!r} vs reference {float(ref.ravel()[k])!r})",
            ref.size,
            nonzero,
            rel,
        )
    if nonzero == 0:
        return Check(
            name, False, "reference is all zeros: the check would prove nothing", ref.size, 0, rel
        )
    return Check(
        name,
        True,
        f"{ref.size} values equal (rtol {rtol:g}), {nonzero} non-zero",
        ref.size,
        nonzero,
        rel,
    )


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def fmt_seconds(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_timing(t: Timing) -> str:
    return f"{fmt_seconds(t.median)} (min {fmt_seconds(t.min)}, n={t.n})"


def fmt_bytes(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    line = "-+-".join("-" * w for w in widths)

    def fmt(r):
        return " | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def machine_info() -> dict:
    import numpy

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__,
    }
    try:
        from importlib.metadata import version

        info["pyimzml"] = version("pyimzML")
        info["spatialfuse"] = version("spatialfuse")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        pass
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def write_json(path: Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def quiet_warnings():
    """Context manager silencing warnings (pyimzML warns about metadata our files lack)."""
    ctx = warnings.catch_warnings()

    class _Quiet:
        def __enter__(self):
            ctx.__enter__()
            warnings.simplefilter("ignore")

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Quiet()
