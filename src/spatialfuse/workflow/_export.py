"""Writing a run's outputs into its folder (each file atomically; see ``docs/outputs.md``).

================================  =============================================================
``joint.h5mu``                    MuData: ``rna`` and ``msi`` (preprocessed), ``obs["joint"]``
``joint.h5ad``                    the same as one AnnData, ``var["feature_types"]``
``msi_spectra.h5ad``              the MSI after the config's spectra steps (peaks, names)
``msi_spots.h5ad``                the MSI on the spots before preprocessing (``map_to_spots``)
``correlation.csv``               gene × ion pairs with spatial significance
``transforms/*.json``             every registration and the composed MSI → Visium transform
``qc/*.png``                      registration QC figures
``spatialdata.zarr``              H&E images, spots, MSI image/labels, tables in µm (``global``)
``spaceranger_msi/``              the MSI on the spots as a Space Ranger folder (optional)
``warped/*.ome.tif``              histology in the Visium frame, pyramidal (optional)
``summary.json``, ``report.html``  every metric; the QC report
================================  =============================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spatialfuse._io_utils import atomic_path

if TYPE_CHECKING:
    from spatialfuse.workflow._pipeline import RunResult

#: H&E pixel size written into the run's SpatialData store: enough to judge an overlay with 55 µm
#: spots and 5-100 µm MSI pixels, and a store of megabytes, not gigabytes. Full resolution is one
#: call away (``sf.io.write_spatialdata(..., he_pixel_size_um=None)``).
SPATIALDATA_HE_PIXEL_UM = 4.0


def export_outputs(result: RunResult) -> None:
    """Write the tables, transforms and optional exports a run's config asks for."""
    from spatialfuse import io, tl

    out, config = result.output, result.config
    files = result.files
    for record in result.registrations:
        files[f"transform {record.registration.name}"] = record.transform_file
        if record.qc_figure is not None and record.qc_figure.exists():
            files[f"qc {record.registration.name}"] = record.qc_figure
    if result.msi_to_visium is not None:
        from spatialfuse.workflow._steps import transform_file

        files["transform msi → visium"] = transform_file(out, config.msi_name, config.visium_name)
    spectra = config.spectra_msi_name
    if spectra is not None and result.modalities.get(spectra) is not None:
        table = result.modalities[spectra]
        files["msi_spectra"] = io.write_h5ad(table, out / "msi_spectra.h5ad")
    if result.msi_spots is not None:
        files["msi_spots"] = io.write_h5ad(result.msi_spots, out / "msi_spots.h5ad")
    if result.mdata is not None:
        if config.outputs.h5mu:
            files["h5mu"] = io.write_h5mu(result.mdata, out / "joint.h5mu", images_once=True)
        if config.outputs.h5ad:
            joint = _drop_repeated_obs(tl.concatenate_modalities(result.mdata))
            files["h5ad"] = io.write_h5ad(joint, out / "joint.h5ad")
    if result.correlation is not None:
        path = out / "correlation.csv"
        with atomic_path(path) as tmp:
            result.correlation.to_csv(tmp, index=False)
        files["correlation"] = path
    if result.failed is not None:
        return
    he_name = _he_name(result)
    if config.outputs.spatialdata and result.msi_to_visium is not None:
        files["spatialdata"] = _write_spatialdata(result, he_name)
    if config.outputs.warped_images and config.visium_name is not None:
        files.update(_warp_histology(result))
    if config.outputs.spaceranger_like and result.msi_spots is not None:
        files["spaceranger_like"] = io.write_visium(
            result.msi_spots,
            out / "spaceranger_msi",
            visium=result.modalities[config.visium_name],
            overwrite=True,
        )


def _drop_repeated_obs(adata):
    """Drop ``"<modality>:<column>"`` columns whose values equal ``<column>``'s (in place)."""
    import numpy as np

    obs = adata.obs
    repeated = []
    for column in obs.columns:
        base = str(column).split(":", 1)[-1]
        if base == str(column) or base not in obs.columns:
            continue
        a, b = obs[column], obs[base]
        try:
            same = np.array_equal(np.asarray(a, float), np.asarray(b, float), equal_nan=True)
        except (TypeError, ValueError):  # not numbers
            same = a.astype(object).equals(b.astype(object))
        if same:
            repeated.append(column)
    if repeated:
        adata.obs = obs.drop(columns=repeated)
    return adata


def _warp_histology(result: RunResult) -> dict:
    """Every histology image with a registration path to the Visium data, in its frame.

    The grid is the Visium full-resolution frame (origin at its corner, its µm per pixel), so
    the warped image overlays the spots as Space Ranger's full-resolution image would.
    """
    import numpy as np

    from spatialfuse.core.visium_geometry import visium_um_per_px
    from spatialfuse.reg import warp_histology
    from spatialfuse.workflow._steps import compose_path, output_name

    config = result.config
    visium = result.modalities[config.visium_name]
    edges = {
        (r.registration.moving, r.registration.fixed): r.transform for r in result.registrations
    }
    um_per_px = visium_um_per_px(visium)
    written = {}
    for name, modality in config.modalities.items():
        if modality.kind != "histology":
            continue
        try:
            transform = compose_path(edges, name, config.visium_name)
        except ValueError:  # no registration path to the Visium data
            continue
        he = result.modalities[name]
        w, h = he.extent_um
        corners = transform.apply(np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=float))
        cols, rows = np.ceil(corners.max(axis=0) / um_per_px).astype(int)
        path = (
            result.output
            / "warped"
            / (f"{output_name(name)}_in_{output_name(config.visium_name)}.ome.tif")
        )
        written[f"warped {name}"] = warp_histology(
            he,
            transform,
            path,
            output_shape=(max(int(rows), 1), max(int(cols), 1)),
            output_pixel_size_um=um_per_px,
        )
    return written


def _he_name(result: RunResult) -> str | None:
    """The histology image registered straight onto the Visium data, if any."""
    config = result.config
    for reg in config.registrations:
        names = {reg.moving, reg.fixed}
        if config.visium_name in names:
            other = (names - {config.visium_name}).pop()
            if config.modalities[other].kind == "histology":
                return other
    return None


def _write_spatialdata(result: RunResult, he_name: str | None):
    """Everything in the Visium image's µm frame (``global``: the frame the spots live in).

    When the H&E → Visium transform is nonrigid (``model: bspline``) the H&E frame is ``global``
    instead: SpatialData cannot warp an image, but the spots are warped and the MSI and Visium
    H&E resampled into it.
    """
    from spatialfuse import io
    from spatialfuse.workflow._steps import compose_path

    config = result.config
    edges = {
        (r.registration.moving, r.registration.fixed): r.transform for r in result.registrations
    }
    transforms = {"msi": result.msi_to_visium}
    he = None
    if he_name is not None:
        he = result.modalities[he_name]
        transforms["he"] = compose_path(edges, he_name, config.visium_name)
    reference = "visium"
    if he is not None and not transforms["he"].is_linear:
        reference = "he"
        transforms = {
            "msi": compose_path(edges, config.msi_name, he_name),
            "visium": compose_path(edges, config.visium_name, he_name),
        }
    tables = {"msi_spots": result.msi_spots} if result.msi_spots is not None else {}
    if result.mdata is not None:
        tables["joint"] = result.mdata  # joint clusters: color="joint" in spatialdata-plot
    return io.write_spatialdata(
        result.output / "spatialdata.zarr",
        he=he,
        visium=result.modalities[config.visium_name],
        msi=result.modalities[config.msi_name],
        tables=tables,
        transforms=transforms,
        reference=reference,
        he_pixel_size_um=SPATIALDATA_HE_PIXEL_UM,
        overwrite=True,
    )
