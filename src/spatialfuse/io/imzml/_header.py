"""Parse the imzML header: everything before ``<spectrumList>``.

The header is small; it is parsed with lxml configured never to resolve entities, load a DTD or
touch the network. A document that declares entities is refused outright: imzML never needs them and
they are the vehicle of the "billion laughs" and external-entity attacks.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatialfuse.errors import DataWarning, FileFormatError, UnsupportedFormatError
from spatialfuse.io.imzml import _cv

_PROLOG_LIMIT = 1 << 20
_ROOT_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?mzML[\s>]")
_SPECTRUM_LIST_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?spectrumList[\s>]")
_SPECTRUM_LIST_END_RE = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?spectrumList\s*>")
_COUNT_RE = re.compile(rb'\scount\s*=\s*["\'](\d+)["\']')


_ENTITY_MESSAGE = (
    "the XML declares a DTD with entity declarations; imzML never needs them and they are "
    "refused for safety (entities are never expanded or resolved)"
)


@dataclass(frozen=True)
class ArraySpec:
    """What a binary data array is, as declared by a param group and/or inline cvParams."""

    kind: str | None = None  # "mz", "intensity" or another name; None when undeclared
    dtype: np.dtype | None = None
    compression: str | None = None  # "none" or "zlib"

    def merged(self, other: ArraySpec) -> ArraySpec:
        """Return this spec with the fields that ``other`` declares taking precedence."""
        return ArraySpec(
            kind=other.kind or self.kind,
            dtype=other.dtype if other.dtype is not None else self.dtype,
            compression=other.compression or self.compression,
        )


@dataclass
class ImzMLHeader:
    """The file-level metadata of an imzML document."""

    mode: str | None
    uuid: str | None
    pixel_size_um: tuple[float, float] | None
    max_count: tuple[int, int] | None
    spectrum_count: int | None
    body_start: int
    body_end: int
    param_groups: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    array_groups: dict[str, ArraySpec] = field(default_factory=dict)
    checksum: tuple[str, str] | None = None  # ("sha1"|"md5", hex)
    software: list[str] = field(default_factory=list)
    spectrum_type: str | None = None  # "centroid", "profile", "conflicting" or None: undeclared


def _localname(tag) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def cv_params(element, path: Path | None = None, where: str = "") -> dict[str, dict[str, str]]:
    """Direct ``cvParam`` children of ``element`` as ``{accession: attributes}``.

    An accession whose value spatialfuse uses (a position, an offset, a length, the UUID, ...)
    given twice with two different values leaves the file ambiguous and is refused.
    """
    out: dict[str, dict[str, str]] = {}
    for child in element:
        if _localname(child.tag) == "cvParam":
            accession = child.get("accession")
            if accession:
                attrib = dict(child.attrib)
                previous = out.get(accession)
                if (
                    previous is not None
                    and accession in _cv.VALUED
                    and previous.get("value") != attrib.get("value")
                ):
                    name = attrib.get("name") or previous.get("name") or "cvParam"
                    raise FileFormatError(
                        path,
                        f"{where or _localname(element.tag)}: {accession} ({name}) is given twice, "
                        f"as {previous.get('value')!r} and {attrib.get('value')!r}; which one "
                        "holds is not defined",
                    )
                out[accession] = attrib
    return out


def _declared_once(params, table: dict, path: Path, what: str, where: str):
    """The one value of ``table`` that ``params`` declares (None if none); refuse two."""
    found = {value for accession, value in table.items() if accession in params}
    if len(found) > 1:
        names = ", ".join(sorted(a for a in table if a in params))
        raise FileFormatError(
            path,
            f"{where}: declares {len(found)} different {what}s ({names}); which one holds "
            "is not defined",
        )
    return found.pop() if found else None


def array_spec_from_params(
    params: dict[str, dict[str, str]], path: Path, where: str = "array"
) -> ArraySpec:
    """Read array kind, dtype and compression from one set of cvParams (one element or group).

    Two different data types, two compressions, or both the m/z and the intensity kind in one set
    are refused: the file would not say what the array is.
    """
    kind = _declared_once(
        params, {_cv.MZ_ARRAY: "mz", _cv.INTENSITY_ARRAY: "intensity"}, path, "array kind", where
    )
    if kind is None:
        for accession, attrib in params.items():
            name = attrib.get("name", "")
            if accession.startswith("MS:") and name.endswith(" array"):
                kind = name
    dtype = _declared_once(params, _cv.DTYPES, path, "data type", where)
    compression = _declared_once(params, _cv.COMPRESSIONS, path, "compression", where)
    for accession, name in _cv.UNSUPPORTED_COMPRESSIONS.items():
        if accession in params:
            raise UnsupportedFormatError(
                path, f"binary arrays use {name} compression ({accession}), which is not supported"
            )
    return ArraySpec(kind, dtype, compression)


def _check_prolog(head: bytes, path: Path) -> int:
    """Validate the bytes before the root element; return the root element's offset."""
    if not head.strip():
        raise FileFormatError(path, "file is empty, not an imzML document")
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped.startswith(b"<"):
        raise FileFormatError(path, "not an XML document (does not start with '<')")
    match = _ROOT_RE.search(head)
    prolog = head[: match.start()] if match else head
    if b"<!ENTITY" in prolog or (b"<!DOCTYPE" in prolog and b"[" in prolog):
        raise FileFormatError(path, _ENTITY_MESSAGE)
    if match is None:
        raise FileFormatError(path, "not an imzML file: no <mzML> root element found")
    return match.start()


def _parse_pixel_size(settings_params: dict[str, dict[str, str]], path: Path):
    def one(accession: str) -> float | None:
        attrib = settings_params.get(accession)
        if attrib is None:
            return None
        raw = attrib.get("value", "")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        unit_acc = attrib.get("unitAccession", "")
        unit_name = attrib.get("unitName", "").strip().lower()
        if unit_acc in _cv.LENGTH_UNITS_TO_UM:
            factor = _cv.LENGTH_UNITS_TO_UM[unit_acc]
        elif unit_name in _cv.LENGTH_UNIT_NAMES_TO_UM:
            factor = _cv.LENGTH_UNIT_NAMES_TO_UM[unit_name]
        elif not unit_acc and not unit_name:
            factor = 1.0  # the imzML specification defines these in micrometres
        else:
            raise FileFormatError(
                path,
                f"pixel size {accession} has an unknown unit ({unit_acc or unit_name!r})",
            )
        if not math.isfinite(value) or value <= 0:
            warnings.warn(
                f"{path}: pixel size {accession} is {raw!r}, not a positive number; ignored",
                DataWarning,
                stacklevel=4,
            )
            return None
        return value * factor

    x = one(_cv.PIXEL_SIZE_X)
    y = one(_cv.PIXEL_SIZE_Y)
    if x is None and y is None:
        return None
    if x is None or y is None:
        size = x if x is not None else y
        return (size, size)
    return (x, y)


def parse_header(buf, path: Path) -> ImzMLHeader:
    """Parse the header of the imzML document held in ``buf`` (bytes or mmap)."""
    from lxml import etree

    head = bytes(buf[:_PROLOG_LIMIT])
    _check_prolog(head, path)
    start_match = _SPECTRUM_LIST_RE.search(buf)
    if start_match is None:
        raise FileFormatError(
            path, "no <spectrumList> element: the file has no spectra or is cut short"
        )
    body_start = start_match.start()
    end_match = None
    tail_from = max(body_start, len(buf) - (1 << 16))
    for end_match in _SPECTRUM_LIST_END_RE.finditer(buf, tail_from):  # noqa: B007 (keep the last)
        pass
    if end_match is None:
        end_match = _SPECTRUM_LIST_END_RE.search(buf, body_start)
    if end_match is None:
        raise FileFormatError(path, "the XML ends before </spectrumList>: the file is truncated")
    body_end = end_match.start()
    list_tag_end = buf.find(b">", body_start)
    count_match = _COUNT_RE.search(buf[body_start : list_tag_end + 1])
    spectrum_count = int(count_match.group(1)) if count_match else None

    parser = etree.XMLPullParser(
        events=("start",),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        parser.feed(bytes(buf[:body_start]))
        root = None
        for _event, element in parser.read_events():
            root = element
            break
    except etree.XMLSyntaxError as exc:
        raise FileFormatError(path, f"malformed XML in the header: {exc}") from exc
    if root is None or _localname(root.tag) != "mzML":
        raise FileFormatError(path, "not an imzML file: the root element is not <mzML>")
    # The byte-level prolog check above can be misled (a decoy "<mzML" in a comment, a processing
    # instruction or a system literal before the DTD); the parser knows what the DTD declares.
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise FileFormatError(path, _ENTITY_MESSAGE)

    param_groups: dict[str, dict[str, dict[str, str]]] = {}
    array_groups: dict[str, ArraySpec] = {}
    file_params: dict[str, dict[str, str]] = {}
    settings_params: dict[str, dict[str, str]] = {}
    software: list[str] = []
    for element in root.iter():
        name = _localname(element.tag)
        if name == "fileContent":
            file_params.update(cv_params(element, path))
        elif name == "referenceableParamGroup":
            group_id = element.get("id")
            if group_id is None:
                raise FileFormatError(path, "a referenceableParamGroup has no id")
            where = f"referenceableParamGroup {group_id!r}"
            params = cv_params(element, path, where)
            param_groups[group_id] = params
            spec = array_spec_from_params(params, path, where)
            if spec.kind is not None:
                array_groups[group_id] = spec
        elif name == "scanSettings":
            settings_params.update(cv_params(element, path))
        elif name == "software":
            software.append(f"{element.get('id', '?')} {element.get('version', '')}".strip())

    mode = None
    if _cv.CONTINUOUS in file_params:
        mode = "continuous"
    if _cv.PROCESSED in file_params:
        mode = "processed" if mode is None else "conflicting"
    # the file-level declaration, else what the referenceable param groups (spectra) declare
    declared = {
        kind
        for params in (file_params, *([] if file_params else param_groups.values()))
        for accession, kind in ((_cv.CENTROID, "centroid"), (_cv.PROFILE, "profile"))
        if accession in params
    }
    spectrum_type = declared.pop() if len(declared) == 1 else ("conflicting" if declared else None)
    uuid = None
    if _cv.UUID in file_params:
        raw = file_params[_cv.UUID].get("value", "")
        hexdigits = re.sub(r"[^0-9a-fA-F]", "", raw).lower()
        if len(hexdigits) != 32:
            raise FileFormatError(path, f"the UUID {raw!r} (IMS:1000080) is not 32 hex digits")
        uuid = hexdigits
    checksum = None
    for accession, kind in ((_cv.CHECKSUM_SHA1, "sha1"), (_cv.CHECKSUM_MD5, "md5")):
        if accession in file_params and file_params[accession].get("value"):
            checksum = (kind, file_params[accession]["value"].strip().lower())
    max_count = None
    try:
        if _cv.MAX_COUNT_X in settings_params and _cv.MAX_COUNT_Y in settings_params:
            max_count = (
                int(float(settings_params[_cv.MAX_COUNT_X]["value"])),
                int(float(settings_params[_cv.MAX_COUNT_Y]["value"])),
            )
    except (KeyError, ValueError, OverflowError):
        max_count = None
    return ImzMLHeader(
        mode=mode,
        uuid=uuid,
        pixel_size_um=_parse_pixel_size(settings_params, path),
        max_count=max_count,
        spectrum_count=spectrum_count,
        body_start=body_start,
        body_end=body_end,
        param_groups=param_groups,
        array_groups=array_groups,
        checksum=checksum,
        software=software,
        spectrum_type=spectrum_type,
    )
