"""Train a dereverberation model: ``python train.py conf/dtcn.yaml [key=value ...]``.

The first argument is a config file (``conf/dtcn.yaml``, ``conf/tcn.yaml``, ``conf/dtcn_16k.yaml``
or your own); the rest are Hydra overrides and flags, e.g. ``model=dtcn_small optim.lr=5e-4
seed=3``, ``--cfg job`` (print the composed config), ``-m seed=1,2,3`` (a sweep). Results go to
``results/<name>/<seed>/``; running the same command again resumes there, also after Ctrl-C. The
working directory never changes. See README.md.

A refused run (a bad value, missing data, a folder in use by another training) prints one line
``train.py: error: ...`` and leaves no new file or folder behind.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path


def _split_config(argv: list[str]) -> tuple[list[str], str, str]:
    """Turn a leading ``path/to/config.yaml`` into Hydra's ``--config-path``/``--config-name``."""
    if argv and argv[0].endswith((".yaml", ".yml")) and not argv[0].startswith("-"):
        path = Path(argv[0])
        if not path.is_file():
            sys.exit(f"train.py: error: config file {argv[0]} not found")
        return argv[1:], str(path.resolve().parent), path.stem
    sys.exit("usage: python train.py CONFIG.yaml [key=value ...]   (e.g. python train.py conf/dtcn.yaml)")


def _one_line(err: Exception) -> str:
    """Hydra's multi-line composition error as one line (the options of a group joined, no search path)."""
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
    """
    if any(a.startswith("-") for a in args):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=args, return_hydra_config=True)
    except HydraException as err:
        sys.exit(f"train.py: error: {_one_line(err)}")
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


def _run() -> None:
    args, config_dir, config_name = _split_config(sys.argv[1:])
    created = _first_missing(_check_overrides(config_dir, config_name, args))
    import hydra
    from omegaconf import DictConfig

    from dereverb.errors import DataError
    from dereverb.train import ConfigError, TrainingError, main, output_folder  # light: registers the resolver

    @hydra.main(config_path=config_dir, config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            main(cfg)
        except (ConfigError, DataError, TrainingError) as err:
            logging.getLogger("dereverb").error("%s", err)
            _remove_created(Path(os.path.abspath(output_folder(cfg))), created)
            sys.exit(f"train.py: error: {err}")

    os.environ["DEREVERB_COMMAND"] = shlex.join(["python", *sys.argv])  # recorded in the run's environment.json
    sys.argv = [sys.argv[0], *args]
    _main()


def run() -> None:
    """``python train.py CONFIG.yaml [key=value ...]``; Ctrl-C stops with one line and exit status 130."""
    try:
        _run()
    except KeyboardInterrupt:
        # the last complete checkpoint stays (a save cut short is removed when the run resumes)
        sys.stderr.write("train.py: interrupted; run the same command to resume\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
