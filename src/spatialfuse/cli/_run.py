"""``spatialfuse run | demo | init-config | register | map | cluster``: the pipeline and its parts.

Every command calls the same step functions as ``run`` (``spatialfuse.workflow``'s step names).
Exit status: 0 success, 1 an error in the input or config (message on stderr), 2 a usage
error, 3 a registration that failed its quality checks and was not accepted.
"""

from __future__ import annotations

from pathlib import Path

import click

from spatialfuse.cli._common import kind_of
from spatialfuse.cli._echo import echo, failure
from spatialfuse.cli._options import choice_option
from spatialfuse.workflow import EXAMPLE_CONFIG

#: Exit status of a run stopped by a failed registration.
EXIT_REGISTRATION_FAILED = 3


class _RegistrationFailed(click.ClickException):
    exit_code = EXIT_REGISTRATION_FAILED


def _errors():
    from spatialfuse.errors import RegistrationFailedError, SpatialfuseError

    return RegistrationFailedError, SpatialfuseError


def _fail(exc: Exception):
    from spatialfuse.errors import SamplesFailedError

    failed, _ = _errors()
    if isinstance(exc, failed):
        return failure(exc, _RegistrationFailed)
    if isinstance(exc, SamplesFailedError) and exc.result is not None:
        # Exit status 3 where every failed sample failed a registration, as one run would.
        statuses = {s.status for s in exc.result.failed.values()}
        if statuses == {"registration_failed"}:
            return failure(exc, _RegistrationFailed)
    return failure(exc)


def _run_help() -> str:
    # Click rewraps every paragraph except those that start with a "\b" line.
    paragraphs = EXAMPLE_CONFIG.strip("\n").split("\n\n")
    example = "\n\n".join(
        "\b\n" + "\n".join("    " + line for line in p.splitlines()) for p in paragraphs
    )
    return (
        "Run the pipeline described by CONFIG (YAML): read, register, map MSI onto Visium "
        "spots, build the joint table, cluster, correlate, export and write the QC report.\n\n"
        "Finished steps are reused when their inputs and settings are unchanged. A registration "
        f"that fails its checks stops the run with exit status {EXIT_REGISTRATION_FAILED} (the "
        "report still shows it) unless it is accepted.\n\n"
        "The output folder must be new, empty or one that spatialfuse wrote: a folder holding "
        "other files, or containing an input, is refused unless --force; one inside an input "
        "folder always. spatialfuse deletes only files it wrote.\n\n"
        "A config with a samples: list runs several sections in parallel on a dask cluster (a "
        "LocalCluster, or --scheduler ADDRESS), each into OUTPUT/<name>, and writes one combined "
        "table clustered across sections (docs/config.md, 'Several sections'). A sample that "
        "fails is named with its error while the others finish; the exit status is then 1 (3 "
        "where every failed sample failed a registration).\n\n"
        "A complete annotated config (spatialfuse init-config writes it):\n\n" + example
    )


@click.command("run", help=_run_help())
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), help="Override the config's output.")
@click.option(
    "--accept-failed", is_flag=True, help="Continue past registrations that fail their checks."
)
@click.option("--no-cache", is_flag=True, help="Recompute every step.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--force",
    is_flag=True,
    help="Write into an output folder that holds files spatialfuse did not write, or that "
    "contains an input (those files are kept; one at a path the run writes is replaced).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="A config with samples: run them on this dask scheduler (tcp://host:8786) instead of "
    "a LocalCluster (overrides parallel.scheduler).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="A config with samples: LocalCluster worker processes (overrides parallel.n_workers).",
)
def run(
    config: Path,
    output: Path | None,
    accept_failed: bool,
    no_cache: bool,
    quiet: bool,
    force: bool,
    scheduler: str | None,
    workers: int | None,
):
    from spatialfuse.workflow import MultiConfig, load_any_config
    from spatialfuse.workflow import run as run_config

    _, base = _errors()
    try:
        cfg = load_any_config(config)
        several = isinstance(cfg, MultiConfig)
        if not several and (scheduler is not None or workers is not None):
            raise click.UsageError(
                f"--scheduler and --workers apply to a config with samples:, and {config} has "
                "none (it runs one section)"
            )
        if output is not None:
            resolved = output.resolve()
            cfg = (
                cfg.with_output(resolved)
                if several
                else cfg.model_copy(update={"output": resolved})
            )
        result = run_config(
            cfg,
            accept_failed=accept_failed,
            reuse=not no_cache,
            show_progress=not quiet,
            force=force,
            **({"scheduler": scheduler, "n_workers": workers} if several else {}),
        )
    except (base, OSError) as exc:
        partial = getattr(exc, "result", None)
        if partial is not None:
            echo(_samples_summary(partial))
        raise _fail(exc) from exc
    echo(_samples_summary(result) if several else _run_summary(result))


def _run_summary(result) -> str:
    lines = [f"spatialfuse run finished: outputs in {result.output}"]
    for record in result.registrations:
        status = "ok" if record.ok else "FAILED (accepted): " + "; ".join(record.failures)
        cached = " [reused]" if record.reused else ""
        lines.append(f"  registration {record.registration.name}: {status}{cached}")
    summary = result.summary
    if "mapping" in summary:
        m = summary["mapping"]
        lines.append(f"  spots with MSI data: {m['n_spots_with_msi']} of {m['n_spots']}")
    if "clustering" in summary:
        lines.append(f"  joint clusters: {summary['clustering']['n_clusters']}")
    if "report" in result.files:
        lines.append(f"  report: {result.files['report']}")
    return "\n".join(lines)


def _samples_summary(result) -> str:
    """What ``spatialfuse run`` prints after a run of several sections."""
    from spatialfuse.workflow import COMBINED_STEP

    failed = result.failed
    lines = [
        f"spatialfuse run finished {len(result.samples) - len(failed)} of {len(result.samples)} "
        f"samples on {result.scheduler} ({result.n_workers} workers, "
        f"{result.timings.get('samples', 0):.0f} s): outputs in {result.output}"
    ]
    for name, sample in result.samples.items():
        if sample.ok:
            clustering = sample.summary.get("clustering", {})
            extra = f", {clustering['n_clusters']} joint clusters" if clustering else ""
            lines.append(f"  {name}: ok ({sample.seconds:.0f} s{extra})")
        else:
            lines.append(f"  {name}: FAILED: {sample.error}")
    combined = result.summary.get("combined", {})
    if "n_spots" in combined:
        n = combined.get("clustering", {}).get("n_clusters")
        clusters = f", {n} joint clusters across sections" if n is not None else ""
        cached = " [reused]" if COMBINED_STEP in result.reused else ""
        lines.append(
            f"  combined table: {combined['n_spots']} spots of "
            f"{len(combined['spots_per_sample'])} samples{clusters}{cached}"
        )
    elif "not_built" in combined:
        lines.append(f"  combined table: not built ({combined['not_built']})")
    if "summary" in result.files:
        lines.append(f"  summary: {result.files['summary']}")
    return "\n".join(lines)


@click.command("init-config")
@click.argument("path", type=click.Path(path_type=Path), default="config.yaml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_config(path: Path, force: bool) -> None:
    """Write an annotated starting config to PATH (default config.yaml)."""
    from spatialfuse._io_utils import atomic_path

    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")
    with atomic_path(path) as tmp:
        tmp.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    echo(f"wrote {path}: edit the paths, then run `spatialfuse run {path}`")


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="spatialfuse-demo",
    show_default=True,
    help="Folder for the synthetic data and the results.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic data.")
@click.option("--no-cache", is_flag=True, help="Recompute every step.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def demo(out: Path, seed: int, no_cache: bool, quiet: bool) -> None:
    """Run the whole pipeline on a synthetic MSI + H&E + Visium trio and score it.

    Generates the data (with its known ground truth) in OUT/data, runs exactly what
    `spatialfuse run OUT/config.yaml` runs, and prints the registration error against the
    truth, spot coverage, how well the joint clusters recover the true regions, and where
    the report is.
    """
    from spatialfuse.workflow import format_summary, run_demo

    _, base = _errors()
    try:
        result = run_demo(out, seed=seed, show_progress=not quiet, reuse=not no_cache)
    except (base, OSError) as exc:
        raise _fail(exc) from exc
    echo(format_summary(result))


def _modality_for(path: Path, pixel_size: float | None):
    from spatialfuse.workflow import Modality

    kind = {"imzml": "imzml", "visium": "visium", "image": "histology"}[kind_of(path)]
    if kind == "visium":
        return Modality(kind=kind, path=path.parent if path.is_file() else path)
    return Modality(kind=kind, path=path, pixel_size_um=pixel_size)


@click.command("register")
@click.argument("moving", type=click.Path(exists=True, path_type=Path))
@click.argument("fixed", type=click.Path(exists=True, path_type=Path))
@choice_option("--model", ["rigid", "similarity", "affine", "bspline"], "affine")
@click.option("--landmarks", type=click.Path(exists=True, path_type=Path), help="Landmark CSV.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Transform JSON.")
@click.option("--qc", type=click.Path(path_type=Path), help="Write the QC figure here (PNG).")
@click.option("--moving-pixel-size", type=float, help="µm per pixel, where MOVING lacks it.")
@click.option("--fixed-pixel-size", type=float, help="µm per pixel, where FIXED lacks it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--accept-failed", is_flag=True, help="Exit 0 even if the checks fail.")
def register(
    moving,
    fixed,
    model,
    landmarks,
    out,
    qc,
    moving_pixel_size,
    fixed_pixel_size,
    seed,
    accept_failed,
) -> None:
    """Register MOVING onto FIXED (imzML, image or Visium folder) and write the transform.

    The transform maps MOVING µm to FIXED µm. Exit status 3 when the registration fails its
    quality checks (the transform and QC figure are still written).
    """
    from spatialfuse.workflow import Registration, read_modality, register_pair

    failed, base = _errors()
    try:
        m = _modality_for(moving, moving_pixel_size)
        f = _modality_for(fixed, fixed_pixel_size)
        reg = Registration(
            moving="moving", fixed="fixed", model=model, landmarks=landmarks, seed=seed
        )
        result = register_pair(read_modality(m), read_modality(f), reg)
        result.transform.save(out)
        if qc is not None:
            from spatialfuse.workflow import qc_figure

            qc_figure(result, reg, qc)
    except (base, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    echo(repr(result))
    echo(f"transform written to {out}")
    if not result.ok and not accept_failed:
        raise _RegistrationFailed(
            str(failed(f"{moving.name} → {fixed.name}", list(result.failures)))
        )


@click.command("map")
@click.argument("msi", type=click.Path(exists=True, path_type=Path))
@click.argument("visium", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--transform",
    "transform_path",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="MSI µm → Visium µm transform JSON (from `spatialfuse register` or a run).",
)
@choice_option("--method", ["area", "radius", "nearest", "overlap"], "area")
@choice_option("--aggregate", ["mean", "sum"], "mean")
@click.option("--min-coverage", type=float, default=0.0, show_default=True)
@click.option("--pixel-size", type=float, help="MSI µm per pixel, where the file lacks it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .h5ad.")
def map_command(msi, visium, transform_path, method, aggregate, min_coverage, pixel_size, out):
    """Map MSI pixels onto Visium spots and write the spots × m/z table (h5ad)."""
    from spatialfuse import io
    from spatialfuse.reg import Transform
    from spatialfuse.workflow import Mapping, map_spots, read_modality

    _, base = _errors()
    try:
        mapping = Mapping(method=method, aggregate=aggregate, min_coverage=min_coverage)
        spots = map_spots(
            read_modality(_modality_for(msi, pixel_size)),
            read_modality(_modality_for(visium, None)),
            Transform.load(transform_path),
            mapping,
        )
        io.write_h5ad(spots, out)
    except (base, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    n = int(spots.obs["has_msi"].sum())
    echo(f"{n} of {spots.n_obs} spots have MSI data; written to {out}")


def _parse_resolution(ctx, param, value):
    if value is None or value == "auto":
        return "auto"
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"'auto' or a positive number, got {value!r}") from None
    if not number > 0:
        raise click.BadParameter(f"'auto' or a positive number, got {value!r}")
    return number


@click.command("cluster")
@click.argument("visium", type=click.Path(exists=True, path_type=Path))
@click.argument("msi_spots", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@choice_option("--method", ["concat", "wnn", "mofa"], "concat")
@click.option(
    "--resolution",
    callback=_parse_resolution,
    default="auto",
    show_default=True,
    help="auto (chosen by cluster stability) or a Leiden resolution.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .h5mu.")
def cluster(visium, msi_spots, method, resolution, seed, out):
    """Joint table and joint clustering of a Visium folder and its MSI spots (`spatialfuse map`)."""
    import anndata

    from spatialfuse import io
    from spatialfuse.workflow import Clustering, Preprocessing, build_joint, read_modality

    _, base = _errors()
    try:
        rna = read_modality(_modality_for(visium, None))
        mdata = build_joint(
            rna,
            anndata.read_h5ad(msi_spots),
            Preprocessing(),
            Clustering(method=method, resolution=resolution, seed=seed),
        )
        io.write_h5mu(mdata, out)
    except (base, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    n = mdata.obs["joint"].dropna().nunique()
    echo(f"{n} joint clusters; written to {out}")


COMMANDS = [run, demo, init_config, register, map_command, cluster]
