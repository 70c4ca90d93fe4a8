"""The ``data`` settings: validated, completed with the defaults of their kind, folders made absolute."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from dereverb.data.kinds import MISSING, check_choice, kind_class
from dereverb.errors import DataError

__all__ = ["SAMPLE_RATES", "data_settings"]

SAMPLE_RATES = (8000, 16000)
"""The data rates the recipes support (the root config's ``sample_rate``)."""


def data_settings(data_cfg, sample_rate: int) -> dict:
    """Validate a ``data`` config and fill in the defaults of its kind.

    Args:
        data_cfg: a DictConfig (the ``data`` node of a composed config) or a plain dict.
        sample_rate: the root config's ``sample_rate`` (8000 or 16000).

    Returns:
        dict: a plain dict with every key of the kind, folders absolute (``~`` expanded).

    Raises:
        DataError: one line naming the key: unknown kind or key, missing required value,
            unsupported sample rate, a value out of range.

    Example:
        >>> data_settings({"kind": "whamr", "root": "/data/whamr", "save_folder": "/tmp/x"}, 8000)["task"]
        'dereverb'
    """
    if sample_rate not in SAMPLE_RATES:
        raise DataError(f"sample_rate={sample_rate}: unsupported; use 8000 or 16000")
    cfg = _to_dict(data_cfg)
    cls = kind_class(cfg.get("kind", MISSING))
    defaults = cls.all_defaults()
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise DataError(f"data.{unknown[0]}: unknown key for data.kind={cls.name} (known: {', '.join(defaults)})")
    s = {**copy.deepcopy(defaults), **cfg}
    for key, value in s.items():
        if value == MISSING:
            raise DataError(f"data.{key} is required: set data.{key}=<a folder> on the command line or in the config")
    for key in (*cls.folders, "save_folder"):
        if s.get(key) is not None:
            s[key] = str(Path(os.path.expanduser(str(s[key]))).absolute())
    check_choice(s, "on_bad_file", ("error", "skip"))
    if not (isinstance(s["segment_s"], int | float) and not isinstance(s["segment_s"], bool) and s["segment_s"] > 0):
        raise DataError(f"data.segment_s={s['segment_s']!r}: expected a positive number of seconds")
    cls.check(s)
    return s


def _to_dict(data_cfg) -> dict:
    """A deep copy of ``data_cfg`` as plain containers, interpolations resolved."""
    if isinstance(data_cfg, dict):
        return copy.deepcopy(data_cfg)
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    try:
        missing = sorted(OmegaConf.missing_keys(data_cfg))
        if not missing:
            return OmegaConf.to_container(data_cfg, resolve=True)
    except (InterpolationResolutionError, MissingMandatoryValue) as err:
        raise DataError(f"data: {' '.join(str(err).split())}") from None
    key = missing[0].removeprefix("data.")  # a node of a composed config names its keys from the root
    raise DataError(f"data.{key} is required: set data.{key}=<a folder> on the command line or in the config")
