"""What a run's QC report shows: the sections built from a :class:`RunResult`.

The renderer (:mod:`._report`) knows nothing about runs; this module decides the content: inputs
and calibration, each registration with its QC figure and metrics, the composed MSI → Visium
overlay, spot coverage, joint clusters on the tissue, the top gene–ion pairs with their maps, and
versions and parameters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialfuse._text import literal_text_figures
from spatialfuse.workflow._report import (
    ReportFigure,
    ReportSection,
    ReportTable,
    render_report,
    write_report,
)

if TYPE_CHECKING:
    from spatialfuse.workflow._pipeline import RegistrationRecord, RunResult

#: Gene–ion pairs drawn as maps in the report.
N_PAIR_MAPS = 3


@literal_text_figures
def write_run_report(result: RunResult, path: str | os.PathLike) -> Path:
    """Write the QC report of ``result`` to ``path`` (HTML, self-contained)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    sections = [_overview(result), _inputs(result)]
    spectra = _spectra(result)
    if spectra is not None:
        sections.append(spectra)
    if result.config.registrations:
        sections.append(_registrations(result))
    if result.msi_spots is not None:
        sections.append(_coverage(result))
    if result.mdata is not None:
        sections.append(_clusters(result))
    if result.correlation is not None:
        sections.append(_pairs(result))
    subtitle = f"output folder {result.output}"
    text = render_report(
        title="spatialfuse QC report",
        subtitle=subtitle,
        sections=sections,
        metadata=_metadata(result),
    )
    return write_report(path, text)


def _overview(result: RunResult) -> ReportSection:
    summary = result.summary
    notes = []
    if result.failed is not None:
        record = result.failed
        checks = (record.details or {}).get("checks") or []
        names = [c["name"] for c in checks if not c["passed"]] or ["see its section"]
        notes.append(
            f"The run stopped: registration {record.registration.name} failed its quality "
            f"checks ({', '.join(names)}; what failed and what to do are under Registrations). "
            "Nothing downstream of it was computed."
        )
    if result.no_overlap is not None:
        notes.append(result.no_overlap[0].upper() + result.no_overlap[1:])
    for record in result.registrations:
        if not record.ok and record.accepted:
            notes.append(
                f"Registration {record.registration.name} failed its checks but was accepted "
                "(accept_failed): treat everything downstream with care."
            )
    notes += _skipped_steps(result)
    status = "failed" if result.failed is not None else ("warning" if notes else "ok")
    rows: dict[str, Any] = {"status": summary.get("status", "")}
    if "mapping" in summary:
        m = summary["mapping"]
        rows["spots with MSI data"] = f"{m['n_spots_with_msi']} of {m['n_spots']}"
    if "clustering" in summary:
        rows["joint clusters"] = summary["clustering"]["n_clusters"]
    if result.reused:
        rows["steps reused from cache"] = ", ".join(result.reused)
    if result.damaged_cache:
        rows["damaged cache entries (recomputed)"] = ", ".join(result.damaged_cache)
    if result.stale_removed:
        rows["stale outputs of an earlier run, removed"] = ", ".join(result.stale_removed)
    rows["seconds per step"] = dict(result.timings)
    tables: list = [ReportTable(rows, caption="Run")]
    if result.evaluation:
        tables.append(ReportTable(_evaluation_rows(result.evaluation), caption="Against truth"))
    paragraphs = [
        "Every transform maps moving µm to fixed µm (docs/coordinates.md). Registration quality "
        "is judged by mutual information before and after, Dice of the tissue masks and, where "
        "landmarks are given, their target registration error."
    ]
    if result.evaluation:
        paragraphs.append(
            "This run is on synthetic data with a known answer; 'Against truth' compares the "
            "recovered transforms and clusters with the generator's ground truth."
        )
    return ReportSection(
        "Overview", status=status, paragraphs=paragraphs, notes=notes, tables=tables
    )


def _skipped_steps(result: RunResult) -> list[str]:
    """The steps the config asked for that did not run, each with why."""
    config = result.config
    ran = set(result.timings)
    skipped = []
    for reg in config.registrations:
        if f"register {reg.name}" not in ran and result.failed is not None:
            why = f"registration {result.failed.registration.name} failed before it"
            skipped.append(f"register {reg.name} ({why})")
    if config.msi_name is None or config.visium_name is None:
        return [
            *(f"skipped: {step}" for step in skipped),
            "skipped: map, cluster, correlate (the config has no MSI → Visium path: it needs one "
            "imzml and one visium input)",
        ]
    if result.failed is not None:
        why = f"registration {result.failed.registration.name} failed"
    elif result.no_overlap is not None:
        why = "too few spots have MSI data"
    else:
        why = "an earlier step did not finish"
    skipped += [f"{step} ({why})" for step in ("map", "cluster", "correlate") if step not in ran]
    return [f"skipped: {step}" for step in skipped]


def _evaluation_rows(evaluation: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, tre in evaluation.get("registration_tre", {}).items():
        rows[f"TRE {name}"] = (
            f"median {tre['median_um']:.2f} µm ({tre['median_msi_px']:.3f} MSI px), "
            f"p90 {tre['p90_um']:.2f} µm"
        )
    if "msi_to_visium_tre" in evaluation:
        tre = evaluation["msi_to_visium_tre"]
        rows["TRE MSI → Visium (composed)"] = (
            f"median {tre['median_um']:.2f} µm ({tre['median_msi_px']:.3f} MSI px), "
            f"p90 {tre['p90_um']:.2f} µm"
        )
    if "clustering" in evaluation:
        c = evaluation["clustering"]
        rows["joint clusters vs true regions (ARI)"] = round(c["adjusted_rand_index"], 3)
    return rows


def _inputs(result: RunResult) -> ReportSection:
    import pandas as pd

    rows, checks, notes = [], [], []
    for name, info in result.summary.get("inputs", {}).items():
        skip = ("path", "consistency_checks")
        row = {"name": name, **{k: v for k, v in info.items() if k not in skip}}
        row["path"] = info.get("path", "")
        rows.append(row)
        for check, entry in (info.get("consistency_checks") or {}).items():
            checks.append({"input": name, "check": check, **entry})
            if entry.get("status") == "warning":
                notes.append(f"{name}: {entry.get('detail', check)}")
    frame = _worded(pd.DataFrame(rows), INPUT_WORDS)
    tables = [ReportTable(frame, caption="Inputs")]
    if checks:
        table = _worded(pd.DataFrame(checks), CHECK_WORDS)
        tables.append(ReportTable(table, caption="Visium cross-file consistency checks"))
    return ReportSection(
        "Inputs and calibration",
        status="warning" if notes else None,
        paragraphs=[
            "Pixel sizes are what the files state (or the config gives); Visium's µm per "
            "full-resolution pixel comes from the 100 µm spot pitch. A Visium folder's files are "
            "checked against each other (grid vs pixel positions, matrix barcodes vs tissue "
            "spots, scale factors vs image sizes vs spot pitch); a check that right data cannot "
            "fail stops the run, the others are shown here as warnings."
        ],
        notes=notes,
        tables=tables,
    )


def _spectra(result: RunResult) -> ReportSection | None:
    """The spectra steps: peaks on the reference spectrum, recalibration error, annotations."""
    import numpy as np
    import pandas as pd

    from spatialfuse import pl

    config = result.config
    table = result.modalities.get(config.spectra_msi_name) if config.spectra.active else None
    if table is None:
        return None
    rows: dict[str, Any] = {}
    figures, tables = [], []
    recalibration = table.uns.get("recalibration")
    if isinstance(recalibration, dict):
        rows["m/z error before → after recalibration (median |ppm|)"] = " → ".join(
            "not measured" if value is None else f"{value:.2f}"
            for value in (
                recalibration["median_abs_ppm_before"],
                recalibration["median_abs_ppm_after"],
            )
        )
        rows["recalibration references"] = (
            f"{len(recalibration['reference_mz'])} ({recalibration.get('reference_source', '')})"
        )
        rows["recalibrated"] = (
            "peak by peak: centroid spectra, each pixel's peak m/z corrected in the imzML file, "
            "then binned onto the MSI's m/z features"
            if recalibration.get("spectrum_type") == "centroid"
            else "profile spectra, each pixel resampled at its corrected m/z"
        )
        figures.append(ReportFigure("m/z error at each reference peak", pl.recalibration(table)))
    peaks = table.uns.get("peaks")
    flags = table.uns.get("spectra_flags")
    if isinstance(peaks, dict):
        picked = flags["n_features"] if isinstance(flags, dict) else table.n_vars
        rows["peaks picked"] = (
            f"{picked} of {peaks['n_local_maxima']} local maxima above S/N "
            f"{peaks['snr']:g} (noise {peaks['noise']:.3g})"
        )
        model = peaks.get("noise_model", peaks.get("noise_over"))
        if model:
            choice = peaks.get("noise_choice", "")
            asked = peaks.get("noise_requested", model)
            how = f"chosen by noise='auto': {choice}" if asked == "auto" else "as configured"
            rows["peak noise model"] = f"{model} ({how})"
        figures.append(ReportFigure("Reference spectrum and picked peaks", pl.spectrum(table)))
    annotation = table.uns.get("annotation")
    if isinstance(annotation, dict) and "annotation_name" in table.var:
        named = table.var[table.var["annotation_name"].astype(str) != ""]
        rows["features annotated"] = (
            f"{len(named)} of {table.n_vars} within {annotation['ppm']:g} ppm "
            f"(adducts {', '.join(annotation['adducts'])}; polarity "
            f"{annotation.get('polarity') or 'unknown'}, {annotation.get('polarity_source', '')})"
        )
        tables.append(ReportTable(_annotation_table(named), caption="Annotated features"))
    paragraphs = [
        "The MSI spectra as the config's spectra section processed them before registration: "
        "recalibration (each pixel's m/z drift against reference peaks, removed), peak "
        "picking (a centroided table of peaks from the reference spectrum), matrix and isotope "
        "flags, spatial scores of the ion images, and putative annotation against the "
        "database given (every candidate is kept in the table's "
        "uns['annotation']['candidates']; names are putative, by m/z alone)."
    ]
    if isinstance(flags, dict):
        rows.update(_flag_rows(flags, config.spectra))
        paragraphs.append(_flag_words(flags))
        features = flags.get("features")
        if features is not None and len(features):
            shown = pd.DataFrame(
                {
                    "m/z": [f"{v:.4f}" for v in features["mz"]],
                    "flagged as": features["reason"].to_numpy(),
                    "dropped": np.where(features["dropped"].to_numpy(bool), "yes", "no"),
                }
            )
            tables.append(ReportTable(shown, caption="Flagged features"))
    return ReportSection(
        "Spectra",
        paragraphs=paragraphs,
        tables=[ReportTable(rows, caption="Spectra"), *tables],
        figures=figures,
    )


def _flag_what(field: str, spectra) -> str:
    """What the flagging step ``field`` of the ``spectra`` section looks for, in words."""
    section = getattr(spectra, field)
    if field == "matrix":
        names = section.matrix if isinstance(section.matrix, str) else ", ".join(section.matrix)
        return f"{names} matrix ions and clusters (within {section.ppm:g} ppm)"
    if field == "isotopes":
        return f"¹³C isotope peaks of lighter features (within {section.ppm:g} ppm)"
    if field == "spatial_chaos":
        return f"ion images with a spatial chaos score below {section.min_score:g}"
    if section.n_top is not None:
        return f"ion images outside the top {section.n_top} by Moran's I"
    fdr = f" or FDR above {section.max_fdr:g}" if section.max_fdr is not None else ""
    return f"ion images with Moran's I below {section.min_moran:g}{fdr}"


def _flag_rows(flags: dict, spectra) -> dict[str, str]:
    n = int(flags["n_features"])
    rows = {}
    for field, step in flags["steps"].items():
        what = "dropped" if step["dropped"] else "kept (flagged in var only)"
        rows[_flag_what(field, spectra)] = f"{int(step['n_flagged'])} of {n} features, {what}"
    rows["features dropped"] = f"{int(flags['n_dropped'])} of {n}"
    return rows


def _flag_words(flags: dict) -> str:
    n, dropped = int(flags["n_features"]), int(flags["n_dropped"])
    if dropped:
        kept = n - dropped
        return (
            f"{dropped} of the {n} features were dropped as the config asks (drop: true), so "
            f"registration, mapping and clustering use the other {kept}; every flagged feature is "
            "listed below with the reason, and the dropped ones stay listed in the exported "
            "msi_spectra.h5ad's uns['spectra_flags']."
        )
    return (
        f"No feature was dropped (no flagging section has drop: true): the flags are columns of "
        f"the exported msi_spectra.h5ad's var, and all {n} features go on to registration."
    )


def _annotation_table(named):
    columns = {
        "mz": "m/z",
        "annotation_name": "name",
        "annotation_formula": "formula",
        "annotation_adduct": "adduct",
        "annotation_ppm": "error (ppm)",
        "annotation_n_candidates": "candidates",
        "annotation_isotope_score": "isotope score",
    }
    shown = named[[c for c in columns if c in named.columns]].rename(columns=columns)
    return shown.reset_index(drop=True).round(4)


def _registrations(result: RunResult) -> ReportSection:
    children = [_registration(r) for r in result.registrations]
    if result.msi_to_visium is not None:
        children.append(_composed(result))
    failed = any(not r.ok for r in result.registrations)
    return ReportSection(
        "Registrations",
        status="failed" if result.failed is not None else ("warning" if failed else "ok"),
        subsections=children,
    )


#: What to do about a failed check, by its remedy kind (``sf.reg`` says it for Python users), in
#: the terms of a run's config.
CONFIG_REMEDIES = {
    "landmarks": (
        "check that both images show the same section; if they do, give this registration a "
        "few corresponding points: `landmarks: points.csv` in the config (click them with "
        "`spatialfuse pick-landmarks CONFIG {step}`)"
    ),
    "pixel_size": (
        "set the right `pixel_size_um:` of the input in the config, or let registration "
        "estimate it with `scale: estimate` on this registration"
    ),
    "whole_section": "register against an image of the whole section, not a crop",
    "nonrigid": "use `model: affine` for this registration",
    "landmark_file": (
        "check the file named in `landmarks:`: points in the same order on both sides, in µm"
    ),
}

#: What to do about a failed check that names no remedy (e.g. "could not register"), in config
#: terms, as the CLI's error says it.
DEFAULT_REMEDY = (
    "check that both inputs are the images meant and show the tissue; give this registration "
    "landmarks (`landmarks: points.csv` in the config; click them with `spatialfuse "
    "pick-landmarks CONFIG {step}`) or another `model:`, or continue anyway with "
    "`accept_failed: true` on this registration (`--accept-failed`)"
)


def _registration(record: RegistrationRecord) -> ReportSection:
    metrics = {k: v for k, v in record.metrics.items() if not isinstance(v, dict | list)}
    figures = []
    if record.qc_figure is not None and record.qc_figure.exists():
        figures.append(
            ReportFigure(
                "Overlay, checkerboard and tissue outlines (moving warped onto fixed)",
                record.qc_figure.read_bytes(),
            )
        )
    details = record.details or {}
    checks = details.get("checks") or []
    notes = _failed_checks(checks, record) if checks else [f"failed: {f}" for f in record.failures]
    if record.reused:
        notes.append("reused from the cache (inputs and settings unchanged)")
    estimate = details.get("estimated_pixel_size")
    if estimate:
        value, given = estimate["value"][0], estimate["as_given"][0]
        spread = 100 * estimate["relative_uncertainty"]
        notes.append(
            f"the {estimate['side']} image's pixel size was estimated: {value:.4g} µm "
            f"(given: {given:.4g} µm; ±{spread:.1f} %) because {estimate['reason']}"
        )
    if details.get("msi_image") or details.get("channel"):
        notes.append(
            f"images compared: {details.get('msi_image')} × {details.get('channel')} "
            "(chosen by mutual information among the candidates)"
        )
    footprint = details.get("footprint")
    if footprint and not footprint.get("ran"):
        notes.append(f"footprint stage skipped: {footprint.get('why_not')}")
    tables = []
    if checks:
        # a check that could not run has no measure, value or threshold: no empty columns
        tables.append(ReportTable(_worded(_checks_table(checks), {}), caption="Quality checks"))
    tables.append(
        ReportTable(metrics, caption="All numbers (RegistrationResult.metrics)", collapsed=True)
    )
    return ReportSection(
        f"{record.registration.name} ({record.registration.model})",
        status="ok" if record.ok else "failed",
        notes=notes,
        tables=tables,
        figures=figures,
        paragraphs=[f"Transform: {record.transform_file}"],
    )


def _checks_table(checks: list[dict]):
    import pandas as pd

    rows = [
        {
            "check": c["name"],
            "what it measures": c["measures"],
            "value": "" if c["value"] is None else f"{c['value']:.3g}",
            "pass when": c["threshold"],
            "result": "pass" if c["passed"] else "FAIL",
        }
        for c in checks
    ]
    return pd.DataFrame(rows)


def _failed_checks(checks: list[dict], record: RegistrationRecord) -> list[str]:
    """One sentence per failed check and what to do about it, in config terms."""
    notes = []
    for check in checks:
        if check["passed"]:
            continue
        todo = CONFIG_REMEDIES.get(check["remedy"], "") or DEFAULT_REMEDY
        reg = record.registration
        todo = todo.format(step=f"{reg.moving}:{reg.fixed}")
        notes.append(
            f"{check['name']} — {check['failure']}" + (f". What to do: {todo}." if todo else "")
        )
    return notes


def _composed(result: RunResult) -> ReportSection:
    config = result.config
    msi = result.modalities[config.msi_name]
    visium = result.modalities[config.visium_name]
    fig = _msi_on_visium(msi, visium, result.msi_to_visium)
    return ReportSection(
        "MSI → Visium (composed)",
        paragraphs=[
            "The MSI's total ion count at every pixel centre, carried through every registration "
            "on the path into the Visium image, over the Visium H&E with the capture spots "
            "outlined."
        ],
        figures=[ReportFigure("MSI total ion count on the Visium image", fig)],
    )


def _msi_on_visium(msi, visium, transform):
    """MSI pixels (TIC) carried onto the Visium image, spots outlined; axes in µm.

    A bright-field H&E is drawn in grey under the MSI in viridis, a fluorescence image on black
    under the MSI in plasma (:mod:`spatialfuse.pl` colours).
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from spatialfuse.core.visium_geometry import visium_um_per_px
    from spatialfuse.io.visium import SPOT_DIAMETER_UM, tissue_image
    from spatialfuse.pl.stain import msi_cmap, stain_kind, under_overlay
    from spatialfuse.reg import visium_um_to_fullres_px

    u = visium_um_per_px(visium)  # µm per full-res pixel
    to_um = u * np.ones(2)
    centres = (
        visium_um_to_fullres_px(visium).apply(
            transform.apply(np.asarray(msi.obsm["spatial"], dtype=float))
        )
        * to_um
    )
    spots = np.asarray(visium.obsm["spatial"], dtype=float) * to_um
    fig, ax = plt.subplots(figsize=(7.5, 6.5), layout="constrained")
    found = tissue_image(visium)
    kind = None
    if found is not None:
        image, scale = np.asarray(found[0]), float(found[1])
        # a bright-field stain in grey under the MSI's colours, fluorescence on black
        kind = stain_kind(image)
        height, width = image.shape[:2]
        extent = (
            -0.5 * u / scale,
            (width - 0.5) * u / scale,
            (height - 0.5) * u / scale,
            -0.5 * u / scale,
        )
        ax.imshow(under_overlay(image, kind), extent=extent)
    tic = np.asarray(msi.X.sum(axis=1)).ravel()
    pitch = min(msi.uns.get("spatialfuse", {}).get("pixel_size_um", [50.0]))
    low, high = np.vstack([spots, centres]).min(axis=0), np.vstack([spots, centres]).max(axis=0)
    margin = 2 * SPOT_DIAMETER_UM
    drawn = ax.imshow(
        _nearest_raster(centres, tic, low - margin, high + margin, pitch),
        extent=(low[0] - margin, high[0] + margin, high[1] + margin, low[1] - margin),
        cmap=msi_cmap(kind),
        alpha=0.6,
        interpolation="nearest",
    )
    fig.colorbar(drawn, ax=ax, label="MSI total ion count", shrink=0.7)
    circles = [Circle((x, y), SPOT_DIAMETER_UM / 2) for x, y in spots]
    edge, edge_word = ("white", "white") if kind == "fluorescence" else ("#d62728", "red")
    ax.add_collection(PatchCollection(circles, facecolor="none", edgecolor=edge, lw=0.7, alpha=0.9))
    ax.set_xlim(low[0] - margin, high[0] + margin)
    ax.set_ylim(high[1] + margin, low[1] - margin)
    ax.set_aspect("equal")
    ax.set_xlabel("x (µm, Visium frame)")
    ax.set_ylabel("y (µm, Visium frame)")
    bar = _round_length((high[0] - low[0]) / 4)
    ax.add_artist(
        AnchoredSizeBar(ax.transData, bar, f"{bar:g} µm", "lower right", frameon=True, pad=0.4)
    )
    under = {"brightfield": "the Visium H&E (grey)", "fluorescence": "the Visium image (black)"}
    ax.set_title(
        f"MSI total ion count on {under.get(kind, 'the Visium frame')}; "
        f"capture spots outlined in {edge_word}"
    )
    return fig


def _nearest_raster(points, values, low, high, pitch: float):
    """``values`` at ``points`` (µm) drawn on a grid of half ``pitch`` over ``low``–``high``.

    Each grid cell takes the nearest point's value within 0.75 pitch (an MSI pixel turned and
    scaled by the registration covers about that), NaN elsewhere (drawn transparent).
    """
    import numpy as np
    from scipy.spatial import cKDTree

    step = pitch / 2
    xs = np.arange(low[0] + step / 2, high[0], step)
    ys = np.arange(low[1] + step / 2, high[1], step)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    distance, nearest = cKDTree(points).query(grid, distance_upper_bound=0.75 * pitch)
    found = np.isfinite(distance)
    raster = np.full(len(grid), np.nan)
    raster[found] = np.asarray(values, dtype=float)[nearest[found]]
    return raster.reshape(len(ys), len(xs))


def _round_length(most: float) -> float:
    """The longest of 1, 2 or 5 × 10^k that is at most ``most`` (a scale bar's length)."""
    import math

    power = 10.0 ** math.floor(math.log10(most))
    return max(step * power for step in (1, 2, 5) if step * power <= most)


def _spot_values(adata, column: str, title: str, ax, **kwargs) -> None:
    """``obs[column]`` at the spots over the Visium image (squidpy), with a scale bar in µm.

    The image is drawn as under any MSI overlay (:mod:`spatialfuse.pl.stain`): a bright-field
    H&E in grey under the spots in viridis, a fluorescence image on black under plasma.
    """
    import anndata as ad
    import squidpy as sq

    from spatialfuse.core.visium_geometry import visium_um_per_px
    from spatialfuse.pl.stain import msi_cmap, stain_kind, under_overlay

    # squidpy draws the hires image by default; a folder may have only lowres, or no image.
    options: dict[str, Any] = {"cmap": msi_cmap(None)}
    table = ad.AnnData(obs=adata.obs[[column]].copy())
    table.obsm["spatial"] = adata.obsm["spatial"]
    for library, entry in (adata.uns.get("spatial") or {}).items():
        table.uns["spatial"] = {library: dict(entry)}  # squidpy reads its scale factors
        images = entry.get("images") or {}
        if not images:
            options["img"] = False
            break
        res = "hires" if "hires" in images else next(iter(images))
        if res != "hires":
            options["img_res_key"] = res
        kind = stain_kind(images[res])
        options["cmap"] = msi_cmap(kind)
        table.uns["spatial"] = {
            library: {**entry, "images": {res: under_overlay(images[res], kind)}}
        }
        scale = (entry.get("scalefactors") or {}).get(f"tissue_{res}_scalef")
        um = visium_um_per_px(adata, required=False)
        if scale and um:
            options.update(
                scalebar_dx=float(um) / float(scale),
                scalebar_units="um",
                scalebar_kwargs={"scale_formatter": lambda value, unit: f"{value} µm"},
            )
        break
    else:
        options["img"] = False
    options.update(kwargs)
    sq.pl.spatial_scatter(table, color=column, ax=ax, title=title, frameon=False, **options)


def _coverage(result: RunResult) -> ReportSection:
    import matplotlib.pyplot as plt

    spots = result.msi_spots
    fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    # a fraction: the colour bar spans 0–1 (all spots covered read as full, not mid-scale)
    _spot_values(
        spots, "msi_coverage", "Fraction of each spot covered by MSI", ax, vmin=0.0, vmax=1.0
    )
    return ReportSection(
        "Spot coverage",
        status="ok" if spots.obs["has_msi"].any() else "warning",
        tables=[ReportTable(_worded_keys(result.summary.get("mapping", {})), caption="Mapping")],
        figures=[ReportFigure("MSI coverage per Visium spot", fig)],
    )


def _clusters(result: RunResult) -> ReportSection:
    import matplotlib.pyplot as plt

    from spatialfuse import pl

    mdata = result.mdata
    fig, ax = plt.subplots(figsize=(6, 5))
    pl.joint_clusters(mdata, key="joint", ax=ax)
    tables: list = [
        ReportTable(_worded_keys(result.summary.get("clustering", {})), caption="Clustering")
    ]
    weights = [c for c in mdata.obs.columns if c.startswith("joint_weight")]
    if weights:
        summary = mdata.obs[weights].describe().round(3)
        summary.columns = [f"{c.removeprefix('joint_weight_')} weight" for c in summary.columns]
        tables.append(
            ReportTable(
                summary.rename(index=WEIGHT_ROWS),
                caption="Per-spot modality weights (how much each modality decides a spot's "
                "neighbours)",
            )
        )
    method = result.config.clustering.method
    return ReportSection(
        "Joint clusters",
        paragraphs=[f"Method: {CLUSTER_METHODS.get(method, method)}."],
        tables=tables,
        figures=[ReportFigure("Joint clusters on the tissue", fig)],
    )


def _pairs(result: RunResult) -> ReportSection:
    from spatialfuse import pl

    table = _by_significance(result.correlation)
    n_top = result.config.correlation.n_top
    figures = []
    if len(table):
        figures.append(
            ReportFigure("Strongest gene–ion associations", pl.correlation_heatmap(table))
        )
    for row in _distinct_pairs(table, N_PAIR_MAPS):
        fig = pl.gene_and_ion(result.mdata, row.gene, row.ion)
        figures.append(
            ReportFigure(f"{row.gene} and {row.ion} (r = {row.r:.2f}) on the tissue", fig)
        )
    return ReportSection(
        "Cross-modality pairs",
        paragraphs=[
            f"Gene × ion {result.config.correlation.method} correlation across spots with MSI "
            "data. Neighbouring spots repeat each other, so p-values account for spatial "
            "autocorrelation (null model: "
            f"{result.config.correlation.null_model}; effective n is the number of "
            "independent spots they are worth) and are Benjamini–Hochberg adjusted."
        ],
        tables=[
            ReportTable(
                _worded(table.head(n_top).reset_index(drop=True), PAIR_WORDS),
                caption=f"Top {n_top} pairs, most significant first (adjusted p, then |r|)",
            )
        ],
        figures=figures,
    )


#: Column names and summary keys of the report's tables, in words.
INPUT_WORDS = {
    "name": "input",
    "n_pixels": "pixels",
    "n_features": "features",
    "pixel_size_um": "pixel size (µm, x, y)",
    "path": "file",
    "shape_px": "image size (px, rows, columns)",
    "n_spots": "spots",
    "n_genes": "genes",
    "um_per_px": "µm per full-res pixel",
}
CHECK_WORDS = {
    "status": "result",
    "off_tissue_fraction": "off-tissue fraction",
    "n_spots": "spots",
}
PAIR_WORDS = {
    "mz": "m/z",
    "ion_name": "ion name",
    "n_eff": "effective n",
    "p_value": "p",
    "p_adjusted": "adjusted p",
}
SUMMARY_WORDS = {
    "aggregate": "aggregation over a spot",
    "n_spots": "Visium spots",
    "n_spots_with_msi": "spots with MSI data",
    "fraction_spots_with_msi": "fraction of spots with MSI data",
    "median_coverage_of_covered_spots": "median share of those spots covered by MSI",
    "n_clusters": "clusters",
    "n_spots_clustered": "spots clustered",
    "cluster_sizes": "spots per cluster",
}


#: The rows of ``DataFrame.describe()`` in words.
WEIGHT_ROWS = {
    "count": "spots",
    "std": "standard deviation",
    "min": "minimum",
    "25%": "25th percentile",
    "50%": "median",
    "75%": "75th percentile",
    "max": "maximum",
}
#: The clustering methods of the config in words.
CLUSTER_METHODS = {
    "wnn": "weighted nearest neighbours (wnn: each spot weighs RNA and MSI by how well each "
    "predicts its neighbours), then Leiden",
    "concat": "each modality's principal components, scaled by the share of their variance "
    "that is spatial signal, side by side (concat), then Leiden",
    "mofa": "MOFA+ factors of both modalities (mofa), then Leiden",
}


def _worded(frame, words: dict[str, str]):
    """``frame`` with its columns named in words, empty cells blank, empty columns left out."""
    frame = frame.astype(object).where(lambda f: f.notna(), "")
    empty = [c for c in frame.columns if (frame[c].astype(str) == "").all()]
    return frame.drop(columns=empty).rename(columns=words)


def _worded_keys(summary):
    """A summary mapping with its keys in words (:data:`SUMMARY_WORDS`; others as they are)."""
    if not isinstance(summary, dict):
        return summary
    return {SUMMARY_WORDS.get(k, k): v for k, v in summary.items()}


def _by_significance(table):
    """Pairs ranked by adjusted p-value, then p-value, then the strength of r."""
    if not len(table) or "p_adjusted" not in table:
        return table
    order = table.assign(_strength=-table["r"].abs())
    order = order.sort_values(["p_adjusted", "p_value", "_strength"], kind="stable")
    return order.drop(columns="_strength")


def _distinct_pairs(table, n: int) -> list:
    """The strongest pairs that share neither their gene nor their ion with a stronger one.

    The top of the table is often one ion against a family of co-expressed genes; maps of those
    repeat one picture, while distinct pairs show different tissue patterns.
    """
    chosen, genes, ions = [], set(), set()
    for row in table.itertuples(index=False):
        if row.gene in genes or row.ion in ions:
            continue
        chosen.append(row)
        genes.add(row.gene)
        ions.add(row.ion)
        if len(chosen) == n:
            break
    return chosen


def _metadata(result: RunResult) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for name in (
        "spatialfuse",
        "numpy",
        "scipy",
        "anndata",
        "mudata",
        "scanpy",
        "squidpy",
        "SimpleITK",
        "spatialdata",
        "scikit-image",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "versions": versions,
        "config": result.summary.get("config", {}),
        "files": result.summary.get("files", {}),
        "platform": result.summary.get("platform", {}),
    }
