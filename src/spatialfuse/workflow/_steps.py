"""The pipeline's steps, one function each; ``spatialfuse run`` and the subcommands share them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from spatialfuse._limits import require_regular_file
from spatialfuse.errors import ConfigError, FileFormatError

if TYPE_CHECKING:
    import anndata
    import mudata
    import pandas as pd

    from spatialfuse.reg import RegistrationResult, Transform
    from spatialfuse.workflow._config import (
        Clustering,
        Correlation,
        Mapping,
        Modality,
        Preprocessing,
        Registration,
    )


def read_modality(modality: Modality):
    """Read one input as the readers of :mod:`spatialfuse.io` do (lazily where they can)."""
    from spatialfuse import io

    if modality.kind == "imzml":
        return io.read_imzml(modality.path, pixel_size_um=modality.pixel_size_um)
    if modality.kind == "histology":
        return io.read_histology(modality.path, pixel_size_um=modality.pixel_size_um)
    with warnings.catch_warnings():
        # Space Ranger files routinely carry non-unique gene names; the reader says so once in
        # the run log, not once per step.
        warnings.filterwarnings("ignore", message=".*[Vv]ariable names are not unique.*")
        visium = io.read_visium(modality.path)
    return _check_spots_on_tissue(visium, modality.path)


def _check_spots_on_tissue(visium, path):
    """Add :func:`~spatialfuse.reg.spots_on_tissue` to the folder's consistency checks.

    Raises
    ------
    FileFormatError
        The in-tissue spots do not lie on the tissue of the folder's own image.
    """
    from spatialfuse import reg

    check = reg.spots_on_tissue(visium)
    info = visium.uns.setdefault("spatialfuse", {})
    info.setdefault("consistency_checks", {})[check["check"]] = {
        k: v for k, v in check.items() if k != "check"
    }
    if check["status"] == "error":
        raise FileFormatError(info.get("positions_file", path), check["detail"])
    return visium


def register_pair(
    moving, fixed, registration: Registration, *, show_progress: bool = False
) -> RegistrationResult:
    """Run one configured registration (with its landmarks, where it has them)."""
    from spatialfuse import reg

    landmarks = None
    if registration.landmarks is not None:
        require_regular_file(registration.landmarks, "landmark file")
        landmarks = reg.read_landmarks(registration.landmarks)
    with warnings.catch_warnings():
        # A failed check is reported through the result (and the run's exit status).
        warnings.simplefilter("ignore", reg.RegistrationWarning)
        return reg.register(
            moving,
            fixed,
            model=registration.model,
            landmarks=landmarks,
            max_tre_um=registration.max_tre_um,
            scale=registration.scale,
            channel=registration.channel,
            start_from_landmarks=registration.start_from_landmarks,
            seed=registration.seed,
            show_progress=show_progress,
        )


def compose_path(transforms: dict[tuple[str, str], Transform], start: str, end: str) -> Transform:
    """The run's registrations composed from frame ``start`` to ``end`` (:class:`TransformGraph`).

    Raises
    ------
    ConfigError
        No chain of registrations connects ``start`` to ``end``.
    """
    from spatialfuse.errors import NoTransformPathError
    from spatialfuse.reg import TransformGraph

    try:
        return TransformGraph(transforms).path(start, end)
    except NoTransformPathError:
        raise ConfigError(
            None,
            f"no chain of registrations leads from {start!r} to {end!r}; add a registration "
            "path between them (e.g. MSI → H&E of the MSI section → Visium)",
        ) from None


def map_spots(msi, visium, transform: Transform, mapping: Mapping, *, show_progress: bool = False):
    """MSI pixels onto Visium spots (:func:`spatialfuse.tl.map_to_spots`) as configured."""
    from spatialfuse import tl

    return tl.map_to_spots(
        msi,
        visium,
        transform=transform,
        method=mapping.method,
        aggregate=mapping.aggregate,
        min_coverage=mapping.min_coverage,
        show_progress=show_progress,
    )


def build_joint(
    rna: anndata.AnnData,
    msi_spots: anndata.AnnData,
    preprocessing: Preprocessing,
    clustering: Clustering,
) -> mudata.MuData:
    """Joint table, per-modality preprocessing and joint clustering (``obs["joint"]``)."""
    from spatialfuse import pp, tl

    mdata = tl.joint_table(rna, msi_spots)
    rna_opts, msi_opts = preprocessing.rna, preprocessing.msi
    pp.preprocess_rna(mdata["rna"], n_top_genes=rna_opts.n_top_genes, n_comps=rna_opts.n_comps)
    pp.preprocess_msi(
        mdata["msi"],
        norm=msi_opts.norm,
        log=msi_opts.log,
        spatial_filter=msi_opts.spatial_filter,
        n_comps=msi_opts.n_comps,
    )
    tl.joint_cluster(
        mdata,
        method=clustering.method,
        resolution=clustering.resolution,
        spatial_smoothing=clustering.spatial_smoothing,
        seed=clustering.seed,
        key_added="joint",
    )
    return mdata


def correlate(mdata: mudata.MuData, correlation: Correlation) -> pd.DataFrame:
    """Gene × ion association with spatial significance, as configured."""
    from spatialfuse import tl

    return tl.cross_modal_correlation(
        mdata,
        method=correlation.method,
        null=correlation.null_model,
        n_top=correlation.n_features,
        n_permutations=correlation.n_permutations,
        seed=correlation.seed,
    )


def output_name(name: str) -> str:
    """A file-name-safe version of a modality or path name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return safe.strip("._") or "unnamed"


def transform_file(folder: Path, moving: str, fixed: str) -> Path:
    """Where the transform ``moving → fixed`` is written inside an output folder."""
    return folder / "transforms" / f"{output_name(moving)}_to_{output_name(fixed)}.json"
