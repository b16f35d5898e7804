"""``spatialfuse pick-landmarks CONFIG STEP``: click landmarks for one registration of a run."""

from __future__ import annotations

from pathlib import Path

import click

from spatialfuse.cli._echo import echo, failure

#: MSI images the picker can show first (besides m/z values).
_MSI_IMAGES = ("auto", "pc1", "pc2", "tic", "labels")


def _safe(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return safe.strip("._") or "unnamed"


def find_step(config, step: str):
    """The registration that ``step`` names.

    Its number (from 1), ``moving:fixed``, ``moving→fixed``, ``moving->fixed``, or the moving
    modality's name where only one registration moves it.

    Raises
    ------
    ConfigError
        No registration, or more than one, matches.
    """
    from spatialfuse.errors import ConfigError

    registrations = list(config.registrations)
    names = ", ".join(f"{i + 1}: {r.moving}:{r.fixed}" for i, r in enumerate(registrations))
    if not registrations:
        raise ConfigError(None, "the config has no registrations to pick landmarks for")
    text = step.strip()
    if text.isdigit():
        index = int(text) - 1
        if 0 <= index < len(registrations):
            return registrations[index]
        raise ConfigError(None, f"no registration number {text}; the config has {names}")
    for separator in ("→", "->", ":"):
        if separator in text:
            moving, fixed = (part.strip() for part in text.split(separator, 1))
            found = [r for r in registrations if (r.moving, r.fixed) == (moving, fixed)]
            break
    else:
        found = [r for r in registrations if r.moving == text]
    if len(found) != 1:
        problem = "no registration" if not found else "more than one registration"
        raise ConfigError(None, f"{problem} matches {step!r}; the config has {names}")
    return found[0]


def _msi_image(value: str):
    if value in _MSI_IMAGES:
        return value
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: one of {', '.join(_MSI_IMAGES)} or m/z values separated by commas"
        ) from None


@click.command("pick-landmarks")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("step")
@click.option(
    "--landmarks",
    "landmarks_path",
    type=click.Path(path_type=Path),
    help="Landmark CSV to read (where it exists) and write. Default: the step's landmarks: in "
    "the config, else landmarks/MOVING_to_FIXED.csv beside the config.",
)
@click.option(
    "--transform",
    "transform_path",
    type=click.Path(path_type=Path),
    help="Where Save transform writes (default: beside the landmark CSV, .json).",
)
@click.option(
    "--msi-image",
    default="auto",
    show_default=True,
    help="The MSI image shown first: auto, pc1, pc2, tic, labels, or m/z values (798.5,885.5).",
)
def pick_landmarks(
    config: Path,
    step: str,
    landmarks_path: Path | None,
    transform_path: Path | None,
    msi_image: str,
) -> None:
    """Click landmark pairs for one registration of CONFIG in napari.

    STEP is the registration: its number (1 = the first under registrations:), MOVING:FIXED
    (e.g. msi:he), or the moving modality's name. The window shows both images side by side
    in µm; the panel shows the landmark fit and its leave-one-out error as you click, the
    moving image warped onto the fixed one, and buttons to save the landmarks, save the
    transform and re-run the registration from them with the step's settings. Needs
    pip install "spatialfuse[napari]".
    """
    from spatialfuse import pl
    from spatialfuse.errors import SpatialfuseError
    from spatialfuse.workflow import load_config, read_modality

    image_kind = _msi_image(msi_image)
    try:
        cfg = load_config(config)
        registration = find_step(cfg, step)
        if landmarks_path is None:
            landmarks_path = registration.landmarks or (
                Path(config).resolve().parent
                / "landmarks"
                / f"{_safe(registration.moving)}_to_{_safe(registration.fixed)}.csv"
            )
        if transform_path is None:
            transform_path = landmarks_path.with_suffix(".json")
        echo(f"reading {registration.moving} and {registration.fixed} ...")
        moving = read_modality(cfg.modalities[registration.moving])
        fixed = read_modality(cfg.modalities[registration.fixed])
        options = {
            "model": registration.model,
            "scale": registration.scale,
            "channel": registration.channel,
            "seed": registration.seed,
            "start_from_landmarks": True,
        }
        fit_model = registration.model if registration.model in ("rigid", "similarity") else None
        picker = pl.pick_landmarks(
            moving,
            fixed,
            landmarks=landmarks_path if landmarks_path.is_file() else None,
            model=fit_model or "affine",
            msi_image=image_kind,
            channel=registration.channel,
            landmarks_path=landmarks_path,
            transform_path=transform_path,
            register_options=options,
            names=(registration.moving, registration.fixed),
            block=True,
        )
    except SpatialfuseError as exc:
        raise failure(exc) from exc
    pairs = picker.session.n_pairs
    echo(f"{pairs} landmark pair(s) clicked; saved ones are in {landmarks_path}")
    if landmarks_path.is_file():
        echo(
            f"to use them, set in the registration {registration.moving} → {registration.fixed} "
            f"of {config}:\n    landmarks: {landmarks_path}\n    start_from_landmarks: true\n"
            f"then run: spatialfuse run {config}"
        )
