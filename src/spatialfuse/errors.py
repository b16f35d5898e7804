"""Error and warning types raised by spatialfuse.

Every error a user can trigger with bad input is one of these. Each names the file (where there is
one) and what is wrong with it. They subclass the built-in type a caller would expect
(:class:`ValueError` for bad content, :class:`OSError` for missing or unreadable files), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

import os


class SpatialfuseError(Exception):
    """Base class of every error raised by spatialfuse."""


class SpatialfuseWarning(UserWarning):
    """Base class of every warning emitted by spatialfuse."""


def _with_path(path: str | os.PathLike | None, message: str) -> str:
    return f"{os.fspath(path)}: {message}" if path is not None else message


class _AboutAFile:
    """What the errors about one file share: ``path``, ``problem`` and the path in the message.

    ``path`` is None where there is no file; ``problem`` is the message without the path.
    """

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = message
        super().__init__(_with_path(path, message))


class FileFormatError(_AboutAFile, SpatialfuseError, ValueError):
    """A file exists but its content is malformed, inconsistent or not what was expected.

    Parameters
    ----------
    path
        The offending file (or folder).
    message
        What is wrong, in words a user can act on.
    """


class UnsupportedFormatError(FileFormatError):
    """A file is valid but uses a feature spatialfuse does not read."""


class MissingFileError(_AboutAFile, SpatialfuseError, FileNotFoundError):
    """A file that an input needs is absent.

    Parameters
    ----------
    path
        The missing file.
    message
        Why it is needed or how to supply it.
    """


class CalibrationError(_AboutAFile, SpatialfuseError, ValueError):
    """The physical size of a pixel is unknown or inconsistent.

    Parameters
    ----------
    path
        The input whose calibration is missing.
    message
        What is missing and how to supply it.
    """


class LimitExceededError(_AboutAFile, SpatialfuseError, ValueError):
    """An input needs more than a resource limit allows (``spatialfuse._limits``).

    Parameters
    ----------
    path
        The input.
    message
        The size, the limit and how to raise it.
    """


class DataWarning(SpatialfuseWarning):
    """Input was read, but something in it was unusual and was handled in a stated way."""


class ConfigError(FileFormatError):
    """A run configuration (YAML) is malformed or refers to inputs that do not fit together."""


class NoTransformPathError(SpatialfuseError, ValueError):
    """No chain of transforms joins two frames (:class:`~spatialfuse.reg.TransformGraph`)."""


class RegistrationFailedError(SpatialfuseError, RuntimeError):
    """A registration failed its quality checks and the run was not told to accept it.

    Parameters
    ----------
    path_name
        The registration path (``moving → fixed``) that failed.
    failures
        The checks that failed, in words.
    """

    def __init__(self, path_name: str, failures: list[str]):
        self.path_name = path_name
        self.failures = list(failures)
        reasons = "; ".join(self.failures) or "no reason recorded"
        super().__init__(
            f"registration {path_name} failed its quality checks: {reasons}. The QC report "
            "(report.html in the output folder) shows each check and what to do: give that "
            "registration landmarks (landmarks: in the config) or a different model, or continue "
            "anyway with --accept-failed (accept_failed: true on that registration)."
        )


class SamplesFailedError(SpatialfuseError, RuntimeError):
    """Some samples of a run of several sections failed; the others finished.

    Parameters
    ----------
    failures
        Each failed sample's name and its error, in words.
    total
        How many samples the run had.
    result
        The run's result (``spatialfuse.workflow.run_samples``), with the finished samples.
    """

    def __init__(self, failures: dict[str, str], *, total: int | None = None, result=None):
        self.failures = dict(failures)
        self.result = result
        of = f" of {total}" if total is not None else ""
        lines = "\n".join(f"  {name}: {error}" for name, error in self.failures.items())
        super().__init__(
            f"{len(self.failures)}{of} samples failed (the others finished; summary.json in the "
            f"output folder has every sample):\n{lines}"
        )


class NoOverlapError(SpatialfuseError, RuntimeError):
    """Too few Visium spots have MSI data for the joint analysis (the report says why)."""


class OutputLockedError(SpatialfuseError, OSError):
    """Another run is writing to the same output folder."""


class OutputFolderError(SpatialfuseError, OSError):
    """An output folder holds files spatialfuse did not write, or overlaps an input.

    Parameters
    ----------
    folder
        The output folder.
    message
        What is in the way and what to do about it.
    paths
        The offending files or inputs (a few, for the message).
    """

    def __init__(self, folder: str | os.PathLike, message: str, paths=()):
        self.folder = os.fspath(folder)
        self.problem = message
        self.paths = [os.fspath(p) for p in paths]
        super().__init__(_with_path(folder, message))


class OutputWriteError(_AboutAFile, SpatialfuseError, OSError):
    """An output could not be written (a full disk, a quota, a failing device).

    Parameters
    ----------
    path
        The output file.
    message
        Why, and what became of the file.
    """


class MissingDependencyError(SpatialfuseError, ImportError):
    """An optional package that a requested method needs is not installed."""
