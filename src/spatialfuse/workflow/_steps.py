"""The pipeline's steps, one function each; ``spatialfuse run`` and the subcommands share them."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        Spectra,
    )


def library_options(
    section: Any,
    function: Callable,
    *,
    exclude: tuple[str, ...] = (),
    renamed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A config section's settings as keyword arguments of the library ``function`` it configures.

    Every field of ``section`` that names a parameter of ``function`` (under ``renamed``, where
    the config calls it otherwise) is passed on, so an option added to the config reaches the
    library without a line here; ``exclude`` names the fields that are the workflow's own.
    """
    renamed = renamed or {}
    parameters = inspect.signature(function).parameters
    options = {}
    for name in type(section).model_fields:
        parameter = renamed.get(name, name)
        if name not in exclude and parameter in parameters:
            options[parameter] = getattr(section, name)
    return options


def read_modality(modality: Modality):
    """Read one input with its :mod:`spatialfuse.io` reader and options (lazily where it can)."""
    from spatialfuse import io

    reader = {
        "imzml": io.read_imzml,
        "msi_zarr": io.read_msi_zarr,
        "histology": io.read_histology,
    }.get(modality.kind)
    if reader is not None:
        return reader(modality.path, **library_options(modality, reader, exclude=("path",)))
    with warnings.catch_warnings():
        # Space Ranger files routinely carry non-unique gene names; the reader says so once in
        # the run log, not once per step.
        warnings.filterwarnings("ignore", message=".*[Vv]ariable names are not unique.*")
        options = library_options(modality, io.read_visium, exclude=("path",))
        visium = io.read_visium(modality.path, **options)
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


def reads_spectra_from_file(modality: Modality, spectra: Spectra) -> bool:
    """Whether peak picking streams the imzML file itself (no table is read for it first)."""
    return modality.kind == "imzml" and spectra.peaks.enabled and not spectra.recalibration.enabled


def process_spectra(
    msi: anndata.AnnData | None, modality: Modality, spectra: Spectra
) -> anndata.AnnData:
    """Recalibrate, pick peaks and annotate the MSI as the config's ``spectra`` section asks.

    ``msi`` is the table read from ``modality`` (None where :func:`reads_spectra_from_file`:
    peaks are then picked streaming the file). Returns the table later steps use.
    """
    try:
        return _process_spectra(msi, modality, spectra)
    except ValueError as exc:
        if isinstance(exc, FileFormatError):
            raise
        # An option the library refuses for these data (an adduct of the other polarity, a
        # centroided table given to recalibration): the config's spectra section says it.
        raise ConfigError(
            modality.path, f"the spectra section does not fit this file: {exc}"
        ) from None


def _process_spectra(msi, modality: Modality, spectra: Spectra):
    from spatialfuse import pp, tl

    table = msi
    if spectra.recalibration.enabled:
        options = library_options(spectra.recalibration, pp.recalibrate, exclude=("enabled",))
        table = pp.recalibrate(msi, copy=True, **options)
    if spectra.peaks.enabled:
        options = library_options(spectra.peaks, pp.pick_peaks, exclude=("enabled",))
        if reads_spectra_from_file(modality, spectra):
            require_regular_file(modality.path, "imzML file")
            pixel = modality.pixel_size_um
            source, options["pixel_size_um"] = modality.path, None if pixel == "auto" else pixel
        else:
            source = table
        picked = pp.pick_peaks(source, **options)
        if spectra.recalibration.enabled:
            picked.uns["recalibration"] = table.uns["recalibration"]
        table = picked
    annotation = spectra.annotation
    if annotation.database is not None:
        require_regular_file(annotation.database, "annotation database")
        options = library_options(annotation, tl.annotate, exclude=("database",))
        tl.annotate(table, annotation.database, **options)
    return table


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
        options = library_options(
            registration, reg.register, exclude=("moving", "fixed", "landmarks")
        )
        return reg.register(
            moving, fixed, landmarks=landmarks, show_progress=show_progress, **options
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

    options = library_options(mapping, tl.map_to_spots, exclude=("msi", "visium"))
    return tl.map_to_spots(msi, visium, transform=transform, show_progress=show_progress, **options)


def build_joint(
    rna: anndata.AnnData,
    msi_spots: anndata.AnnData,
    preprocessing: Preprocessing,
    clustering: Clustering,
) -> mudata.MuData:
    """Joint table, per-modality preprocessing and joint clustering (``obs["joint"]``)."""
    from spatialfuse import pp, tl

    mdata = tl.joint_table(rna, msi_spots)
    pp.preprocess_rna(mdata["rna"], **library_options(preprocessing.rna, pp.preprocess_rna))
    pp.preprocess_msi(mdata["msi"], **library_options(preprocessing.msi, pp.preprocess_msi))
    tl.joint_cluster(mdata, key_added="joint", **library_options(clustering, tl.joint_cluster))
    return mdata


def correlate(mdata: mudata.MuData, correlation: Correlation) -> pd.DataFrame:
    """Gene × ion association with spatial significance, as configured."""
    from spatialfuse import tl

    options = library_options(
        correlation,
        tl.cross_modal_correlation,
        exclude=("n_top",),  # the pairs the report shows
        renamed={"null_model": "null", "n_features": "n_top"},
    )
    return tl.cross_modal_correlation(mdata, **options)


def output_name(name: str) -> str:
    """A file-name-safe version of a modality or path name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return safe.strip("._") or "unnamed"


def transform_file(folder: Path, moving: str, fixed: str) -> Path:
    """Where the transform ``moving → fixed`` is written inside an output folder."""
    return folder / "transforms" / f"{output_name(moving)}_to_{output_name(fixed)}.json"
