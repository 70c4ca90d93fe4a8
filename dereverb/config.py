"""The Hydra configuration folder and composing configs from Python (never relative to the cwd)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CONF_DIR", "compose"]

CONF_DIR = Path(os.environ.get("DEREVERB_CONF", Path(__file__).resolve().parent.parent / "conf"))
"""``conf/`` of the repository this package was installed from (``pip install -e .``);
the environment variable ``DEREVERB_CONF`` points elsewhere."""


def compose(config_name: str, overrides: Sequence[str] = ()):
    """Compose a primary config of ``conf/`` with command-line style overrides.

    Args:
        config_name: e.g. ``"prepare"`` for ``conf/prepare.yaml``.
        overrides: Hydra overrides, e.g. ``["data=whamr", "data.root=/data/whamr"]``.

    Returns:
        DictConfig: the composed config (interpolations unresolved).

    Example:
        >>> cfg = compose("prepare", ["data=whamr", "data.root=/data/whamr"])
        >>> cfg.data.kind, cfg.data.task, cfg.sample_rate
        ('whamr', 'dereverb', 8000)
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import dereverb.training.config  # noqa: F401  (registers the resolvers the configs interpolate)

    if not (CONF_DIR / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(f"{CONF_DIR / config_name}.yaml not found (set DEREVERB_CONF to the conf/ folder)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
