"""One source of truth: every config option that is also a library parameter has its default.

The run config (``spatialfuse run``) and the library functions it calls must not drift (they
did: ``min_coverage`` was 0.0 in ``sf.tl.map_to_spots`` and 0.5 in the config). Each section is
compared with the signature of the function it configures.
"""

from __future__ import annotations

import inspect

import click
import pytest

import spatialfuse as sf
from spatialfuse.workflow import _config

#: config section → (library function, config field → parameter where the names differ,
#: fields that are the workflow's own).
SECTIONS = {
    "Registration": (sf.reg.register, {}, {"moving", "fixed", "accept_failed", "landmarks"}),
    "Mapping": (sf.tl.map_to_spots, {}, {"msi", "visium"}),
    "RnaPreprocessing": (sf.pp.preprocess_rna, {}, set()),
    "MsiPreprocessing": (sf.pp.preprocess_msi, {}, set()),
    "Clustering": (sf.tl.joint_cluster, {}, set()),
    "Correlation": (
        sf.tl.cross_modal_correlation,
        {"null_model": "null", "n_features": "n_top"},
        {"n_top"},  # pairs shown in the report
    ),
    "Recalibration": (sf.pp.recalibrate, {}, {"enabled"}),
    "PeakPicking": (sf.pp.pick_peaks, {}, {"enabled"}),
    "Annotation": (sf.tl.annotate, {}, {"database"}),
    "MatrixFlags": (sf.pp.flag_matrix, {}, {"enabled", "drop"}),
    "IsotopeFlags": (sf.pp.flag_isotopes, {}, {"enabled", "drop"}),
    "SpatialChaos": (sf.pp.spatial_chaos, {}, {"enabled", "drop"}),
    "SpatialMoran": (sf.pp.filter_ions_spatial, {}, {"enabled", "drop"}),
}


#: config section → the library parameters a run config cannot set, each with the reason.
NOT_IN_CONFIG = {
    "Registration": {
        "moving": "the data (the section's moving/fixed name modalities)",
        "fixed": "the data",
        "initial": "a Transform object (landmarks, or start_from_landmarks, start a run's fit)",
        "landmarks": "set as a CSV file (the section's landmarks), read with read_landmarks",
        "show_progress": "the command line's --quiet",
    },
    "Mapping": {
        "msi": "the data (the section's msi/visium name modalities)",
        "visium": "the data",
        "transform": "composed by the run from its registrations",
        "fill_value": "NaN: later steps tell spots without MSI by it",
        "show_progress": "the command line's --quiet",
    },
    "RnaPreprocessing": {"adata": "the data", "copy": "the run's own table"},
    "MsiPreprocessing": {"adata": "the data", "copy": "the run's own table"},
    "Clustering": {
        "mdata": "the data",
        "key_added": "the run reads obs['joint']",
        "copy": "the run's own table",
        "show_progress": "the command line's --quiet",
    },
    "Correlation": {
        "mdata": "the data",
        "rna_key": "the run's joint table names its modalities rna and msi",
        "msi_key": "the run's joint table names its modalities rna and msi",
        "show_progress": "the command line's --quiet",
    },
    "Recalibration": {
        "adata": "the data (the spectra section's imzml file or store, or its table)",
        "pixel_size_um": "the modality's pixel_size_um",
        "features": (
            "the modality's m/z options (mz, ppm, tol, min_frequency, max_features), as the "
            "FeatureOptions its reader takes: a centroid file's corrected peaks are binned onto "
            "the features the run would otherwise read"
        ),
        "key_added": "the report reads uns['recalibration']",
        "copy": "the run's own table",
        "show_progress": "the command line's --quiet",
    },
    "PeakPicking": {
        "data": "the data (the imzml file, or its recalibrated table)",
        "pixel_size_um": "the modality's pixel_size_um",
        "key_added": "the report reads uns['peaks']",
        "show_progress": "the command line's --quiet",
    },
    "Annotation": {
        "adata": "the data",
        "database": "the section's database file (None: no annotation)",
        "mz_key": "the peaks' or the reader's var['mz']",
        "key_added": "the plots, the correlation table and the report read var['annotation_*']",
        "copy": "the run's own table",
    },
    **{
        section: {
            "adata": "the data (the spectra section's table)",
            "mz_key": "the peaks' or the reader's var['mz']",
            "key_added": "the report and the drop read the library's own var columns",
            "copy": "the run's own table",
        }
        for section in ("MatrixFlags", "IsotopeFlags")
    },
    "SpatialChaos": {
        "adata": "the data (the spectra section's table)",
        "key_added": "the report and the drop read var['spatial_chaos_ok']",
        "copy": "the run's own table",
        "show_progress": "the command line's --quiet",
    },
    "SpatialMoran": {
        "adata": "the data (the spectra section's table)",
        "spatial_key": "the reader's obsm['spatial'] (pixel centres, µm)",
        "key_added": "the report and the drop read var['spatially_variable']",
        "subset": "the section's drop (features are dropped after annotation)",
        "copy": "the run's own table",
    },
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_library_option_is_in_the_config(section):
    """Each parameter of the function a section configures is a field of it (or said why not)."""
    model = getattr(_config, section)
    function, renamed, own = SECTIONS[section]
    fields = {renamed.get(name, name) for name in model.model_fields if name not in own}
    missing = [
        name
        for name in inspect.signature(function).parameters
        if name not in fields and name not in NOT_IN_CONFIG[section]
    ]
    assert not missing, f"{section} cannot set {function.__name__}'s {missing}"


def test_the_spectra_step_passes_every_config_option_on(monkeypatch, tmp_path):
    import functools

    import anndata

    from spatialfuse.workflow import _steps

    calls = {}
    returns = {
        "recalibrate": anndata.AnnData(uns={"recalibration": {}}),
        "pick_peaks": anndata.AnnData(),
        "annotate": None,
    }
    for module, name in ((sf.pp, "recalibrate"), (sf.pp, "pick_peaks"), (sf.tl, "annotate")):
        original = getattr(module, name)

        def recorder(*args, _original=original, _name=name, **kwargs):
            calls[_original] = kwargs
            return returns[_name]

        monkeypatch.setattr(module, name, functools.wraps(original)(recorder))
    database = tmp_path / "db.csv"
    database.write_text("name,mass\na,100\n", encoding="utf-8")
    spectra = _config.Spectra(
        recalibration=_config.Recalibration(enabled=True, n_references=4, model="linear"),
        peaks=_config.PeakPicking(enabled=True, snr=7.0, reference="skyline"),
        annotation=_config.Annotation(database=database, adducts=["[M+H]+"], ppm=2.0),
    )
    modality = _config.Modality(kind="imzml", path=tmp_path / "a.imzML")
    _steps.process_spectra(anndata.AnnData(), modality, spectra)
    for section in ("Recalibration", "PeakPicking", "Annotation"):
        function, renamed, own = SECTIONS[section]
        config = getattr(spectra, {"PeakPicking": "peaks"}.get(section, section.lower()))
        for field_name in type(config).model_fields:
            if field_name in own:
                continue
            passed = calls[function]
            assert passed[renamed.get(field_name, field_name)] == getattr(config, field_name)


def test_the_spectra_flags_pass_every_config_option_on(monkeypatch, tmp_path):
    """The matrix, isotope and spatial sections reach their functions with every option."""
    import functools

    import anndata
    import numpy as np
    import pandas as pd

    from spatialfuse.workflow import _steps

    calls = {}
    columns = {
        "flag_matrix": "matrix",
        "flag_isotopes": "isotope",
        "spatial_chaos": "spatial_chaos_ok",
        "filter_ions_spatial": "spatially_variable",
    }
    for name, column in columns.items():
        original = getattr(sf.pp, name)

        def recorder(adata, _original=original, _column=column, **kwargs):
            calls[_original] = kwargs
            adata.var[_column] = _column.endswith(("_ok", "variable"))  # nothing flagged

        monkeypatch.setattr(sf.pp, name, functools.wraps(original)(recorder))
    spectra = _config.Spectra(
        matrix=_config.MatrixFlags(enabled=True, matrix=["CHCA", "C7H6O4"], ppm=3.0, drop=True),
        isotopes=_config.IsotopeFlags(enabled=True, max_isotope=2, min_correlation=0.2),
        spatial_chaos=_config.SpatialChaos(enabled=True, n_levels=12, min_score=0.4),
        spatial_moran=_config.SpatialMoran(enabled=True, n_top=3, max_fdr=None, n_neighs=8),
    )
    table = anndata.AnnData(
        np.ones((2, 3)), var=pd.DataFrame({"mz": [100.0, 200.0, 300.0]}, index=list("abc"))
    )
    modality = _config.Modality(kind="imzml", path=tmp_path / "a.imzML")
    out = _steps.process_spectra(table, modality, spectra)
    assert out.n_vars == 3 and out.uns["spectra_flags"]["n_dropped"] == 0
    for section, field in (
        ("MatrixFlags", "matrix"),
        ("IsotopeFlags", "isotopes"),
        ("SpatialChaos", "spatial_chaos"),
        ("SpatialMoran", "spatial_moran"),
    ):
        function, renamed, own = SECTIONS[section]
        config = getattr(spectra, field)
        passed = calls[function]
        for field_name in type(config).model_fields:
            if field_name not in own:
                assert passed[renamed.get(field_name, field_name)] == getattr(config, field_name)
        assert not set(passed) & own, (section, passed)


def test_the_steps_pass_every_config_option_on(monkeypatch):
    """Each step calls its library function with every field of its section, renamed alike."""
    import functools

    from spatialfuse.workflow import _steps

    calls = {}

    def record(module, name, returns=None):
        original = getattr(module, name)

        @functools.wraps(original)  # the steps read the signature through __wrapped__
        def recorder(*args, **kwargs):
            calls[original] = kwargs
            return returns

        monkeypatch.setattr(module, name, recorder)

    record(sf.reg, "register")
    record(sf.tl, "map_to_spots")
    record(sf.tl, "joint_table", returns={"rna": None, "msi": None})
    record(sf.pp, "preprocess_rna")
    record(sf.pp, "preprocess_msi")
    record(sf.tl, "joint_cluster")
    record(sf.tl, "cross_modal_correlation")
    _steps.register_pair(None, None, _config.Registration(moving="a", fixed="b"))
    _steps.map_spots(None, None, None, _config.Mapping())
    _steps.build_joint(None, None, _config.Preprocessing(), _config.Clustering())
    _steps.correlate(None, _config.Correlation())
    sections = {"RnaPreprocessing": _config.RnaPreprocessing()}
    sections["MsiPreprocessing"] = _config.MsiPreprocessing()
    sections["Registration"] = _config.Registration(moving="a", fixed="b")
    for name in ("Mapping", "Clustering", "Correlation"):
        sections[name] = getattr(_config, name)()
    for section, config in sections.items():
        function, renamed, own = SECTIONS[section]
        passed = calls[function]
        for field_name in type(config).model_fields:
            if field_name in own:
                continue
            parameter = renamed.get(field_name, field_name)
            assert parameter in passed, f"{section}.{field_name} is not passed to {parameter}"
            assert passed[parameter] == getattr(config, field_name), (section, field_name)


#: modality kind → (reader, its parameters a modality does not set, each with the reason).
READERS = {
    "imzml": (
        sf.io.read_imzml,
        {
            "path": "the modality's path",
            "features": "the same options as the modality's own keys (mz, ppm, ...)",
            "show_progress": "the command line's --quiet",
        },
    ),
    "histology": (sf.io.read_histology, {"path": "the modality's path"}),
    "visium": (sf.io.read_visium, {"path": "the modality's path"}),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_every_reader_option_is_a_modality_key_with_its_default(kind):
    reader, not_in_config = READERS[kind]
    fields = _config.Modality.model_fields
    compared, missing, drift = [], [], []
    for name, parameter in inspect.signature(reader).parameters.items():
        if name in not_in_config:
            continue
        if name not in fields:
            missing.append(name)
            continue
        compared.append(name)
        if fields[name].default != parameter.default:
            drift.append(f"{name}: {fields[name].default!r} vs {parameter.default!r}")
    assert compared, f"{kind}: nothing compared"
    assert not missing, f"a {kind} modality cannot set {reader.__name__}'s {missing}"
    assert not drift, f"{kind} modality defaults differ from {reader.__name__}'s: {drift}"


def test_read_modality_passes_the_options_of_its_kind(monkeypatch, tmp_path):
    import functools

    from spatialfuse.workflow import _steps

    calls = {}
    for name in ("read_imzml", "read_histology", "read_visium"):
        original = getattr(sf.io, name)

        def recorder(path, _name=name, **kwargs):
            calls[_name] = kwargs

        monkeypatch.setattr(sf.io, name, functools.wraps(original)(recorder))
    monkeypatch.setattr(_steps, "_check_spots_on_tissue", lambda visium, path: visium)
    given = {
        "imzml": {"mz": [760.5], "ppm": 3.0, "min_frequency": 0.1, "max_features": 50},
        "histology": {"series": 1, "pixel_size_um": 0.5},
        "visium": {"counts_file": "raw_feature_bc_matrix.h5", "load_images": False},
    }
    for kind, options in given.items():
        modality = _config.Modality(kind=kind, path=tmp_path / kind, **options)
        _steps.read_modality(modality)
        passed = calls[READERS[kind][0].__name__]
        for name, value in options.items():
            assert passed[name] == value, (kind, name)
        assert set(passed) <= set(_config.Modality.model_fields), passed


def test_a_modality_refuses_another_kinds_reader_options(tmp_path):
    from spatialfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="series"):
        _config.parse_config(
            {"modalities": {"m": {"kind": "imzml", "path": "a.imzML", "series": 1}}}, base=tmp_path
        )


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_config_defaults_are_the_library_defaults(section):
    model = getattr(_config, section)
    function, renamed, own = SECTIONS[section]
    parameters = inspect.signature(function).parameters
    compared, drift = [], []
    for field_name, info in model.model_fields.items():
        if field_name in own:
            continue
        parameter = renamed.get(field_name, field_name)
        assert parameter in parameters, (
            f"{section}.{field_name}: {function.__name__} has no {parameter}"
        )
        compared.append(field_name)
        library = parameters[parameter].default
        if info.default != library:
            drift.append(f"{section}.{field_name} = {info.default!r}, {parameter} = {library!r}")
    assert compared, f"{section}: nothing compared"
    assert not drift, "config defaults differ from the library's: " + "; ".join(drift)


def test_each_step_has_its_own_seed():
    """Registration and the correlation null take their own seeds, not the clustering's."""
    for section in ("Registration", "Correlation", "Clustering"):
        assert getattr(_config, section).model_fields["seed"].default == 0


#: CLI command → (library function, option → parameter where the names differ).
COMMANDS = {
    "register": ("register", {}),
    "map": ("map_to_spots", {}),
    "cluster": ("joint_cluster", {}),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_option_defaults_are_the_library_defaults(command):
    from spatialfuse.cli._run import COMMANDS as CLI_COMMANDS

    functions = {"register": sf.reg.register, "map_to_spots": sf.tl.map_to_spots}
    functions["joint_cluster"] = sf.tl.joint_cluster
    name, renamed = COMMANDS[command]
    click_command = next(c for c in CLI_COMMANDS if c.name == command)
    parameters = inspect.signature(functions[name]).parameters
    compared, drift = [], []
    for option in click_command.params:
        parameter = renamed.get(option.name, option.name)
        if not isinstance(option, click.Option) or parameter not in parameters:
            continue
        if option.default is None or type(option.default).__name__ == "Sentinel":
            continue  # no default of its own: the library's applies
        compared.append(option.name)
        if option.default != parameters[parameter].default:
            library = parameters[parameter].default
            drift.append(f"--{option.name} {option.default!r} vs {parameter}={library!r}")
    assert compared, f"spatialfuse {command}: nothing compared"
    assert not drift, f"spatialfuse {command} defaults differ from the library's: {drift}"


def test_a_dumped_config_validates_again(tmp_path):
    """Other kinds' reader options at their defaults are accepted: a dump holds every key."""
    modalities = {
        "m": {"kind": "imzml", "path": "a.imzML", "ppm": 3.0},
        "h": {"kind": "histology", "path": "h.png", "series": 1},
        "v": {"kind": "visium", "path": "v", "load_images": False},
    }
    config = _config.parse_config({"modalities": modalities}, base=tmp_path)
    assert _config.RunConfig.model_validate(config.model_dump(mode="json")) == config
