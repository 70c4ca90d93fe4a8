"""The model folder format: safetensors weights + a JSON config + a model card.

A model folder holds::

    config.json        {"format": "dereverb-model", "format_version": 1, "class": "DTCN",
                        "config": {...constructor arguments...}, "sample_rate": 8000,
                        "dereverb_version": "..."}
    model.safetensors  the state dict (no pickle anywhere)
    MODEL_CARD.md      what the model is, how it was trained, how it scores

:func:`from_pretrained` rebuilds a model from that alone. It imports neither Hydra nor the
training stack, and never unpickles anything. A shipped model is named by its folder under
``dereverb/checkpoints/`` (package data), e.g. ``from_pretrained("dtcn-8k")``; a path works too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import dereverb
from dereverb.models import MODELS, TasNet

__all__ = ["PRETRAINED_DIR", "ModelFolderError", "from_pretrained", "list_pretrained", "save_pretrained"]

FORMAT = "dereverb-model"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "MODEL_CARD.md"
PRETRAINED_DIR = Path(__file__).resolve().parent / "checkpoints"
SAMPLE_RATES = (8000, 16000)


class ModelFolderError(ValueError):
    """A folder that is not a usable dereverb model (the message says why, in one line)."""


def list_pretrained() -> list[str]:
    """Names of the models shipped with the package.

    Example:
        >>> isinstance(list_pretrained(), list)
        True
    """
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def _card_stub(model: TasNet, sample_rate: int, n_params: int) -> str:
    cfg = ", ".join(f"{k}={v!r}" for k, v in model.get_config().items())
    return (
        f"# {type(model).__name__} at {sample_rate} Hz\n\n"
        f"- Architecture: `{type(model).__name__}({cfg})`\n"
        f"- Parameters: {n_params:,}\n"
        f"- Sample rate: {sample_rate} Hz\n"
        f"- dereverb version: {dereverb.__version__}\n\n"
        "Training data, target definition, training command, steps, wall time, hardware, metrics and\n"
        "limitations: not filled in yet.\n"
    )


def save_pretrained(
    model: TasNet,
    folder: str | os.PathLike,
    sample_rate: int,
    *,
    model_card: str | None = None,
    overwrite: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` as a model folder (atomically: a complete folder or nothing).

    Args:
        model: a :class:`~dereverb.models.TCN` or :class:`~dereverb.models.DTCN`.
        folder: where to write; must not exist unless ``overwrite``.
        sample_rate: the rate the model works at (8000 or 16000).
        model_card: Markdown for ``MODEL_CARD.md``; default, a stub with the architecture.
        overwrite: replace an existing folder.
        extra: more JSON-serialisable fields stored in ``config.json`` (e.g. training info).

    Returns:
        The folder's path.
    """
    name = type(model).__name__
    if MODELS.get(name) is not type(model):
        raise TypeError(f"save_pretrained supports {sorted(MODELS)}, got {name}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate!r}")
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists (pass overwrite=True to replace it)")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": name,
        "config": model.get_config(),
        "sample_rate": sample_rate,
        "dereverb_version": dereverb.__version__,
        **(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": FORMAT, "class": name})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(model_card or _card_stub(model, sample_rate, n_params))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def _resolve(name_or_folder: str | os.PathLike) -> Path:
    path = Path(name_or_folder)
    if path.is_dir():
        return path
    shipped = PRETRAINED_DIR / str(name_or_folder)
    if isinstance(name_or_folder, str) and os.sep not in name_or_folder and shipped.is_dir():
        return shipped
    if path.exists():
        raise ModelFolderError(f"{path} is a file, not a model folder")
    known = ", ".join(list_pretrained()) or "none shipped in this install"
    raise ModelFolderError(f"{name_or_folder}: no such model folder or shipped model name (shipped: {known})")


def read_config(name_or_folder: str | os.PathLike) -> tuple[Path, dict]:
    """Resolve a model folder and read and check its ``config.json``: ``(folder, config)``."""
    folder = _resolve(name_or_folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise ModelFolderError(f"{folder} is not a dereverb model folder: {CONFIG_FILE} is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFolderError(f'{cfg_path}: not a dereverb model config (no "format": "{FORMAT}")')
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"{cfg_path}: format_version {config.get('format_version')!r} is not supported "
            f"(this dereverb reads {FORMAT_VERSION})"
        )
    if config.get("class") not in MODELS:
        raise ModelFolderError(f"{cfg_path}: unknown model class {config.get('class')!r} (known: {sorted(MODELS)})")
    if config.get("sample_rate") not in SAMPLE_RATES:
        raise ModelFolderError(f"{cfg_path}: sample_rate {config.get('sample_rate')!r} is not one of {SAMPLE_RATES}")
    if not isinstance(config.get("config"), dict):
        raise ModelFolderError(f'{cfg_path}: "config" must be an object of constructor arguments')
    return folder, config


def from_pretrained(name_or_folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> TasNet:
    """Rebuild a model from a model folder or a shipped model's name, in eval mode.

    The model's sample rate is in ``model.sample_rate``.

    Raises:
        ModelFolderError: the folder is missing, is not a dereverb model, lacks a file, or its
            weights do not match its config; the message says which, in one line.
    """
    folder, config = read_config(name_or_folder)
    try:
        model = MODELS[config["class"]](**config["config"])
    except (TypeError, ValueError) as err:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: invalid model configuration ({err})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFolderError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFolderError(f"{weights}: not a readable safetensors file ({err})") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("with a wrong shape", wrong)) if v]  # fmt: skip
        raise ModelFolderError(f"{weights}: weights do not match {config['class']} config.json: " + "; ".join(parts))
    model.load_state_dict(state)
    model.sample_rate = config["sample_rate"]
    gain = config.get("output_gain")
    if gain is not None and not (isinstance(gain, int | float) and not isinstance(gain, bool) and math.isfinite(gain)
                                 and gain != 0):  # fmt: skip
        raise ModelFolderError(f"{folder / CONFIG_FILE}: output_gain must be a finite non-zero number, got {gain!r}")
    model.output_gain = None if gain is None else float(gain)
    return model.to(map_location).eval()
