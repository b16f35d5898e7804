"""The pipeline behind ``spatialfuse run`` and ``spatialfuse demo``.

Config, steps, the step cache and the QC report. The names below are what other subpackages
(the CLI) use; they load on first access, so that ``spatialfuse --help`` stays fast.
"""

from __future__ import annotations

import importlib

#: Public name → the private module that defines it (and the name there, where it differs).
_EXPORTS = {
    "run": "_entry",
    "Config": ("_config", "RunConfig"),
    "RunResult": "_pipeline",
    "EXAMPLE_CONFIG": "_example",
    "load_config": "_config",
    "load_samples_config": "_samples_config",
    "load_any_config": "_samples_config",
    "MultiConfig": ("_samples_config", "MultiRunConfig"),
    "run_samples": "_samples",
    "MultiRunResult": "_samples",
    "SampleOutcome": "_samples",
    "combined_table": "_samples",
    "COMBINED_STEP": "_samples",
    "Modality": "_config",
    "Registration": "_config",
    "Mapping": "_config",
    "Clustering": "_config",
    "Preprocessing": "_config",
    "run_pipeline": "_pipeline",
    "qc_figure": "_pipeline",
    "run_demo": "_demo",
    "format_summary": "_demo",
    "read_modality": "_steps",
    "register_pair": "_steps",
    "map_spots": "_steps",
    "build_joint": "_steps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        where = _EXPORTS[name]
        module_name, attribute = where if isinstance(where, tuple) else (where, name)
        module = importlib.import_module(f"spatialfuse.workflow.{module_name}")
        return getattr(module, attribute)
    raise AttributeError(f"module 'spatialfuse.workflow' has no attribute {name!r}")
