"""Real-size MSI acquisitions: reading, conversion and registration, time and peak RSS per step.

Usage::

    python benchmarks/bench_scale.py [--pixels 100000 500000] [--peaks 500] [--data-dir DIR]
                                     [--old-ref REV] [--old-cap-gb 6] [--steps ...] [--json OUT]

Inputs are generated, never committed (under ``--data-dir``, default ``benchmarks/_data``): a
synthetic trio (:func:`spatialfuse.datasets.synthetic_trio`: tissue, H&E, MSI, exact ground
truth) whose MSI pixel size is chosen to give about ``--pixels`` pixels, its spectra rewritten
with pyimzML's ``ImzMLWriter`` as a processed imzML of ``--peaks`` peaks per spectrum (the trio's
ion peaks plus uniform noise peaks of low intensity).

Every step runs in a fresh Python process (cold: imports, file opening and caches included),
one at a time, and reports its wall time and its own peak RSS (``VmHWM`` of the process, reset
after the input was read, so a registration step counts only registration and what the process
already holds: registration steps also give the RSS at their start, the table read included):

- ``read_imzml``: ``sf.io.read_imzml`` (in memory, default processed axis);
- ``convert``: ``sf.io.convert_imzml`` to a zarr store (default memory budget);
- ``register_memory``: ``sf.reg.register`` of the in-memory MSI against the trio's H&E;
- ``register_zarr``: the same from ``sf.io.read_msi_zarr`` (dask-backed ``X``);
- ``register_old``: ``register_memory`` with the MSI registration image of ``--old-ref`` (the code
  before issue 17, which densified the table) under an address-space cap of ``--old-cap-gb``: a
  ``MemoryError`` there is a result, not a crash of the machine.

Each registration row also gives its error against the ground truth (median over MSI pixel
centres). The machine's load average is printed beside every step: times are only comparable
within one run. Ratios (old / new) are printed where both ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_zarr import status_kib  # noqa: E402

#: The synthetic tissue's size (µm).
TISSUE_UM = (3000.0, 2400.0)
#: Measured on seed 1: pixel count × s² (the raster covers the tissue, turned, with a margin).
RASTER_AREA_UM2 = 5.8e6
#: The code before issue 17 (the dense registration image).
OLD_REF = "7d564b2"
STEPS = ("read_imzml", "convert", "register_memory", "register_zarr", "register_old")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixels", type=int, nargs="+", default=[100_000])
    p.add_argument("--peaks", type=int, default=500)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--old-ref", default=OLD_REF)
    p.add_argument("--old-cap-gb", type=float, default=6.0)
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument(
        "--wide",
        type=int,
        default=0,
        help="read N m/z windows (geometric over 100-1000, ± 50 ppm) instead of the default axis",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def ensure_input(folder: Path, pixels: int, peaks: int, seed: int = 1) -> dict:
    """The trio and its ``peaks``-per-spectrum processed imzML (generated once, then reused)."""
    pixel_um = round(float(np.sqrt(RASTER_AREA_UM2 / pixels)), 2)
    stem = folder / f"scale_{pixels}_p{peaks}_s{seed}"
    info_path = stem.with_suffix(".json")
    if info_path.is_file():
        return json.loads(info_path.read_text())
    import spatialfuse as sf

    t0 = time.perf_counter()
    trio = sf.datasets.synthetic_trio(
        folder / f"{stem.name}_trio",
        seed=seed,
        msi_pixel_size_um=pixel_um,
        tissue_size_um=TISSUE_UM,
        he_pixel_size_um=2.0,
        n_ions=60,
        serial_section=False,
        write_he_serial=False,
    )
    imzml = rewrite_with_noise(trio.msi, stem, peaks, seed)
    info = {
        "imzml": str(imzml),
        "he": str(trio.he),
        "pixel_um": pixel_um,
        "msi_to_he": trio.msi_to_he.to_dict(),
        "seconds": time.perf_counter() - t0,
    }
    info_path.write_text(json.dumps(info))
    return info


def rewrite_with_noise(source: Path, stem: Path, peaks: int, seed: int) -> Path:
    """``source``'s spectra with uniform noise peaks added up to ``peaks`` each (ImzMLWriter)."""
    from pyimzml.ImzMLParser import ImzMLParser
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    parser = ImzMLParser(str(source))
    partial = stem.parent / (stem.name + ".partial")
    with ImzMLWriter(
        str(partial) + ".imzML", mz_dtype=np.float64, intensity_dtype=np.float32, mode="processed"
    ) as writer:
        for i, (x, y, *_z) in enumerate(parser.coordinates):
            mz, intensity = parser.getspectrum(i)
            k = max(peaks - len(mz), 0)
            level = 0.05 * float(np.median(intensity)) if len(intensity) else 1.0
            mz = np.concatenate([mz, rng.uniform(h.MZ_LOW, h.MZ_HIGH, k)])
            intensity = np.concatenate([intensity, level * rng.standard_exponential(k)])
            order = np.argsort(mz, kind="stable")
            writer.addSpectrum(mz[order], intensity[order].astype(np.float32), (x, y, 1))
    for suffix in (".imzML", ".ibd"):
        os.replace(str(partial) + suffix, str(stem) + suffix)
    return stem.with_suffix(".imzML")


# ---------------------------------------------------------------------------------------------
# one step in a fresh process
# ---------------------------------------------------------------------------------------------


def _reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux
        pass


def _old_msi_image(ref: str):
    """``msi_image`` as it was at ``ref`` (its module loaded from git, beside the current one)."""
    import importlib.util
    import tempfile

    source = subprocess.run(
        ["git", "show", f"{ref}:src/spatialfuse/reg/_images.py"],
        cwd=REPO if (REPO / ".git").exists() else None,  # else: the working directory's
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_images.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_images", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_images"] = module
    spec.loader.exec_module(module)
    # the image class register() checks for is the current one
    from spatialfuse.reg._images import RegistrationImage

    module.RegistrationImage = RegistrationImage
    return module.msi_image


def child(step: str, info_path: str, work: str, old_ref: str, cap_gb: float, wide: int) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    info = json.loads(Path(info_path).read_text())
    store = Path(work) / (Path(info["imzml"]).stem + (f"_w{wide}" if wide else "") + ".zarr")
    features = {"mz": np.geomspace(100.0, 1000.0, wide), "ppm": 50.0} if wide else {}
    t0 = time.perf_counter()
    import spatialfuse as sf

    out = {"step": step, "load_before": os.getloadavg()[0]}
    pixel = info["pixel_um"]
    if step == "read_imzml":
        _reset_peak()
        t, cpu = time.perf_counter(), time.process_time()
        msi = sf.io.read_imzml(info["imzml"], pixel_size_um=pixel, **features)
        out.update(seconds=time.perf_counter() - t, shape=list(msi.shape))
    elif step == "convert":
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        _reset_peak()
        t, cpu = time.perf_counter(), time.process_time()
        sf.io.convert_imzml(info["imzml"], store, pixel_size_um=pixel, **features)
        out["seconds"] = time.perf_counter() - t
        files = [p for p in store.rglob("*") if p.is_file()]
        out.update(store_files=len(files), store_bytes=sum(p.stat().st_size for p in files))
    else:
        if step == "register_old":
            import resource

            cap = int(cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            import spatialfuse.reg._images as images

            images.msi_image = _old_msi_image(old_ref)
        t = time.perf_counter()
        if step == "register_zarr":
            msi = sf.io.read_msi_zarr(store)
        else:
            msi = sf.io.read_imzml(info["imzml"], pixel_size_um=pixel, **features)
        he = sf.io.read_histology(info["he"])
        out.update(read_seconds=time.perf_counter() - t, shape=list(msi.shape))
        _reset_peak()
        # What the process holds when registration starts (the table read, the reader's leftovers):
        # the peak minus this is registration's own.
        out["rss_at_start_bytes"] = status_kib("VmRSS") * 1024
        t, cpu = time.perf_counter(), time.process_time()
        try:
            result = sf.reg.register(msi, he)
        except MemoryError as exc:
            out.update(seconds=time.perf_counter() - t, error=f"MemoryError: {exc}")
        else:
            out["seconds"] = time.perf_counter() - t
            truth = sf.reg.Transform.from_dict(info["msi_to_he"])
            points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
            error = np.linalg.norm(result.transform.apply(points) - truth.apply(points), axis=1)
            out.update(tre_um=float(np.median(error)), ok=bool(result.ok))
    out.update(
        cpu_seconds=time.process_time() - cpu,
        peak_rss_bytes=status_kib("VmHWM") * 1024,
        total_seconds=time.perf_counter() - t0,
        load_after=os.getloadavg()[0],
    )
    return out


def run_step(step: str, info_path: Path, work: Path, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        step,
        str(info_path),
        str(work),
        args.old_ref,
        str(args.old_cap_gb),
        str(args.wide),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"step": step, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        step, info_path, work, old_ref, cap, wide = args.child
        print(json.dumps(child(step, info_path, work, old_ref, float(cap), int(wide))))
        return 0
    folder = h.data_dir(args.data_dir)
    rows = []
    print(f"machine: {h.machine_info()}")
    for pixels in args.pixels:
        t = time.perf_counter()
        info = ensure_input(folder, pixels, args.peaks)
        info_path = folder / f"scale_{pixels}_p{args.peaks}_s1.json"
        ibd = Path(info["imzml"]).with_suffix(".ibd").stat().st_size
        print(
            f"\n{pixels:,} pixels requested, {args.peaks} peaks/spectrum, pixel "
            f"{info['pixel_um']} µm, .ibd {h.fmt_bytes(ibd)}"
            + (f", {args.wide} m/z windows" if args.wide else ", default m/z axis")
            + f" (input ready in "
            f"{time.perf_counter() - t:.0f} s)"
        )
        results = {}
        for step in args.steps:
            out = run_step(step, info_path, folder, args)
            out["pixels_requested"] = pixels
            results[step] = out
            rows.append(out)
            print("  " + describe(out), flush=True)
        old, new = results.get("register_old"), results.get("register_memory")
        if old and new and "error" not in old and "error" not in new:
            print(
                f"  old / new registration: time {old['seconds'] / new['seconds']:.2f}×, CPU "
                f"{old['cpu_seconds'] / new['cpu_seconds']:.2f}×, "
                f"peak RSS {old['peak_rss_bytes'] / new['peak_rss_bytes']:.1f}×"
            )
    if args.json:
        h.write_json(Path(args.json), {"machine": h.machine_info(), "rows": rows})
    return 0


def describe(out: dict) -> str:
    if "seconds" not in out:
        return f"{out['step']:<16} failed: {out.get('error')}"
    text = (
        f"{out['step']:<16} {out['seconds']:7.1f} s (CPU {out.get('cpu_seconds', np.nan):.1f} s)"
        f"  peak RSS {h.fmt_bytes(out['peak_rss_bytes'])}"
        f"  (process {out['total_seconds']:.1f} s; load {out['load_before']:.1f}"
        f"→{out['load_after']:.1f})"
    )
    if "shape" in out:
        text += f"  {out['shape'][0]:,} × {out['shape'][1]:,}"
    if "store_files" in out:
        text += f"  store {out['store_files']:,} files, {h.fmt_bytes(out['store_bytes'])}"
    if "rss_at_start_bytes" in out:
        text += f" (at the start {h.fmt_bytes(out['rss_at_start_bytes'])})"
    if "tre_um" in out:
        text += f"  error {out['tre_um']:.2f} µm, ok={out['ok']}"
    if "error" in out:
        text += f"  {out['error'][:80]}"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
