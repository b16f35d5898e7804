"""Byte-deterministic writers for the synthetic files: imzML + ibd, OME-TIFF, a Space Ranger folder.

Nothing written here depends on the clock, the host or the output path, so the same inputs always
give the same bytes (the imzML UUID and the OME UUID are passed in, derived from the seed).
"""

from __future__ import annotations

import hashlib
import uuid as uuid_module
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------------
# imzML

#: Units of the cvParams written here: (cvRef, accession, name).
_MZ = ("MS", "MS:1000040", "m/z")
_COUNTS = ("MS", "MS:1000131", "number of detector counts")
_UM = ("UO", "UO:0000017", "micrometer")


def _cv_params(indent: int, *params: tuple) -> str:
    """``<cvParam/>`` lines, one per ``(accession, name[, value[, unit[, cvRef]]])``, indented.

    A value of None writes no ``value``; the cvRef is the accession's prefix unless given (as it
    must be for an accession that is a ``{field}`` of the template).
    """
    lines = []
    for param in params:
        accession, name, value, unit, ref = (*param, None, None, None)[:5]
        ref = ref or accession.split(":")[0]
        line = f'<cvParam cvRef="{ref}" accession="{accession}" name="{name}"'
        if value is not None:
            line += f' value="{value}"'
        if unit is not None:
            line += ' unitCvRef="{}" unitAccession="{}" unitName="{}"'.format(*unit)
        lines.append(" " * indent + line + "/>\n")
    return "".join(lines)


def _param_group(group_id: str, *params: tuple) -> str:
    return (
        f'    <referenceableParamGroup id="{group_id}">\n'
        + _cv_params(6, *params)
        + "    </referenceableParamGroup>\n"
    )


_EXTERNAL = ("IMS:1000101", "external data", "true")
_NO_COMPRESSION = ("MS:1000576", "no compression", "")
_SPECTRUM_TYPE = ("{spectrum_type_accession}", "{spectrum_type}", "", None, "MS")

_IMZML_HEAD = (
    """<?xml version="1.0" encoding="ISO-8859-1"?>
<mzML xmlns="http://psi.hupo.org/ms/mzml" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://psi.hupo.org/ms/mzml \
http://psidev.info/files/ms/mzML/xsd/mzML1.1.0_idx.xsd" version="1.1">
  <cvList count="3">
    <cv uri="http://psidev.cvs.sourceforge.net/*checkout*/psidev/psi/psi-ms/mzML/controlledVocabulary/\
psi-ms.obo" fullName="Proteomics Standards Initiative Mass Spectrometry Ontology" id="MS" \
version="3.65.0"/>
    <cv uri="http://obo.cvs.sourceforge.net/*checkout*/obo/obo/ontology/phenotype/unit.obo" \
fullName="Unit Ontology" id="UO" version="12:10:2011"/>
    <cv uri="http://www.maldi-msi.org/download/imzml/imagingMS.obo" fullName="Imaging MS Ontology" \
id="IMS" version="0.9.1"/>
  </cvList>
  <fileDescription>
    <fileContent>
"""
    + _cv_params(
        6,
        ("MS:1000579", "MS1 spectrum", ""),
        _SPECTRUM_TYPE,
        ("{mode_accession}", "{mode}", "", None, "IMS"),
        ("IMS:1000080", "universally unique identifier", "{uuid}"),
        ("IMS:1000091", "ibd SHA-1", "{sha1}"),
    )
    + """    </fileContent>
  </fileDescription>
  <referenceableParamGroupList count="4">
"""
    + _param_group(
        "mzArray",
        _NO_COMPRESSION,
        ("MS:1000514", "m/z array", None, _MZ),
        ("MS:1000523", "64-bit float", ""),
        _EXTERNAL,
    )
    + _param_group(
        "intensityArray",
        ("MS:1000521", "32-bit float", ""),
        ("MS:1000515", "intensity array", None, _COUNTS),
        _NO_COMPRESSION,
        _EXTERNAL,
    )
    + _param_group("scan1", ("MS:1000093", "increasing m/z scan"))
    + _param_group(
        "spectrum1",
        ("MS:1000579", "MS1 spectrum", ""),
        ("MS:1000511", "ms level", "1"),
        _SPECTRUM_TYPE,
        ("MS:1000130", "positive scan", ""),
    )
    + """  </referenceableParamGroupList>
  <softwareList count="1">
    <software id="spatialfuse" version="{version}">
"""
    + _cv_params(6, ("MS:1000799", "custom unreleased software tool", "spatialfuse synthetic data"))
    + """    </software>
  </softwareList>
  <scanSettingsList count="1">
    <scanSettings id="scanSettings1">
"""
    + _cv_params(
        6,
        ("IMS:1000401", "top down"),
        ("IMS:1000411", "one way"),
        ("IMS:1000480", "horizontal line scan"),
        ("IMS:1000491", "linescan left right"),
        ("IMS:1000042", "max count of pixels x", "{max_x}"),
        ("IMS:1000043", "max count of pixels y", "{max_y}"),
        ("IMS:1000044", "max dimension x", "{dim_x}", _UM),
        ("IMS:1000045", "max dimension y", "{dim_y}", _UM),
        ("IMS:1000046", "pixel size (x)", "{pixel_x}", _UM),
        ("IMS:1000047", "pixel size y", "{pixel_y}", _UM),
    )
    + """    </scanSettings>
  </scanSettingsList>
  <instrumentConfigurationList count="1">
    <instrumentConfiguration id="IC1">
    </instrumentConfiguration>
  </instrumentConfigurationList>
  <dataProcessingList count="1">
    <dataProcessing id="synthetic">
      <processingMethod order="0" softwareRef="spatialfuse">
"""
    + _cv_params(8, ("MS:1000544", "Conversion to mzML", ""))
    + """      </processingMethod>
    </dataProcessing>
  </dataProcessingList>
  <run defaultInstrumentConfigurationRef="IC1" id="{run_id}">
    <spectrumList count="{n_spectra}" defaultDataProcessingRef="synthetic">
"""
)


def _binary_array(ref: str, key: str) -> str:
    """One external binary array of a spectrum (``{key}_len``/``_enc``/``_off`` are its fields)."""
    return (
        f"""          <binaryDataArray encodedLength="0">
            <referenceableParamGroupRef ref="{ref}"/>
"""
        + _cv_params(
            12,
            ("IMS:1000103", "external array length", f"{{{key}_len}}"),
            ("IMS:1000104", "external encoded length", f"{{{key}_enc}}"),
            ("IMS:1000102", "external offset", f"{{{key}_off}}"),
        )
        + """            <binary/>
          </binaryDataArray>
"""
    )


_IMZML_SPECTRUM = (
    """      <spectrum defaultArrayLength="0" id="spectrum={index}" index="{index0}">
        <referenceableParamGroupRef ref="spectrum1"/>
"""
    + _cv_params(
        8,
        ("MS:1000528", "lowest observed m/z", "{mz_min}", _MZ),
        ("MS:1000527", "highest observed m/z", "{mz_max}", _MZ),
        ("MS:1000504", "base peak m/z", "{mz_base}", _MZ),
        ("MS:1000505", "base peak intensity", "{int_base}", _COUNTS),
        ("MS:1000285", "total ion current", "{tic}"),
    )
    + """        <scanList count="1">
"""
    + _cv_params(10, ("MS:1000795", "no combination"))
    + """          <scan instrumentConfigurationRef="IC1">
            <referenceableParamGroupRef ref="scan1"/>
"""
    + _cv_params(12, ("IMS:1000050", "position x", "{x}"), ("IMS:1000051", "position y", "{y}"))
    + """          </scan>
        </scanList>
        <binaryDataArrayList count="2">
"""
    + _binary_array("mzArray", "mz")
    + _binary_array("intensityArray", "int")
    + """        </binaryDataArrayList>
      </spectrum>
"""
)

_IMZML_TAIL = """    </spectrumList>
  </run>
</mzML>
"""


def write_imzml(
    path: Path,
    coords: np.ndarray,
    mzs,
    intensities,
    *,
    mode: str,
    pixel_size_um: tuple[float, float],
    uuid_bytes: bytes,
    version: str,
) -> tuple[Path, Path]:
    """Write an imzML + ibd pair (uncompressed, 64-bit m/z, 32-bit intensities).

    Parameters
    ----------
    path
        The ``.imzML`` file; the ``.ibd`` goes beside it.
    coords
        ``(n, 2)`` 1-based ``(x, y)`` positions, in file order.
    mzs, intensities
        Processed: one m/z array and one intensity array per spectrum. Continuous: ``mzs`` is the
        one shared axis and ``intensities`` an ``(n, n_points)`` array.
    mode
        ``"processed"`` or ``"continuous"``.
    pixel_size_um
        ``(x, y)`` pixel size written as IMS:1000046/47 in micrometres.
    uuid_bytes
        16 bytes: the UUID (first 16 bytes of the ibd, IMS:1000080 in the XML).
    """
    path = Path(path)
    ibd_path = path.with_suffix(".ibd")
    n = len(coords)
    chunks: list[bytes] = [uuid_bytes]
    offset = len(uuid_bytes)
    rows = []
    if mode == "continuous":
        axis = np.ascontiguousarray(mzs, dtype="<f8")
        chunks.append(axis.tobytes())
        mz_off, mz_len = offset, len(axis)
        offset += axis.nbytes
        block = np.ascontiguousarray(intensities, dtype="<f4")
        chunks.append(block.tobytes())
        base = np.argmax(block, axis=1)
        tic = block.astype(np.float64).sum(axis=1)
        for i in range(n):
            rows.append(
                (
                    axis[0],
                    axis[-1],
                    axis[base[i]],
                    block[i, base[i]],
                    tic[i],
                    mz_len,
                    mz_off,
                    mz_len,
                    offset + i * mz_len * 4,
                )
            )
    else:
        for i in range(n):
            m = np.ascontiguousarray(mzs[i], dtype="<f8")
            v = np.ascontiguousarray(intensities[i], dtype="<f4")
            chunks.append(m.tobytes())
            chunks.append(v.tobytes())
            tic = float(v.astype(np.float64).sum())
            if len(v):
                b = int(np.argmax(v))
                summary = (m[0], m[-1], m[b], v[b], tic)
            else:  # an empty spectrum (no peaks above the threshold)
                summary = (0.0, 0.0, 0.0, 0.0, 0.0)
            rows.append((*summary, len(m), offset, len(v), offset + m.nbytes))
            offset += m.nbytes + v.nbytes
    ibd = b"".join(chunks)
    ibd_path.write_bytes(ibd)

    px, py = (float(v) for v in pixel_size_um)
    max_x, max_y = int(coords[:, 0].max()), int(coords[:, 1].max())
    processed = mode == "processed"
    head = _IMZML_HEAD.format(
        spectrum_type_accession="MS:1000127" if processed else "MS:1000128",
        spectrum_type="centroid spectrum" if processed else "profile spectrum",
        mode_accession="IMS:1000031" if processed else "IMS:1000030",
        mode=mode,
        uuid="{" + str(uuid_module.UUID(bytes=uuid_bytes)).upper() + "}",
        sha1=hashlib.sha1(ibd).hexdigest().upper(),
        version=version,
        max_x=max_x,
        max_y=max_y,
        dim_x=repr(max_x * px),
        dim_y=repr(max_y * py),
        pixel_x=repr(px),
        pixel_y=repr(py),
        run_id="synthetic_msi",
        n_spectra=n,
    )
    parts = [head]
    for i, (mz_min, mz_max, mz_base, int_base, tic, length, mz_off, int_len, int_off) in enumerate(
        rows
    ):
        parts.append(
            _IMZML_SPECTRUM.format(
                index=i + 1,
                index0=i,
                mz_min=repr(float(mz_min)),
                mz_max=repr(float(mz_max)),
                mz_base=repr(float(mz_base)),
                int_base=repr(float(int_base)),
                tic=repr(float(tic)),
                x=int(coords[i, 0]),
                y=int(coords[i, 1]),
                mz_len=length,
                mz_enc=length * 8,
                mz_off=mz_off,
                int_len=int_len,
                int_enc=int_len * 4,
                int_off=int_off,
            )
        )
    parts.append(_IMZML_TAIL)
    path.write_bytes("".join(parts).encode("ascii"))
    return path, ibd_path


# --------------------------------------------------------------------------------------------------
# OME-TIFF


def write_ome_tiff(path: Path, rgb: np.ndarray, pixel_size_um: float, *, uuid_text: str, name: str):
    """Write an RGB ``uint8`` image as OME-TIFF with ``PhysicalSizeX/Y`` in µm.

    The OME-XML is written here (tifffile's own carries a random UUID); resolution tags in
    pixels per centimetre are written too, for readers that ignore OME.
    """
    import tifffile

    from spatialfuse.io.export.ome_tiff import ome_xml

    height, width = rgb.shape[:2]
    xml = ome_xml(width, height, pixel_size_um, uuid_text=uuid_text, name=name)
    per_cm = 1e4 / float(pixel_size_um)
    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        description=xml.encode("utf-8"),
        metadata=None,
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
        software="spatialfuse",
    )
    return Path(path)


# --------------------------------------------------------------------------------------------------
# Visium


def _scaled(image, long_side: int):
    from PIL import Image

    height, width = image.height, image.width
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX), scale


def write_visium(
    folder: Path,
    *,
    barcodes: np.ndarray,
    in_tissue: np.ndarray,
    array_row: np.ndarray,
    array_col: np.ndarray,
    pxl_row: np.ndarray,
    pxl_col: np.ndarray,
    counts: np.ndarray,
    gene_ids: np.ndarray,
    gene_names: np.ndarray,
    fullres: np.ndarray,
    um_per_px: float,
    library_id: str,
) -> Path:
    """Write a Space Ranger 2.x-style ``outs`` folder.

    ``barcodes`` (sorted) and the per-spot arrays describe every spot of the capture area (the
    positions file and ``raw_feature_bc_matrix.h5``); ``filtered_feature_bc_matrix.h5`` holds the
    in-tissue spots, as Space Ranger writes it. ``fullres`` is the full-resolution image; the
    hires (2000 px long side, or less for small images) and lowres (600 px) images are block-mean
    reductions of it.
    """
    from PIL import Image

    from spatialfuse.io.export.spaceranger_files import (
        write_positions_csv,
        write_scalefactors,
    )

    folder = Path(folder)
    spatial = folder / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)

    write_positions_csv(
        spatial / "tissue_positions.csv",
        barcodes,
        in_tissue,
        array_row,
        array_col,
        pxl_row,
        pxl_col,
    )

    full = Image.fromarray(fullres)
    long_full = max(full.height, full.width)
    hires, hires_scale = _scaled(full, min(2000, long_full))
    lowres, _ = _scaled(hires, min(600, long_full))
    lowres_scale = min(600, long_full) / long_full
    hires.save(spatial / "tissue_hires_image.png", compress_level=1)
    lowres.save(spatial / "tissue_lowres_image.png", compress_level=6)
    spot_px = 55.0 / um_per_px
    scalefactors = {
        "tissue_hires_scalef": hires_scale,
        "tissue_lowres_scalef": lowres_scale,
        # Space Ranger's spot diameter comes out wider than the 55 µm capture area on real data.
        "spot_diameter_fullres": spot_px * 1.15,
        "fiducial_diameter_fullres": spot_px * 1.15 * 1.6154,
        "regist_target_img_scalef": hires_scale,
    }
    write_scalefactors(spatial / "scalefactors_json.json", scalefactors)

    keep = np.asarray(in_tissue, dtype=bool)
    _write_10x_h5(
        folder / "filtered_feature_bc_matrix.h5",
        barcodes[keep],
        counts[keep],
        gene_ids,
        gene_names,
        library_id,
    )
    _write_10x_h5(
        folder / "raw_feature_bc_matrix.h5", barcodes, counts, gene_ids, gene_names, library_id
    )
    return folder


def _write_10x_h5(path, barcodes, counts, gene_ids, gene_names, library_id) -> None:
    """A 10x Genomics feature-barcode matrix of synthetic gene counts."""
    from spatialfuse.io.export.spaceranger_files import write_10x_h5

    write_10x_h5(
        path,
        barcodes,
        counts,
        gene_ids,
        gene_names,
        library_id=library_id,
        genome="synthetic",
        software_version="spatialfuse-synthetic",
    )
