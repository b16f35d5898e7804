"""``spatialfuse run``: read, register, map, integrate, cluster, correlate, export, report.

Each step's result is cached under a key of everything it used (:mod:`._steps_cache`), every
output is written atomically, and the output folder is locked for the run (:mod:`._lock`). What
a run writes is listed in the folder's journal (:mod:`._journal`): a run deletes only temporaries
listed there and refuses a folder holding files it did not write, unless forced. A
registration that fails its quality checks stops the run with
:class:`~spatialfuse.errors.RegistrationFailedError` after writing its transform, QC figure, the
summary and the report, unless the path (or the caller) accepts failures.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialfuse._io_utils import atomic_path
from spatialfuse._json import jsonable
from spatialfuse._limits import limits
from spatialfuse._logging import logger
from spatialfuse._text import literal_text_figures, printable
from spatialfuse._version import __version__
from spatialfuse.core.visium_geometry import visium_um_per_px
from spatialfuse.errors import NoOverlapError, RegistrationFailedError
from spatialfuse.workflow import _steps
from spatialfuse.workflow._journal import Journal, check_foreign, check_output_folder
from spatialfuse.workflow._lock import output_lock
from spatialfuse.workflow._steps_cache import StepCache, input_fingerprint, step_key

if TYPE_CHECKING:
    import anndata
    import mudata
    import pandas as pd

    from spatialfuse.reg import Transform
    from spatialfuse.workflow._config import Registration, RunConfig

SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"


@dataclass
class RegistrationRecord:
    """One registration of a run: its transform, metrics, verdict and where its outputs are."""

    registration: Registration
    transform: Transform
    metrics: dict[str, Any]
    ok: bool
    failures: list[str]
    reused: bool
    transform_file: Path
    qc_figure: Path | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Whether the run may go on with this registration."""
        return self.ok or self.registration.accept_failed

    def summary(self) -> dict[str, Any]:
        """JSON-compatible record for ``summary.json``."""
        return {
            "moving": self.registration.moving,
            "fixed": self.registration.fixed,
            "model": self.registration.model,
            "ok": self.ok,
            "accepted_despite_failure": (not self.ok) and self.registration.accept_failed,
            "failures": list(self.failures),
            "metrics": jsonable(self.metrics),
            "details": jsonable(self.details),
            "reused_from_cache": self.reused,
            "transform_file": str(self.transform_file),
            "transform_kind": self.transform.kind,
        }


@dataclass
class RunResult:
    """What a run produced (everything is also on disk under ``output``)."""

    config: RunConfig
    output: Path
    registrations: list[RegistrationRecord] = field(default_factory=list)
    msi_to_visium: Transform | None = None
    msi_spots: anndata.AnnData | None = None
    mdata: mudata.MuData | None = None
    correlation: pd.DataFrame | None = None
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    damaged_cache: list[str] = field(default_factory=list)
    stale_removed: list[str] = field(default_factory=list)
    failed: RegistrationRecord | None = None
    no_overlap: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    modalities: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether every registration passed its checks (or was accepted) and the run finished."""
        return self.failed is None


class _Steps:
    """A progress bar over the run's steps that also times them."""

    def __init__(self, names: list[str], *, show: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(names), desc="spatialfuse", disable=not show, leave=False)
        self.timings: dict[str, float] = {}

    def run(self, name: str, func, *args, **kwargs):
        self.bar.set_description(name)
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_pipeline(
    config: RunConfig,
    *,
    accept_failed: bool = False,
    reuse: bool = True,
    show_progress: bool = True,
    write_report: bool | None = None,
    evaluate: Callable[[RunResult], dict[str, Any]] | None = None,
    force: bool = False,
) -> RunResult:
    """Run everything a config asks for and write the outputs into ``config.output``.

    Parameters
    ----------
    config
        A validated :class:`~spatialfuse.workflow._config.RunConfig` (``load_config``).
    accept_failed
        Continue past registrations that fail their checks (as if every path set
        ``accept_failed: true``).
    reuse
        Reuse cached step results whose inputs and settings are unchanged.
    show_progress
        Show a progress bar over the steps.
    write_report
        Override ``config.outputs.report``.
    evaluate
        Called with the finished result before the summary and report are written; what it
        returns goes into ``summary.json["evaluation"]`` and the report (the demo scores the run
        against the synthetic truth this way).
    force
        Write into an output folder that holds files spatialfuse did not write, or that contains
        an input. Those files are never deleted (one at a path the run writes is replaced).

    Returns
    -------
    RunResult
        Transforms, tables and the paths of every output. ``summary.json`` in the output folder
        holds every metric.

    Raises
    ------
    RegistrationFailedError
        A registration failed its quality checks and was not accepted; the transform, its QC
        figure, ``summary.json`` and the report are written first.
    OutputLockedError
        Another run is writing to the same output folder.
    OutputFolderError
        The output folder is, or lies inside, an input; or (unless ``force``) it contains an
        input or holds files spatialfuse did not write.
    """
    if accept_failed:
        config = config.model_copy(
            update={
                "registrations": [
                    r.model_copy(update={"accept_failed": True}) for r in config.registrations
                ]
            }
        )
    out = Path(config.output)
    check_output_folder(out, _inputs(config), force=force)
    journal = Journal(out)
    with output_lock(out), _library_notices_silenced(), limits(**config.limits.model_dump()):
        journal.remove_temporaries()
        check_foreign(journal, force=force)
        with journal.active():
            return _run_locked(
                config,
                out,
                journal,
                reuse=reuse,
                show=show_progress,
                report=write_report,
                evaluate=evaluate,
            )


def _inputs(config: RunConfig) -> dict[str, Path]:
    """Every input path of a run, by what it is."""
    inputs = {f"modality {name!r}": m.path for name, m in config.modalities.items()}
    for reg in config.registrations:
        if reg.landmarks is not None:
            inputs[f"landmarks of {reg.name}"] = reg.landmarks
    return inputs


def _run_locked(
    config: RunConfig, out: Path, journal: Journal, *, reuse: bool, show: bool, report, evaluate
) -> RunResult:
    cache = StepCache(out / ".cache", enabled=reuse)
    result = RunResult(config=config, output=out)
    msi_name, visium_name = config.msi_name, config.visium_name
    integrate = msi_name is not None and visium_name is not None
    names = ["read"] + (["spectra"] if config.spectra.active else [])
    names += [f"register {r.name}" for r in config.registrations]
    if integrate:
        names += ["map", "cluster", "correlate"]
    names += ["export", "report"]
    steps = _Steps(names, show=show)
    fingerprints = {
        name: input_fingerprint(
            m.path, m.kind, counts_file=m.counts_file if m.kind == "visium" else None
        )
        for name, m in config.modalities.items()
    }
    try:
        modalities = steps.run("read", _read_all, config)
        if config.spectra.active:
            name = config.spectra_msi_name
            fingerprints[name] = _spectra_key(config, fingerprints[name])
            modalities[name] = steps.run(
                "spectra", _spectra_step, modalities[name], config, cache, fingerprints[name]
            )
        result.modalities = modalities
        transforms: dict[tuple[str, str], Transform] = {}
        for reg in config.registrations:
            record = steps.run(
                f"register {reg.name}",
                _register_step,
                reg,
                modalities,
                config,
                fingerprints,
                cache,
                out,
            )
            result.registrations.append(record)
            transforms[(reg.moving, reg.fixed)] = record.transform
            if not record.accepted:
                result.failed = record
                break
        if result.failed is None and integrate:
            transform = _steps.compose_path(transforms, msi_name, visium_name)
            result.msi_to_visium = transform
            transform.save(_steps.transform_file(out, msi_name, visium_name))
            path_keys = _path_key(config, fingerprints)
            map_key = step_key(
                "map",
                config.mapping.model_dump(mode="json"),
                inputs=[fingerprints[msi_name], fingerprints[visium_name]],
                upstream=[path_keys],
            )
            result.msi_spots = steps.run(
                "map",
                _map_step,
                modalities[msi_name],
                modalities[visium_name],
                transform,
                config,
                cache,
                map_key,
            )
            result.no_overlap = _too_few_spots(result)
        if result.failed is None and integrate and result.no_overlap is None:
            joint_key = step_key(
                "joint",
                {
                    "preprocessing": config.preprocessing.model_dump(mode="json"),
                    "clustering": config.clustering.model_dump(mode="json"),
                },
                upstream=[map_key],
            )
            result.mdata = steps.run(
                "cluster",
                _joint_step,
                modalities[visium_name],
                result.msi_spots,
                config,
                cache,
                joint_key,
            )
            corr_key = step_key(
                "correlate", config.correlation.model_dump(mode="json"), upstream=[joint_key]
            )
            result.correlation = steps.run(
                "correlate", _correlate_step, result.mdata, config, cache, corr_key
            )
        steps.run("export", _export_step, result)
        if evaluate is not None:
            result.evaluation = evaluate(result)
        result.reused = list(cache.reused)
        result.damaged_cache = list(cache.damaged)
        want_report = config.outputs.report if report is None else report
        # What an earlier run wrote and this one did not would pass for this run's results.
        keep = [SUMMARY_NAME] + ([REPORT_NAME] if want_report else [])
        result.stale_removed = journal.remove_stale(keep)
        result.timings = steps.timings
        result.summary = _summary(result)
        if want_report:
            steps.run("report", _report_step, result)
        result.timings = steps.timings
        result.summary = _summary(result)
        result.files["summary"] = _write_json(out / SUMMARY_NAME, result.summary)
    finally:
        steps.close()
    if result.failed is not None:
        raise RegistrationFailedError(result.failed.registration.name, result.failed.failures)
    if result.no_overlap is not None:
        raise NoOverlapError(f"{out}: {result.no_overlap}")
    return result


#: Fewest spots with MSI data that joint clustering and correlation are run on.
MIN_SPOTS_WITH_MSI = 10


def _too_few_spots(result: RunResult) -> str | None:
    """Why the joint analysis cannot run on ``result``'s mapped spots, or None if it can."""
    n = int(result.msi_spots.obs["has_msi"].sum())
    if n >= MIN_SPOTS_WITH_MSI:
        return None
    accepted = [r.registration.name for r in result.registrations if not r.ok]
    why = (
        f"registration {', '.join(accepted)} failed its checks and was accepted: the inputs "
        "probably do not show the same tissue"
        if accepted
        else "the MSI and the Visium spots barely overlap after registration"
    )
    return (
        f"only {n} of {result.msi_spots.n_obs} Visium spots have MSI data (at least "
        f"{MIN_SPOTS_WITH_MSI} are needed), so joint clustering and correlation were not run; "
        f"{why}. The report and summary.json show the mapping."
    )


@contextlib.contextmanager
def _library_notices_silenced():
    """Hide other libraries' notices about their own future defaults during a run.

    They concern those libraries' APIs, not the user's data, and would bury the run's own
    warnings (e.g. a failed registration). Everything else is shown.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="mudata")
        warnings.filterwarnings("ignore", message=".*pull_on_update.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*zarr v3 autosharding.*")
        warnings.filterwarnings("ignore", category=SyntaxWarning, module="docrep")
        warnings.filterwarnings("ignore", message=".*is not a valid key.*", category=SyntaxWarning)
        yield


def _read_all(config: RunConfig) -> dict[str, Any]:
    # An imzML whose peaks are picked from the file itself is not read as a table first (a
    # profile file's table is what picking streams past).
    return {
        name: None
        if name == config.spectra_msi_name and _steps.reads_spectra_from_file(m, config.spectra)
        else _steps.read_modality(m)
        for name, m in config.modalities.items()
    }


def _spectra_key(config: RunConfig, msi_fingerprint: str) -> str:
    """The spectra step's key; it stands for the MSI in every later step's key.

    The MSI modality's read options (m/z axis, pixel size) are in it: the step's table is built
    on them, whether it recalibrates the file itself or processes the table read with them.
    """
    database = config.spectra.annotation.database
    inputs = [msi_fingerprint] + ([input_fingerprint(database)] if database is not None else [])
    settings = {
        "spectra": config.spectra.model_dump(mode="json"),
        "msi_modality": config.modalities[config.spectra_msi_name].model_dump(
            mode="json", exclude={"path"}
        ),
    }
    return step_key("spectra", settings, inputs=inputs)


def _spectra_step(msi, config: RunConfig, cache: StepCache, key: str):
    import anndata

    modality = config.modalities[config.spectra_msi_name]
    table, _ = cache.cached(
        "spectra",
        key,
        ".h5ad",
        compute=lambda: _steps.process_spectra(msi, modality, config.spectra),
        load=anndata.read_h5ad,
        save=lambda table, tmp: table.write_h5ad(tmp),
    )
    return table


def _registration_settings(reg: Registration, config: RunConfig) -> dict[str, Any]:
    settings = reg.model_dump(mode="json", exclude={"accept_failed", "landmarks"})
    for role in ("moving", "fixed"):
        settings[f"{role}_modality"] = config.modalities[getattr(reg, role)].model_dump(
            mode="json", exclude={"path"}
        )
    return settings


def _registration_key(reg: Registration, config: RunConfig, fingerprints: dict[str, str]) -> str:
    inputs = [fingerprints[reg.moving], fingerprints[reg.fixed]]
    if reg.landmarks is not None:
        inputs.append(input_fingerprint(reg.landmarks))
    return step_key("register", _registration_settings(reg, config), inputs=inputs)


def _path_key(config: RunConfig, fingerprints: dict[str, str]) -> str:
    keys = [_registration_key(r, config, fingerprints) for r in config.registrations]
    return step_key("path", [config.msi_name, config.visium_name], upstream=keys)


def _register_step(reg, modalities, config, fingerprints, cache: StepCache, out: Path):
    key = _registration_key(reg, config, fingerprints)
    slug = f"register_{_steps.output_name(reg.moving)}_to_{_steps.output_name(reg.fixed)}"
    target = _steps.transform_file(out, reg.moving, reg.fixed)
    qc_target = out / "qc" / f"{slug}.png"

    def compute() -> tuple:
        result = _steps.register_pair(modalities[reg.moving], modalities[reg.fixed], reg)
        qc_figure(result, reg, qc_target)
        return (
            qc_target.read_bytes(),
            result.transform,
            jsonable(result.metrics),
            bool(result.ok),
            list(result.failures),
            jsonable(result.details),
        )

    def save(value: tuple, tmp: Path) -> None:
        png, transform, metrics, ok, failures, details = value
        with cache.store(
            slug, key, ".png"
        ) as png_tmp:  # the figure first: the entry vouches for it
            png_tmp.write_bytes(png)
        entry = {
            "transform": transform.to_dict(),
            "metrics": metrics,
            "ok": ok,
            "failures": failures,
            "details": details,
        }
        tmp.write_text(json.dumps(jsonable(entry), indent=1, allow_nan=False), encoding="utf-8")

    load = partial(_load_registration, cache.path(slug, key, ".png"))
    value, reused = cache.cached(slug, key, ".json", compute=compute, load=load, save=save)
    png, transform, metrics, ok, failures, details = value
    if reused:
        qc_target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(qc_target) as tmp:
            tmp.write_bytes(png)
    transform.save(target)
    logger.info("registration %s: %s", reg.name, "ok" if ok else "FAILED " + "; ".join(failures))
    return RegistrationRecord(
        reg, transform, metrics, ok, failures, reused, target, qc_target, details
    )


def _load_registration(png: Path, entry: Path) -> tuple:
    """A stored registration: its QC figure's bytes, transform, metrics, verdict, details.

    Raises (so that the cache treats the entry as a miss) when the figure is missing or does not
    match its seal, or the entry lacks a field.
    """
    from spatialfuse.reg import Transform

    if not StepCache.intact_file(png):
        raise ValueError(f"{png.name} is missing or damaged")
    data = json.loads(entry.read_text(encoding="utf-8"))
    transform = Transform.from_dict(data["transform"])
    failures = [str(f) for f in data["failures"]]
    ok = data["ok"]
    if not isinstance(ok, bool) or not isinstance(data["metrics"], dict):
        raise ValueError("ok or metrics has the wrong type")
    return png.read_bytes(), transform, data["metrics"], ok, failures, dict(data["details"])


@literal_text_figures
def qc_figure(result, reg: Registration, path: Path) -> None:
    """Write the QC figure of one registration result to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from spatialfuse.pl import registration_qc
    from spatialfuse.reg import read_landmarks

    landmarks = read_landmarks(reg.landmarks) if reg.landmarks is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = registration_qc(result, landmarks=landmarks, title=f"{reg.name} ({reg.model})", save=path)
    plt.close(fig)


def _map_step(msi, visium, transform, config: RunConfig, cache: StepCache, key: str):
    import anndata

    spots, _ = cache.cached(
        "map",
        key,
        ".h5ad",
        compute=lambda: _steps.map_spots(msi, visium, transform, config.mapping),
        load=anndata.read_h5ad,
        save=lambda spots, tmp: spots.write_h5ad(tmp),
    )
    return spots


def _joint_step(visium, msi_spots, config: RunConfig, cache: StepCache, key: str):
    import mudata

    mdata, _ = cache.cached(
        "joint",
        key,
        ".h5mu",
        compute=lambda: _steps.build_joint(
            visium, msi_spots, config.preprocessing, config.clustering
        ),
        load=mudata.read_h5mu,
        save=lambda mdata, tmp: mdata.write_h5mu(tmp),
    )
    return mdata


def _correlate_step(mdata, config: RunConfig, cache: StepCache, key: str):
    import pandas as pd

    table, _ = cache.cached(
        "correlate",
        key,
        ".csv",
        compute=lambda: _steps.correlate(mdata, config.correlation),
        load=pd.read_csv,
        save=lambda table, tmp: table.to_csv(tmp, index=False),
    )
    return table


def _export_step(result: RunResult) -> None:
    from spatialfuse.workflow._export import export_outputs

    export_outputs(result)


def _report_step(result: RunResult) -> None:
    from spatialfuse.workflow._report_content import write_run_report

    result.files["report"] = write_run_report(result, result.output / REPORT_NAME)


def _summary(result: RunResult) -> dict[str, Any]:
    config = result.config
    summary: dict[str, Any] = {
        "spatialfuse_version": __version__,
        "status": (
            "registration_failed"
            if not result.ok
            else "too_few_spots_with_msi"
            if result.no_overlap
            else "ok"
        ),
        "output": str(result.output),
        "inputs": {
            name: _describe_input(name, result.modalities.get(name), m)
            for name, m in config.modalities.items()
        },
        "registrations": [r.summary() for r in result.registrations],
    }
    if result.failed is not None:
        summary["failed_registration"] = result.failed.registration.name
    if result.no_overlap is not None:
        summary["not_run"] = result.no_overlap
    if result.msi_spots is not None:
        obs = result.msi_spots.obs
        summary["mapping"] = {
            "method": config.mapping.method,
            "aggregate": config.mapping.aggregate,
            "n_spots": int(obs.shape[0]),
            "n_spots_with_msi": int(obs["has_msi"].sum()),
            "fraction_spots_with_msi": float(obs["has_msi"].mean()) if obs.shape[0] else 0.0,
            "median_coverage_of_covered_spots": (
                float(obs.loc[obs["has_msi"], "msi_coverage"].median())
                if obs["has_msi"].any()
                else 0.0
            ),
        }
    if result.mdata is not None and "joint" in result.mdata.obs:
        labels = result.mdata.obs["joint"]
        summary["clustering"] = {
            "method": config.clustering.method,
            "n_clusters": int(labels.dropna().nunique()),
            "n_spots_clustered": int(labels.notna().sum()),
            "cluster_sizes": {str(k): int(v) for k, v in labels.value_counts().items()},
        }
    if result.correlation is not None:
        top = result.correlation.head(config.correlation.n_top)
        summary["correlation"] = {
            "method": config.correlation.method,
            "n_pairs_tested": len(result.correlation),
            "top_pairs": jsonable(top.to_dict(orient="records")),
        }
    if result.evaluation is not None:
        summary["evaluation"] = jsonable(result.evaluation)
    summary["files"] = {k: str(v) for k, v in result.files.items()}
    summary["reused_steps"] = list(result.reused)
    summary["damaged_cache_entries_recomputed"] = list(result.damaged_cache)
    summary["stale_outputs_removed"] = list(result.stale_removed)
    summary["timings_s"] = dict(result.timings)
    summary["config"] = config.model_dump(mode="json")
    summary["platform"] = {"python": platform.python_version(), "machine": platform.machine()}
    return summary


def _describe_input(name: str, data, modality) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": modality.kind, "path": printable(modality.path)}
    if data is None:
        return info
    if modality.kind in ("imzml", "msi_zarr"):
        uns = data.uns.get("spatialfuse", {})
        info["n_pixels"] = int(data.n_obs)
        info["n_features"] = int(data.n_vars)
        info["pixel_size_um"] = jsonable(uns.get("pixel_size_um"))
    elif modality.kind == "histology":
        info["shape_px"] = [int(v) for v in data.shape[:2]]
        info["pixel_size_um"] = jsonable(getattr(data, "pixel_size_um", None))
    else:
        info["n_spots"] = int(data.n_obs)
        info["n_genes"] = int(data.n_vars)
        info["um_per_px"] = visium_um_per_px(data, f"modality {name!r}", required=False)
        checks = data.uns.get("spatialfuse", {}).get("consistency_checks")
        if checks:
            info["consistency_checks"] = jsonable(checks)
    return info


def _write_json(path: Path, data) -> Path:
    text = json.dumps(jsonable(data), indent=1, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
