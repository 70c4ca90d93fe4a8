"""Loading a model to run it: from a shipped name, a model folder or a training folder, on a checked device.

:func:`load_model` is what evaluation, inference and ``scripts/ship_model.py`` use to turn what a
user names into a model in eval mode: a shipped model or a model folder
(:func:`dereverb.pretrained.from_pretrained`, the model folder format), or a training folder
``results/<name>/<seed>`` (its ``model/`` export, else its best SpeechBrain checkpoint, read as
data only). :func:`check_device` says in one line why a device cannot be used.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dereverb.errors import ConfigError, ModelFolderError

if TYPE_CHECKING:
    import torch

__all__ = ["LoadedModel", "check_device", "load_best_checkpoint", "load_model"]


def check_device(device: str | torch.device) -> torch.device:
    """The :class:`torch.device` for ``device`` when inference can run on it here.

    Raises:
        ConfigError: not a device name, a device type inference does not run on (``meta``,
            ...), or one this machine does not have (no CUDA, no such CUDA index, no MPS).
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{device}: unknown device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{device}: no CUDA device is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{device}: unavailable, this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{device}: no MPS device is available here")
    elif dev.type != "cpu":
        raise ConfigError(f"{device}: not a device inference runs on (use cpu, cuda or cuda:N)")
    return dev


@dataclass
class LoadedModel:
    """A model ready to enhance, with where it came from.

    Attributes:
        model: the TCN/DTCN in eval mode.
        sample_rate: the rate it works at.
        source: a one-line description (folder, checkpoint and its ``best_key``).
        checkpoint: the SpeechBrain checkpoint folder ``save/CKPT+...`` the weights came from, when
            they came from a training folder's checkpoint; else None.
    """

    model: object
    sample_rate: int
    source: str
    checkpoint: Path | None = None


def load_model(spec: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Load a model from a shipped name, a model folder or a training folder ``results/<name>/<seed>``.

    A training folder's ``model/`` export is used when present; otherwise the ``save/CKPT+*``
    checkpoint with the highest ``best_key`` in its ``CKPT.yaml`` (the newest on a tie), rebuilt
    from ``model_config.json``.

    Raises:
        ModelFolderError: not a dereverb model (one line saying why).
    """
    from dereverb.pretrained import CONFIG_FILE, from_pretrained

    path = Path(spec)
    if path.is_dir() and not (path / CONFIG_FILE).is_file():
        if (path / "model" / CONFIG_FILE).is_file():
            model = from_pretrained(path / "model", map_location=device)
            return LoadedModel(model, model.sample_rate, f"training folder {path}, its export model/")
        if (path / "model_config.json").is_file() or (path / "save").is_dir():
            return load_best_checkpoint(path, device)
        raise ModelFolderError(
            f"{path} is not a dereverb model: no {CONFIG_FILE} (a model folder) and no model_config.json "
            "(a training folder results/<name>/<seed>)"
        )
    model = from_pretrained(spec, map_location=device)
    where = f"model folder {path}" if path.is_dir() else f"shipped model {spec}"
    return LoadedModel(model, model.sample_rate, where)


def load_best_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Load the best checkpoint of a training folder ``results/<name>/<seed>``, ignoring its export.

    The best is the ``save/CKPT+*`` with the highest ``best_key`` in its ``CKPT.yaml`` (the newest
    on a tie); the model is rebuilt from ``model_config.json``.

    Raises:
        ModelFolderError: no model record, no complete checkpoint, or weights of another model.
    """
    import torch
    import yaml

    from dereverb.models import MODELS

    path = Path(path)
    record_path = path / "model_config.json"
    if not record_path.is_file():
        raise ModelFolderError(f"{path}: a training folder needs model_config.json (written when training starts)")
    try:
        record = json.loads(record_path.read_text())
        cls, config, rate = MODELS[record["class"]], record["config"], int(record["sample_rate"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelFolderError(f"{record_path}: not a dereverb model record ({type(err).__name__}: {err})") from None
    candidates = []
    for ckpt in sorted((path / "save").glob("CKPT+*")):
        if not ((ckpt / "CKPT.yaml").is_file() and (ckpt / "model.ckpt").is_file()):
            continue
        try:
            meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text()) or {}
        except yaml.YAMLError:
            continue
        value = meta.get("best_key")
        value = float(value) if isinstance(value, int | float) and math.isfinite(value) else -math.inf
        candidates.append((value, ckpt.name, ckpt))
    if not candidates:
        raise ModelFolderError(f"{path}: no complete checkpoint in {path / 'save'} (CKPT+*/CKPT.yaml and model.ckpt)")
    best_key, _, ckpt = max(candidates)
    state = _read_state_dict(ckpt / "model.ckpt")
    try:
        cls.check_config(config)  # sizes in range before anything is built
        with torch.device("meta"):  # shapes against the checkpoint's before any memory is allocated
            shapes = {k: tuple(v.shape) for k, v in cls(**config).state_dict().items()}
        if shapes != {k: tuple(v.shape) for k, v in state.items()}:
            raise ValueError("its tensors' names or shapes differ from model_config.json's")
        model = cls(**config)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, OSError, KeyError) as err:
        first = " ".join(str(err).split())[:300]
        raise ModelFolderError(f"{ckpt / 'model.ckpt'}: cannot load it into {record['class']} ({first})") from None
    model.sample_rate = rate
    model = model.to(device).eval()
    source = f"training folder {path}, checkpoint {ckpt.name} (best_key {best_key:.4g})"
    return LoadedModel(model, rate, source, checkpoint=ckpt)


def _read_state_dict(path: Path) -> dict:
    """A state dict of tensors from a checkpoint ``torch.save`` wrote, read as data only
    (:func:`dereverb.weights.load_weights`).

    Raises:
        ModelFolderError: unreadable, or not a plain state dict of tensors (one line naming the file).
    """
    import torch

    from dereverb.weights import CheckpointError, load_weights

    remedy = "refusing to load it (a tampered or foreign checkpoint)"
    try:
        state = load_weights(path, remedy)
    except CheckpointError as err:
        raise ModelFolderError(str(err)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFolderError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; {remedy}")
    return state
