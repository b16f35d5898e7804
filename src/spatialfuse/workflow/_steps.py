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
    """Whether the spectra steps stream the imzML file itself (no table is read for them first).

    Peak picking streams the file; recalibration before it reads a continuous file chunk by
    chunk too (a processed profile one is read as a table on a common axis inside the step).
    Recalibration of centroid spectra always reads the file: each peak is corrected before it
    is binned (:func:`recalibrates_peaks`).
    """
    if modality.kind != "imzml":
        return False
    return spectra.peaks.enabled or recalibrates_peaks(modality, spectra)


def recalibrates_peaks(modality: Modality, spectra: Spectra) -> bool:
    """Whether the run recalibrates ``modality`` peak by peak (an imzML of centroid spectra).

    Decided as :func:`spatialfuse.pp.recalibrate` decides for a path: the recalibration
    section's ``spectrum_type`` where it insists, else the data (a sample of spectra,
    :meth:`spatialfuse.io.ImzMLReader.spectrum_kind`), else the file's declaration.
    A binned table of centroid peaks has nothing left to recalibrate, so such a file is never
    read into one first.
    """
    recalibration = spectra.recalibration
    if modality.kind != "imzml" or not recalibration.enabled:
        return False
    if recalibration.spectrum_type != "auto":
        return recalibration.spectrum_type == "centroid"
    from spatialfuse.io import ImzMLReader

    require_regular_file(modality.path, "imzML file")
    with ImzMLReader(modality.path, cache=modality.cache) as reader:
        return reader.spectrum_kind()[0] == "centroid"


def process_spectra(
    msi: anndata.AnnData | None, modality: Modality, spectra: Spectra
) -> anndata.AnnData:
    """Recalibrate, pick peaks, flag, annotate and filter the MSI as ``spectra`` asks.

    ``msi`` is the table read from ``modality`` (None where :func:`reads_spectra_from_file`:
    peaks are then picked streaming the file, and an imzML of centroid spectra is recalibrated
    peak by peak from the file, binned onto the features of the modality's m/z options, so the
    recalibrated table replaces the one the reader would have made). Returns the table later
    steps use: without the
    features of a flagging section with ``drop: true``, and with ``uns["spectra_flags"]`` (every
    flagged feature, why, and whether it was dropped) where any flagging section ran.
    """
    try:
        return _process_spectra(msi, modality, spectra)
    except ValueError as exc:
        if isinstance(exc, FileFormatError):  # ConfigError included
            raise
        # An option the library refuses for these data (an adduct of the other polarity, a
        # centroided table given to recalibration): the config's spectra section says it.
        raise ConfigError(
            modality.path, f"the spectra section does not fit this file: {exc}"
        ) from None


def _process_spectra(msi, modality: Modality, spectra: Spectra):
    from spatialfuse import io, pp, tl

    table = msi
    from_file = msi is None  # not read for these steps: they stream the file
    pixel = None if modality.pixel_size_um == "auto" else modality.pixel_size_um
    if from_file:
        require_regular_file(modality.path, "imzML file")
    if spectra.recalibration.enabled:
        options = library_options(spectra.recalibration, pp.recalibrate, exclude=("enabled",))
        if from_file and recalibrates_peaks(modality, spectra):
            # centroid spectra: each pixel's peaks corrected, then binned onto the features the
            # reader would have built from the modality's m/z options (over the corrected peaks)
            options["pixel_size_um"] = pixel
            options["features"] = io.FeatureOptions(**library_options(modality, io.FeatureOptions))
            table = pp.recalibrate(modality.path, **options)
        elif from_file and _continuous(modality.path):
            # streamed: a new table whose X reads the .ibd chunk by chunk, resampled lazily
            options["pixel_size_um"] = pixel
            table = pp.recalibrate(modality.path, **options)
        else:
            source = read_modality(modality) if msi is None else msi
            with warnings.catch_warnings():
                # said below, as a config error naming the input and what to do instead
                warnings.filterwarnings("ignore", message="recalibrate: no pixel shows a peak")
                table = pp.recalibrate(source, copy=True, **options)
            _require_measured(table, modality)
    if spectra.peaks.enabled:
        options = library_options(spectra.peaks, pp.pick_peaks, exclude=("enabled",))
        if table is None:  # streamed from the file
            source, options["pixel_size_um"] = modality.path, pixel
        else:
            source = table
        picked = pp.pick_peaks(source, **options)
        if spectra.recalibration.enabled:
            picked.uns["recalibration"] = table.uns["recalibration"]
        table = picked
    flags = _flag_features(table, spectra)
    annotation = spectra.annotation
    if annotation.database is not None:
        require_regular_file(annotation.database, "annotation database")
        options = library_options(annotation, tl.annotate, exclude=("database",))
        tl.annotate(table, annotation.database, **options)
    if flags:
        table = _drop_flagged(table, flags, modality)
    return table


def _require_measured(table, modality: Modality) -> None:
    """Refuse a table recalibration that found no reference peak in any pixel.

    Nothing was measured or corrected, so the run would go on with the drift it was asked to
    remove. A converted zarr store of centroid spectra always ends here: its peaks were summed
    into m/z windows at conversion, and a drift inside a window can be neither measured nor
    removed from the binned table (centroid spectra are recalibrated peak by peak, from the
    imzML file, before they are binned).

    Raises
    ------
    ConfigError
        Recalibration measured nothing; names the input and what to do instead.
    """
    info = table.uns["recalibration"]
    if table.n_obs == 0 or info["median_abs_ppm_before"] is not None:
        return
    found = (
        f"no pixel shows a peak within ±{info['ppm']:g} ppm of any of the "
        f"{len(info['reference_mz'])} reference m/z, so nothing was measured or corrected"
    )
    if modality.kind == "msi_zarr":
        provenance = table.uns.get("spatialfuse", {})
        origin = provenance.get("file") or "an imzML file"
        raise ConfigError(
            modality.path,
            f"recalibration of this store: {found}. A converted store holds its spectra binned "
            f"into m/z windows (here the {provenance.get('mode', 'unknown')} spectra of "
            f"{origin}); a store of centroid spectra cannot be recalibrated from that binned "
            "table (each peak must be corrected before it is binned). Recalibrate the imzML "
            "file instead (a modality of kind imzml: the run recalibrates centroid spectra peak "
            "by peak), or set recalibration: {enabled: false}",
        )
    raise ConfigError(
        modality.path,
        f"recalibration: {found}; give reference_mz of ions in the sample, a larger ppm or a "
        "lower snr, or set recalibration: {enabled: false}",
    )


#: The spectra section's flagging steps: config field, library function, the ``var`` column that
#: marks a flagged feature and whether true means flagged (False: the column marks kept ones).
SPECTRA_FLAGS = (
    ("matrix", "flag_matrix", "matrix", True),
    ("isotopes", "flag_isotopes", "isotope", True),
    ("spatial_chaos", "spatial_chaos", "spatial_chaos_ok", False),
    ("spatial_moran", "filter_ions_spatial", "spatially_variable", False),
)


def _flag_features(table, spectra: Spectra) -> dict[str, Any]:
    """Run the enabled flagging steps on ``table`` in place; what each flagged, by step."""
    import numpy as np

    from spatialfuse import pp

    done = {}
    for field, name, column, flagged_when in SPECTRA_FLAGS:
        section = getattr(spectra, field)
        if not section.enabled:
            continue
        function = getattr(pp, name)
        function(table, **library_options(section, function, exclude=("enabled", "drop")))
        flagged = np.asarray(table.var[column], dtype=bool) == flagged_when
        done[field] = {"flagged": flagged, "drop": bool(section.drop)}
    return done


def _reason(field: str, var, i: int) -> str:
    """Why feature ``i`` was flagged by step ``field``, in words."""
    row = var.iloc[i]
    if field == "matrix":
        return f"matrix ion {row['matrix_ion']} ({row['matrix_ppm']:+.1f} ppm)"
    if field == "isotopes":
        return f"M+{int(row['isotope_number'])} isotope of {row['isotope_of']}"
    if field == "spatial_chaos":
        return f"spatial chaos score {row['spatial_chaos']:.2f}"
    return f"Moran's I {row['moranI']:.2f} (FDR {row['moranI_fdr']:.2g})"


def _drop_flagged(table, flags: dict[str, Any], modality: Modality):
    """Record every flagged feature (``uns["spectra_flags"]``) and drop those asked for.

    Raises
    ------
    ConfigError
        The features to drop are all the table has.
    """
    import numpy as np
    import pandas as pd

    n = table.n_vars
    flagged = np.zeros(n, dtype=bool)
    dropped = np.zeros(n, dtype=bool)
    for step in flags.values():
        flagged |= step["flagged"]
        if step["drop"]:
            dropped |= step["flagged"]
    reasons = [
        "; ".join(
            _reason(field, table.var, i) for field, step in flags.items() if step["flagged"][i]
        )
        for i in np.flatnonzero(flagged)
    ]
    index = table.var_names[flagged]
    record = pd.DataFrame(
        {
            "mz": np.asarray(table.var["mz"], dtype=np.float64)[flagged],
            "reason": pd.Series(reasons, index=index, dtype=object).astype(str),
            "dropped": dropped[flagged],
        },
        index=index,
    )
    summary = {
        field: {
            "n_flagged": int(step["flagged"].sum()),
            "dropped": step["drop"],
        }
        for field, step in flags.items()
    }
    if dropped.all():
        steps = ", ".join(f for f, step in flags.items() if step["drop"])
        raise ConfigError(
            modality.path,
            f"the spectra section would drop all {n} features ({steps} with drop: true); "
            "loosen their thresholds or set drop: false",
        )
    table.uns["spectra_flags"] = {
        "n_features": n,
        "n_dropped": int(dropped.sum()),
        "steps": summary,
        "features": record,
    }
    if dropped.any():
        table = table[:, ~dropped].copy()
    return table


def _continuous(path) -> bool:
    """Whether the imzML file at ``path`` is continuous (one m/z axis shared by every spectrum)."""
    from spatialfuse.io import ImzMLReader

    with ImzMLReader(path) as reader:
        return reader.shared_mz_axis() is not None


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
    *,
    before_clustering: Callable[[mudata.MuData], None] | None = None,
) -> mudata.MuData:
    """Joint table, per-modality preprocessing and joint clustering (``obs["joint"]``).

    ``before_clustering(mdata)`` runs between the preprocessing and the clustering (the
    combined table of several sections corrects their batches there).
    """
    from spatialfuse import pp, tl

    mdata = tl.joint_table(rna, msi_spots)
    pp.preprocess_rna(mdata["rna"], **library_options(preprocessing.rna, pp.preprocess_rna))
    pp.preprocess_msi(mdata["msi"], **library_options(preprocessing.msi, pp.preprocess_msi))
    if before_clustering is not None:
        before_clustering(mdata)
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
