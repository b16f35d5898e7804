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

_IMZML_HEAD = """<?xml version="1.0" encoding="ISO-8859-1"?>
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
      <cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>
      <cvParam cvRef="MS" accession="{spectrum_type_accession}" name="{spectrum_type}" value=""/>
      <cvParam cvRef="IMS" accession="{mode_accession}" name="{mode}" value=""/>
      <cvParam cvRef="IMS" accession="IMS:1000080" name="universally unique identifier" \
value="{uuid}"/>
      <cvParam cvRef="IMS" accession="IMS:1000091" name="ibd SHA-1" value="{sha1}"/>
    </fileContent>
  </fileDescription>
  <referenceableParamGroupList count="4">
    <referenceableParamGroup id="mzArray">
      <cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>
      <cvParam cvRef="MS" accession="MS:1000514" name="m/z array" unitCvRef="MS" \
unitAccession="MS:1000040" unitName="m/z"/>
      <cvParam cvRef="MS" accession="MS:1000523" name="64-bit float" value=""/>
      <cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>
    </referenceableParamGroup>
    <referenceableParamGroup id="intensityArray">
      <cvParam cvRef="MS" accession="MS:1000521" name="32-bit float" value=""/>
      <cvParam cvRef="MS" accession="MS:1000515" name="intensity array" unitCvRef="MS" \
unitAccession="MS:1000131" unitName="number of detector counts"/>
      <cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>
      <cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>
    </referenceableParamGroup>
    <referenceableParamGroup id="scan1">
      <cvParam cvRef="MS" accession="MS:1000093" name="increasing m/z scan"/>
    </referenceableParamGroup>
    <referenceableParamGroup id="spectrum1">
      <cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>
      <cvParam cvRef="MS" accession="MS:1000511" name="ms level" value="1"/>
      <cvParam cvRef="MS" accession="{spectrum_type_accession}" name="{spectrum_type}" value=""/>
      <cvParam cvRef="MS" accession="MS:1000130" name="positive scan" value=""/>
    </referenceableParamGroup>
  </referenceableParamGroupList>
  <softwareList count="1">
    <software id="spatialfuse" version="{version}">
      <cvParam cvRef="MS" accession="MS:1000799" name="custom unreleased software tool" \
value="spatialfuse synthetic data"/>
    </software>
  </softwareList>
  <scanSettingsList count="1">
    <scanSettings id="scanSettings1">
      <cvParam cvRef="IMS" accession="IMS:1000401" name="top down"/>
      <cvParam cvRef="IMS" accession="IMS:1000411" name="one way"/>
      <cvParam cvRef="IMS" accession="IMS:1000480" name="horizontal line scan"/>
      <cvParam cvRef="IMS" accession="IMS:1000491" name="linescan left right"/>
      <cvParam cvRef="IMS" accession="IMS:1000042" name="max count of pixels x" value="{max_x}"/>
      <cvParam cvRef="IMS" accession="IMS:1000043" name="max count of pixels y" value="{max_y}"/>
      <cvParam cvRef="IMS" accession="IMS:1000044" name="max dimension x" value="{dim_x}" \
unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>
      <cvParam cvRef="IMS" accession="IMS:1000045" name="max dimension y" value="{dim_y}" \
unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>
      <cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size (x)" value="{pixel_x}" \
unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>
      <cvParam cvRef="IMS" accession="IMS:1000047" name="pixel size y" value="{pixel_y}" \
unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>
    </scanSettings>
  </scanSettingsList>
  <instrumentConfigurationList count="1">
    <instrumentConfiguration id="IC1">
    </instrumentConfiguration>
  </instrumentConfigurationList>
  <dataProcessingList count="1">
    <dataProcessing id="synthetic">
      <processingMethod order="0" softwareRef="spatialfuse">
        <cvParam cvRef="MS" accession="MS:1000544" name="Conversion to mzML" value=""/>
      </processingMethod>
    </dataProcessing>
  </dataProcessingList>
  <run defaultInstrumentConfigurationRef="IC1" id="{run_id}">
    <spectrumList count="{n_spectra}" defaultDataProcessingRef="synthetic">
"""

_IMZML_SPECTRUM = """      <spectrum defaultArrayLength="0" id="spectrum={index}" index="{index0}">
        <referenceableParamGroupRef ref="spectrum1"/>
        <cvParam cvRef="MS" accession="MS:1000528" name="lowest observed m/z" value="{mz_min}" \
unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"/>
        <cvParam cvRef="MS" accession="MS:1000527" name="highest observed m/z" value="{mz_max}" \
unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"/>
        <cvParam cvRef="MS" accession="MS:1000504" name="base peak m/z" value="{mz_base}" \
unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"/>
        <cvParam cvRef="MS" accession="MS:1000505" name="base peak intensity" value="{int_base}" \
unitCvRef="MS" unitAccession="MS:1000131" unitName="number of detector counts"/>
        <cvParam cvRef="MS" accession="MS:1000285" name="total ion current" value="{tic}"/>
        <scanList count="1">
          <cvParam cvRef="MS" accession="MS:1000795" name="no combination"/>
          <scan instrumentConfigurationRef="IC1">
            <referenceableParamGroupRef ref="scan1"/>
            <cvParam cvRef="IMS" accession="IMS:1000050" name="position x" value="{x}"/>
            <cvParam cvRef="IMS" accession="IMS:1000051" name="position y" value="{y}"/>
          </scan>
        </scanList>
        <binaryDataArrayList count="2">
{mz_array}{intensity_array}        </binaryDataArrayList>
      </spectrum>
"""

#: One external binary array of a spectrum (``{{x}}`` stays a field of the spectrum template).
_IMZML_ARRAY = """          <binaryDataArray encodedLength="0">
            <referenceableParamGroupRef ref="{ref}"/>
            <cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" \
value="{{{key}_len}}"/>
            <cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" \
value="{{{key}_enc}}"/>
            <cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" \
value="{{{key}_off}}"/>
            <binary/>
          </binaryDataArray>
"""
_IMZML_SPECTRUM = _IMZML_SPECTRUM.replace(
    "{mz_array}", _IMZML_ARRAY.format(ref="mzArray", key="mz")
).replace("{intensity_array}", _IMZML_ARRAY.format(ref="intensityArray", key="int"))

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
