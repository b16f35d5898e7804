"""The config of a run of several sections: one ``samples:`` list, the shared settings once.

A config with a ``samples:`` key runs each sample through the single-section pipeline
(:mod:`._pipeline`) into ``<output>/<name>/``, in parallel on a ``dask.distributed`` cluster
(:mod:`._samples`). Every key of a single-section config except ``output`` may stand at the top
(shared by all samples) and inside a sample (that sample's override): mappings are merged key by
key, anything else (a list of registrations, a number) replaces the shared value. Each merged
sample is validated as a whole single-section config, so every check of :class:`RunConfig`
applies per sample, and an error names the config file, the sample and the key.

::

    output: results
    modalities:                 # shared: kinds and reader options (paths per sample)
      msi: {kind: imzml}
      he_msi: {kind: histology}
      visium: {kind: visium}
    registrations: [...]
    samples:
      - name: s1
        modalities:
          msi: {path: s1/msi.imzML}
          he_msi: {path: s1/he.ome.tif}
          visium: {path: s1/visium}
      - name: s2
        modalities: {...}
        registrations: [...]    # this sample's own
    parallel:
      scheduler: null           # tcp://host:8786 (any dask scheduler); null: a LocalCluster
      n_workers: null           # LocalCluster workers (null: min(samples, CPU cores))
    combined:
      enabled: true             # one table of every sample's spots, clustered jointly
      batch_correction: combat  # none | combat | harmony (each modality's components)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from spatialfuse.errors import ConfigError
from spatialfuse.workflow._config import (
    Clustering,
    Preprocessing,
    RunConfig,
    _explain,
    _folded,
    _Model,
    _resolved,
    read_config_yaml,
)

__all__ = ["Combined", "MultiRunConfig", "Parallel", "Sample", "load_samples_config"]

#: Keys of a multi-sample config that are not single-section settings.
OWN_KEYS = ("output", "samples", "parallel", "combined")
#: A sample name is its output folder's name: letters, digits, ``.``, ``_``, ``-``.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Names the run's own files take in the output folder.
RESERVED = ("summary.json", "combined.h5mu", "combined.h5ad")


class Parallel(_Model):
    """Where the samples run: a dask scheduler's address, or a LocalCluster started for the run."""

    #: ``tcp://host:8786`` (any dask.distributed scheduler; its workers need spatialfuse and the
    #: same paths to the inputs and the output folder); null: a LocalCluster of processes.
    scheduler: str | None = None
    #: LocalCluster worker processes; null: min(number of samples, CPU cores).
    n_workers: Annotated[int, Field(ge=1)] | None = None
    #: Threads per LocalCluster worker (a sample is one task: more threads run more samples at
    #: once in one process, not one sample faster).
    threads_per_worker: Annotated[int, Field(ge=1)] = 1
    #: Memory per LocalCluster worker (``"4GiB"``, bytes, or ``auto``: the machine's share).
    memory_limit: str | int = "auto"
    #: LocalCluster dashboard (off: no port is opened).
    dashboard: bool = False


class Combined(_Model):
    """One table of every sample's spots (``obs["sample"]``) and joint clustering across them.

    Preprocessing and clustering default to the shared ones of the config.
    """

    enabled: bool = True
    #: Ions of different sections are the same feature within this window (ppm).
    ppm: Annotated[float, Field(gt=0)] = 10.0
    #: Gap between sections laid side by side for the spatial graph (µm).
    gap_um: Annotated[float, Field(gt=0)] = 1000.0
    h5mu: bool = True
    h5ad: bool = True
    #: Each modality's components (``clustering.use_rep``) corrected for the section of each
    #: spot before the joint clustering: ``combat`` (``scanpy.pp.combat``), ``harmony``
    #: (harmonypy, the extra ``spatialfuse[harmony]``) or ``none``
    #: (:func:`spatialfuse.workflow._samples.correct_batches`).
    batch_correction: Literal["none", "combat", "harmony"] = "combat"
    preprocessing: Preprocessing | None = None
    clustering: Clustering | None = None


class Sample(_Model):
    """One section: its name (its output folder) and its whole single-section config."""

    name: str
    config: RunConfig


class MultiRunConfig(_Model):
    """A run of several sections (``samples:``)."""

    output: Path
    samples: list[Sample]
    parallel: Parallel = Parallel()
    combined: Combined = Combined()
    source: str = "<config>"

    def with_output(self, output: str | os.PathLike) -> MultiRunConfig:
        """The same config writing into ``output`` (each sample into ``output/<name>``)."""
        output = Path(output)
        samples = [
            s.model_copy(update={"config": s.config.model_copy(update={"output": output / s.name})})
            for s in self.samples
        ]
        return self.model_copy(update={"output": output, "samples": samples})

    def sample(self, name: str) -> Sample:
        """The sample called ``name``."""
        for sample in self.samples:
            if sample.name == name:
                return sample
        raise KeyError(name)


def load_samples_config(path: str | os.PathLike) -> MultiRunConfig:
    """Read and validate a YAML config with ``samples:`` (several sections).

    Raises
    ------
    MissingFileError
        The file does not exist.
    ConfigError
        The YAML is malformed, has no ``samples:``, or a sample does not validate (the message
        names the file, the sample and the key).
    """
    path = Path(path)
    data = read_config_yaml(path)
    if not isinstance(data, dict) or "samples" not in data:
        raise ConfigError(path, "has no samples: list (a single-section config: load_config)")
    return parse_samples_config(data, base=path.resolve().parent, source=str(path))


def load_any_config(path: str | os.PathLike) -> RunConfig | MultiRunConfig:
    """A single-section config, or a multi-sample one where the file has ``samples:``."""
    from spatialfuse.workflow._config import parse_config

    path = Path(path)
    data = read_config_yaml(path)
    base = path.resolve().parent
    if isinstance(data, dict) and "samples" in data:
        return parse_samples_config(data, base=base, source=str(path))
    return parse_config(data, base=base, source=str(path))


def parse_samples_config(
    data: dict, *, base: str | os.PathLike, source: str = "<config>"
) -> MultiRunConfig:
    """Validate a multi-sample config mapping; relative paths are taken relative to ``base``."""
    base = Path(base)
    entries = data.get("samples")
    if not isinstance(entries, list) or not entries:
        what = "is empty" if isinstance(entries, list) or entries is None else "is not a list"
        raise ConfigError(
            source,
            f"samples: {what}; list at least one sample, each with a name and its inputs "
            "(name: s1, modalities: ...)",
        )
    output = Path(data.get("output", "results"))
    output = output if output.is_absolute() else base / output
    shared = {k: v for k, v in data.items() if k not in OWN_KEYS}
    problems: list[str] = []
    parallel = _part(Parallel, data.get("parallel", {}), "parallel", problems)
    combined = _part(Combined, data.get("combined", {}), "combined", problems)
    names: dict[str, int] = {}
    samples = []
    for i, entry in enumerate(entries):
        where = f"samples[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{where}: a sample is a mapping with a name (name: s1, ...)")
            continue
        name = entry["name"]
        where = f"samples[{i}] ({name})"
        if not NAME.match(name) or name in RESERVED:
            problems.append(
                f"{where}: the name is its output folder's name: letters, digits, '.', '_' and "
                "'-', starting with a letter or digit, up to 100 characters"
                + (f", and not {', '.join(RESERVED)}" if name in RESERVED else "")
            )
            continue
        folded = _folded(name)
        if folded in names:
            problems.append(
                f"{where}: the name {name!r} is already samples[{names[folded]}]'s (names are "
                "output folders, compared ignoring case); every sample needs its own name"
            )
            continue
        names[folded] = i
        if "output" in entry:
            problems.append(f"{where}.output: each sample writes into <output>/{name}/")
            continue
        merged = _merged(shared, {k: v for k, v in entry.items() if k != "name"})
        merged["output"] = str(output / name)
        try:
            config = RunConfig.model_validate(merged)
        except ValidationError as exc:
            lines = _explain(exc).split("\n  ")[1:]
            problems += [f"{where}: {line}" for line in lines]
            continue
        samples.append(Sample(name=name, config=_resolved(config, base)))
    if problems:
        raise ConfigError(source, "invalid config:\n  " + "\n  ".join(problems))
    shared_parts = {}
    for key, model in (("preprocessing", Preprocessing), ("clustering", Clustering)):
        if getattr(combined, key) is None:
            shared_parts[key] = _part(model, shared.get(key, {}), key, problems)
    if problems:
        raise ConfigError(source, "invalid config:\n  " + "\n  ".join(problems))
    combined = combined.model_copy(update=shared_parts)
    if combined.batch_correction != "none" and combined.clustering.method == "mofa":
        raise ConfigError(
            source,
            f"invalid config:\n  combined.batch_correction: {combined.batch_correction} corrects "
            "the components (clustering.use_rep) that the methods concat and wnn cluster on; "
            "clustering.method mofa clusters the features themselves: use batch_correction: "
            "none with mofa, or method concat or wnn",
        )
    return MultiRunConfig(
        output=output, samples=samples, parallel=parallel, combined=combined, source=source
    )


def _part(model, value: Any, key: str, problems: list[str]):
    """``value`` validated as ``model`` (its problems added to ``problems`` under ``key``)."""
    try:
        return model.model_validate({} if value is None else value)
    except ValidationError as exc:
        problems += [f"{key}.{line}" for line in _explain(exc).split("\n  ")[1:]]
        return model()


def _merged(shared: Any, override: Any) -> Any:
    """``override`` on top of ``shared``: mappings merged key by key, anything else replaced."""
    if isinstance(shared, dict) and isinstance(override, dict):
        merged = dict(shared)
        for key, value in override.items():
            merged[key] = _merged(shared[key], value) if key in shared else value
        return merged
    return override
