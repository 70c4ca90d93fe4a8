"""The records a run folder keeps beside its checkpoints, each written atomically.

``model_config.json`` (the model a folder trains: resuming it with another one is refused),
``config.yaml`` (the resolved config of the latest call) and ``environment.json`` (versions and
platform of the latest call, the command as typed of the latest call and of every call before it:
a resumed run's record says how it was really trained).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from dereverb import __version__
from dereverb.atomic import write_text
from dereverb.errors import ConfigError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["check_resume_compatible", "environment", "read_train_log", "write_run_records"]

MODEL_RECORD = "model_config.json"
ENVIRONMENT_RECORD = "environment.json"
TRAIN_LOG = "train_log.txt"
_VALID_LINE = re.compile(r"^epoch: \d+,.* - valid loss: ")
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def check_resume_compatible(out: Path, model: torch.nn.Module, sample_rate: int, record_it: bool = True) -> None:
    """Refuse to resume a run folder that holds another model configuration.

    Args:
        out: the run folder.
        model: the model this run trains.
        sample_rate: the run's sample rate.
        record_it: write ``model_config.json`` into a folder without one (call it so only while
            holding the folder's lock).

    Raises:
        ConfigError: the folder's record names another class, configuration or sample rate.

    Example:
        >>> import tempfile, torch
        >>> out = Path(tempfile.mkdtemp())
        >>> class Tiny(torch.nn.Linear):
        ...     def get_config(self):
        ...         return {"in_features": self.in_features}
        >>> check_resume_compatible(out, Tiny(2, 2), 8000)  # a new folder: recorded
        >>> try:
        ...     check_resume_compatible(out, Tiny(3, 2), 8000)
        ... except ConfigError as err:
        ...     print(str(err).split(" (")[1].split(")")[0])
        in_features differ
    """
    record = out / MODEL_RECORD
    current = {"class": type(model).__name__, "config": model.get_config(), "sample_rate": sample_rate}
    if record.exists():
        saved = json.loads(record.read_text())
        if saved != current:
            old, new = saved["config"], current["config"]
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            what = ", ".join(diff) or ("class" if saved["class"] != current["class"] else "sample_rate")
            raise ConfigError(
                f"{out} holds a run of another model ({what} differ): resume it with its own config, "
                "or choose another name or seed"
            )
        return
    if record_it:
        write_text(record, json.dumps(current, indent=2) + "\n", overwrite=False)


def environment() -> dict:
    """Versions of dereverb, Python, torch and SpeechBrain, the platform, and the command as typed."""
    import speechbrain
    import torch

    return {
        "dereverb": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "speechbrain": speechbrain.__version__,
        "cuda": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "argv": sys.argv,
        # the command as typed (train.py hands Hydra its arguments without the config file)
        "command": os.environ.get("DEREVERB_COMMAND", shlex.join(["python", *sys.argv])),
    }


def write_run_records(out: Path, cfg: DictConfig) -> None:
    """Write this call's ``config.yaml`` (resolved) and ``environment.json`` into the run folder.

    Both replace the last call's, except that ``environment.json``'s ``calls`` keeps the commands of
    the earlier calls (a resumed run) before this one's.
    """
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    record = environment()
    record["calls"] = [*_earlier_calls(out / ENVIRONMENT_RECORD), record["command"]]
    write_text(out / ENVIRONMENT_RECORD, json.dumps(record, indent=2) + "\n")


def _earlier_calls(path: Path) -> list[str]:
    """The commands an earlier ``environment.json`` lists (one, if it predates ``calls``)."""
    if not path.exists():
        return []
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("%s is unreadable (%s): the commands of the earlier calls are not kept", path, e)
        return []
    calls = earlier.get("calls") if isinstance(earlier, dict) else None
    if isinstance(calls, list):
        return [c for c in calls if isinstance(c, str)]
    command = earlier.get("command") if isinstance(earlier, dict) else None
    return [command] if isinstance(command, str) else []


def read_train_log(path: Path) -> list[dict[str, float]]:
    """The validation rows of a run's ``train_log.txt`` (SpeechBrain's format), one dict per epoch.

    Each row has the line's leading fields (``epoch``, ``lr`` and, in logs written since the recipe
    records them, ``steps``: optimizer steps so far in the run) and its ``valid <name>`` scores;
    test lines and a missing file give no rows.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "train_log.txt"
        >>> _ = p.write_text("epoch: 1, lr: 1.00e-03, steps: 133 - train loss: -9.1 - valid loss: -9.5, "
        ...                  "valid pesq_nb: 2.5, valid si_sdr: 9.5\\nepoch loaded: 1 - test loss: -9.4\\n")
        >>> read_train_log(p)
        [{'epoch': 1.0, 'lr': 0.001, 'steps': 133.0, 'loss': -9.5, 'pesq_nb': 2.5, 'si_sdr': 9.5}]
    """
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        if not _VALID_LINE.match(line):
            continue
        head, _, rest = line.partition(" - ")
        row = {k: float(v) for k, v in re.findall(r"(\w+): " + _NUMBER, head)}
        row.update((k, float(v)) for k, v in re.findall(r"valid (\w+): " + _NUMBER, rest))
        rows.append(row)
    return rows
