"""Prepare a dataset from the command line: ``python -m dereverb.data.prepare [hydra overrides]``.

Composes ``conf/prepare.yaml`` (``data: demo`` by default) with the overrides, runs
:func:`dereverb.data.prepare` and prints a summary. A bad setting or bad input prints one line
(``error: ...``) and exits with status 2.

Examples:
    python -m dereverb.data.prepare
    python -m dereverb.data.prepare sample_rate=16000
    python -m dereverb.data.prepare data=whamr data.root=/data/whamr data.task=denoise_dereverb
    python -m dereverb.data.prepare data=folder data.root=/data/pairs data.on_bad_file=skip
"""

from __future__ import annotations

import logging
import sys
import time
import types
from collections.abc import Sequence

from dereverb.errors import DataError


def summary(manifests: dict) -> str:
    """A few lines: the prepared folder, utterances and hours per split, skipped files."""
    from dereverb.data.manifests import find_prepared

    folder = manifests["train"].parent
    meta = find_prepared(folder) or {}
    lines = [f"prepared data.kind={meta.get('kind')} at {meta.get('settings', {}).get('sample_rate')} Hz in {folder}"]
    for split, path in manifests.items():
        count = meta.get("counts", {}).get(split)
        hours = meta.get("hours", {}).get(split)
        lines.append(f"  {split:5s} {count:6d} utterances {hours:8.3f} h  {path.name}")
    skipped = meta.get("skipped", {})
    if skipped.get("count"):
        lines.append(f"  skipped {skipped['count']} bad files; first: {'; '.join(skipped['first'])}")
    lines.append(f"  preparation took {meta.get('prepared_s')} s (when it was first run)")
    return "\n".join(lines)


def _one_line(err: BaseException) -> str:
    """The messages of an exception and its causes (Hydra wraps the useful one), on one line."""
    parts = []
    while err is not None:
        text = " ".join(str(err).split())
        if text and text not in parts:
            parts.append(text)
        err = err.__cause__
    return ": ".join(parts) or "unknown error"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 2 after printing one error line)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dereverb.config import compose
    from dereverb.data.datasets import prepare

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    start = time.perf_counter()
    try:
        cfg = compose("prepare", argv)
        manifests = prepare(cfg.data, cfg.sample_rate)
    except (DataError, HydraException, OmegaConfBaseException, FileNotFoundError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(summary(manifests))
    print(f"  this run took {time.perf_counter() - start:.1f} s")
    return 0


class _CallableModule(types.ModuleType):
    """Importing this module makes ``dereverb.data.prepare`` (the package attribute) this module instead
    of the function :func:`dereverb.data.datasets.prepare`; calling it calls the function, so
    ``from dereverb.data import prepare; prepare(data_cfg, sample_rate)`` works either way."""

    def __call__(self, data_cfg, sample_rate: int, progress: bool = True):
        from dereverb.data.datasets import prepare

        return prepare(data_cfg, sample_rate, progress=progress)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    sys.exit(main())
