"""Output of the ``spatialfuse`` command that never fails on a file name that is not UTF-8."""

from __future__ import annotations

import click

from spatialfuse._text import printable


def echo(message: object, *, err: bool = False) -> None:
    """Print ``message`` with undecodable bytes of file names shown as hex escapes."""
    click.echo(printable(str(message)), err=err)


def failure(exc: BaseException, kind: type[click.ClickException] = click.ClickException):
    """A click error (exit status 1 unless ``kind`` says otherwise) with ``exc``'s message."""
    return kind(printable(str(exc)))
