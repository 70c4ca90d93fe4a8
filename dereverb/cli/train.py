"""Train a dereverberation model: ``python train.py CONFIG.yaml [key=value ...]``.

The first argument is a config file (``conf/dtcn.yaml``, ``conf/tcn.yaml``, ``conf/dtcn_16k.yaml``
or your own); the rest are Hydra overrides and flags, e.g. ``model=dtcn_small optim.lr=5e-4
seed=3``, ``--cfg job`` (print the composed config), ``-m seed=1,2,3`` (a sweep). Results go to
``results/<name>/<seed>/``; running the same command again resumes there, also after Ctrl-C. The
working directory never changes. ``python -m dereverb.cli.train`` is the same command.

A refused run (a bad value, missing data, a folder in use by another training) prints one line
``train.py: error: ...``, exits with status 2 and leaves no new file or folder behind; Ctrl-C
prints one line and exits with status 130.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from dereverb.cli.common import EXIT_ERROR, EXIT_INTERRUPTED
from dereverb.errors import ConfigError, DereverbError, one_line

__all__ = ["hydra_one_line", "main", "split_config"]

PROG = "train.py"
USAGE = "usage: python train.py CONFIG.yaml [key=value ...]   (e.g. python train.py conf/dtcn.yaml)"


def _refuse(text: str) -> int:
    """Print ``train.py: error: <text>`` (one line) on stderr; returns the exit status 2."""
    print(f"{PROG}: error: {' '.join(text.split())}", file=sys.stderr)
    return EXIT_ERROR


def split_config(argv: Sequence[str]) -> tuple[list[str], str, str] | None:
    """Turn a leading ``path/to/config.yaml`` into Hydra's config folder and name.

    Returns:
        ``(the other arguments, the config's folder, its name)``, or None without a config file first.

    Raises:
        ConfigError: the config file does not exist.

    Example:
        >>> from dereverb.config import CONF_DIR
        >>> args, folder, name = split_config([str(CONF_DIR / "tcn.yaml"), "seed=2"])
        >>> args, Path(folder) == CONF_DIR.resolve(), name
        (['seed=2'], True, 'tcn')
        >>> split_config(["seed=2"]) is None
        True
    """
    if argv and argv[0].endswith((".yaml", ".yml")) and not argv[0].startswith("-"):
        path = Path(argv[0])
        if not path.is_file():
            raise ConfigError(f"config file {argv[0]} not found")
        return list(argv[1:]), str(path.resolve().parent), path.stem
    return None


def hydra_one_line(err: Exception) -> str:
    """Hydra's multi-line composition error as one line (the options of a group joined, no search path).

    Example:
        >>> err = ValueError("In 'dtcn': Could not find 'model/nope'\\n\\nAvailable options in 'model':\\n"
        ...                  "\\tdtcn\\n\\ttcn\\nConfig search path:\\n\\tprovider=hydra")
        >>> hydra_one_line(err)
        "In 'dtcn': Could not find 'model/nope'; Available options in 'model': dtcn, tcn"
    """
    lines = str(err).splitlines()
    if err.__cause__ is not None:  # e.g. "Key 'lrr' is not in struct" under "Could not override 'optim.lrr'."
        lines[1:1] = str(err.__cause__).splitlines()[:1]
    parts: list[str] = []
    for line in lines:
        if line.startswith(("Config search path", "See https://")):
            break
        if line.startswith("\t") and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            parts.append(line.strip().rstrip("."))
    return "; ".join(parts)


def _check_overrides(config_dir: str, config_name: str, args: list[str]) -> Path | None:
    """Compose once before Hydra does, to report a bad override in one line instead of Hydra's several.

    Runs with Hydra flags (``-m``, ``--cfg``, ...) are left to Hydra, whose sweep syntax compose refuses.

    Returns:
        The run folder Hydra will create (``hydra.run.dir``, absolute), or None with Hydra flags.

    Raises:
        ConfigError: Hydra refused the overrides (its message in one line).
    """
    if any(a.startswith("-") for a in args):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=args, return_hydra_config=True)
    except HydraException as err:
        raise ConfigError(hydra_one_line(err)) from None
    try:
        return Path(os.path.abspath(str(cfg.hydra.run.dir)))
    except Exception:  # an interpolation only Hydra's job can resolve: the run is reported, not cleaned up
        return None


def _first_missing(folder: Path | None) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (what Hydra's ``mkdir`` creates)."""
    if folder is None or folder.exists():
        return None
    missing = folder
    while not missing.parent.exists():
        missing = missing.parent
    return missing


def _remove_created(folder: Path, top: Path | None) -> None:
    """Remove ``folder`` and its parents up to ``top`` where they are empty: what Hydra made for a refused run."""
    if top is None or (folder != top and top not in folder.parents):
        return
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty: written by another process meanwhile
            return
        if folder == top:
            return
        folder = folder.parent


def _run_hydra(command: list[str], config_dir: str, config_name: str, args: list[str], created: Path | None) -> int:
    """Run the recipe under ``hydra.main`` (logging, ``--cfg``, ``-m`` sweeps); a refused job exits with status 2.

    Args:
        command: the arguments as typed (recorded in the run's ``environment.json``).
        config_dir, config_name: the config file, as Hydra takes it.
        args: the overrides and flags for Hydra (the arguments without the config file).
        created: the outermost folder of the run folder that Hydra will create: removed if the run is refused.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from dereverb.training.config import output_folder  # light: registers the config's resolver

    @hydra.main(config_path=config_dir, config_name=config_name, version_base="1.3")
    def job(cfg: DictConfig) -> None:
        from dereverb.training.run import main as train

        try:
            train(cfg)
        except DereverbError as err:
            logging.getLogger("dereverb").error("%s", err)
            _remove_created(Path(os.path.abspath(output_folder(cfg))), created)
            raise SystemExit(_refuse(one_line(err))) from None

    # what hydra.main changes in this process, restored after it: a later call in the same process
    # (a test, a script) must not see this job's argv, command or Hydra config (its output folder)
    argv, recorded, hydra_job = sys.argv, os.environ.get("DEREVERB_COMMAND"), HydraConfig.instance().cfg
    os.environ["DEREVERB_COMMAND"] = shlex.join(["python", argv[0], *command])  # recorded in environment.json
    sys.argv = [argv[0], *args]  # hydra.main reads its overrides and flags there
    try:
        job()
    except SystemExit as done:  # a refused job, or Hydra's own exits (--help, its errors)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else _refuse(str(done.code)))
    finally:
        sys.argv, HydraConfig.instance().cfg = argv, hydra_job
        if recorded is None:
            os.environ.pop("DEREVERB_COMMAND", None)
        else:
            os.environ["DEREVERB_COMMAND"] = recorded
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python train.py CONFIG.yaml [key=value ...]``: compose, check, train; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0, 2 for a refused run (one ``train.py: error:`` line on stderr), 130 after Ctrl-C.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        split = split_config(args)
        if split is None:
            print(USAGE, file=sys.stderr)
            return EXIT_ERROR
        rest, config_dir, config_name = split
        created = _first_missing(_check_overrides(config_dir, config_name, rest))
        return _run_hydra(args, config_dir, config_name, rest, created)
    except DereverbError as err:
        return _refuse(one_line(err))
    except KeyboardInterrupt:
        # the last complete checkpoint stays (a save cut short is removed when the run resumes)
        print(f"{PROG}: interrupted; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
