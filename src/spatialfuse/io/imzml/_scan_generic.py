"""The general spectrum scanner: a streaming lxml walk that accepts every valid imzML layout.

It resolves param-group references and inline declarations per array, so it is the reference the
fast scanner (``_scan_fast``) is tested against, and the path taken whenever the fast scanner's
layout checks do not hold.
"""

from __future__ import annotations

import math
from pathlib import Path

from spatialfuse.errors import FileFormatError
from spatialfuse.io.imzml import _cv
from spatialfuse.io.imzml._header import (
    ArraySpec,
    ImzMLHeader,
    _localname,
    array_spec_from_params,
    cv_params,
)
from spatialfuse.io.imzml._table import MISSING, SpectrumTable, dtype_code

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int_param(params, accession: str, path: Path, where: str) -> int | None:
    attrib = params.get(accession)
    if attrib is None:
        return None
    raw = attrib.get("value", "")
    try:
        value = int(raw)  # exact for integers of any size
    except ValueError:
        value = None
    if value is None:
        try:
            number = float(raw)
        except ValueError:
            raise FileFormatError(
                path, f"{where}: {accession} has non-numeric value {raw!r}"
            ) from None
        if not math.isfinite(number) or number != int(number):
            raise FileFormatError(path, f"{where}: {accession} has non-integer value {raw!r}")
        value = int(number)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise FileFormatError(path, f"{where}: {accession} value {raw!r} is out of range")
    return value


def scan_generic(xml_path: Path, header: ImzMLHeader) -> SpectrumTable:
    """Walk every ``<spectrum>`` with lxml and build the offset table."""
    from lxml import etree

    cols: dict[str, list[int]] = {
        name: []
        for name in (
            "x y z mz_offset mz_length mz_enc mz_dtype mz_comp "
            "int_offset int_length int_enc int_dtype int_comp"
        ).split()
    }
    groups = header.param_groups
    try:
        context = etree.iterparse(
            str(xml_path),
            events=("end",),
            tag="{*}spectrum",
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            remove_comments=True,
            huge_tree=True,
        )
        for index, (_event, spectrum) in enumerate(context):
            where = f"spectrum {index}"
            position: dict[str, int | None] = {}
            arrays: dict[str, tuple[ArraySpec, dict]] = {}
            for element in spectrum.iter():
                name = _localname(element.tag)
                if name == "scan":
                    params = cv_params(element, xml_path, where)
                    for ref in element:
                        if _localname(ref.tag) == "referenceableParamGroupRef":
                            params = {**groups.get(ref.get("ref"), {}), **params}
                    for key, acc in (
                        ("x", _cv.POSITION_X),
                        ("y", _cv.POSITION_Y),
                        ("z", _cv.POSITION_Z),
                    ):
                        value = _int_param(params, acc, xml_path, where)
                        if value is not None:
                            position[key] = value
                elif name == "binaryDataArray":
                    spec = ArraySpec()
                    params: dict = {}
                    for child in element:
                        if _localname(child.tag) == "referenceableParamGroupRef":
                            ref = child.get("ref")
                            if ref not in groups:
                                raise FileFormatError(
                                    xml_path,
                                    f"{where}: reference to undeclared param group {ref!r}",
                                )
                            params.update(groups[ref])
                            spec = spec.merged(array_spec_from_params(groups[ref], xml_path, where))
                    inline = cv_params(element, xml_path, where)
                    params.update(inline)
                    spec = spec.merged(array_spec_from_params(inline, xml_path, where))
                    if spec.kind in ("mz", "intensity"):
                        if spec.kind in arrays:
                            raise FileFormatError(xml_path, f"{where}: two {spec.kind} arrays")
                        arrays[spec.kind] = (spec, params)
            if "x" not in position or "y" not in position:
                raise FileFormatError(
                    xml_path, f"{where}: no position (IMS:1000050/IMS:1000051) given"
                )
            cols["x"].append(position["x"])
            cols["y"].append(position["y"])
            cols["z"].append(position.get("z", 1))
            for kind, prefix in (("mz", "mz"), ("intensity", "int")):
                if kind not in arrays:
                    raise FileFormatError(xml_path, f"{where}: no {kind} array")
                spec, params = arrays[kind]
                if spec.dtype is None:
                    raise FileFormatError(
                        xml_path, f"{where}: the {kind} array does not declare its data type"
                    )
                offset = _int_param(params, _cv.EXTERNAL_OFFSET, xml_path, where)
                length = _int_param(params, _cv.EXTERNAL_ARRAY_LENGTH, xml_path, where)
                if offset is None or length is None:
                    raise FileFormatError(
                        xml_path,
                        f"{where}: the {kind} array has no external offset/array length "
                        "(IMS:1000102/IMS:1000103); inline base64 arrays are not imzML",
                    )
                enc = _int_param(params, _cv.EXTERNAL_ENCODED_LENGTH, xml_path, where)
                cols[f"{prefix}_offset"].append(offset)
                cols[f"{prefix}_length"].append(length)
                cols[f"{prefix}_enc"].append(MISSING if enc is None else enc)
                cols[f"{prefix}_dtype"].append(dtype_code(spec.dtype))
                cols[f"{prefix}_comp"].append(0 if spec.compression in (None, "none") else 1)
            spectrum.clear()
            parent = spectrum.getparent()
            if parent is not None:
                while spectrum.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        raise FileFormatError(xml_path, f"malformed XML: {exc}") from exc
    return SpectrumTable.from_columns(**cols)
