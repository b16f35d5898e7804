"""Command-line options written the same way in every command."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click


def choice_option(name: str, choices: Sequence[str], default: str, **kwargs) -> Callable:
    """``--name`` taking one of ``choices``, ``default`` shown in ``--help``."""
    return click.option(
        name, type=click.Choice(list(choices)), default=default, show_default=True, **kwargs
    )
