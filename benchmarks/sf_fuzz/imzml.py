"""Fuzz cases for the imzML reader: mutated real and generated imzML + ibd pairs.

Bases are every pair in the shared test data (``shared/data/imzml``) plus pairs written here by
spatialfuse's synthetic writer and by pyimzML's ``ImzMLWriter`` (zlib, integer and 32-bit float
variants). A case applies one to three mutations (truncation, bit flips, altered offsets, lengths,
positions and counts, wrong dtypes, duplicated, conflicting or missing cvParams, removed or
repeated elements, hostile XML, ...) and then opens the result with :class:`ImzMLReader` (fast or
validating scanner, with or without the offset cache), reads every spectrum, the TIC, ion images
and the m/z range, and in some cases :func:`read_imzml`. Every value returned is compared with
:mod:`.imzml_reference`, or with the unmutated base for mutations that keep the meaning.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sf_fuzz import imzml_reference as ref
from sf_fuzz import mutate
from sf_fuzz.runner import Case, CheckFailed

REPO = Path(__file__).resolve().parents[2]

_CVPARAM = re.compile(rb"<cvParam\b[^>]*?/>|<cvParam\b[^>]*?>\s*</cvParam>", re.S)
_VALUE = re.compile(rb"""\bvalue\s*=\s*(["'])(.*?)\1""", re.S)
_SPECTRUM = re.compile(rb"<spectrum\b.*?</spectrum>", re.S)
_ARRAY = re.compile(rb"<binaryDataArray\b.*?</binaryDataArray>", re.S)
_SCAN = re.compile(rb"<scan\b.*?</scan>", re.S)
_GROUP = re.compile(
    rb"""<referenceableParamGroup\s+id\s*=\s*["']([^"']+)["']\s*>(.*?)</referenceableParamGroup>""",
    re.S,
)
_GROUP_REF = re.compile(rb"""<referenceableParamGroupRef\s+ref\s*=\s*["']([^"']+)["']\s*/>""")
_COUNT = re.compile(rb"""<spectrumList\b[^>]*?\bcount\s*=\s*["']([^"']*)["']""")
_ELEMENTS = (
    b"referenceableParamGroupRef",
    b"binaryDataArray",
    b"scan",
    b"spectrum",
    b"scanList",
    b"binaryDataArrayList",
    b"referenceableParamGroup",
    b"fileContent",
    b"scanSettings",
)
_DTYPE_ACCESSIONS = (*ref.DTYPES, "MS:1000520", "MS:1000518", "MS:1000999")
_TARGETS = (
    "IMS:1000102",
    "IMS:1000103",
    "IMS:1000104",
    "IMS:1000050",
    "IMS:1000051",
    "IMS:1000052",
    "IMS:1000042",
    "IMS:1000043",
    "IMS:1000046",
    "IMS:1000047",
)


@dataclass
class Base:
    """An unmutated pair and what it holds."""

    name: str
    xml: bytes
    ibd: bytes
    meaning: object  # the reference decoding
    reads: bool  # our reader reads it and agrees with the reference

    @property
    def body_start(self) -> int:
        start = self.xml.find(b"<spectrumList")
        return start if start >= 0 else len(self.xml)


@dataclass
class Context:
    bases: list[Base]
    by_name: dict[str, Base]


# --------------------------------------------------------------------------------------------------
# bases


def shared_imzml_dir() -> Path | None:
    """``shared/data/imzml`` (or ``$SPATIALFUSE_TEST_DATA/imzml``) where it exists."""
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    folder = root / "imzml"
    return folder if folder.is_dir() else None


def _real_pairs() -> list[tuple[str, Path, Path]]:
    folder = shared_imzml_dir()
    if folder is None:
        return []
    pairs = []
    for xml in sorted(folder.rglob("*")):
        if xml.suffix.lower() != ".imzml":
            continue
        ibd = next(
            (xml.with_suffix(s) for s in (".ibd", ".IBD") if xml.with_suffix(s).is_file()), None
        )
        if ibd is not None:
            pairs.append((f"{xml.parent.name}/{xml.name}", xml, ibd))
    return pairs


def _generated_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    from pyimzml.compression import ZlibCompression
    from pyimzml.ImzMLWriter import ImzMLWriter

    from spatialfuse.datasets._writers import write_imzml

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240607)
    pairs = []
    coords = np.array([(x, y) for y in range(1, 4) for x in range(1, 5)])
    peaks = [np.sort(rng.uniform(100, 1000, int(rng.integers(3, 30)))) for _ in coords]
    values = [rng.gamma(2.0, 50.0, p.size) for p in peaks]
    for mode in ("processed", "continuous"):
        path = folder / f"sf_{mode}.imzML"
        if mode == "continuous":
            axis = np.linspace(100, 900, 64)
            write_imzml(
                path,
                coords,
                axis,
                rng.gamma(2.0, 50.0, (len(coords), axis.size)),
                mode=mode,
                pixel_size_um=(20.0, 25.0),
                uuid_bytes=bytes(rng.integers(0, 256, 16, dtype=np.uint8)),
                version="fuzz",
            )
        else:
            write_imzml(
                path,
                coords,
                peaks,
                values,
                mode=mode,
                pixel_size_um=(10.0, 10.0),
                uuid_bytes=bytes(rng.integers(0, 256, 16, dtype=np.uint8)),
                version="fuzz",
            )
        pairs.append((path.name, path, path.with_suffix(".ibd")))
    variants = (
        ("pyimzml_zlib", np.float64, np.float32, "processed", True),
        ("pyimzml_int", np.float32, np.int32, "processed", False),
        ("pyimzml_int64", np.float64, np.int64, "processed", False),
        ("pyimzml_continuous", np.float32, np.float64, "continuous", False),
        ("pyimzml_continuous_zlib", np.float64, np.float32, "continuous", True),
    )
    for name, mz_dtype, int_dtype, mode, zlib in variants:
        path = folder / f"{name}.imzML"
        kwargs = {}
        if zlib:
            kwargs = {
                "mz_compression": ZlibCompression(),
                "intensity_compression": ZlibCompression(),
            }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with ImzMLWriter(
                str(path), mz_dtype=mz_dtype, intensity_dtype=int_dtype, mode=mode, **kwargs
            ) as writer:
                axis = np.linspace(150, 750, 40)
                for i, (x, y) in enumerate(coords[:9]):
                    mz = axis if mode == "continuous" else peaks[i]
                    intensity = rng.gamma(2.0, 50.0, mz.size) * 10
                    writer.addSpectrum(mz, intensity.astype(int_dtype), (int(x), int(y)))
        pairs.append((path.name, path, path.with_suffix(".ibd")))
    return pairs


def setup(workdir: Path) -> Context:
    """Load every base pair (generating the synthetic ones) and decode each once."""
    bases = []
    for name, xml_path, ibd_path in _real_pairs() + _generated_pairs(workdir / "bases"):
        xml, ibd = xml_path.read_bytes(), ibd_path.read_bytes()
        meaning = ref.decode(xml, ibd)
        base = Base(name, xml, ibd, meaning, reads=False)
        if isinstance(meaning, ref.Decoded):
            base.reads = _reads_as(base, workdir / "check")
        bases.append(base)
    _warm_up(next(b for b in bases if b.reads), workdir / "warm")
    return Context(bases, {b.name: b for b in bases})


def _warm_up(base: Base, folder: Path) -> None:
    """Read one base through every code path once, so lazy imports happen before the limits."""
    from spatialfuse.io.imzml import read_imzml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.imzML").write_bytes(base.xml)
    (folder / "a.ibd").write_bytes(base.ibd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_imzml(folder / "a.imzML", pixel_size_um=10.0, cache=False)
        read_imzml(folder / "a.imzML", pixel_size_um=10.0, mz=[500.0], cache=False)


def _reads_as(base: Base, folder: Path) -> bool:
    from spatialfuse.io.imzml import ImzMLReader

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.imzML").write_bytes(base.xml)
    (folder / "a.ibd").write_bytes(base.ibd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with ImzMLReader(folder / "a.imzML", cache=False) as reader:
                _check_spectra(reader, base.meaning)
        return True
    except Exception:
        return False


def describe_bases(ctx: Context) -> list[str]:
    return [
        f"{b.name} ({len(b.meaning.mzs) if isinstance(b.meaning, ref.Decoded) else '?'} spectra"
        f"{'' if b.reads else ', not read unmutated'})"
        for b in ctx.bases
    ]


def base_reads(ctx: Context, name: str) -> bool:
    return ctx.by_name[name].reads


# --------------------------------------------------------------------------------------------------
# mutators: each takes (ctx, base, xml, ibd, rng) and returns (xml, ibd, label)


def _value_spans(xml: bytes, accession: bytes | None = None) -> list[tuple[int, int]]:
    spans = []
    for match in _CVPARAM.finditer(xml):
        text = match.group()
        if accession is not None and b'"' + accession + b'"' not in text:
            continue
        value = _VALUE.search(text)
        if value:
            spans.append((match.start() + value.start(2), match.start() + value.end(2)))
    return spans


def _replace_span(data: bytes, span: tuple[int, int], new: bytes) -> bytes:
    return data[: span[0]] + new + data[span[1] :]


def _set_values(xml, spans, make) -> bytes:
    for span in sorted(spans, reverse=True):
        xml = _replace_span(xml, span, make(xml[span[0] : span[1]]).encode())
    return xml


def m_number(ctx, base, xml, ibd, rng):
    accession = mutate.pick(rng, _TARGETS) if rng.random() < 0.85 else None
    spans = _value_spans(xml, accession.encode() if accession else None)
    if not spans:
        return xml, ibd, "number:none"
    chosen = spans if rng.random() < 0.1 else [mutate.pick(rng, spans)]
    xml = _set_values(xml, chosen, lambda old: mutate.odd_number(rng, mutate.as_int(old)))
    return xml, ibd, f"number:{accession or 'any'}{':all' if len(chosen) > 1 else ''}"


def m_count(ctx, base, xml, ibd, rng):
    return (
        mutate.replace_match(
            xml, _COUNT, rng, lambda old: mutate.odd_number(rng, mutate.as_int(old))
        ),
        ibd,
        "spectrum_count",
    )


def m_truncate_xml(ctx, base, xml, ibd, rng):
    return mutate.truncate(xml, rng), ibd, "truncate_xml"


def m_truncate_ibd(ctx, base, xml, ibd, rng):
    return xml, mutate.truncate(ibd, rng), "truncate_ibd"


def m_flip_xml(ctx, base, xml, ibd, rng):
    if rng.random() < 0.3:
        return mutate.flip_bits(xml, rng, 0, base.body_start), ibd, "flip_xml_header"
    return mutate.flip_bits(xml, rng, base.body_start), ibd, "flip_xml_body"


def m_flip_ibd(ctx, base, xml, ibd, rng):
    if rng.random() < 0.2:
        return xml, mutate.flip_bits(ibd, rng, 0, 16), "flip_ibd_uuid"
    return xml, mutate.flip_bits(ibd, rng, 16), "flip_ibd_data"


def m_special_bytes(ctx, base, xml, ibd, rng):
    return mutate.set_special_bytes(xml, rng), ibd, "special_bytes_xml"


def m_cut_repeat(ctx, base, xml, ibd, rng):
    if rng.random() < 0.5:
        return mutate.delete_range(xml, rng), ibd, "delete_xml_range"
    return mutate.duplicate_range(xml, rng), ibd, "duplicate_xml_range"


def m_splice(ctx, base, xml, ibd, rng):
    other = mutate.pick(rng, ctx.bases)
    return mutate.splice(xml, other.xml, rng), ibd, "splice_xml"


def m_other_ibd(ctx, base, xml, ibd, rng):
    roll = rng.random()
    if roll < 0.3:
        return xml, mutate.pick(rng, ctx.bases).ibd, "swap_ibd"
    size = int(rng.integers(16, max(17, 2 * len(ibd))))
    noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    if roll < 0.5:
        return xml, noise, "random_ibd"
    return xml, ibd[:16] + noise[16:], "random_ibd_same_uuid"


def m_uuid(ctx, base, xml, ibd, rng):
    spans = _value_spans(xml, b"IMS:1000080")
    if not spans:
        return xml, ibd, "uuid:none"
    span = spans[0]
    old = xml[span[0] : span[1]].decode("latin-1")
    digits = re.sub(r"[^0-9a-fA-F]", "", old)
    variant = int(rng.integers(5))
    if variant == 0 and digits:  # the same UUID written differently: keeps the meaning
        new = digits.lower() if rng.random() < 0.5 else "-".join([digits[:8], digits[8:]])
        return _replace_span(xml, span, new.encode()), ibd, "uuid_format"
    if variant == 1 and digits:
        pos = int(rng.integers(len(digits)))
        new = digits[:pos] + ("0" if digits[pos] != "0" else "1") + digits[pos + 1 :]
    elif variant == 2:
        new = ""
    elif variant == 3:
        new = digits + "ab"
    else:
        new = mutate.odd_number(rng)
    return _replace_span(xml, span, new.encode()), ibd, "uuid"


def _arrays_of(meaning, kind):
    if not isinstance(meaning, ref.Decoded) or not meaning.mzs:
        return None
    arrays = meaning.mzs if kind == "mz" else meaning.intensities
    return arrays[0].dtype.itemsize


def _array_elements(xml: bytes, kind: str):
    """Spans of the binaryDataArray elements of one kind (by their group reference's name)."""
    hint = b"mz" if kind == "mz" else b"intens"
    return [m.span() for m in _ARRAY.finditer(xml) if hint in m.group().lower()]


def _set_in_element(element: bytes, accession: bytes, value: bytes) -> bytes:
    for span in _value_spans(element, accession):
        element = _replace_span(element, span, value)
    return element


def m_amplify(ctx, base, xml, ibd, rng):
    kind = "intensity" if rng.random() < 0.7 else "mz"
    itemsize = _arrays_of(base.meaning, kind) or 4
    length = str(max(0, (len(ibd) - 16) // itemsize)).encode()
    out, last = [], 0
    for start, end in _array_elements(xml, kind):
        element = _set_in_element(xml[start:end], b"IMS:1000102", b"16")
        element = _set_in_element(element, b"IMS:1000103", length)
        element = _set_in_element(element, b"IMS:1000104", str(int(length) * itemsize).encode())
        out += [xml[last:start], element]
        last = end
    out.append(xml[last:])
    return b"".join(out), ibd, f"amplify_{kind}"


def m_shift_offsets(ctx, base, xml, ibd, rng):
    delta = int(mutate.pick(rng, (-16, -8, -4, -1, 1, 2, 4, 8, 64)))
    spans = _value_spans(xml, b"IMS:1000102")

    def shifted(old):
        number = mutate.as_int(old)
        return str(number + delta) if number is not None else old.decode("latin-1")

    return _set_values(xml, spans, shifted), ibd, "shift_offsets"


def m_coordinates(ctx, base, xml, ibd, rng):
    xs, ys = _value_spans(xml, b"IMS:1000050"), _value_spans(xml, b"IMS:1000051")
    if not xs or not ys:
        return xml, ibd, "coordinates:none"
    variant = int(rng.integers(6))
    if variant == 0:  # one spectrum far away
        big = str(10 ** int(rng.integers(3, 19)))
        which = int(rng.integers(len(xs)))
        spans = [xs[which]] if rng.random() < 0.5 else [xs[which], ys[min(which, len(ys) - 1)]]
        return _set_values(xml, spans, lambda _: big), ibd, "coordinates:far"
    if variant == 1:
        value = mutate.pick(rng, ("0", "-1", "-5", str(-(2**62))))
        return (
            _set_values(xml, [mutate.pick(rng, xs + ys)], lambda _: value),
            ibd,
            ("coordinates:nonpositive"),
        )
    if variant == 2:
        return _set_values(xml, xs + ys, lambda _: "1"), ibd, "coordinates:all_same"
    if variant == 3:
        factor = int(mutate.pick(rng, (10, 1000, 100_000)))

        def scaled(old):
            number = mutate.as_int(old)
            return str(number * factor) if number is not None else "1"

        return _set_values(xml, xs + ys, scaled), ibd, "coordinates:scaled"
    if variant == 4:
        return _set_values(xml, xs, lambda _: str(2**62)), ibd, "coordinates:huge_all"
    # a sparse, widely spread grid: every spectrum on its own row and column
    counter = iter(range(1, 10**6))
    return (
        _set_values(xml, xs + ys, lambda _: str(next(counter) * 997)),
        ibd,
        "coordinates:sparse",
    )


def m_dtype(ctx, base, xml, ibd, rng):
    spans = []
    for match in _CVPARAM.finditer(xml):
        for accession in _DTYPE_ACCESSIONS:
            if b'"' + accession.encode() + b'"' in match.group():
                spans.append((match.span(), accession))
    if not spans:
        return xml, ibd, "dtype:none"
    (start, end), old = mutate.pick(rng, spans)
    element = xml[start:end]
    variant = int(rng.integers(3))
    if variant == 0:
        new = mutate.pick(rng, [a for a in _DTYPE_ACCESSIONS if a != old])
        element = element.replace(old.encode(), new.encode())
        return xml[:start] + element + xml[end:], ibd, "dtype:changed"
    if variant == 1:
        return xml[:start] + xml[end:], ibd, "dtype:removed"
    new = mutate.pick(rng, [a for a in _DTYPE_ACCESSIONS if a != old])
    second = element.replace(old.encode(), new.encode())
    return xml[:end] + b"\n" + second + xml[end:], ibd, "dtype:two"


def m_dup_cvparam(ctx, base, xml, ibd, rng):
    params = list(_CVPARAM.finditer(xml))
    if not params:
        return xml, ibd, "dup_cvparam:none"
    if rng.random() < 0.5:
        wanted = [p for p in params if any(t.encode() in p.group() for t in ref.VALUED)]
        params = wanted or params
    match = mutate.pick(rng, params)
    copy = match.group()
    same = rng.random() < 0.5
    if not same:
        value = _VALUE.search(copy)
        if value is None:
            return xml, ibd, "dup_cvparam:none"
        new = mutate.odd_number(rng, mutate.as_int(value.group(2)))
        if new.encode() == value.group(2):
            new += "1"
        copy = copy[: value.start(2)] + new.encode() + copy[value.end(2) :]
    label = "dup_cvparam_same" if same else "dup_cvparam_diff"
    return xml[: match.end()] + b"\n" + copy + xml[match.end() :], ibd, label


def m_remove_cvparam(ctx, base, xml, ibd, rng):
    params = list(_CVPARAM.finditer(xml))
    if rng.random() < 0.6:
        important = (*ref.VALUED, *ref.KINDS, *ref.COMPRESSIONS, "IMS:1000030", "IMS:1000031")
        params = [p for p in params if any(t.encode() in p.group() for t in important)] or params
    if not params:
        return xml, ibd, "remove_cvparam:none"
    match = mutate.pick(rng, params)
    which = "all" if rng.random() < 0.15 else "one"
    if which == "all":
        accession = re.search(rb'accession\s*=\s*"([^"]*)"', match.group())
        if accession:
            pattern = re.compile(
                rb'<cvParam\b[^>]*accession\s*=\s*"' + re.escape(accession.group(1)) + rb'"[^>]*/>'
            )
            return pattern.sub(b"", xml), ibd, "remove_cvparam:all"
    return xml[: match.start()] + xml[match.end() :], ibd, "remove_cvparam:one"


def m_remove_element(ctx, base, xml, ibd, rng):
    name = mutate.pick(rng, _ELEMENTS)
    pattern = re.compile(rb"<" + name + rb"\b(?:[^>]*?/>|.*?</" + name + rb">)", re.S)
    matches = list(pattern.finditer(xml))
    if not matches:
        return xml, ibd, "remove_element:none"
    match = mutate.pick(rng, matches)
    return xml[: match.start()] + xml[match.end() :], ibd, f"remove_element:{name.decode()}"


def m_dup_spectrum(ctx, base, xml, ibd, rng):
    spectra = list(_SPECTRUM.finditer(xml))
    if not spectra:
        return xml, ibd, "dup_spectrum:none"
    match = mutate.pick(rng, spectra)
    copies = int(mutate.pick(rng, (1, 2, 50)))
    return (
        xml[: match.end()] + (b"\n" + match.group()) * copies + xml[match.end() :],
        ibd,
        ("dup_spectrum"),
    )


def m_swap_spectra(ctx, base, xml, ibd, rng):
    spectra = list(_SPECTRUM.finditer(xml))
    if len(spectra) < 2:
        return xml, ibd, "swap_spectra:none"
    i, j = sorted(rng.choice(len(spectra), 2, replace=False).tolist())
    a, b = spectra[i], spectra[j]
    out = xml[: a.start()] + b.group() + xml[a.end() : b.start()] + a.group() + xml[b.end() :]
    return out, ibd, "swap_spectra"


def m_swap_arrays(ctx, base, xml, ibd, rng):
    """The m/z and intensity arrays of one spectrum in the other order (same meaning)."""
    spectra = list(_SPECTRUM.finditer(xml))
    if not spectra:
        return xml, ibd, "swap_arrays:none"
    match = mutate.pick(rng, spectra)
    text = match.group()
    arrays = list(_ARRAY.finditer(text))
    if len(arrays) != 2:
        return xml, ibd, "swap_arrays:none"
    a, b = arrays
    new = text[: a.start()] + b.group() + text[a.end() : b.start()] + a.group() + text[b.end() :]
    return xml[: match.start()] + new + xml[match.end() :], ibd, "swap_arrays"


def m_compression(ctx, base, xml, ibd, rng):
    new = mutate.pick(rng, (b"MS:1000574", b"MS:1002312", b"MS:1000999", b"MS:1000576"))
    spans = [m.span() for m in _CVPARAM.finditer(xml) if b'"MS:1000576"' in m.group()]
    spans += [m.span() for m in _CVPARAM.finditer(xml) if b'"MS:1000574"' in m.group()]
    if not spans:
        return xml, ibd, "compression:none"
    start, end = mutate.pick(rng, spans)
    element = xml[start:end]
    if rng.random() < 0.5:
        element = re.sub(rb'"MS:100057[46]"', b'"' + new + b'"', element)
        return xml[:start] + element + xml[end:], ibd, "compression:changed"
    second = re.sub(rb'"MS:100057[46]"', b'"' + new + b'"', element)
    return xml[:end] + second + xml[end:], ibd, "compression:two"


def m_mode(ctx, base, xml, ibd, rng):
    variant = int(rng.integers(3))
    if variant == 0:
        swapped = xml.replace(b'"IMS:1000030"', b'"IMS:1000999"')
        swapped = swapped.replace(b'"IMS:1000031"', b'"IMS:1000030"')
        return swapped.replace(b'"IMS:1000999"', b'"IMS:1000031"'), ibd, "mode:swapped"
    if variant == 1:
        return re.sub(rb'<cvParam[^>]*"IMS:100003[01]"[^>]*/>', b"", xml), ibd, "mode:removed"
    extra = b'<cvParam cvRef="IMS" accession="IMS:1000031" name="processed" value=""/>'
    extra += b'<cvParam cvRef="IMS" accession="IMS:1000030" name="continuous" value=""/>'
    return xml.replace(b"</fileContent>", extra + b"</fileContent>", 1), ibd, "mode:both"


def _after_tag(xml: bytes, rng, lo: int = 0, hi: int | None = None) -> int:
    """A position right after a random ``>`` (between two elements) in ``xml[lo:hi]``."""
    hi = len(xml) if hi is None else hi
    positions = [m.end() for m in re.finditer(rb">\s*<(?![/!?])", xml[lo:hi])]
    if not positions:
        return xml.find(b">") + 1
    end = mutate.pick(rng, positions) + lo
    return xml.rfind(b">", 0, end) + 1


def _prolog_end(xml: bytes) -> int:
    end = xml.find(b"?>")
    return end + 2 if xml.lstrip().startswith(b"<?xml") and end >= 0 else 0


def m_hostile(ctx, base, xml, ibd, rng):
    variant = int(rng.integers(9))
    prolog = _prolog_end(xml)
    if variant == 0:
        decl = b'<!ENTITY a "aaaaaaaaaa">'
        for i in range(1, 8):
            decl += b'<!ENTITY a%d "%s">' % (i, (b"&a%d;" % (i - 1) if i > 1 else b"&a;") * 10)
        doc = b"<!DOCTYPE mzML [" + decl + b"]>\n"
        body = xml[prolog:].replace(b'name="position x"', b'name="&a7;"', 1)
        return xml[:prolog] + doc + body, ibd, "hostile:entity_bomb"
    if variant == 1:
        doc = b'<!DOCTYPE mzML [<!ENTITY x SYSTEM "file:///etc/hostname">]>\n'
        body = xml[prolog:].replace(b'name="position x"', b'name="&x;"', 1)
        return xml[:prolog] + doc + body, ibd, "hostile:external_entity"
    if variant == 2:
        doc = mutate.pick(
            rng,
            (
                b"<!DOCTYPE mzML>\n",
                b'<!DOCTYPE mzML SYSTEM "file:///nonexistent/imzml.dtd">\n',
                b'<!DOCTYPE mzML PUBLIC "-//X//Y//EN" "http://127.0.0.1:9/x.dtd">\n',
            ),
        )
        return xml[:prolog] + b"\n" + doc + xml[prolog:], ibd, "hostile:doctype_only"
    if variant in (3, 4):
        depth = int(mutate.pick(rng, (64, 255, 257, 2049, 20_000, 200_000)))
        nest = mutate.deep_nesting(depth, b"<n>", b"</n>")
        where = "header" if variant == 3 else "spectrum"
        lo, hi = (0, base.body_start) if where == "header" else (base.body_start, None)
        at = _after_tag(xml, rng, lo, hi)
        return xml[:at] + nest + xml[at:], ibd, f"hostile:deep_nesting_{where}"
    if variant == 5:
        size = int(mutate.pick(rng, (1 << 16, 1 << 20, 1 << 23)))
        at = _after_tag(xml, rng, 0, base.body_start)
        big = b'<userParam name="big" value="' + b"x" * size + b'"/>'
        return xml[:at] + big + xml[at:], ibd, "hostile:huge_attribute"
    if variant == 6:
        at = _after_tag(xml, rng, 0, base.body_start)
        include = (
            b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
            b'href="file:///etc/hostname" parse="text"/>'
        )
        return xml[:at] + include + xml[at:], ibd, "hostile:xinclude"
    if variant == 7:
        at = _after_tag(xml, rng)
        return xml[:at] + b"<![CDATA[ <spectrum> ]]>" + xml[at:], ibd, "hostile:cdata"
    attrs = b" ".join(b'a%d="%d"' % (i, i) for i in range(int(rng.integers(100, 5000))))
    at = _after_tag(xml, rng, 0, base.body_start)
    return xml[:at] + b"<many " + attrs + b"/>" + xml[at:], ibd, "hostile:many_attributes"


def m_encoding(ctx, base, xml, ibd, rng):
    variant = int(rng.integers(3))
    if variant == 0:
        return (
            xml.replace(b'encoding="ISO-8859-1"', b'encoding="UTF-16"', 1).replace(
                b'encoding="UTF-8"', b'encoding="UTF-16"', 1
            ),
            ibd,
            "encoding:utf16_declared",
        )
    if variant == 1:
        at = _after_tag(xml, rng, 0, base.body_start)
        return xml[:at] + b"<!-- \xff\xfe\xc3\x28 -->" + xml[at:], ibd, "encoding:bad_bytes"
    return (
        xml.replace(b"<?xml", b"<?xml", 1).replace(b"?>", b' standalone="maybe"?>', 1),
        ibd,
        ("encoding:bad_declaration"),
    )


def m_add_z(ctx, base, xml, ibd, rng):
    z = mutate.pick(rng, (b"1", b"2", b"0", b"-3", b"99999999999"))
    param = b'<cvParam cvRef="IMS" accession="IMS:1000052" name="position z" value="' + z + b'"/>'
    return re.sub(rb"(<scan\b[^>]*>)", rb"\1" + param, xml), ibd, "add_z"


# -- mutations that keep the meaning: the read must equal the unmutated base's


def p_comment(ctx, base, xml, ibd, rng):
    text = mutate.pick(
        rng,
        (
            b"<!-- a comment -->",
            b'<!-- accession="IMS:1000050" value="99" -->',
            b'<!-- binaryDataArray accession="IMS:1000102" value="0" -->',
            b"<?pi some processing instruction?>",
            b"\n   \n",
        ),
    )
    out = xml
    for _ in range(int(rng.integers(1, 4))):
        at = _after_tag(out, rng, _prolog_end(out))
        out = out[:at] + text + out[at:]
    return out, ibd, "keep:comment_or_pi"


def p_userparam(ctx, base, xml, ibd, rng):
    spectra = list(_SPECTRUM.finditer(xml))
    if not spectra:
        return xml, ibd, "keep:none"
    match = mutate.pick(rng, spectra)
    end = xml.find(b">", match.start()) + 1
    return xml[:end] + b'<userParam name="note" value="fuzz"/>' + xml[end:], ibd, "keep:userparam"


def p_inline_groups(ctx, base, xml, ibd, rng):
    groups = {m.group(1): m.group(2) for m in _GROUP.finditer(xml)}

    def inline(match):
        body = groups.get(match.group(1))
        return body if body is not None else match.group()

    out = []
    last = 0
    for array in _ARRAY.finditer(xml):
        out += [xml[last : array.start()], _GROUP_REF.sub(inline, array.group())]
        last = array.end()
    out.append(xml[last:])
    return b"".join(out), ibd, "keep:inline_groups"


def p_quotes(ctx, base, xml, ibd, rng):
    body = base.body_start
    return (
        xml[:body] + re.sub(rb'value="([^"\']*)"', rb"value='\1'", xml[body:]),
        ibd,
        ("keep:single_quotes"),
    )


def p_attribute_order(ctx, base, xml, ibd, rng):
    pattern = re.compile(rb'(accession="[^"]*")(\s+name="[^"]*")?(\s+)(value="[^"]*")')
    return pattern.sub(rb"\4\3\1\2", xml), ibd, "keep:attribute_order"


def p_whitespace(ctx, base, xml, ibd, rng):
    if rng.random() < 0.5:
        return xml.replace(b"\n", b"\r\n"), ibd, "keep:crlf"
    return (
        xml.replace(b'"/>', b'"  />').replace(b'accession="', b'accession = "'),
        ibd,
        ("keep:spaces_in_tags"),
    )


def p_bom(ctx, base, xml, ibd, rng):
    if not xml.isascii():  # a UTF-8 mark on a Latin-1 document changes its meaning
        return xml, ibd, "keep:none"
    return b"\xef\xbb\xbf" + xml, ibd, "keep:bom"


def p_dup_same(ctx, base, xml, ibd, rng):
    params = [m for m in _CVPARAM.finditer(xml) if _VALUE.search(m.group())]
    if not params:
        return xml, ibd, "keep:none"
    match = mutate.pick(rng, params)
    return xml[: match.end()] + match.group() + xml[match.end() :], ibd, "keep:dup_cvparam_same"


MUTATORS = (
    (3, m_number),
    (1, m_count),
    (2, m_truncate_xml),
    (2, m_truncate_ibd),
    (3, m_flip_xml),
    (2, m_flip_ibd),
    (1, m_special_bytes),
    (1, m_cut_repeat),
    (0.5, m_splice),
    (1, m_other_ibd),
    (1, m_uuid),
    (1, m_amplify),
    (1, m_shift_offsets),
    (2, m_coordinates),
    (2, m_dtype),
    (2, m_dup_cvparam),
    (2, m_remove_cvparam),
    (1.5, m_remove_element),
    (1, m_dup_spectrum),
    (0.5, m_swap_spectra),
    (1, m_compression),
    (0.5, m_mode),
    (2, m_hostile),
    (0.5, m_encoding),
    (0.5, m_add_z),
)
KEEPING = (
    (2, p_comment),
    (1, p_userparam),
    (1, p_inline_groups),
    (1, p_quotes),
    (1, p_attribute_order),
    (1, p_whitespace),
    (0.5, p_bom),
    (1, p_dup_same),
    (1, m_swap_arrays),
)


def _choose(rng, table):
    weights = np.array([w for w, _ in table], dtype=float)
    return table[int(rng.choice(len(table), p=weights / weights.sum()))][1]


def make_case(ctx: Context, rng: np.random.Generator) -> Case:
    """One mutated pair: 1-3 mutations, or (in 15 % of cases) only meaning-keeping ones."""
    base = mutate.pick(rng, ctx.bases)
    xml, ibd = base.xml, base.ibd
    keeping = rng.random() < 0.15
    table = KEEPING if keeping else MUTATORS
    labels = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
        xml, ibd, label = _choose(rng, table)(ctx, base, xml, ibd, rng)
        labels.append(label)
    preserving = keeping and isinstance(base.meaning, ref.Decoded)
    stem = "a" if rng.random() < 0.9 else "b.c"
    return Case(
        files={f"{stem}.imzML": xml, f"{stem}.ibd": ibd},
        target=f"{stem}.imzML",
        base=base.name,
        mutations=labels,
        preserving=preserving,
    )


# --------------------------------------------------------------------------------------------------
# exercising and checking


def _fail(message: str):
    raise CheckFailed("wrong_read", message)


def _same_array(got: np.ndarray, want: np.ndarray) -> bool:
    return (
        got.dtype == want.dtype
        and got.shape == want.shape
        and got.tobytes() == np.ascontiguousarray(want).tobytes()
    )


def _check_spectra(reader, meaning: ref.Decoded) -> None:
    n = len(meaning.mzs)
    if reader.n_spectra != n:
        _fail(f"{reader.n_spectra} spectra read, the file holds {n}")
    if not np.array_equal(reader.coordinates, meaning.coords):
        bad = int(np.flatnonzero((reader.coordinates != meaning.coords).any(axis=1))[0])
        _fail(f"spectrum {bad}: position {reader.coordinates[bad]}, file {meaning.coords[bad]}")
    for i in range(n):
        mz, intensity = reader.spectrum(i)
        if not _same_array(mz, meaning.mzs[i]):
            _fail(f"spectrum {i}: m/z {mz.dtype}[{mz.size}] differs from the file's")
        if not _same_array(intensity, meaning.intensities[i]):
            _fail(f"spectrum {i}: intensities {intensity.dtype}[{intensity.size}] differ")


def _close(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Elementwise: equal within summation-order rounding, or ``want`` not finite."""
    finite = np.isfinite(want) & np.isfinite(scale)
    ok = ~finite  # an overflowing sum of finite values: any value will do
    ok |= finite & (np.abs(got - want) <= 1e-9 * scale + 1e-300)
    return ok


def _finite(values: np.ndarray) -> np.ndarray:
    """float64 ``values`` with NaN/±inf as 0: how every summing path reads them."""
    values = values.astype(np.float64)
    values[~np.isfinite(values)] = 0.0
    return values


def _pairs(meaning: ref.Decoded, i: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(meaning.mzs[i].size, meaning.intensities[i].size)
    return meaning.mzs[i][:k].astype(np.float64), _finite(meaning.intensities[i][:k])


def _sorted_finite(mz: np.ndarray) -> bool:
    return bool(np.isfinite(mz).all() and (mz.size < 2 or (np.diff(mz) >= 0).all()))


def _window_sums(meaning: ref.Decoded, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(meaning.mzs)
    sums, scale = np.zeros(n), np.zeros(n)
    for i in range(n):
        mz, value = _pairs(meaning, i)
        inside = (mz >= lo) & (mz <= hi)
        with np.errstate(all="ignore"):
            sums[i] = value[inside].sum()
            scale[i] = np.abs(value[inside]).sum()
        if not _sorted_finite(mz):
            scale[i] = np.nan  # a bisection over unsorted values has no single right answer
    return sums, scale


def _check_reads(reader, meaning: ref.Decoded, rng) -> None:
    _check_spectra(reader, meaning)
    n = len(meaning.mzs)
    tic = reader.tic()
    want = np.zeros(n)
    scale = np.zeros(n)
    for i in range(n):
        with np.errstate(all="ignore"):
            values = _finite(meaning.intensities[i])
            want[i], scale[i] = values.sum(), np.abs(values).sum()
    if not _close(tic, want, scale).all():
        _fail(f"TIC differs: {tic[:4]} vs {want[:4]}")
    if n == 0:
        return
    peaks = [m for m in meaning.mzs if m.size]
    if not peaks:
        return
    if all(_sorted_finite(m.astype(np.float64)) for m in meaning.mzs):
        low = min(float(m.min()) for m in peaks)
        high = max(float(m.max()) for m in peaks)
        if reader.mz_range() != (low, high):
            _fail(f"m/z range {reader.mz_range()} vs {(low, high)}")
    spectrum = mutate.pick(rng, peaks)
    centres = [float(spectrum[int(rng.integers(spectrum.size))]) for _ in range(3)]
    centres = [c for c in centres if np.isfinite(c)]
    if not centres:
        return
    tol = float(mutate.pick(rng, (0.0, 0.01, 1.0, 50.0)))
    images = reader.ion_images(centres, tol=tol)
    rows, cols = reader.grid_shape
    if images.shape != (len(centres), rows, cols):
        _fail(f"ion images of shape {images.shape}, grid {rows} × {cols}")
    x0, y0 = reader.grid_origin
    r = meaning.coords[:, 1] - y0
    c = meaning.coords[:, 0] - x0
    flat = r * cols + c
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    unique = counts[inverse] == 1
    for j, centre in enumerate(centres):
        sums, scale = _window_sums(meaning, centre - tol, centre + tol)
        got = images[j][r, c]
        ok = _close(got, sums, scale) | ~unique
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            _fail(f"ion image at m/z {centre}±{tol}, spectrum {bad}: {got[bad]} vs {sums[bad]}")
        distinct = np.unique(flat)
        nan_total = int(np.count_nonzero(np.isnan(images[j])))
        nan_occupied = int(np.count_nonzero(np.isnan(images[j].reshape(-1)[distinct])))
        if nan_total - nan_occupied != rows * cols - distinct.size:
            _fail("an ion image pixel without a spectrum is not NaN")


def _check_table(target: Path, meaning, rng, file_size) -> None:
    from spatialfuse.io.imzml import read_imzml

    size = (float(rng.uniform(1, 100)), float(rng.uniform(1, 100)))
    if file_size is not None and rng.random() < 0.3:
        size = None
    given = None
    if isinstance(meaning, ref.Decoded) and rng.random() < 0.5:
        peaks = [m for m in meaning.mzs if m.size]
        if peaks:
            spectrum = mutate.pick(rng, peaks).astype(np.float64)
            given = [c for c in (float(v) for v in spectrum[:3]) if np.isfinite(c)] or None
    adata = read_imzml(target, pixel_size_um=size, mz=given, cache=False)
    if not isinstance(meaning, ref.Decoded):
        return
    n = len(meaning.mzs)
    if adata.n_obs != n:
        _fail(f"read_imzml: {adata.n_obs} rows for {n} spectra")
    sx, sy = size if size is not None else adata.uns["spatialfuse"]["pixel_size_um"]
    expected = np.stack(
        [(meaning.coords[:, 0] - 0.5) * sx, (meaning.coords[:, 1] - 0.5) * sy], axis=1
    )
    if not np.array_equal(adata.obsm["spatial"], expected):
        _fail("read_imzml: obsm['spatial'] is not the pixel centres")
    if given is not None:
        table = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        for j, centre in enumerate(given):
            half = abs(centre) * 10.0 * 1e-6  # read_imzml's default window, computed alike
            sums, scale = _window_sums(meaning, centre - half, centre + half)
            with np.errstate(all="ignore"):
                want = sums.astype(np.float32).astype(np.float64)
            ok = _close(table[:, j].astype(np.float64), want, np.maximum(scale, np.abs(want)) * 1e3)
            if not ok.all():
                bad = int(np.flatnonzero(~ok)[0])
                _fail(f"read_imzml X[{bad}, {j}] = {table[bad, j]}, file {want[bad]}")


def exercise(ctx: Context, case: Case, target: Path, rng: np.random.Generator) -> str:
    """Open ``target``, read everything, compare with the reference; return the read category."""
    from spatialfuse.errors import SpatialfuseError
    from spatialfuse.io.imzml import ImzMLReader

    base = ctx.by_name[case.base]
    if case.preserving and base.reads:
        meaning = base.meaning
    else:
        try:
            meaning = ref.decode(case.files[case.target], case.files[case.target[:-6] + ".ibd"])
        except Exception as exc:  # a bug in the reference, not in the reader
            raise CheckFailed("harness_error", f"reference decoder: {exc!r}") from exc
    cache = rng.random() < 0.03
    validate = rng.random() < 0.15
    try:
        with ImzMLReader(target, cache=cache, validate=validate) as reader:
            file_size = reader.pixel_size_um
            if isinstance(meaning, ref.Decoded):
                _check_reads(reader, meaning, rng)
            else:
                for i in range(reader.n_spectra):
                    reader.spectrum(i)
                reader.tic()
                reader.mz_range()
                if reader.n_spectra:
                    reader.ion_images([100.0, 500.0], tol=1.0)
        if rng.random() < 0.25:
            _check_table(target, meaning, rng, file_size)
    except SpatialfuseError:
        if isinstance(meaning, ref.Decoded):
            case.extra["note"] = "error where the reference decodes"
        raise
    if isinstance(meaning, ref.Invalid):
        raise CheckFailed("read_invalid", f"read, but {meaning.reason}")
    return "read" if isinstance(meaning, ref.Decoded) else "read_unverified"
