"""The run configuration of ``spatialfuse run``: a YAML file validated by pydantic.

:data:`EXAMPLE_CONFIG` is the annotated reference (``spatialfuse init-config`` writes it,
``spatialfuse run --help`` and ``docs/config.md`` show it); a test checks that it validates.
Relative paths are resolved against the config file's folder, so a project folder can be moved as
a whole.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spatialfuse._limits import ENVIRONMENT, current_limits, require_regular_file
from spatialfuse.core.visium_geometry import SPOT_DIAMETER_UM
from spatialfuse.errors import ConfigError
from spatialfuse.workflow._example import EXAMPLE_CONFIG

__all__ = ["EXAMPLE_CONFIG", "RunConfig", "load_config", "parse_config", "read_config_yaml"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _absent_sections(cls, data: Any) -> Any:
        """A section left out takes all its own defaults, as if given as an empty mapping.

        A section is a field whose type is itself one of these models; it is declared without a
        default (``mapping: Mapping``), and this rule gives it one.
        """
        if not isinstance(data, dict):
            return data
        absent = {
            name: {}
            for name, field in cls.model_fields.items()
            if name not in data
            and field.is_required()
            and isinstance(field.annotation, type)
            and issubclass(field.annotation, _Model)
        }
        return {**data, **absent} if absent else data


Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=1)]


class Modality(_Model):
    """One input file or folder, with the options of its reader.

    ``kind: imzml`` is read with :func:`spatialfuse.io.read_imzml` (its m/z features as in
    :class:`spatialfuse.io.FeatureOptions`), ``msi_zarr`` (a store written by
    :func:`spatialfuse.io.convert_imzml` or ``spatialfuse convert``) with
    :func:`spatialfuse.io.read_msi_zarr`, lazily, ``histology`` with
    :func:`spatialfuse.io.read_histology`, ``visium`` with :func:`spatialfuse.io.read_visium`;
    an option of another kind's reader is refused.
    """

    kind: Literal["imzml", "msi_zarr", "histology", "visium"]
    path: Path
    pixel_size_um: Annotated[float, Field(gt=0)] | Literal["auto"] | None = None
    #: imzml: m/z values to extract (None: the file's axis, or a common axis of its peaks).
    mz: list[Positive] | None = None
    #: imzml: window half-width (ppm, or m/z units with tol), common-axis options.
    ppm: Positive | None = None
    tol: Positive | None = None
    min_frequency: Fraction = 0.01
    max_features: Count | None = 10_000
    #: imzml: keep the offset table in the cache of spatialfuse (a later read skips the scan).
    cache: bool = True
    #: histology: the image series of a multi-series TIFF.
    series: Annotated[int, Field(ge=0)] = 0
    #: visium: the count matrix (relative to the folder), library id, images, counts required.
    counts_file: str = "filtered_feature_bc_matrix.h5"
    library_id: str | None = None
    load_images: bool = True
    require_counts: bool = True

    @model_validator(mode="after")
    def _pixel_size_applies(self) -> Modality:
        if self.kind == "visium" and self.pixel_size_um is not None:
            raise ValueError(
                "pixel_size_um does not apply to Visium folders (their scale comes from the "
                "100 µm spot pitch)"
            )
        if self.kind == "msi_zarr" and self.pixel_size_um is not None:
            raise ValueError(
                "pixel_size_um does not apply to MSI stores: the pixel size is fixed at "
                "conversion (spatialfuse convert --pixel-size)"
            )
        if self.kind == "imzml" and self.pixel_size_um == "auto":
            raise ValueError(
                "pixel_size_um: auto applies to histology images (registration estimates it); "
                "an imzML without a pixel size needs the number"
            )
        # other kinds' options may stand at their defaults (a dumped config holds every key)
        fields = type(self).model_fields
        wrong = [
            f
            for f, kind in sorted(_READER_OPTION.items())
            if kind != self.kind and getattr(self, f) != fields[f].default
        ]
        if wrong:
            kinds = ", ".join(f"{f} ({_READER_OPTION[f]} only)" for f in wrong)
            raise ValueError(f"{kinds}: not for the reader of {self.kind} inputs")
        if self.ppm is not None and self.tol is not None:
            raise ValueError("give ppm or tol, not both")
        return self


#: The kinds of MSI input: an imzML read in memory, a converted zarr store read lazily.
MSI_KINDS = ("imzml", "msi_zarr")

#: The reader options of one kind of input (``pixel_size_um`` is checked on its own).
_READER_OPTION = {
    **dict.fromkeys(("mz", "ppm", "tol", "min_frequency", "max_features", "cache"), "imzml"),
    "series": "histology",
    **dict.fromkeys(("counts_file", "library_id", "load_images", "require_counts"), "visium"),
}


class Registration(_Model):
    """One registration: ``moving`` onto ``fixed`` (:func:`spatialfuse.reg.register`).

    Every option of ``register`` but the data and an ``initial`` transform object, with its
    default; ``landmarks`` is a CSV file here (read with :func:`spatialfuse.reg.read_landmarks`).
    """

    moving: str
    fixed: str
    model: Literal["rigid", "similarity", "affine", "bspline"] = "affine"
    landmarks: Path | None = None
    max_tre_um: Annotated[float, Field(gt=0)] | None = None
    accept_failed: bool = False
    #: Whether the search estimates a missing or implausible pixel size (``sf.reg.register``).
    scale: Literal["auto", "given", "estimate"] = "auto"
    #: The optical channel: ``auto`` picks one per pair.
    channel: Literal["auto", "od", "gray", "hematoxylin", "eosin"] = "auto"
    #: Start from the landmarks instead of the automatic search (where the search fails).
    start_from_landmarks: bool = False
    #: Seed of the registration's random sampling (its own, not the clustering's).
    seed: int = 0
    #: Resolution the images are compared at; None: the library's choice.
    working_pixel_size_um: Positive | None = None
    #: The MSI image: ``auto``, ``pc1``, ``pc2``, ``tic``, ``tissue_pc1`` or m/z values.
    msi_image: Literal["auto", "pc1", "pc2", "tic", "tissue_pc1"] | list[Positive] = "auto"
    #: The start search: rotations every ``angle_step_deg``, mirrored too, ``n_starts`` refined.
    angle_step_deg: Annotated[float, Field(gt=0, le=360)] = 10.0
    allow_mirror: bool = True
    n_starts: Count = 3
    #: Node spacing of the B-spline field; None: the library's choice.
    bspline_grid_um: Positive | None = None
    #: Quality threshold: tissue overlap (Dice) below this fails the checks.
    min_dice: Fraction = 0.70

    @model_validator(mode="after")
    def _tre_needs_landmarks(self) -> Registration:
        if self.max_tre_um is not None and self.landmarks is None:
            raise ValueError("max_tre_um needs landmarks (the error is measured on them)")
        if self.start_from_landmarks and self.landmarks is None:
            raise ValueError("start_from_landmarks needs landmarks (a CSV of clicked pairs)")
        return self

    @property
    def name(self) -> str:
        """``moving → fixed``, as reports and errors name it."""
        return f"{self.moving} → {self.fixed}"


class Mapping(_Model):
    """MSI pixels onto Visium spots (:func:`spatialfuse.tl.map_to_spots`)."""

    msi: str | None = None
    visium: str | None = None
    method: Literal["area", "radius", "nearest", "overlap"] = "area"
    aggregate: Literal["mean", "sum"] = "mean"
    #: Spots whose disc is less covered by MSI count as without MSI (the library's default, 0).
    min_coverage: Fraction = 0.0
    spot_diameter_um: Positive = SPOT_DIAMETER_UM
    #: Threshold of ``method: overlap``, a fraction of the disc's area.
    overlap_fraction: Annotated[float, Field(gt=0, le=1)] = 0.2
    #: Distance threshold of ``radius`` and ``nearest``, µm.
    radius_um: Positive | None = None
    #: Quadrature points per disc.
    n_samples: Count = 1024
    #: Aggregate this layer of the MSI table instead of ``X``.
    layer: str | None = None


class RnaPreprocessing(_Model):
    """RNA preprocessing (:func:`spatialfuse.pp.preprocess_rna`)."""

    n_top_genes: Annotated[int, Field(gt=0)] = 2000
    n_comps: Annotated[int, Field(gt=1)] = 30
    #: Counts per spot after normalisation; None: the median of the spots' totals.
    target_sum: Positive | None = None
    scale: bool = True
    max_value: Positive | None = 10.0
    random_state: int = 0


class MsiPreprocessing(_Model):
    """MSI preprocessing (:func:`spatialfuse.pp.preprocess_msi`)."""

    norm: Literal["tic", "rms", "median", "none"] = "tic"
    log: bool = True
    spatial_filter: bool = False
    #: Options of ``sf.pp.filter_ions_spatial`` (``min_moran``, ``max_fdr``, ``n_top``, ...).
    filter_kwargs: dict[str, Any] | None = None
    n_comps: Annotated[int, Field(gt=1)] = 30
    scale: bool = True
    max_value: Positive | None = 10.0
    random_state: int = 0


class Preprocessing(_Model):
    """Per-modality preprocessing."""

    rna: RnaPreprocessing
    msi: MsiPreprocessing


class Clustering(_Model):
    """Joint clustering (:func:`spatialfuse.tl.joint_cluster`)."""

    method: Literal["wnn", "concat", "mofa"] = "concat"
    #: ``"auto"``: chosen from the data by cluster stability (see ``sf.tl.joint_cluster``).
    resolution: Literal["auto"] | Annotated[float, Field(gt=0)] = "auto"
    #: Weight of the spatial graph; None: the library's default (0.3 where spots have positions).
    spatial_smoothing: Annotated[float, Field(ge=0, lt=1)] | None = None
    seed: int = 0
    #: Search the resolution that gives exactly this many clusters.
    n_clusters: Count | None = None
    n_neighbors: Annotated[int, Field(ge=2)] = 20
    #: The modalities clustered on (``rna``, ``msi``); None: both.
    modalities: list[Literal["rna", "msi"]] | None = None
    use_rep: str = "X_pca"
    n_pcs: Count | dict[str, Count] | None = None
    #: ``method: concat``: ``auto`` (each modality's components weighted by their spatial signal
    #: share, see ``sf.tl.joint_cluster``), null (equal blocks) or the relative weight of each
    #: modality's block.
    weights: Literal["auto"] | dict[str, Annotated[float, Field(ge=0)]] | None = "auto"
    #: ``method: mofa``: number of MOFA+ factors.
    n_factors: Count = 10
    n_spatial_neighbors: Count = 6
    #: ``method: concat``: share of each spot's embedding replaced by its spatial neighbours'
    #: mean (0: none; 0.5 with ``detrend``: the option for a noisy modality), or
    #: ``noise_share`` (each component by its own noise share), see ``sf.tl.joint_cluster``.
    feature_smoothing: Literal["noise_share"] | Annotated[float, Field(ge=0, le=1)] = 0.0
    #: ``method: concat``: remove each component's linear trend in spot position first
    #: (``binned``: only slopes alike across the section count, see ``sf.tl.joint_cluster``).
    detrend: bool | Literal["binned"] = False
    #: Spots lacking a modality: ``place`` (labelled by their neighbours) or ``exclude``.
    incomplete: Literal["place", "exclude"] = "place"


class Correlation(_Model):
    """Cross-modality association (:func:`spatialfuse.tl.cross_modal_correlation`)."""

    method: Literal["pearson", "spearman"] = "pearson"
    null_model: Literal["dutilleul", "msr"] = "dutilleul"
    #: Most variable genes and ions paired (``n_top`` of the library, same default).
    n_features: Annotated[int, Field(gt=1)] = 500
    n_top: Annotated[int, Field(gt=0)] = 20
    n_permutations: Annotated[int, Field(ge=19)] = 999
    #: Seed of the null model's permutations (its own, not the clustering's).
    seed: int = 0
    #: Genes and ions paired (names, or m/z values for ions); None: the most variable.
    genes: list[str] | None = None
    ions: list[str | float] | None = None
    rna_layer: str | None = None
    msi_layer: str | None = None
    #: Matching window of m/z values in ``ions`` (± ppm, default 10, or ± tol m/z).
    ppm: Positive | None = None
    tol: Positive | None = None

    @model_validator(mode="after")
    def _one_window(self) -> Correlation:
        if self.ppm is not None and self.tol is not None:
            raise ValueError("give ppm or tol, not both")
        return self


class Recalibration(_Model):
    """Per-pixel m/z recalibration (:func:`spatialfuse.pp.recalibrate`).

    Profile spectra are shifted point by point; an imzML of centroid spectra is recalibrated
    peak by peak from the file and binned onto the MSI modality's m/z options.
    """

    enabled: bool = False
    #: Lock masses (m/z); None: the data's own most frequent peaks.
    reference_mz: list[Positive] | None = None
    n_references: Count = 10
    ppm: Positive = 30.0
    snr: Positive = 5.0
    #: ``piecewise``: msiWarp-style warping, a ppm offset piecewise linear in m/z.
    model: Literal["shift", "linear", "piecewise"] = "shift"
    #: Nodes of the ``piecewise`` model, at quantiles of the references (a pixel with fewer
    #: than n_nodes + 2 references found falls back to linear).
    n_nodes: Annotated[int, Field(ge=2)] = 5
    #: An ``obs`` column whose pixels share one model (``imzml_y``: one per line).
    group_by: str | None = None
    #: ``auto``: decided from the file (a path) or the table; ``centroid``/``profile`` insist.
    spectrum_type: Literal["auto", "centroid", "profile"] = "auto"


class PeakPicking(_Model):
    """Peak picking of profile spectra into a centroided table (:func:`spatialfuse.pp.pick_peaks`).

    The imzML file or store is streamed, recalibrated or not (never a dense pixels × points
    table; a processed profile file to recalibrate is read on a common axis first).
    """

    enabled: bool = False
    snr: Positive = 3.0
    half_window: Count = 2
    baseline_window: Count | None = None
    window_fwhm: Positive = 1.0
    reference: Literal["mean", "skyline"] = "mean"
    min_frequency: Fraction = 0.0
    ppm: Positive = 5.0
    #: ``counts``: counting statistics of each peak's window in one pixel, for ion-counting
    #: TOF data kept on every digitizer point; ``auto``: ``counts`` where the data are ion
    #: counts, else ``nonzero`` (see ``sf.pp.pick_peaks``; the choice is in the report).
    noise: Literal["auto", "nonzero", "all", "counts"] = "auto"


class Annotation(_Model):
    """Putative annotation against the user's database (:func:`spatialfuse.tl.annotate`)."""

    #: CSV/TSV of names and formulas or masses (HMDB, LIPID MAPS or METASPACE exports);
    #: None: no annotation.
    database: Path | None = None
    adducts: list[str] | None = None
    ppm: Positive = 5.0
    polarity: Literal["positive", "negative"] | None = None


class MatrixFlags(_Model):
    """Matrix ions and clusters flagged (:func:`spatialfuse.pp.flag_matrix`), dropped on request."""

    enabled: bool = False
    #: Names of known matrices (DHB, CHCA, 9-AA, DAN, SA, NEDC) or molecular formulas.
    matrix: str | list[str] = "DHB"
    ppm: Positive = 5.0
    max_cluster: Count = 3
    polarity: Literal["positive", "negative"] | None = None
    #: Remove the flagged features from the table later steps use (else only ``var`` flags).
    drop: bool = False


class IsotopeFlags(_Model):
    """¹³C isotope peaks flagged (:func:`spatialfuse.pp.flag_isotopes`), dropped on request."""

    enabled: bool = False
    ppm: Positive = 5.0
    max_isotope: Count = 3
    charge: Count = 1
    max_ratio: Positive = 3.0
    min_correlation: Annotated[float, Field(ge=-1, le=1)] = 0.5
    #: Remove the isotope peaks from the table later steps use (else only ``var`` flags).
    drop: bool = False


class SpatialChaos(_Model):
    """Ion images scored for spatial structure (:func:`spatialfuse.pp.spatial_chaos`)."""

    enabled: bool = False
    n_levels: Annotated[int, Field(ge=2)] = 30
    min_score: Fraction = 0.5
    #: Remove the features scoring below ``min_score`` from the table later steps use.
    drop: bool = False


class SpatialMoran(_Model):
    """Ion images scored by Moran's I (:func:`spatialfuse.pp.filter_ions_spatial`)."""

    enabled: bool = False
    min_moran: float = 0.1
    max_fdr: Annotated[float, Field(gt=0, le=1)] | None = 0.05
    n_top: Count | None = None
    n_neighs: Count | None = None
    #: Remove the features not kept from the table later steps use (the library's ``subset``).
    drop: bool = False


class Spectra(_Model):
    """Spectra processing of the MSI before registration.

    In this order: recalibration, peaks, matrix and isotope flags, spatial scores (chaos,
    Moran's I), annotation; then the features flagged in a section with ``drop: true`` are
    removed (after annotation, so isotope scores still see the M+1 peaks).
    """

    #: The imzml or msi_zarr modality processed (None: the run's only MSI input).
    msi: str | None = None
    recalibration: Recalibration
    peaks: PeakPicking
    matrix: MatrixFlags
    isotopes: IsotopeFlags
    spatial_chaos: SpatialChaos
    spatial_moran: SpatialMoran
    annotation: Annotation

    @property
    def active(self) -> bool:
        """Whether any spectra step is asked for."""
        return (
            any(
                s.enabled
                for s in (
                    self.recalibration,
                    self.peaks,
                    self.matrix,
                    self.isotopes,
                    self.spatial_chaos,
                    self.spatial_moran,
                )
            )
            or self.annotation.database is not None
        )


class Outputs(_Model):
    """Which outputs to write."""

    h5mu: bool = True
    h5ad: bool = True
    spatialdata: bool = True
    spaceranger_like: bool = False
    warped_images: bool = False
    report: bool = True


class ResourceLimits(_Model):
    """Resource limits of a run (``spatialfuse._limits``); null keeps the default."""

    max_decoded_image_bytes: Annotated[int, Field(gt=0)] | None = None
    max_spots: Annotated[int, Field(gt=0)] | None = None
    #: Bytes of a store-backed MSI table a streaming step holds at once (``kind: msi_zarr``).
    max_block_bytes: Annotated[int, Field(gt=0)] | None = None


class RunConfig(_Model):
    """A whole run: inputs, registrations, mapping, analysis, outputs and resource limits."""

    output: Path = Path("results")
    modalities: dict[str, Modality]
    registrations: list[Registration] = []
    mapping: Mapping
    preprocessing: Preprocessing
    clustering: Clustering
    correlation: Correlation
    spectra: Spectra
    outputs: Outputs
    limits: ResourceLimits

    @field_validator("modalities")
    @classmethod
    def _some_modalities(cls, value: dict[str, Modality]) -> dict[str, Modality]:
        if not value:
            raise ValueError("at least one modality is needed")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        names = set(self.modalities)
        seen = set()
        for i, reg in enumerate(self.registrations):
            for role in ("moving", "fixed"):
                name = getattr(reg, role)
                if name not in names:
                    raise ValueError(
                        f"registrations[{i}].{role} is {name!r}, which is not a modality "
                        f"(modalities: {', '.join(sorted(names))})"
                    )
            if reg.moving == reg.fixed:
                raise ValueError(f"registrations[{i}] registers {reg.moving!r} onto itself")
            if (reg.moving, reg.fixed) in seen:
                raise ValueError(f"registrations[{i}] repeats {reg.name}")
            seen.add((reg.moving, reg.fixed))
        msi, visium = self.msi_name, self.visium_name
        for role, name, kinds in (("msi", msi, MSI_KINDS), ("visium", visium, ("visium",))):
            if name is not None and self.modalities[name].kind not in kinds:
                kind = " or ".join(repr(k) for k in kinds)
                raise ValueError(f"mapping.{role} is {name!r}, which is not of kind {kind}")
        if self.spectra.active:
            self._spectra_msi()
        self._distinct_output_files()
        return self

    def _spectra_msi(self) -> str:
        explicit = self.spectra.msi
        if explicit is not None:
            kind = self.modalities.get(explicit)
            if kind is None or kind.kind not in MSI_KINDS:
                raise ValueError(
                    f"spectra.msi is {explicit!r}, which is not an imzml or msi_zarr modality"
                )
            found = [explicit]
        else:
            found = [n for n, m in self.modalities.items() if m.kind in MSI_KINDS]
        if len(found) != 1:
            which = f"several ({', '.join(found)}): say which" if found else "none"
            raise ValueError(
                f"the spectra steps need one imzml or msi_zarr modality; there are {which}"
            )
        if self.modalities[found[0]].kind == "msi_zarr" and not self.spectra.peaks.enabled:
            raise ValueError(
                f"spectra on the msi_zarr store {found[0]!r} need peaks: {{enabled: true}} (the "
                "steps stream the store into a pixels × peaks table; a recalibrated or flagged "
                "copy of the whole store is not written)"
            )
        return found[0]

    @property
    def spectra_msi_name(self) -> str | None:
        """The MSI modality the spectra steps process (None when none is asked for)."""
        return self._spectra_msi() if self.spectra.active else None

    def _distinct_output_files(self) -> None:
        """No two modalities or registrations may write the same output file.

        Names become file names (``transforms/<moving>_to_<fixed>.json``, ``qc/…``) with the
        characters a file name cannot hold replaced, and macOS and Windows file systems ignore
        case: names equal after that would silently replace each other's files.
        """
        from spatialfuse.workflow._steps import output_name

        why = (
            "file names cannot hold some characters and are case-insensitive on macOS and "
            "Windows; rename one"
        )
        seen: dict[str, str] = {}
        for name in self.modalities:
            key = _folded(output_name(name))
            if key in seen:
                raise ValueError(
                    f"modalities {seen[key]!r} and {name!r} would write files of the same name "
                    f"({output_name(seen[key])!r}, {output_name(name)!r}): {why}"
                )
            seen[key] = name
        pairs = [(r.moving, r.fixed, f"registration {r.name}") for r in self.registrations]
        msi, visium = self.msi_name, self.visium_name
        registered = {(r.moving, r.fixed) for r in self.registrations}
        if msi is not None and visium is not None and (msi, visium) not in registered:
            pairs.append((msi, visium, f"the composed MSI → Visium transform {msi} → {visium}"))
        files: dict[str, str] = {}
        for moving, fixed, what in pairs:
            stem = f"{output_name(moving)}_to_{output_name(fixed)}"
            key = _folded(stem)
            if key in files:
                raise ValueError(
                    f"{files[key]} and {what} would both write transforms/{stem}.json (and its QC "
                    f"figure): {why}"
                )
            files[key] = what

    def _only(self, kinds: tuple[str, ...], explicit: str | None, role: str) -> str | None:
        if explicit is not None:
            if explicit not in self.modalities:
                raise ValueError(f"mapping.{role} is {explicit!r}, which is not a modality")
            return explicit
        found = [n for n, m in self.modalities.items() if m.kind in kinds]
        if len(found) > 1:
            raise ValueError(
                f"several {'/'.join(kinds)} modalities ({', '.join(found)}): say which one in "
                f"mapping.{role}"
            )
        return found[0] if found else None

    @property
    def msi_name(self) -> str | None:
        """The MSI modality that is mapped onto spots (None when there is none)."""
        return self._only(MSI_KINDS, self.mapping.msi, "msi")

    @property
    def visium_name(self) -> str | None:
        """The Visium modality spots come from (None when there is none)."""
        return self._only(("visium",), self.mapping.visium, "visium")


def _folded(name: str) -> str:
    """``name`` as a case-insensitive file system compares it."""
    import unicodedata

    return unicodedata.normalize("NFC", name).casefold()


def parse_config(data: dict, *, base: str | os.PathLike, source: str = "<config>") -> RunConfig:
    """Validate a config mapping; relative paths are taken relative to ``base``."""
    if not isinstance(data, dict):
        raise ConfigError(source, "the config must be a YAML mapping (key: value lines)")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _explain(exc)) from None
    return _resolved(config, Path(base))


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML run config.

    Raises
    ------
    MissingFileError
        The file does not exist.
    ConfigError
        The YAML is malformed or does not validate; the message lists every problem with its
        location (e.g. ``registrations.0.model``). A config with ``samples:`` (several sections,
        :func:`spatialfuse.workflow.load_samples_config`) is refused here with a message that
        says so.
    """
    path = Path(path)
    data = read_config_yaml(path)
    if isinstance(data, dict) and "samples" in data:
        raise ConfigError(
            path,
            "lists samples: (a run of several sections): spatialfuse run (or "
            "spatialfuse.workflow.run) runs it, load_samples_config reads it; a command that "
            "works on one section needs one sample's own config",
        )
    return parse_config(data, base=path.resolve().parent, source=str(path))


def read_config_yaml(path: str | os.PathLike) -> Any:
    """The YAML document of a config file, parsed safely within the config limits.

    Raises
    ------
    MissingFileError
        The file does not exist.
    ConfigError
        The file is too large, expands to too many values, or is not valid YAML.
    """
    import yaml

    from spatialfuse.errors import MissingFileError

    path = Path(path)
    if not os.path.exists(path):
        raise MissingFileError(path, "no such config file (spatialfuse init-config writes one)")
    require_regular_file(path, "config file")
    limit = current_limits().max_config_bytes
    with open(path, "rb") as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise ConfigError(
            path,
            f"is larger than {limit:,} bytes (max_config_bytes; "
            f"${ENVIRONMENT['max_config_bytes']} raises it); a run config is a few KB",
        )
    try:
        text = raw.decode("utf-8")
        loader = _strict_loader()(text)
        try:
            node = loader.get_single_node()
            _check_expansion(node, current_limits().max_config_nodes)
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"not valid YAML: {exc}") from None


#: Nesting deeper than this is refused while parsing (a config needs 4 levels).
MAX_YAML_DEPTH = 64


def _check_expansion(node, limit: int) -> None:
    """Refuse a YAML document that expands to more than ``limit`` values.

    Aliases let a few hundred bytes stand for billions of values (the "billion laughs"): PyYAML
    shares the repeated objects, but validating them visits each use. The expanded size is
    counted on the node graph, each node once (memoised), so counting costs the document's size.
    """
    import yaml

    sizes: dict[int, int] = {}

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = 1  # a recursive alias counts once here; construction refuses it later
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        sizes[id(n)] = total
        if total > limit:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"expands to more than {limit:,} values through aliases (max_config_nodes; "
                f"${ENVIRONMENT['max_config_nodes']} raises it)",
                n.start_mark,
            )
        return total

    if node is not None:
        size(node)


@functools.cache
def _strict_loader():
    """PyYAML's safe loader, refusing repeated keys and nesting deeper than ``MAX_YAML_DEPTH``.

    PyYAML keeps the last of two equal keys silently (YAML forbids them: a setting would be
    dropped without a word), builds nested collections recursively (a few thousand ``[`` end in a
    RecursionError) and lets some explicitly tagged values fail with a bare AttributeError,
    ValueError or IndexError; here all of these are YAML errors.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent, index):
            if self._depth >= MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_YAML_DEPTH} levels deep",
                    self.peek_event().start_mark,
                )
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_object(self, node, deep=False):
            try:
                return super().construct_object(node, deep=deep)
            except (yaml.YAMLError, MemoryError):
                raise
            except Exception as exc:
                # PyYAML's constructors fail with AttributeError, ValueError, IndexError, ... on
                # explicitly tagged values they cannot read (`!!timestamp 12`, `!!float ''`).
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read {node.value!r} as {node.tag} ({exc})", node.start_mark
                ) from None

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                if (
                    isinstance(key_node, yaml.ScalarNode)
                    and key_node.tag != "tag:yaml.org,2002:merge"
                ):
                    key = (key_node.tag, key_node.value)
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"the key {key_node.value!r} appears twice (lines {seen[key]} and "
                            f"{line}); remove one",
                            key_node.start_mark,
                        )
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _resolved(config: RunConfig, base: Path) -> RunConfig:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    modalities = {
        name: m.model_copy(update={"path": absolute(m.path)})
        for name, m in config.modalities.items()
    }
    registrations = [
        r.model_copy(update={"landmarks": absolute(r.landmarks)}) for r in config.registrations
    ]
    annotation = config.spectra.annotation
    annotation = annotation.model_copy(update={"database": absolute(annotation.database)})
    spectra = config.spectra.model_copy(update={"annotation": annotation})
    return config.model_copy(
        update={
            "output": absolute(config.output),
            "modalities": modalities,
            "registrations": registrations,
            "spectra": spectra,
        }
    )


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        message = message.removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "invalid config:\n  " + "\n  ".join(lines)
