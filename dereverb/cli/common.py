"""What every command line of the package shares: its common options, logging, and how it fails.

A command is a ``main(argv) -> int`` wrapped by :func:`command`: an error the user can fix (a
:class:`~dereverb.errors.DereverbError` or an ``OSError``) becomes one ``error: ...`` line on
stderr and exit status 2, Ctrl-C one ``error: interrupted`` line and status 130; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence

from dereverb.errors import DereverbError, one_line

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "add_device", "add_quiet", "command", "print_error", "setup_logging"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

Main = Callable[[Sequence[str] | None], int]


def print_error(err: BaseException | str) -> int:
    """Print ``error: <one line>`` to stderr; returns :data:`EXIT_ERROR`.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     print_error(ValueError("a.wav:\\n  empty file"))
        2
        >>> err.getvalue()
        'error: a.wav: empty file\\n'
    """
    text = err if isinstance(err, str) else one_line(err)
    print("error: " + " ".join(text.split()), file=sys.stderr)
    return EXIT_ERROR


def command(main: Main) -> Main:
    """Wrap a command's ``main(argv) -> int`` so that expected errors end with one line and status 2.

    Example:
        >>> import contextlib, io
        >>> from dereverb.errors import DataError
        >>> @command
        ... def demo(argv=None):
        ...     raise DataError("in.wav: not an audio file")
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     demo([])
        2
        >>> err.getvalue()
        'error: in.wav: not an audio file\\n'
    """

    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except (DereverbError, OSError) as err:
            return print_error(err)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapped


def setup_logging(quiet: bool = False) -> None:
    """Log to stderr: INFO, or WARNING with ``--quiet`` (no progress bars either)."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs (checked by :func:`dereverb.loading.check_device`)."""
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: warnings only, no progress bar."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
