"""The exception raised for bad data: one line that names the file or value and what is wrong."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data or a bad data setting.

    The message is a single line naming the file (or config value) and what is wrong with it,
    so command-line tools can print it as it is and exit with a non-zero status.

    Example:
        >>> str(DataError("/tmp/a.wav: not an audio file"))
        '/tmp/a.wav: not an audio file'
    """
