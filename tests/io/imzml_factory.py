"""Write small imzML files with known content, and rewrite them into real-world variants.

Files are written with pyimzML's ``ImzMLWriter`` (an independent writer) and then post-processed
as text (and, where a variant needs other bytes, by appending to the ``.ibd``). Every function
returns or updates an :class:`ImzMLTruth`: the arrays and coordinates that the files hold, which a
reader must return exactly.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pyimzml.compression import NoCompression, ZlibCompression
from pyimzml.ImzMLWriter import ImzMLWriter

#: Accessions of the data types pyimzML writes (MS) and their imzML-namespace aliases (IMS).
DTYPE_ACCESSIONS = {
    np.dtype("<f4"): ("MS:1000521", "32-bit float"),
    np.dtype("<f8"): ("MS:1000523", "64-bit float"),
    np.dtype("<i4"): ("MS:1000519", "32-bit integer"),
    np.dtype("<i8"): ("MS:1000522", "64-bit integer"),
}
IMS_INTEGER_ACCESSIONS = {"MS:1000519": "IMS:1000141", "MS:1000522": "IMS:1000142"}

_SPECTRUM_RE = re.compile(r"<spectrum\b.*?</spectrum>", re.S)
_ARRAY_RE = re.compile(r"<binaryDataArray\b.*?</binaryDataArray>", re.S)
_GROUP_RE = r'<referenceableParamGroup id="{}">(.*?)</referenceableParamGroup>\s*'


@dataclass
class ImzMLTruth:
    """What an imzML + ibd pair holds, as written."""

    imzml: Path
    ibd: Path
    mzs: list[np.ndarray]
    intensities: list[np.ndarray]
    coords: np.ndarray  # (n, 3) int64; z is 1 where the file gives none
    mode: str
    compression: str  # "none" or "zlib"
    pixel_size_um: tuple[float, float] | None = None
    uuid: str = ""  # 32 lowercase hex digits
    notes: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.mzs)

    @property
    def mz_dtype(self) -> np.dtype:
        return np.result_type(*[a.dtype for a in self.mzs])

    @property
    def intensity_dtype(self) -> np.dtype:
        return np.result_type(*[a.dtype for a in self.intensities])

    def read_xml(self) -> str:
        return self.imzml.read_bytes().decode("latin-1")

    def write_xml(self, text: str) -> None:
        self.imzml.write_bytes(text.encode("latin-1"))

    def edit_xml(self, fn: Callable[[str], str]) -> ImzMLTruth:
        """Rewrite the XML text with ``fn`` (which must change it); return self."""
        old = self.read_xml()
        new = fn(old)
        assert new != old, "the mutator did not change the file"
        self.write_xml(new)
        return self

    def grid(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(x0, y0)`` and ``(rows, cols)`` of the bounding box of the coordinates."""
        x, y = self.coords[:, 0], self.coords[:, 1]
        return (int(x.min()), int(y.min())), (
            int(y.max() - y.min() + 1),
            int(x.max() - x.min() + 1),
        )

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """Independent placement of per-spectrum values on the bounding-box grid (NaN elsewhere)."""
        (x0, y0), (rows, cols) = self.grid()
        image = np.full((rows, cols), np.nan)
        for (x, y, _z), v in zip(self.coords.tolist(), values, strict=True):
            image[y - y0, x - x0] = v
        return image


# --------------------------------------------------------------------------------------------------
# ground truth computations, independent of spatialfuse
# --------------------------------------------------------------------------------------------------


def expected_window_sums(truth: ImzMLTruth, lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """Per spectrum, the float64 sum of intensities with ``lo <= mz <= hi`` (closed windows)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    out = np.zeros((truth.n, lo.size))
    for i, (mz, intensity) in enumerate(zip(truth.mzs, truth.intensities, strict=True)):
        m = mz.astype(np.float64)
        for j in range(lo.size):
            a = np.searchsorted(m, lo[j], side="left")
            b = np.searchsorted(m, hi[j], side="right")
            out[i, j] = intensity[a:b].astype(np.float64).sum()
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# synthetic spectra
# --------------------------------------------------------------------------------------------------


def grid_coords(nx: int, ny: int, *, x0: int = 1, y0: int = 1) -> list[tuple[int, int]]:
    """Row-major raster positions starting at ``(x0, y0)``."""
    return [(x0 + i, y0 + j) for j in range(ny) for i in range(nx)]


def make_spectra(
    n: int,
    *,
    mode: str = "continuous",
    mz_dtype=np.float64,
    intensity_dtype=np.float32,
    n_peaks: int | tuple[int, int] = 24,
    mz_range: tuple[float, float] = (100.0, 1000.0),
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random spectra; m/z sorted and unique; intensities integer-valued (exact sums).

    Continuous spectra share one m/z array; processed spectra each have their own (of varying
    length when ``n_peaks`` is a range).
    """
    rng = np.random.default_rng(seed)
    mz_dtype, intensity_dtype = np.dtype(mz_dtype), np.dtype(intensity_dtype)

    def one_axis(k: int) -> np.ndarray:
        if mz_dtype.kind == "i":
            values = rng.choice(np.arange(int(mz_range[0]), int(mz_range[1])), k, replace=False)
        else:
            values = rng.uniform(*mz_range, size=k).astype(mz_dtype)
        return np.unique(values.astype(mz_dtype))

    def length() -> int:
        if isinstance(n_peaks, tuple):
            return int(rng.integers(n_peaks[0], n_peaks[1] + 1))
        return n_peaks

    shared = one_axis(length())
    out = []
    for _ in range(n):
        mz = shared if mode == "continuous" else one_axis(length())
        intensity = rng.integers(0, 100_000, size=mz.size).astype(intensity_dtype)
        out.append((mz.copy(), intensity))
    return out


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def _uuid_of(text: str) -> str:
    match = re.search(r'accession="IMS:1000080"[^>]*value="([^"]*)"', text)
    return re.sub(r"[^0-9a-fA-F]", "", match.group(1)).lower() if match else ""


def pixel_size_params(
    x=None,
    y=None,
    *,
    unit_accession: str | None = "UO:0000017",
    unit_name: str | None = "micrometer",
) -> str:
    """cvParam lines declaring pixel sizes (``None`` leaves one out)."""
    lines = []
    for accession, name, value in (
        ("IMS:1000046", "pixel size x", x),
        ("IMS:1000047", "pixel size y", y),
    ):
        if value is None:
            continue
        unit = ""
        if unit_accession is not None:
            unit += f' unitCvRef="UO" unitAccession="{unit_accession}"'
        if unit_name is not None:
            unit += f' unitName="{unit_name}"'
        lines.append(
            f'<cvParam cvRef="IMS" accession="{accession}" name="{name}" value="{value}"{unit}/>'
        )
    return "\n".join(lines)


def _expected_pixel_size(px, py, unit_accession, unit_name) -> tuple[float, float] | None:
    """What the pixel-size cvParams mean in µm (valid, known-unit values only; else None)."""
    factor = {"UO:0000017": 1.0, "UO:0000018": 1e-3}.get(unit_accession or "")
    if factor is None:
        factor = {"micrometer": 1.0, "nanometer": 1e-3, "": 1.0}.get(unit_name or "")
    if factor is None:
        return None

    def valid(v):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v * factor if np.isfinite(v) and v > 0 else None

    x, y = valid(px), valid(py)
    if x is None and y is None:
        return None
    return (x if x is not None else y, y if y is not None else x)


def write_imzml(
    path: str | Path,
    spectra: Sequence[tuple[np.ndarray, np.ndarray]],
    coords: Sequence[Sequence[int]],
    *,
    mode: str = "continuous",
    mz_dtype=np.float64,
    intensity_dtype=np.float32,
    compression: str = "none",
    mz_compression: str | None = None,
    intensity_compression: str | None = None,
    pixel_size: float | tuple | None = 50.0,
    pixel_unit_accession: str | None = "UO:0000017",
    pixel_unit_name: str | None = "micrometer",
) -> ImzMLTruth:
    """Write ``spectra`` at ``coords`` with pyimzML; return what was written.

    ``coords`` are 1-based ``(x, y)`` or ``(x, y, z)`` grid positions. ``pixel_size`` is one value
    (square pixels, both x and y written), a pair ``(x, y)`` (``None`` leaves one out; values may be
    strings such as ``"Inf"``) or ``None`` (nothing written).
    """
    path = Path(path).with_suffix(".imzML")
    path.parent.mkdir(parents=True, exist_ok=True)
    mz_dtype, intensity_dtype = np.dtype(mz_dtype), np.dtype(intensity_dtype)
    mz_comp = mz_compression or compression
    int_comp = intensity_compression or compression
    comp = {"none": NoCompression, "zlib": ZlibCompression}
    spectra = [
        (np.asarray(mz, dtype=mz_dtype), np.asarray(intensity, dtype=intensity_dtype))
        for mz, intensity in spectra
    ]
    if mode == "continuous":
        for mz, _ in spectra:
            assert np.array_equal(mz, spectra[0][0]), "continuous spectra must share their m/z"
    assert len(spectra) == len(coords)
    with ImzMLWriter(
        str(path),
        mode=mode,
        mz_dtype=mz_dtype.type,
        intensity_dtype=intensity_dtype.type,
        mz_compression=comp[mz_comp](),
        intensity_compression=comp[int_comp](),
    ) as writer:
        for (mz, intensity), xy in zip(spectra, coords, strict=True):
            writer.addSpectrum(mz, intensity, tuple(int(c) for c in xy))
    coords3 = np.array([(*c, 1) if len(c) == 2 else tuple(c) for c in coords], dtype=np.int64)
    truth = ImzMLTruth(
        imzml=path,
        ibd=path.with_suffix(".ibd"),
        mzs=[mz for mz, _ in spectra],
        intensities=[intensity for _, intensity in spectra],
        coords=coords3,
        mode=mode,
        compression="zlib" if "zlib" in (mz_comp, int_comp) else "none",
    )
    truth.uuid = _uuid_of(truth.read_xml())
    if pixel_size is not None:
        px, py = pixel_size if isinstance(pixel_size, tuple) else (pixel_size, pixel_size)
        params = pixel_size_params(
            px, py, unit_accession=pixel_unit_accession, unit_name=pixel_unit_name
        )
        truth.edit_xml(
            lambda t: t.replace(
                '<scanSettings id="scanSettings1">', '<scanSettings id="scanSettings1">\n' + params
            )
        )
        truth.pixel_size_um = _expected_pixel_size(px, py, pixel_unit_accession, pixel_unit_name)
    return truth


def write_simple(
    folder: Path,
    name: str = "data",
    *,
    n: int | None = None,
    coords: Sequence[Sequence[int]] | None = None,
    mode: str = "continuous",
    mz_dtype=np.float64,
    intensity_dtype=np.float32,
    n_peaks: int | tuple[int, int] = 24,
    seed: int = 0,
    **kwargs,
) -> ImzMLTruth:
    """A random file at ``coords`` (default: a 4×3 raster from (1, 1))."""
    if coords is None:
        coords = grid_coords(4, 3)
    if n is None:
        n = len(coords)
    if mode == "processed" and n_peaks == 24:
        n_peaks = (5, 40)
    spectra = make_spectra(
        n,
        mode=mode,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
        n_peaks=n_peaks,
        seed=seed,
    )
    return write_imzml(
        Path(folder) / f"{name}.imzML",
        spectra,
        coords,
        mode=mode,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------
# text mutators: str -> str
# --------------------------------------------------------------------------------------------------


def edit_spectra(text: str, fn: Callable[[str, int], str], indices=None) -> str:
    """Apply ``fn(block, index)`` to the text of each ``<spectrum>`` (or those in ``indices``)."""
    counter = iter(range(1 << 62))

    def sub(match: re.Match) -> str:
        i = next(counter)
        if indices is not None and i not in indices:
            return match.group(0)
        return fn(match.group(0), i)

    return _SPECTRUM_RE.sub(sub, text)


def array_kind(block: str) -> str:
    if 'ref="mzArray"' in block or "MS:1000514" in block:
        return "mz"
    if 'ref="intensityArray"' in block or "MS:1000515" in block:
        return "intensity"
    raise AssertionError(f"cannot tell the kind of {block!r}")


def edit_arrays(spectrum: str, kind: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the ``<binaryDataArray>`` blocks of ``kind`` in a spectrum's text."""
    return _ARRAY_RE.sub(
        lambda m: fn(m.group(0)) if array_kind(m.group(0)) == kind else m.group(0), spectrum
    )


def set_param_value(block: str, accession: str, value) -> str:
    """Replace the value of the cvParam ``accession`` in ``block`` (attributes in any order)."""
    pattern = re.compile(r'(<cvParam\b[^>]*accession="' + re.escape(accession) + r'"[^>]*>)')
    match = pattern.search(block)
    assert match, accession
    element = re.sub(r'value="[^"]*"', f'value="{value}"', match.group(1))
    return block[: match.start()] + element + block[match.end() :]


def get_param_value(block: str, accession: str) -> str:
    match = re.search(r'<cvParam\b[^>]*accession="' + re.escape(accession) + r'"[^>]*>', block)
    assert match, accession
    return re.search(r'value="([^"]*)"', match.group(0)).group(1)


def remove_params(text: str, accession: str) -> str:
    """Remove every cvParam line with ``accession``."""
    return re.sub(
        r'[ \t]*<cvParam\b[^>]*accession="' + re.escape(accession) + r'"[^>]*/>\n?', "", text
    )


def group_params(text: str, group_id: str) -> str:
    """The cvParam lines of the referenceable param group ``group_id``."""
    match = re.search(_GROUP_RE.format(re.escape(group_id)), text, re.S)
    assert match, group_id
    return match.group(1)


def inline_array_groups(text: str, *, placement: str = "start") -> str:
    """Declare every array's kind, dtype and compression inline instead of by group reference.

    The two array param groups are removed. ``placement`` puts the inline cvParams where the group
    reference was ("start") or after the external offset/length cvParams ("end").
    """
    for group_id in ("mzArray", "intensityArray"):
        params = group_params(text, group_id).strip("\n")
        ref = f'<referenceableParamGroupRef ref="{group_id}"/>'

        def fix(spectrum: str, _i: int, ref=ref, params=params) -> str:
            def one(array: str) -> str:
                if ref not in array:
                    return array
                if placement == "start":
                    return array.replace(ref, params.strip())
                array = re.sub(r"[ \t]*" + re.escape(ref) + r"\n?", "", array)
                return array.replace("<binary/>", params.strip() + "\n<binary/>")

            return _ARRAY_RE.sub(lambda m: one(m.group(0)), spectrum)

        text = edit_spectra(text, fix)
        text = re.sub(_GROUP_RE.format(group_id), "", text, flags=re.S)
    return text.replace(
        '<referenceableParamGroupList count="4">', '<referenceableParamGroupList count="2">'
    )


def ims_integer_accessions(text: str) -> str:
    """Declare integer arrays with IMS:1000141/142 (imzML) instead of MS:1000519/522."""
    for ms, ims in IMS_INTEGER_ACCESSIONS.items():
        text = text.replace(f'cvRef="MS" accession="{ms}"', f'cvRef="IMS" accession="{ims}"')
    return text


def empty_names(text: str) -> str:
    """Set every ``name`` attribute to the empty string."""
    return re.sub(r'(?<=\s)name="[^"]*"', 'name=""', text)


def value_before_accession(text: str) -> str:
    """Rewrite every cvParam with its ``value`` attribute first."""

    def fix(match: re.Match) -> str:
        attrs = re.findall(r'(\w+)="([^"]*)"', match.group(1))
        attrs.sort(key=lambda kv: kv[0] != "value")
        return "<cvParam " + " ".join(f'{k}="{v}"' for k, v in attrs) + "/>"

    return re.sub(r"<cvParam\b([^>]*?)/>", fix, text)


def one_line(text: str) -> str:
    """The whole document on one line."""
    return re.sub(r">\s+<", "><", text).strip()


def reindent(text: str) -> str:
    """Tabs and extra spaces instead of the writer's indentation, CRLF line ends."""
    first, *rest = text.splitlines()
    lines = [first]
    for line in rest:
        stripped = line.lstrip(" ")
        depth = (len(line) - len(stripped)) // 2
        lines.append("\t" * depth + "   " + stripped.replace("/>", " />"))
    return "\r\n".join(lines) + "\r\n"


def drop_mode(text: str) -> str:
    return remove_params(remove_params(text, "IMS:1000030"), "IMS:1000031")


def set_uuid(text: str, value: str) -> str:
    return re.sub(
        r'(accession="IMS:1000080"[^>]*value=")[^"]*(")',
        lambda m: m.group(1) + value + m.group(2),
        text,
    )


def format_uuid(hex32: str, style: str) -> str:
    """``hex32`` as written by various tools."""
    dashed = f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"
    return {
        "plain": hex32,
        "upper": hex32.upper(),
        "dashed": dashed,
        "braces": "{" + dashed + "}",
        "braces_upper": "{" + dashed.upper() + "}",
    }[style]


# --------------------------------------------------------------------------------------------------
# mutators that also change the .ibd
# --------------------------------------------------------------------------------------------------


def _append_ibd(truth: ImzMLTruth, data: bytes) -> int:
    offset = truth.ibd.stat().st_size
    with open(truth.ibd, "ab") as handle:
        handle.write(data)
    return offset


def refresh_sha1(truth: ImzMLTruth) -> ImzMLTruth:
    """Make the declared ``.ibd`` SHA-1 match the file again."""
    digest = hashlib.sha1(truth.ibd.read_bytes()).hexdigest().upper()
    text = truth.read_xml()
    if "IMS:1000091" in text:
        truth.write_xml(set_param_value(text, "IMS:1000091", digest))
    return truth


def override_array_dtype(
    truth: ImzMLTruth,
    kind: str,
    dtype,
    *,
    indices=None,
    placement: str = "start",
) -> ImzMLTruth:
    """Re-store the ``kind`` array of spectra ``indices`` (default all) as ``dtype``.

    The new data is appended to the ``.ibd``; the arrays keep their group reference (which declares
    the old dtype) and gain an inline dtype cvParam, after the reference ("start") or after the
    external cvParams ("end"). Returns the updated truth.
    """
    dtype = np.dtype(dtype)
    accession, name = DTYPE_ACCESSIONS[dtype]
    indices = range(truth.n) if indices is None else indices
    arrays = truth.mzs if kind == "mz" else truth.intensities
    param = f'<cvParam cvRef="MS" accession="{accession}" name="{name}" value=""/>'
    compressed = truth.compression == "zlib"

    def fix(spectrum: str, i: int) -> str:
        values = np.asarray(arrays[i], dtype=dtype)
        data = values.tobytes()
        if compressed:
            data = zlib.compress(data)
        offset = _append_ibd(truth, data)
        arrays[i] = values

        def one(array: str) -> str:
            array = set_param_value(array, "IMS:1000102", offset)
            array = set_param_value(array, "IMS:1000104", len(data))
            if placement == "start":
                return re.sub(
                    r"(<referenceableParamGroupRef[^>]*/>)", r"\1" + param, array, count=1
                )
            return array.replace("<binary/>", param + "<binary/>")

        return edit_arrays(spectrum, kind, one)

    truth.write_xml(edit_spectra(truth.read_xml(), fix, indices=set(indices)))
    return refresh_sha1(truth)


def rewrite_ibd_range(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of a file in place."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def spectrum_block(truth: ImzMLTruth, index: int) -> str:
    return _SPECTRUM_RE.findall(truth.read_xml())[index]


def array_location(truth: ImzMLTruth, index: int, kind: str) -> tuple[int, int, int]:
    """``(offset, array length, encoded length)`` of an array as the XML declares it."""
    block = spectrum_block(truth, index)
    for array in _ARRAY_RE.findall(block):
        if array_kind(array) == kind:
            return (
                int(get_param_value(array, "IMS:1000102")),
                int(get_param_value(array, "IMS:1000103")),
                int(get_param_value(array, "IMS:1000104")),
            )
    raise AssertionError(kind)


def copy_truth(truth: ImzMLTruth, **changes) -> ImzMLTruth:
    return replace(truth, **changes)
