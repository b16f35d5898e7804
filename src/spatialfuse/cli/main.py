"""``spatialfuse`` command: entry point and subcommands.

Heavy libraries are imported inside the commands so that ``spatialfuse --help`` answers at once.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from spatialfuse._version import __version__
from spatialfuse.cli._common import kind_of
from spatialfuse.cli._convert import convert as _convert
from spatialfuse.cli._echo import echo, failure
from spatialfuse.cli._pick import pick_landmarks as _pick_landmarks
from spatialfuse.cli._run import COMMANDS as _RUN_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="spatialfuse")
def cli() -> None:
    """spatialfuse: MSI, histology and Visium in one frame, in micrometres."""


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--pixel-size",
    type=float,
    default=None,
    help="Pixel size in µm, for images or imzML files that do not state it.",
)
def info(path: Path, pixel_size: float | None) -> None:
    """Print a summary of an imzML file, a Visium folder or a histology image.

    PATH is an .imzML file (or its .ibd), a Space Ranger output folder, or an image
    (JPEG, PNG, TIFF, OME-TIFF).
    """
    from spatialfuse.errors import CalibrationError, SpatialfuseError

    kind = kind_of(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if kind == "imzml":
                from spatialfuse.io.imzml import ImzMLReader, describe_imzml

                with ImzMLReader(path) as reader:
                    text = describe_imzml(reader)
            elif kind == "visium":
                from spatialfuse.io.visium import describe_visium, read_visium

                folder = path.parent if path.is_file() else path
                try:
                    adata = read_visium(folder)
                    text = describe_visium(adata)
                except FileNotFoundError as exc:
                    adata = read_visium(folder, require_counts=False)
                    text = describe_visium(adata) + f"\ncounts:     not read ({exc})"
            else:
                from spatialfuse.io.histology import describe_histology, read_histology

                try:
                    image = read_histology(path, pixel_size_um=pixel_size)
                    text = describe_histology(image)
                except CalibrationError:
                    image = read_histology(path, pixel_size_um=1.0)
                    lines = []
                    for line in describe_histology(image).splitlines():
                        if line.startswith("pixel size:"):
                            line = "pixel size: unknown (not in the file; pass --pixel-size)"
                        elif line.startswith("extent:"):
                            continue
                        lines.append(line)
                    text = "\n".join(lines)
        except SpatialfuseError as exc:
            raise failure(exc) from exc
    echo(text)
    for warning in caught:
        echo(f"warning: {warning.message}", err=True)


cli.add_command(_convert)
cli.add_command(_pick_landmarks)
for _command in _RUN_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Run the CLI (``python -m spatialfuse``)."""
    cli(prog_name="spatialfuse")


if __name__ == "__main__":
    sys.exit(main())
