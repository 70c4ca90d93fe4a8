"""Writing files and folders atomically: a finished result under its name, or nothing.

:func:`atomic_file` yields a temporary file name beside the target and renames it into place
when the block succeeds; :func:`atomic_folder` does the same for a folder. Neither replaces an
existing result unless the caller says so, and both give what they create the permissions the
user's umask asks for (``tempfile``'s private ``0600``/``0700`` would surprise a shared group).
Every output of the package (audio, manifests, model folders, evaluations, checkpoints' records)
is written through them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from dereverb.errors import DataError, OutputExistsError, one_line

__all__ = ["atomic_file", "atomic_folder", "write_text"]

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; on success it becomes ``path`` atomically.

    The caller writes the temporary file. When the block raises (or is interrupted), the
    temporary file is removed and ``path`` is untouched. Without ``overwrite`` an existing
    ``path`` is never replaced, even one created while the block ran. The file is created with
    the permissions the process's umask allows (``0644`` under umask ``022``), as a plain
    ``open`` would; errors of the file system name ``path``, not the temporary file.

    Raises:
        OutputExistsError: ``path`` exists (and ``overwrite`` is False).
        DataError: the folder of ``path`` is missing.
        OSError: the folder is not writable, or the rename failed (its ``filename`` is ``path``).

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> with atomic_file(out) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(out).read()
        'done'
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist")
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(path)
    tmp = _new_temporary_file(path)
    try:
        yield tmp
        try:
            if overwrite:
                os.replace(tmp, path)
            else:
                try:  # atomic no-overwrite: a hard link fails if the name was taken meanwhile
                    os.link(tmp, path)
                except FileExistsError:
                    raise OutputExistsError(path) from None
                except OSError:  # file systems without hard links
                    os.replace(tmp, path)
        except OSError as err:
            raise _naming(err, path, "cannot rename the finished temporary file") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`; by default replacing ``path``.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> write_text(out, "{}\\n"); open(out).read()
        '{}\\n'
    """
    with atomic_file(path, overwrite=overwrite) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, on_exists: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a new empty hidden folder beside ``folder``; on success it is renamed to ``folder``.

    When the block raises (or is interrupted) the temporary folder is removed and ``folder`` is
    untouched. If ``folder`` exists when the result is published (it may have appeared while the
    block ran), ``on_exists(folder)`` decides: ``True`` replaces it (the old folder is moved
    aside first, then removed, so ``folder`` is never missing or half-written), ``False`` keeps
    it and discards the new result (e.g. another process prepared the same thing first), and it
    may raise to refuse. Without ``on_exists`` an existing ``folder`` is an error.

    Args:
        folder: the final path; its parent folders are created.
        on_exists: the policy for an existing ``folder``, called at publish time.

    Raises:
        FileExistsError: ``folder`` exists and there is no ``on_exists``.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> with atomic_folder(out) as tmp:
        ...     _ = (tmp / "a.txt").write_text("done")
        >>> (out / "a.txt").read_text()
        'done'
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_hidden_folder(folder, "tmp")
    try:
        yield tmp
        if not os.path.lexists(folder):
            try:
                os.rename(tmp, folder)
                return
            except OSError:  # the name was taken meanwhile: decide below
                if not os.path.lexists(folder):
                    raise
        if on_exists is None:
            raise FileExistsError(errno.EEXIST, "exists already", str(folder))
        if on_exists(folder):
            _swap(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(new: Path, folder: Path) -> None:
    """Replace ``folder`` by ``new``: the old one is moved aside, the new one renamed in, the old removed."""
    aside = _new_hidden_folder(folder, "old")
    os.rename(folder, aside / folder.name)
    try:
        os.rename(new, folder)
    except OSError:
        os.rename(aside / folder.name, folder)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _new_hidden_folder(folder: Path, tag: str) -> Path:
    """A new empty ``.NAME.TAG-XXXXXXXX`` beside ``folder``, mode ``0o777`` less the umask."""
    for _ in range(100):
        path = folder.with_name(f".{folder.name}.{tag}-{secrets.token_hex(4)}")
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, f"no free temporary folder name beside {folder.name}", str(folder.parent))


def _new_temporary_file(path: Path) -> str:
    """Create an empty, unique ``.NAME.XXXXXXXX.tmp`` beside ``path``, mode ``0o666`` less the umask."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, _NEW_FILE, 0o666))  # the kernel applies the umask, as for any new file
            return tmp
        except FileExistsError:
            continue
        except OSError as err:
            raise _naming(err, path, f"cannot create a file in {path.parent}") from None
    raise FileExistsError(errno.EEXIST, f"no free temporary file name in {path.parent}", str(path))


def _naming(err: OSError, path: Path, what: str) -> OSError:
    """``err`` again (same class and errno), about ``path`` and saying what failed."""
    return type(err)(err.errno, f"{what} ({err.strerror or one_line(err)})", str(path))
