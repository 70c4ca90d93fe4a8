"""The errors every command reports as one line, and the one formatter that writes that line.

Every error raised for bad input, a bad setting or a refused action derives from
:class:`DereverbError`; its message is one line that names the file or value and what is wrong,
so a command line prints ``error: <message>`` (:func:`one_line`) and exits with status 2. Each
class also derives from the built-in exception a Python caller would expect (``ValueError`` for
bad values, ``RuntimeError`` for a run that cannot go on), so ``except ValueError`` keeps working.

This module imports nothing from the package: any module may raise these errors.

Example:
    >>> err = DataError("/tmp/a.wav: empty file (0 bytes)")
    >>> isinstance(err, DereverbError) and isinstance(err, ValueError)
    True
    >>> one_line(err)
    '/tmp/a.wav: empty file (0 bytes)'
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DereverbError",
    "EnhanceError",
    "EvaluationError",
    "ModelFolderError",
    "OutputExistsError",
    "TrainingError",
    "one_line",
]


class DereverbError(Exception):
    """Base of every error a dereverb command reports as one ``error:`` line (exit status 2)."""


class DataError(DereverbError, ValueError):
    """Bad input data or a bad data setting: the message names the file (or config value) and what is wrong."""


class OutputExistsError(DataError):
    """A file would be replaced and replacing it was not asked for.

    Args:
        path: the existing file.
        hint: how to allow it, in the caller's terms (a command line says ``--overwrite``).

    Example:
        >>> str(OutputExistsError("out.wav"))
        'out.wav: file exists (pass overwrite=True to replace it)'
    """

    def __init__(self, path: str | os.PathLike, hint: str = "pass overwrite=True to replace it"):
        self.path = Path(path)
        super().__init__(f"{path}: file exists ({hint})")


class ConfigError(DereverbError, ValueError):
    """A configuration value the recipe cannot run with (one line naming the key)."""


class ModelFolderError(DereverbError, ValueError):
    """A folder or name that is not a usable dereverb model (the message says why)."""


class EvaluationError(DereverbError, ValueError):
    """The evaluation cannot run (the message says why)."""


class EnhanceError(DereverbError, ValueError):
    """Inference cannot run (the message says why)."""


class CheckpointError(DereverbError, RuntimeError):
    """A checkpoint that may not be read, or that could not be written (naming the file or folder)."""


class TrainingError(DereverbError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says why."""


def one_line(err: BaseException) -> str:
    """The text of an error for an ``error:`` line: one line, naming the file where the error has one.

    An ``OSError`` reads ``<file>: <reason>``; ``MemoryError`` reads ``out of memory``; any other
    error its message followed by those of its causes that add something (libraries such as
    Hydra wrap the useful message), whitespace collapsed; an error without a message its class name.

    Example:
        >>> one_line(FileNotFoundError(2, "No such file or directory", "a.wav"))
        'a.wav: No such file or directory'
        >>> try:
        ...     try:
        ...         raise KeyError("lrr")
        ...     except KeyError as cause:
        ...         raise ValueError("could not override optim.lrr") from cause
        ... except ValueError as err:
        ...     one_line(err)
        "could not override optim.lrr: 'lrr'"
    """
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
        return " ".join(text.split())
    if isinstance(err, MemoryError):
        return "out of memory"
    parts: list[str] = []
    cause: BaseException | None = err
    while cause is not None:
        text = " ".join(str(cause).split())
        if text and not any(text in part for part in parts):
            parts.append(text)
        cause = cause.__cause__
    return ": ".join(parts) or type(err).__name__
