"""Several sections in parallel on a ``dask.distributed`` cluster, and one table of them all.

Each sample of a :class:`~._samples_config.MultiRunConfig` runs the single-section pipeline
(:func:`~._pipeline.run_pipeline`, unchanged) into ``<output>/<name>/`` (its own report, summary,
step cache, journal and lock), as one task on a cluster: a ``LocalCluster`` of processes started
for the run, or the scheduler at ``parallel.scheduler`` (the same code on one machine or many; the
workers need the same paths to the inputs and the output folder). A sample that fails is caught
in its task and reported with its name and error; the others finish. The client then builds one
joint table of every finished sample's spots (``obs["sample"]``, unique ``obs_names``), corrects
each modality's components for the sections (``combined.batch_correction``,
:func:`correct_batches`), clusters it across sections with :func:`spatialfuse.tl.joint_cluster`
and writes it atomically, with a ``summary.json`` of every sample, into the output folder. The
combined table is a step of the run's own cache (``<output>/.cache/``): its key holds every
sample's tables (:func:`sample_digest`) and the combined settings, so an unchanged re-run reuses
it.

The output folder is locked and journaled like a single run's: the sample folders and the
combined files are listed in its journal, a folder holding files spatialfuse did not write is
refused unless forced, and only files it wrote are ever replaced.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialfuse._json import jsonable
from spatialfuse._logging import logger
from spatialfuse._version import __version__

if TYPE_CHECKING:
    import anndata
    import mudata
    import numpy as np

    from spatialfuse.workflow._config import Clustering, Preprocessing, RunConfig
    from spatialfuse.workflow._samples_config import Combined, MultiRunConfig
    from spatialfuse.workflow._steps_cache import StepCache

SUMMARY_NAME = "summary.json"
COMBINED_H5MU = "combined.h5mu"
COMBINED_H5AD = "combined.h5ad"
#: The ``obs`` column naming each spot's sample in the combined table.
SAMPLE_KEY = "sample"
#: The combined table's entry in the run's step cache (``<output>/.cache/``).
COMBINED_STEP = "combined"

#: What a sample's run ended with, for ``summary.json`` and the exit status.
OK, REGISTRATION_FAILED, TOO_FEW_SPOTS, ERROR = (
    "ok",
    "registration_failed",
    "too_few_spots_with_msi",
    "error",
)


@dataclass
class SampleOutcome:
    """How one sample's run ended (its outputs are in ``output``)."""

    name: str
    output: Path
    status: str
    error: str | None = None
    error_type: str | None = None
    seconds: float = 0.0
    #: CPU time of the worker's process while the sample ran (all its threads).
    cpu_seconds: float = 0.0
    worker: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    #: The sample's Visium table (counts) and MSI on its spots, for the combined table.
    parts: tuple[anndata.AnnData, anndata.AnnData] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the sample's run finished (as a single run of it would have, exit status 0)."""
        return self.status == OK

    def record(self) -> dict[str, Any]:
        """JSON-compatible record for the run's ``summary.json``."""
        record: dict[str, Any] = {
            "status": self.status,
            "output": str(self.output),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "worker": self.worker,
        }
        if self.error is not None:
            record["error_type"] = self.error_type
            record["error"] = self.error
        for key in ("mapping", "clustering"):
            if key in self.summary:
                record[key] = {
                    k: v for k, v in self.summary[key].items() if not isinstance(v, dict | list)
                }
        if "reused_steps" in self.summary:
            record["reused_steps"] = list(self.summary["reused_steps"])
        files = self.summary.get("files", {})
        if "report" in files:
            record["report"] = files["report"]
        return record


@dataclass
class MultiRunResult:
    """What a run of several sections produced (also on disk under ``output``)."""

    config: MultiRunConfig
    output: Path
    samples: dict[str, SampleOutcome] = field(default_factory=dict)
    combined: mudata.MuData | None = None
    combined_note: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    scheduler: str | None = None
    n_workers: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: The run's own steps taken from its step cache (``["combined"]`` where the combined table
    #: was); each sample's are in its outcome's summary (``reused_steps``).
    reused: list[str] = field(default_factory=list)
    damaged_cache: list[str] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, SampleOutcome]:
        """The samples whose run failed, by name."""
        return {name: s for name, s in self.samples.items() if not s.ok}

    @property
    def ok(self) -> bool:
        """Whether every sample's run finished."""
        return not self.failed


def run_samples(
    config: MultiRunConfig | str | os.PathLike,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    accept_failed: bool = False,
    reuse: bool = True,
    show_progress: bool = True,
    write_report: bool | None = None,
    force: bool = False,
) -> MultiRunResult:
    """Run every sample of a multi-sample config in parallel and build the combined table.

    Parameters
    ----------
    config
        A :class:`~spatialfuse.workflow._samples_config.MultiRunConfig` or a YAML file with
        ``samples:``.
    scheduler
        Address of a dask scheduler (``tcp://host:8786``), overriding ``parallel.scheduler``.
        None: the config's, else a LocalCluster of processes started for the run.
    n_workers
        LocalCluster workers, overriding ``parallel.n_workers``.
    accept_failed, reuse, write_report, force
        As in :func:`~spatialfuse.workflow.run_pipeline`, for every sample (``reuse`` also for
        the combined table, cached in ``<output>/.cache/`` under a key of every sample's tables
        and the combined settings; ``force`` also for the run's own output folder).
    show_progress
        A progress bar over the samples (``tqdm.auto``).

    Returns
    -------
    MultiRunResult
        Each sample's outcome, the combined MuData (``obs["sample"]``, ``obs["joint"]``) and the
        paths written. ``summary.json`` in the output folder holds it all.

    Raises
    ------
    SamplesFailedError
        Some samples failed (each named with its error); the others finished, and the combined
        table and summary of those were written first. ``.result`` is the
        :class:`MultiRunResult`.
    OutputLockedError, OutputFolderError
        As for a single run, for the run's output folder.
    """
    from spatialfuse._limits import limits
    from spatialfuse.errors import SamplesFailedError
    from spatialfuse.workflow._journal import (
        CACHE_NAME,
        Journal,
        check_foreign,
        check_output_folder,
    )
    from spatialfuse.workflow._lock import output_lock
    from spatialfuse.workflow._pipeline import _inputs, _library_notices_silenced, _write_json
    from spatialfuse.workflow._samples_config import MultiRunConfig, load_samples_config
    from spatialfuse.workflow._steps_cache import StepCache

    if not isinstance(config, MultiRunConfig):
        config = load_samples_config(config)
    if config.combined.enabled and config.combined.batch_correction == "harmony":
        require_harmonypy()  # before any sample runs, not after them all
    start = time.perf_counter()
    out = Path(config.output)
    inputs = {
        f"sample {s.name!r}, {what}": path
        for s in config.samples
        for what, path in _inputs(s.config).items()
    }
    check_output_folder(out, inputs, force=force)
    journal = Journal(out)
    result = MultiRunResult(config=config, output=out)
    options = {
        "accept_failed": accept_failed,
        "reuse": reuse,
        "write_report": write_report,
        "force": force,
    }
    with output_lock(out), _library_notices_silenced():
        journal.remove_temporaries()
        check_foreign(journal, force=force)
        with journal.active():
            for sample in config.samples:
                # The sample folders are the samples' runs' own (their journals list their files).
                journal.record("out", Path(sample.config.output))
            tic = time.perf_counter()
            outcomes = _run_on_cluster(config, options, scheduler, n_workers, show_progress, result)
            result.samples = {name: outcomes[name] for name in (s.name for s in config.samples)}
            result.timings["samples"] = round(time.perf_counter() - tic, 3)
            tic = time.perf_counter()
            with limits(**config.samples[0].config.limits.model_dump()):
                _combined_step(result, StepCache(out / CACHE_NAME, enabled=reuse))
            result.timings["combined"] = round(time.perf_counter() - tic, 3)
            keep = [SUMMARY_NAME] + [s.name for s in config.samples]
            # Only files are stale here; an earlier run's sample folders stay (with their files).
            listed = journal.outputs()
            keep += [o for o in listed if (out / o).is_dir()]
            result.timings["total"] = round(time.perf_counter() - start, 3)
            result.summary = _summary(result, stale=journal.remove_stale(keep))
            result.files["summary"] = _write_json(out / SUMMARY_NAME, result.summary)
    if result.failed:
        raise SamplesFailedError(
            {name: s.error or s.status for name, s in result.failed.items()},
            total=len(result.samples),
            result=result,
        )
    return result


def _run_on_cluster(
    config: MultiRunConfig,
    options: dict[str, Any],
    scheduler: str | None,
    n_workers: int | None,
    show: bool,
    result: MultiRunResult,
) -> dict[str, SampleOutcome]:
    """Every sample as one task on the cluster; outcomes by name (failures caught per sample)."""
    import contextlib

    from distributed import Client, as_completed
    from tqdm.auto import tqdm

    address = scheduler or config.parallel.scheduler
    with contextlib.ExitStack() as stack:
        if address is None:
            cluster = stack.enter_context(_local_cluster(config, n_workers))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(address))
        result.scheduler = client.scheduler.address
        result.n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        logger.info(
            "running %d samples on %s (%d workers)",
            len(config.samples),
            result.scheduler,
            result.n_workers,
        )
        futures = {
            client.submit(
                run_one_sample,
                sample.name,
                sample.config,
                options,
                key=f"spatialfuse-sample-{sample.name}-{os.urandom(4).hex()}",
                pure=False,
                retries=0,
            ): sample
            for sample in config.samples
        }
        outcomes: dict[str, SampleOutcome] = {}
        bar = tqdm(total=len(futures), desc="samples", unit="sample", disable=not show)
        try:
            for future in as_completed(futures):
                sample = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # the task died (a killed worker, a lost connection)
                    outcome = SampleOutcome(
                        sample.name,
                        Path(sample.config.output),
                        ERROR,
                        error=f"{type(exc).__name__}: {exc}",
                        error_type=type(exc).__name__,
                    )
                outcomes[sample.name] = outcome
                if not outcome.ok:
                    logger.warning("sample %s failed: %s", sample.name, outcome.error)
                n_failed = sum(not o.ok for o in outcomes.values())
                bar.set_postfix_str(f"{sample.name}: {outcome.status}, {n_failed} failed")
                bar.update(1)
        finally:
            bar.close()
    return outcomes


def _local_cluster(config: MultiRunConfig, n_workers: int | None):
    """A LocalCluster of processes, at most one worker per sample and per CPU core."""
    import logging

    import dask
    from distributed import LocalCluster

    parallel = config.parallel
    cores = os.cpu_count() or 1
    wanted = n_workers or parallel.n_workers or min(len(config.samples), cores)
    wanted = max(1, min(wanted, len(config.samples)))
    # A sample that kills its worker (out of memory) is tried once more, not three times.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        return LocalCluster(
            n_workers=wanted,
            threads_per_worker=parallel.threads_per_worker,
            processes=True,
            memory_limit=parallel.memory_limit,
            dashboard_address=":0" if parallel.dashboard else None,
            scheduler_port=0,
            silence_logs=logging.ERROR,  # not the nanny's notices about stopping its workers
        )


def run_one_sample(name: str, config: RunConfig, options: dict[str, Any]) -> SampleOutcome:
    """Run one sample's single-section pipeline (the task a worker runs); never raises for it.

    The project's errors (and any other) are caught and returned as the outcome's ``error``
    (type and message; the traceback goes to the log for errors that are not the project's), so
    that the other samples go on and no exception object has to travel back.
    """
    import socket

    from spatialfuse.errors import NoOverlapError, RegistrationFailedError, SpatialfuseError
    from spatialfuse.workflow._pipeline import run_pipeline

    start, cpu = time.perf_counter(), time.process_time()
    out = Path(config.output)
    outcome = SampleOutcome(name, out, OK, worker=socket.gethostname())
    try:
        run = run_pipeline(
            config,
            accept_failed=options.get("accept_failed", False),
            reuse=options.get("reuse", True),
            show_progress=False,
            write_report=options.get("write_report"),
            force=options.get("force", False),
        )
        outcome.summary = run.summary
        visium = run.modalities.get(config.visium_name) if config.visium_name else None
        if run.mdata is not None and visium is not None and run.msi_spots is not None:
            outcome.parts = (_without_images(visium), _without_images(run.msi_spots))
    except (RegistrationFailedError, NoOverlapError, SpatialfuseError, OSError) as exc:
        outcome.status = (
            REGISTRATION_FAILED
            if isinstance(exc, RegistrationFailedError)
            else TOO_FEW_SPOTS
            if isinstance(exc, NoOverlapError)
            else ERROR
        )
        outcome.error_type = type(exc).__name__
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.summary = _read_summary(out)
    except Exception as exc:  # a bug: named with its sample, the others go on
        outcome.status = ERROR
        outcome.error_type = type(exc).__name__
        outcome.error = f"{type(exc).__name__} (unexpected): {exc}"
        logger.error("sample %s: %s", name, traceback.format_exc())
    outcome.seconds = time.perf_counter() - start
    outcome.cpu_seconds = time.process_time() - cpu
    return outcome


def _read_summary(out: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _without_images(adata: anndata.AnnData) -> anndata.AnnData:
    """A copy of ``adata`` whose ``uns["spatial"]`` keeps scale factors and metadata, no images."""
    copy = adata.copy()
    spatial = copy.uns.get("spatial")
    if isinstance(spatial, dict):
        copy.uns["spatial"] = {
            library: {k: v for k, v in entry.items() if k != "images"}
            if isinstance(entry, dict)
            else entry
            for library, entry in spatial.items()
        }
    return copy


def _combined_step(result: MultiRunResult, cache: StepCache) -> None:
    """Build, cluster and write the combined table of the samples that have a joint table.

    The table comes from ``cache`` where an entry of the same key is intact (every sample's
    tables, :func:`sample_digest`, and the combined settings: an unchanged re-run reuses it,
    another batch correction or a sample whose tables changed recomputes it).
    """
    import mudata

    from spatialfuse import io, tl
    from spatialfuse.workflow._export import _drop_repeated_obs
    from spatialfuse.workflow._steps import library_options

    combined = result.config.combined
    if not combined.enabled:
        result.combined_note = "combined: enabled is false"
        return
    parts = {name: s.parts for name, s in result.samples.items() if s.parts is not None}
    if not parts:
        result.combined_note = "no sample has a joint table (MSI and Visium clustered)"
        return
    key = combined_key(parts, combined)
    options = library_options(combined, combined_table)
    try:
        result.combined, _ = cache.cached(
            COMBINED_STEP,
            key,
            ".h5mu",
            compute=lambda: combined_table(parts, **options),
            load=mudata.read_h5mu,
            save=lambda mdata, tmp: mdata.write_h5mu(tmp),
        )
    except ValueError as exc:  # no shared gene or ion, too few spots: the samples still stand
        import warnings

        from spatialfuse.errors import DataWarning

        result.combined_note = f"the combined table could not be built: {exc}"
        warnings.warn(result.combined_note, DataWarning, stacklevel=2)
        return
    finally:
        result.reused = list(cache.reused)
        result.damaged_cache = list(cache.damaged)
    out = result.output
    if combined.h5mu:
        result.files["combined_h5mu"] = io.write_h5mu(result.combined, out / COMBINED_H5MU)
    if combined.h5ad:
        joint = _drop_repeated_obs(tl.concatenate_modalities(result.combined))
        result.files["combined_h5ad"] = io.write_h5ad(joint, out / COMBINED_H5AD)


def combined_key(
    parts: dict[str, tuple[anndata.AnnData, anndata.AnnData]], combined: Combined
) -> str:
    """The combined table's step key: every sample's name and tables, and the combined settings.

    Parameters
    ----------
    parts
        Each sample's ``(visium, msi_spots)`` by name, in the order of the sections.
    combined
        The config's :class:`~spatialfuse.workflow._samples_config.Combined` (what decides the
        table: ``ppm``, ``gap_um``, ``batch_correction``, preprocessing and clustering; not which
        files are written).

    Returns
    -------
    str
        A :func:`~spatialfuse.workflow._steps_cache.step_key`.
    """
    from spatialfuse.workflow._steps_cache import step_key

    settings = combined.model_dump(mode="json", exclude={"enabled", "h5mu", "h5ad"})
    inputs = [f"{name}|{sample_digest(*tables)}" for name, tables in parts.items()]
    return step_key(COMBINED_STEP, settings, inputs=inputs)


def sample_digest(*tables: anndata.AnnData) -> str:
    """A SHA-256 of everything the combined table reads of a sample's tables.

    Names, ``X`` (dense or sparse, with its dtype and shape), ``obs``, ``var``, ``obsm``,
    ``layers`` and ``uns`` of each table: the same tables give the same digest in any process,
    and a changed value, spot or feature another.
    """
    import hashlib
    import json

    import numpy as np
    import pandas as pd
    import scipy.sparse

    digest = hashlib.sha256()

    def array(value) -> None:
        if scipy.sparse.issparse(value):
            value = value.tocsr()
            digest.update(f"sparse {value.shape} {value.dtype}".encode())
            for part in (value.data, value.indices, value.indptr):
                digest.update(np.ascontiguousarray(part).tobytes())
            return
        value = np.asarray(value)
        digest.update(f"dense {value.shape} {value.dtype}".encode())
        if value.dtype.kind == "O":
            digest.update(json.dumps(value.tolist(), default=str).encode())
        else:
            digest.update(np.ascontiguousarray(value).tobytes())

    def frame(value: pd.DataFrame) -> None:
        # By values (a categorical hashes as its values): a table read back from the step cache
        # (strings written as categoricals) is the same table.
        digest.update(json.dumps(list(map(str, value.columns))).encode())
        digest.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())

    for adata in tables:
        digest.update(b"--table--")
        frame(adata.obs)
        frame(adata.var)
        array(adata.X)
        for mapping in (adata.obsm, adata.layers):
            for name in sorted(mapping):
                digest.update(f"[{name}]".encode())
                value = mapping[name]
                if isinstance(value, pd.DataFrame):
                    frame(value)
                else:
                    array(value)
        digest.update(json.dumps(jsonable(dict(adata.uns)), sort_keys=True).encode())
    return digest.hexdigest()


def combined_table(
    parts: dict[str, tuple[anndata.AnnData, anndata.AnnData]],
    *,
    preprocessing: Preprocessing,
    clustering: Clustering,
    ppm: float = 10.0,
    gap_um: float = 1000.0,
    batch_correction: str = "none",
) -> mudata.MuData:
    """One joint table of several sections, preprocessed and clustered across them.

    ``parts`` maps each sample's name to its Visium table (counts) and its MSI on the same spots
    (:func:`spatialfuse.tl.map_to_spots`), as a single run has them before preprocessing. The
    genes every sample has are kept, and the ions that every sample has within ± ``ppm`` of the
    first sample's (named as there); each spot's name gets ``-<sample>`` appended and
    ``obs["sample"]`` its sample. The tables then go through the single run's steps (those of
    :func:`~spatialfuse.workflow.build_joint`: joint table, preprocessing of each modality over
    all spots, :func:`spatialfuse.tl.joint_cluster`), with the sections laid side by side
    ``gap_um`` apart for the spatial graph so that no spot neighbours another section's, and
    with ``batch_correction`` between the preprocessing and the clustering.

    Parameters
    ----------
    parts
        Each sample's ``(visium, msi_spots)`` by name, in the order of the sections.
    preprocessing, clustering
        The combined table's :class:`~spatialfuse.workflow._config.Preprocessing` and
        :class:`~spatialfuse.workflow._config.Clustering` settings.
    ppm
        Ions of two sections are one feature within ± ``ppm``.
    gap_um
        Gap between the sections laid side by side for the spatial graph (µm).
    batch_correction
        ``"none"``, ``"combat"`` or ``"harmony"``: each modality's ``obsm[clustering.use_rep]``
        corrected for the section of each spot before clustering
        (:func:`correct_batches`; the uncorrected
        components stay in ``obsm[f"{use_rep}_uncorrected"]``).

    Returns
    -------
    mudata.MuData
        ``obs["sample"]`` (categorical, in the order of ``parts``) and ``obs["joint"]`` (the
        clusters across sections); ``obsm["spatial_um"]`` and ``obsm["spatial"]`` in each
        section's own frame, ``obsm["spatial_um_tiled"]`` the side-by-side layout the spatial
        graph used; ``uns["spatial"]`` keyed by sample (scale factors, no images);
        ``uns["spatialfuse"]["samples"]``: the ions matched, the sections' offsets and what the
        batch correction did (``batch_correction``).

    Raises
    ------
    ValueError
        The samples share no gene or no ion, or a section has too few spots with data to be
        corrected.
    MissingDependencyError
        ``batch_correction="harmony"`` without harmonypy.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd

    names = list(parts)
    rna_parts = {n: parts[n][0] for n in names}
    msi_parts = _matched_ions({n: parts[n][1] for n in names}, ppm)
    genes = set.intersection(*(set(a.var_names) for a in rna_parts.values()))
    if not genes:
        raise ValueError(f"the samples {', '.join(names)} share no gene")
    offsets = _tiles(rna_parts, gap_um)
    tables = {}
    for kind, tables_of in (("rna", rna_parts), ("msi", msi_parts)):
        prepared = {}
        for name in names:
            adata = tables_of[name].copy()
            if kind == "rna":
                adata = adata[:, [g for g in adata.var_names if g in genes]].copy()
            adata.obs[SAMPLE_KEY] = name
            if "spatial_um" in adata.obsm:
                section = np.asarray(adata.obsm["spatial_um"], dtype=np.float64)
                adata.obsm["spatial_um_section"] = section
                adata.obsm["spatial_um"] = section + offsets[name]
            prepared[name] = adata
        joined = ad.concat(
            prepared, join="inner", merge="same", uns_merge=None, index_unique="-", label=None
        )
        joined.obs[SAMPLE_KEY] = pd.Categorical(joined.obs[SAMPLE_KEY], categories=names)
        joined.uns["spatial"] = {
            name: prepared[name].uns["spatial"][library]
            for name in names
            for library in list(prepared[name].uns.get("spatial", {}))[:1]
        }
        joined.uns["spatialfuse"] = dict(prepared[names[0]].uns.get("spatialfuse", {}) or {})
        tables[kind] = joined
    mdata, corrected = _joint_across_sections(
        tables["rna"], tables["msi"], preprocessing, clustering, batch_correction
    )
    for data in (mdata, mdata["rna"], mdata["msi"]):
        data.obsm["spatial_um_tiled"] = np.asarray(data.obsm["spatial_um"])
        data.obsm["spatial_um"] = np.asarray(tables["rna"].obsm["spatial_um_section"])
        if "spatial_um_section" in data.obsm:
            del data.obsm["spatial_um_section"]
    mdata.obs[SAMPLE_KEY] = tables["rna"].obs[SAMPLE_KEY].to_numpy()
    mdata.obs[SAMPLE_KEY] = pd.Categorical(mdata.obs[SAMPLE_KEY], categories=names)
    info = dict(mdata.uns.get("spatialfuse", {}) or {})
    info["samples"] = {
        "names": names,
        "sample_key": SAMPLE_KEY,
        "n_genes": int(tables["rna"].n_vars),
        "n_ions": int(tables["msi"].n_vars),
        "ion_ppm": float(ppm),
        "offsets_um": {n: [float(v) for v in offsets[n]] for n in names},
        "batch_correction": corrected,
    }
    mdata.uns["spatialfuse"] = info
    return mdata


def _joint_across_sections(
    rna: anndata.AnnData,
    msi: anndata.AnnData,
    preprocessing: Preprocessing,
    clustering: Clustering,
    batch_correction: str,
) -> tuple[mudata.MuData, dict[str, Any]]:
    """``build_joint`` with the batch correction between the preprocessing and the clustering.

    Returns ``(mdata, what the correction did)``.
    """
    from spatialfuse.workflow._steps import build_joint

    corrected: dict[str, Any] = {}

    def correct(mdata: mudata.MuData) -> None:
        corrected.update(
            correct_batches(
                mdata,
                method=batch_correction,
                key=SAMPLE_KEY,
                use_rep=clustering.use_rep,
                modalities=clustering.modalities,
                seed=clustering.seed,
            )
        )

    mdata = build_joint(rna, msi, preprocessing, clustering, before_clustering=correct)
    return mdata, corrected


def _matched_ions(msi: dict[str, anndata.AnnData], ppm: float) -> dict[str, anndata.AnnData]:
    """Each sample's MSI table on the ions every sample has within ± ``ppm`` of the first's.

    The features keep the first sample's names and m/z; an ion of the first sample is kept when
    each other sample has a feature within the window (its nearest is taken).
    """
    import numpy as np

    from spatialfuse.core.mz import mz_values, mz_windows

    names = list(msi)
    reference = msi[names[0]]
    ref_mz = mz_values(reference)
    _, lo, hi = mz_windows(ref_mz, ppm=ppm)
    chosen = {names[0]: np.arange(reference.n_vars)}
    keep = np.isfinite(ref_mz)
    for name in names[1:]:
        mz = mz_values(msi[name])
        order = np.argsort(mz, kind="stable")
        sorted_mz = mz[order]
        j = np.clip(np.searchsorted(sorted_mz, ref_mz), 1, max(sorted_mz.size - 1, 1))
        if sorted_mz.size == 0:
            keep[:] = False
            chosen[name] = np.zeros(reference.n_vars, dtype=np.int64)
            continue
        left, right = sorted_mz[j - 1], sorted_mz[np.minimum(j, sorted_mz.size - 1)]
        nearest = np.where(np.abs(left - ref_mz) <= np.abs(right - ref_mz), j - 1, j)
        nearest = np.minimum(nearest, sorted_mz.size - 1)
        found = sorted_mz[nearest]
        keep &= (found >= lo) & (found <= hi)
        chosen[name] = order[nearest]
    if not keep.any():
        raise ValueError(
            f"the samples {', '.join(names)} share no ion within ± {ppm:g} ppm; give every "
            "sample the same m/z values (mz: under the MSI modality) or a wider combined.ppm"
        )
    matched = {}
    for name in names:
        table = msi[name][:, chosen[name][keep]].copy()
        table.var_names = reference.var_names[keep]
        table.var["mz"] = ref_mz[keep]
        matched[name] = table
    return matched


def _tiles(tables: dict[str, anndata.AnnData], gap_um: float) -> dict[str, Any]:
    """Offsets (µm) that lay the sections side by side in a row, ``gap_um`` apart."""
    import numpy as np

    offsets = {}
    x = 0.0
    for name, adata in tables.items():
        if "spatial_um" not in adata.obsm or adata.n_obs == 0:
            offsets[name] = np.zeros(2)
            continue
        xy = np.asarray(adata.obsm["spatial_um"], dtype=np.float64)
        low, high = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
        offsets[name] = np.array([x - low[0], -low[1]])
        x += float(high[0] - low[0]) + gap_um
    return offsets


def _summary(result: MultiRunResult, *, stale: list[str]) -> dict[str, Any]:
    config = result.config
    failed = result.failed
    summary: dict[str, Any] = {
        "spatialfuse_version": __version__,
        "status": "ok" if not failed else "samples_failed",
        "output": str(result.output),
        "n_samples": len(result.samples),
        "n_failed": len(failed),
        "failed": {name: s.error or s.status for name, s in failed.items()},
        "samples": {name: s.record() for name, s in result.samples.items()},
        "parallel": {"scheduler": result.scheduler, "n_workers": result.n_workers},
    }
    if result.combined is not None:
        mdata = result.combined
        obs = mdata.obs
        info = mdata.uns["spatialfuse"]["samples"]
        labels = obs["joint"] if "joint" in obs else None
        summary["combined"] = {
            "n_spots": int(mdata.n_obs),
            "spots_per_sample": {str(k): int(v) for k, v in obs[SAMPLE_KEY].value_counts().items()},
            "n_genes": info["n_genes"],
            "n_ions": info["n_ions"],
            "ion_ppm": info["ion_ppm"],
            "batch_correction": _correction_record(info.get("batch_correction")),
        }
        if labels is not None:
            table = _clusters_per_sample(obs[SAMPLE_KEY], labels)
            summary["combined"]["clustering"] = {
                "method": config.combined.clustering.method,
                "n_clusters": int(labels.dropna().nunique()),
                "clusters_per_sample": table,
            }
    elif result.combined_note is not None:
        summary["combined"] = {"not_built": result.combined_note}
    summary["files"] = {k: str(v) for k, v in result.files.items()}
    summary["reused_steps"] = list(result.reused)
    summary["damaged_cache_entries_recomputed"] = list(result.damaged_cache)
    summary["stale_outputs_removed"] = list(stale)
    summary["timings_s"] = dict(result.timings)
    summary["config"] = config.model_dump(mode="json")
    summary["platform"] = {"python": platform.python_version(), "machine": platform.machine()}
    return jsonable(summary)


def _correction_record(done: Any) -> dict[str, Any]:
    """What the batch correction did, for ``summary.json`` (a table without the record: none)."""
    return dict(done) if isinstance(done, dict) else {"method": "none"}


def _clusters_per_sample(samples, labels) -> dict[str, dict[str, int]]:
    """Spots of each cluster in each sample: ``{sample: {cluster: count}}``."""
    import pandas as pd

    table = pd.crosstab(samples, labels.astype(str))
    return {str(s): {str(c): int(n) for c, n in row.items() if n} for s, row in table.iterrows()}


# Batch correction between the sections of the combined table.

#: The batch corrections of the combined table.
METHODS = ("none", "combat", "harmony")
#: What ``pip install`` needs for ``"harmony"``.
HARMONY_INSTALL = "pip install 'spatialfuse[harmony]'"
#: Spots with data a section needs in a modality to be corrected (a variance per section).
MIN_SPOTS = 3


def require_harmonypy() -> None:
    """Raise :class:`~spatialfuse.errors.MissingDependencyError` where harmonypy is missing."""
    from spatialfuse.errors import MissingDependencyError

    try:
        import harmonypy  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "combined.batch_correction: harmony needs the optional package harmonypy, which is "
            f"not installed; install it with `{HARMONY_INSTALL}` (or use combat or none)"
        ) from err


def correct_batches(
    mdata: mudata.MuData,
    *,
    method: str,
    key: str = "sample",
    use_rep: str = "X_pca",
    modalities: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Correct each modality's embedding for the section of each spot, in place.

    A section prepared, stained or acquired apart from the others can differ from them as a
    whole (another matrix coating, ionisation yield or library depth): its spots then sit apart
    in every modality's embedding and the joint clustering gives it clusters of its own. The
    combined table (:func:`combined_table`) corrects each modality's embedding (``obsm[use_rep]``,
    the principal components :func:`spatialfuse.tl.joint_cluster` clusters on with ``method``
    ``"concat"`` or ``"wnn"``) between the preprocessing and the clustering:

    - ``"combat"``: ComBat (Johnson et al. 2007, :func:`scanpy.pp.combat`) on the components:
      each component's mean and variance per section brought to the pooled ones (empirical Bayes
      over the components). It removes any difference of a section's average, biology included:
      a section lacking regions the others have loses part of its real difference.
    - ``"harmony"``: Harmony (Korsunsky et al. 2019; harmonypy, the optional extra
      ``spatialfuse[harmony]``) on the components: soft clusters of spots, each section's offset
      removed per cluster, so that differing region proportions are kept.
    - ``"none"``: the components as preprocessing left them.

    Spots without data in a modality (NaN rows: spots outside the MSI acquisition) are left out
    and stay NaN. The uncorrected components are kept in ``obsm[f"{use_rep}_uncorrected"]``.

    Parameters
    ----------
    mdata
        The combined table after preprocessing: each modality has ``obsm[use_rep]`` and
        ``obs[key]``.
    method
        ``"none"``, ``"combat"`` or ``"harmony"`` (see above).
    key
        The ``obs`` column naming each spot's section.
    use_rep
        The embedding corrected (the one :func:`spatialfuse.tl.joint_cluster` clusters on).
    modalities
        The modalities corrected; None: all of them.
    seed
        Harmony's random state (its k-means starts); ComBat draws nothing.

    Returns
    -------
    dict
        What was done, for ``uns["spatialfuse"]["samples"]["batch_correction"]``: ``method``,
        ``representation``, ``uncorrected_key`` and per modality the sections corrected
        (``modalities``), or why a modality was left as it was (``skipped``).

    Raises
    ------
    ValueError
        An unknown method, a modality without ``obsm[use_rep]`` or ``obs[key]``, or a section
        with data but fewer than :data:`MIN_SPOTS` spots with data in a modality.
    MissingDependencyError
        ``"harmony"`` without harmonypy installed.
    """
    import numpy as np

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    report: dict[str, Any] = {"method": method, "representation": use_rep}
    if method == "none":
        return report
    if method == "harmony":
        require_harmonypy()
    names = list(mdata.mod) if modalities is None else list(modalities)
    uncorrected = f"{use_rep}_uncorrected"
    report.update(uncorrected_key=uncorrected, modalities={}, skipped={})
    for name in names:
        adata = mdata.mod[name]
        if use_rep not in adata.obsm or key not in adata.obs:
            raise ValueError(
                f"modality {name!r} has no obsm[{use_rep!r}] or obs[{key!r}] to correct"
            )
        embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
        rows = np.isfinite(embedding).all(axis=1)
        batches = np.asarray(adata.obs[key].astype(str))
        present, counts = np.unique(batches[rows], return_counts=True)
        if present.size < 2:
            report["skipped"][name] = "fewer than two sections have data"
            continue
        few = [f"{b} ({n})" for b, n in zip(present, counts, strict=True) if n < MIN_SPOTS]
        if few:
            raise ValueError(
                f"batch correction of {name!r}: the sections {', '.join(few)} have fewer than "
                f"{MIN_SPOTS} spots with data; use combined.batch_correction: none, or leave "
                "them out"
            )
        if method == "combat":
            corrected = _combat(embedding[rows], batches[rows])
        else:
            corrected = _harmony(embedding[rows], batches[rows], seed=seed)
        out = embedding.copy()
        out[rows] = corrected
        adata.obsm[uncorrected] = embedding
        adata.obsm[use_rep] = out
        report["modalities"][name] = [str(b) for b in present]
    return report


def _combat(x: np.ndarray, batches: np.ndarray) -> np.ndarray:
    """ComBat (:func:`scanpy.pp.combat`) of the rows of ``x`` for their ``batches``."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc

    obs = pd.DataFrame(
        {"batch": pd.Categorical(batches)}, index=[str(i) for i in range(len(batches))]
    )
    table = ad.AnnData(X=np.array(x, dtype=np.float64), obs=obs)
    corrected = sc.pp.combat(table, key="batch", inplace=False)
    return np.asarray(corrected, dtype=np.float64)


def _harmony(x: np.ndarray, batches: np.ndarray, *, seed: int) -> np.ndarray:
    """Harmony's corrected rows of ``x`` for their ``batches`` (spots × components).

    The call :func:`scanpy.external.pp.harmony_integrate` makes (float64 embedding, the obs
    column, keyword arguments through), made here because that wrapper (scanpy 1.11) transposes
    the result, which harmonypy 0.2 and later already return spots × components
    (harmonypy issue #48); the orientation is taken from the result's shape.
    """
    import harmonypy
    import numpy as np
    import pandas as pd

    meta = pd.DataFrame({"batch": pd.Categorical(batches)})
    out = harmonypy.run_harmony(
        np.ascontiguousarray(x, dtype=np.float64), meta, ["batch"], random_state=seed, verbose=False
    )
    z = np.asarray(out.Z_corr, dtype=np.float64)
    if z.shape != x.shape:
        z = z.T
    if z.shape != x.shape:  # pragma: no cover - a harmonypy that returns something else
        raise ValueError(f"harmonypy returned {z.shape} for {x.shape} components")
    if x.shape[0] == x.shape[1] and not _cells_first():
        z = z.T
    return z


def _cells_first() -> bool:
    """Whether this harmonypy's ``Z_corr`` is spots × components (0.2 and later)."""
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("harmonypy")) >= Version("0.2")
