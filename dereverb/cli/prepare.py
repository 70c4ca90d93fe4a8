"""``dereverb-prepare [hydra overrides]``: prepare a dataset once (``python -m dereverb.cli.prepare`` too).

Composes ``conf/prepare.yaml`` (``data: demo`` by default) with the overrides, runs
:func:`dereverb.data.prepare` and prints a summary. A bad setting or bad input prints one line
(``error: ...``) and exits with status 2.

Examples:
    dereverb-prepare
    dereverb-prepare sample_rate=16000
    dereverb-prepare data=whamr data.root=/data/whamr data.task=denoise_dereverb
    dereverb-prepare data=folder data.root=/data/pairs data.on_bad_file=skip
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dereverb.cli.common import command, print_error, setup_logging

__all__ = ["main", "summary"]


def summary(manifests: dict[str, Path]) -> str:
    """A few lines: the prepared folder, utterances and hours per split, skipped files."""
    from dereverb.data.manifests import find_prepared

    folder = manifests["train"].parent
    meta = find_prepared(folder) or {}
    rate = meta.get("settings", {}).get("sample_rate")
    lines = [f"prepared data.kind={meta.get('kind')} at {rate} Hz in {folder}"]
    for split, path in manifests.items():
        count = meta.get("counts", {}).get(split)
        hours = meta.get("hours", {}).get(split)
        lines.append(f"  {split:5s} {count:6d} utterances {hours:8.3f} h  {path.name}")
    skipped = meta.get("skipped", {})
    if skipped.get("count"):
        lines.append(f"  skipped {skipped['count']} bad files; first: {'; '.join(skipped['first'])}")
    lines.append(f"  preparation took {meta.get('prepared_s')} s (when it was first run)")
    return "\n".join(lines)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 2 after printing one error line)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dereverb.config import compose
    from dereverb.data import prepare

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    setup_logging()
    start = time.perf_counter()
    try:
        cfg = compose("prepare", argv)
        manifests = prepare(cfg.data, cfg.sample_rate)
    except (HydraException, OmegaConfBaseException) as err:  # a bad override: not a DereverbError
        return print_error(err)
    print(summary(manifests))
    print(f"  this run took {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
