"""``spatialfuse.workflow.run``: one section (:mod:`._pipeline`) or several (:mod:`._samples`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spatialfuse.workflow._config import RunConfig
    from spatialfuse.workflow._pipeline import RunResult
    from spatialfuse.workflow._samples import MultiRunResult
    from spatialfuse.workflow._samples_config import MultiRunConfig


def run(
    config: RunConfig | MultiRunConfig | str | os.PathLike,
    *,
    accept_failed: bool = False,
    reuse: bool = True,
    show_progress: bool = True,
    write_report: bool | None = None,
    force: bool = False,
    scheduler: str | None = None,
    n_workers: int | None = None,
) -> RunResult | MultiRunResult:
    """Run a config — a YAML file or a :class:`RunConfig` — as ``spatialfuse run`` does.

    The public entry of the pipeline (``spatialfuse.workflow.run``); the options are those of
    :func:`~spatialfuse.workflow.run_pipeline`. A config with ``samples:`` (several sections)
    runs with :func:`~spatialfuse.workflow.run_samples` on a dask cluster (``scheduler`` and
    ``n_workers`` are its options and apply to nothing else).

    Returns
    -------
    RunResult or MultiRunResult
        What the run produced; everything is also written under ``config.output``.
    """
    from spatialfuse.workflow._config import RunConfig
    from spatialfuse.workflow._pipeline import run_pipeline
    from spatialfuse.workflow._samples_config import MultiRunConfig, load_any_config

    if not isinstance(config, RunConfig | MultiRunConfig):
        config = load_any_config(config)
    options = {
        "accept_failed": accept_failed,
        "reuse": reuse,
        "show_progress": show_progress,
        "write_report": write_report,
        "force": force,
    }
    if isinstance(config, MultiRunConfig):
        from spatialfuse.workflow._samples import run_samples

        return run_samples(config, scheduler=scheduler, n_workers=n_workers, **options)
    return run_pipeline(config, **options)
