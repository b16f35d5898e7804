"""An independent, deliberately plain imzML decoder: the oracle the fuzzed reader is checked with.

It shares no code with ``spatialfuse.io.imzml``. It parses the whole document with lxml (strictly:
no recovery, no entities, no DTD, no network), resolves param groups, and reads every array with
``numpy.frombuffer``/``zlib``. Its answer is one of

* :class:`Decoded`: what the file holds (positions and arrays, as stored);
* :class:`Invalid`: the file cannot be read as what it claims (an array outside the ``.ibd``, a
  parameter given twice with different values, ...): any reader must refuse it;
* :class:`Unverifiable`: this decoder cannot tell (malformed XML, numbers written unusually, odd
  structure). The fuzzed reader may read or refuse such input; it is only checked for consistency.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

DTYPES = {
    "MS:1000521": np.dtype("<f4"),
    "MS:1000523": np.dtype("<f8"),
    "MS:1000519": np.dtype("<i4"),
    "MS:1000522": np.dtype("<i8"),
    "IMS:1000141": np.dtype("<i4"),
    "IMS:1000142": np.dtype("<i8"),
}
KINDS = {"MS:1000514": "mz", "MS:1000515": "intensity"}
COMPRESSIONS = {"MS:1000576": "none", "MS:1000574": "zlib"}
NUMPRESS = {"MS:1002312", "MS:1002313", "MS:1002314", "MS:1002746", "MS:1002747", "MS:1002748"}
POSITIONS = {"IMS:1000050": "x", "IMS:1000051": "y", "IMS:1000052": "z"}
OFFSET, LENGTH, ENCODED = "IMS:1000102", "IMS:1000103", "IMS:1000104"
UUID = "IMS:1000080"
#: Accessions whose value is used: given twice in one element with two values, they are invalid.
VALUED = {UUID, *POSITIONS, OFFSET, LENGTH, ENCODED}
_PLAIN_INT = re.compile(r"-?[0-9]+")


@dataclass
class Decoded:
    """What the file holds: ``coords`` ``(n, 3)`` and per-spectrum ``mzs``/``intensities``."""

    coords: np.ndarray
    mzs: list
    intensities: list


@dataclass
class Invalid:
    """The file cannot be read; ``reason`` says why."""

    reason: str


@dataclass
class Unverifiable:
    """This decoder cannot tell what the file holds; ``reason`` says why."""

    reason: str


class _Stop(Exception):
    def __init__(self, result):
        self.result = result


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _params(element) -> list[tuple[str, str]]:
    """``(accession, value)`` of the direct cvParam children of ``element``."""
    out = []
    for child in element:
        if _local(child.tag) == "cvParam":
            accession = child.get("accession")
            if accession is None:
                raise _Stop(Unverifiable("cvParam without accession"))
            out.append((accession, child.get("value", "")))
    return out


def _scope(params: list[tuple[str, str]], where: str) -> dict[str, str]:
    """One scope's params as a dict; a used accession repeated with two values is invalid."""
    out: dict[str, str] = {}
    for accession, value in params:
        if accession in VALUED and accession in out and out[accession] != value:
            raise _Stop(Invalid(f"{where}: {accession} given twice with different values"))
        out[accession] = value
    return out


def _one_of(scope: dict[str, str], table: dict, where: str, what: str):
    found = {table[a] for a in scope if a in table}
    if len(found) > 1:
        raise _Stop(Invalid(f"{where}: two {what}s declared"))
    return found.pop() if found else None


def _int(value: str, where: str) -> int:
    if not _PLAIN_INT.fullmatch(value):
        raise _Stop(Unverifiable(f"{where}: number written unusually: {value!r}"))
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise _Stop(Unverifiable(f"{where}: {value} outside int64"))
    return number


def decode(xml: bytes, ibd: bytes):
    """Decode an imzML document and its ``.ibd``: :class:`Decoded`, :class:`Invalid` or
    :class:`Unverifiable`."""
    try:
        return _decode(xml, ibd)
    except _Stop as stop:
        return stop.result


def _decode(xml: bytes, ibd: bytes):
    from lxml import etree

    if b"<!ENTITY" in xml or b"<!DOCTYPE" in xml:
        raise _Stop(Unverifiable("document has a DOCTYPE"))
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        recover=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(xml, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _Stop(Unverifiable(f"XML does not parse: {exc}")) from None
    if _local(root.tag) != "mzML":
        raise _Stop(Unverifiable("root is not mzML"))

    groups: dict[str, list[tuple[str, str]]] = {}
    lists = []
    file_params: list[tuple[str, str]] = []
    for element in root.iter():
        name = _local(element.tag)
        if name == "referenceableParamGroup":
            group_id = element.get("id")
            if group_id is None or group_id in groups:
                raise _Stop(Unverifiable("param group without id or twice"))
            groups[group_id] = _params(element)
        elif name == "spectrumList":
            lists.append(element)
        elif name == "fileContent":
            file_params.extend(_params(element))
    if len(lists) != 1:
        raise _Stop(Unverifiable(f"{len(lists)} spectrumList elements"))
    spectrum_list = lists[0]
    spectra = [s for s in root.iter() if _local(s.tag) == "spectrum"]
    if any(s.getparent() is not spectrum_list for s in spectra):
        raise _Stop(Unverifiable("a spectrum outside the spectrumList"))

    files = _scope(file_params, "fileContent")
    if UUID in files:
        digits = re.sub(r"[^0-9a-fA-F]", "", files[UUID]).lower()
        if len(digits) != 32:
            raise _Stop(Invalid("UUID is not 32 hex digits"))
        if len(ibd) >= 16 and ibd[:16].hex() != digits:
            raise _Stop(Invalid("UUID differs from the .ibd's"))
    if len(ibd) < 16:
        raise _Stop(Invalid(".ibd shorter than its UUID"))
    for group_id, params in groups.items():
        scope = _scope(params, f"param group {group_id}")
        _one_of(scope, KINDS, group_id, "array kind")
        _one_of(scope, DTYPES, group_id, "data type")
        _one_of(scope, COMPRESSIONS, group_id, "compression")

    coords = []
    mzs, intensities = [], []
    stored = 0  # bytes the intensity arrays occupy in the .ibd
    for index, spectrum in enumerate(spectra):
        where = f"spectrum {index}"
        coords.append(_position(spectrum, groups, where))
        arrays, intensity_bytes = _arrays(spectrum, groups, ibd, where)
        mzs.append(arrays["mz"])
        intensities.append(arrays["intensity"])
        stored += intensity_bytes
    if stored > len(ibd):
        raise _Stop(Invalid("the intensity arrays overlap: they need more bytes than the .ibd has"))
    return Decoded(np.array(coords, dtype=np.int64).reshape(-1, 3), mzs, intensities)


def _with_groups(element, groups, where, undeclared=Invalid) -> list[dict[str, str]]:
    """Scopes of ``element``: its referenced groups in order, then its own params (last wins)."""
    scopes = []
    for child in element:
        if _local(child.tag) == "referenceableParamGroupRef":
            ref = child.get("ref")
            if ref not in groups:
                raise _Stop(undeclared(f"{where}: reference to undeclared param group {ref!r}"))
            scopes.append(_scope(groups[ref], f"{where} group {ref}"))
    scopes.append(_scope(_params(element), where))
    return scopes


def _position(spectrum, groups, where) -> tuple[int, int, int]:
    scans = [e for e in spectrum.iter() if _local(e.tag) == "scan"]
    found: dict[str, str] = {}
    for scan in scans:
        for scope in _with_groups(scan, groups, where, undeclared=Unverifiable):
            for accession, value in scope.items():
                if accession in POSITIONS:
                    key = POSITIONS[accession]
                    if key in found and found[key] != value:
                        raise _Stop(Unverifiable(f"{where}: position {key} in two scopes"))
                    found[key] = value
    if "x" not in found or "y" not in found:
        raise _Stop(Invalid(f"{where}: no position"))
    z = _int(found["z"], where) if "z" in found else 1
    return _int(found["x"], where), _int(found["y"], where), z


def _arrays(spectrum, groups, ibd: bytes, where) -> tuple[dict[str, np.ndarray], int]:
    """The m/z and intensity arrays of a spectrum, and the bytes its intensities occupy."""
    arrays = [e for e in spectrum.iter() if _local(e.tag) == "binaryDataArray"]
    if any(_local(a.getparent().tag) != "binaryDataArrayList" for a in arrays):
        raise _Stop(Unverifiable(f"{where}: array outside a binaryDataArrayList"))
    out: dict[str, np.ndarray] = {}
    stored = {}
    for array in arrays:
        merged: dict[str, str] = {}
        kind = dtype = compression = None
        for scope in _with_groups(array, groups, where):
            merged.update(scope)
            kind = _one_of(scope, KINDS, where, "array kind") or kind
            dtype = _one_of(scope, DTYPES, where, "data type") or dtype
            compression = _one_of(scope, COMPRESSIONS, where, "compression") or compression
        if kind is None:
            continue
        if NUMPRESS & merged.keys():
            raise _Stop(Invalid(f"{where}: numpress compression"))
        if kind in out:
            raise _Stop(Invalid(f"{where}: two {kind} arrays"))
        if dtype is None:
            raise _Stop(Invalid(f"{where}: {kind} array without a data type"))
        if OFFSET not in merged or LENGTH not in merged:
            raise _Stop(Invalid(f"{where}: {kind} array without offset or length"))
        offset, length = _int(merged[OFFSET], where), _int(merged[LENGTH], where)
        if offset < 0 or length < 0:
            raise _Stop(Invalid(f"{where}: negative offset or length"))
        nbytes = length * dtype.itemsize
        if compression in (None, "none"):
            if offset + nbytes > len(ibd):
                raise _Stop(Invalid(f"{where}: {kind} array past the end of the .ibd"))
            if nbytes and offset < 16:
                raise _Stop(Invalid(f"{where}: {kind} array overlaps the UUID"))
            stored[kind] = nbytes
            out[kind] = np.frombuffer(ibd, dtype=dtype, count=length, offset=offset)
            continue
        if ENCODED not in merged:
            raise _Stop(Invalid(f"{where}: compressed array without encoded length"))
        encoded = _int(merged[ENCODED], where)
        if encoded < 0 or offset + encoded > len(ibd):
            raise _Stop(Invalid(f"{where}: compressed {kind} array past the end of the .ibd"))
        if encoded and offset < 16:
            raise _Stop(Invalid(f"{where}: {kind} array overlaps the UUID"))
        stored[kind] = encoded
        if length == 0:
            out[kind] = np.empty(0, dtype=dtype)
            continue
        inflater = zlib.decompressobj()
        try:
            # never more than deflate can give (~1,032-fold), nor one byte past the declared size
            limit = min(nbytes + 1, 1100 * encoded + 1025)
            data = inflater.decompress(ibd[offset : offset + encoded], limit)
        except zlib.error:
            raise _Stop(Invalid(f"{where}: corrupt zlib data")) from None
        if len(data) != nbytes or not inflater.eof:
            raise _Stop(Invalid(f"{where}: zlib data of the wrong size"))
        out[kind] = np.frombuffer(data, dtype=dtype)
    for kind in ("mz", "intensity"):
        if kind not in out:
            raise _Stop(Invalid(f"{where}: no {kind} array"))
    return out, stored["intensity"]
