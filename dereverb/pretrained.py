"""The model folder format: safetensors weights + a JSON config + a model card.

A model folder holds::

    config.json        {"format": "dereverb-model", "format_version": 1, "class": "DTCN",
                        "config": {...constructor arguments...}, "sample_rate": 8000,
                        "dereverb_version": "..."}
    model.safetensors  the state dict (no pickle anywhere)
    MODEL_CARD.md      what the model is, how it was trained, how it scores

:func:`from_pretrained` rebuilds a model from that alone. It imports neither Hydra nor the
training stack, and never unpickles anything. Before any tensor is allocated it checks the
constructor arguments' ranges and compares the tensors the model would have (built on the
``meta`` device) with the names, shapes and dtypes in the weights file's header; it refuses
non-finite weights and an ``output_gain`` outside :data:`GAIN_RANGE`. A shipped model is named
by its folder under ``dereverb/checkpoints/`` (package data), e.g. ``from_pretrained("dtcn-8k")``;
a path works too.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

import dereverb
from dereverb.atomic import atomic_folder
from dereverb.errors import ModelFolderError
from dereverb.models import MODELS, TasNet

__all__ = ["PRETRAINED_DIR", "ModelFolderError", "from_pretrained", "list_pretrained", "save_pretrained"]

FORMAT = "dereverb-model"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "MODEL_CARD.md"
PRETRAINED_DIR = Path(__file__).resolve().parent / "checkpoints"
SAMPLE_RATES = (8000, 16000)
#: the magnitudes ``output_gain`` may have: a calibrated gain is near 1; outside this range it is an error
GAIN_RANGE = (1e-4, 1e4)
_DTYPE_NAMES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}  # fmt: skip


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


def _gain_error(gain) -> str | None:
    """What is wrong with an ``output_gain`` value (``None`` if nothing: absent or in :data:`GAIN_RANGE`)."""
    if gain is None or (
        isinstance(gain, int | float) and not isinstance(gain, bool) and GAIN_RANGE[0] <= abs(gain) <= GAIN_RANGE[1]
    ):
        return None
    return f"output_gain must be a number whose magnitude is from {GAIN_RANGE[0]:g} to {GAIN_RANGE[1]:g}, got {gain!r}"


def _count_non_finite(tensor: torch.Tensor) -> int:
    if not tensor.is_floating_point():
        return 0
    return int(tensor.numel() - torch.isfinite(tensor).sum().item())


def _replaceable(folder: Path) -> bool:
    """Whether ``save_pretrained(..., overwrite=True)`` may replace ``folder``: an empty folder or a model folder."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


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
        overwrite: replace an existing model folder (or empty folder); anything else is refused.
        extra: more JSON-serialisable fields stored in ``config.json`` (e.g. training info).

    Returns:
        The folder's path. The folder and its files get the user's umask (0755 and 0644 under 022).

    Raises:
        FileExistsError: ``folder`` exists (without ``overwrite``), or is not a model folder.
        ValueError: a bad sample rate or ``output_gain``, or a weight that is NaN or infinite.
    """
    name = type(model).__name__
    if MODELS.get(name) is not type(model):
        raise TypeError(f"save_pretrained supports {sorted(MODELS)}, got {name}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate!r}")
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists (pass overwrite=True to replace it)")
    if overwrite and (folder.exists() or folder.is_symlink()) and not _replaceable(folder):
        raise FileExistsError(f"{folder} exists and is not a dereverb model folder: not replacing it")
    gain_error = _gain_error((extra or {}).get("output_gain"))
    if gain_error:
        raise ValueError(gain_error)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": name,
        "config": model.get_config(),
        "sample_rate": sample_rate,
        "dereverb_version": dereverb.__version__,
        **(extra or {}),
    }
    # Stored as float32 whatever the model's precision: the dtype from_pretrained builds and checks.
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}  # fmt: skip
    for key, tensor in state.items():
        bad = _count_non_finite(tensor)
        if bad:
            raise ValueError(f"{name} tensor {key} has {bad} NaN/Inf values: not saving weights that cannot be loaded")
    n_params = sum(p.numel() for p in model.parameters())

    def replace(existing: Path) -> bool:  # it may have appeared, or changed, while writing
        if overwrite and _replaceable(existing):
            return True
        raise FileExistsError(f"{existing} exists and is not a dereverb model folder: not replacing it")

    with atomic_folder(folder, on_exists=replace) as tmp:
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": FORMAT, "class": name})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(model_card or _card_stub(model, sample_rate, n_params))
        # The folder was made with the user's umask; the files get it too (the weights writer makes them 0600).
        file_mode = stat.S_IMODE(tmp.stat().st_mode) & 0o666
        for path in tmp.iterdir():
            path.chmod(file_mode)
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
    gain_error = _gain_error(config.get("output_gain"))
    if gain_error:
        raise ModelFolderError(f"{cfg_path}: {gain_error}")
    return folder, config


def _read_header(weights: Path) -> dict[str, tuple[str, list[int]]]:
    """``{name: (dtype, shape)}`` of every tensor in a safetensors file, from its header alone (no data read)."""
    try:
        with safe_open(weights, framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFolderError(f"{weights}: not a readable safetensors file ({err})") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _check_against_header(weights: Path, cls_name: str, skeleton: TasNet, header: dict) -> None:
    """Refuse a weights file whose tensors are not exactly those of ``skeleton`` (names, shapes, dtypes)."""
    expected = {k: (_dtype_name(v.dtype), list(v.shape)) for k, v in skeleton.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    common = sorted(set(expected) & set(header))
    shape = [f"{k}: {header[k][1]} in the file, {expected[k][1]} from config.json"
             for k in common if header[k][1] != expected[k][1]]  # fmt: skip
    dtype = [f"{k} is {header[k][0]}, {expected[k][0]} expected" for k in common if header[k][0] != expected[k][0]]
    if missing or unexpected or shape or dtype:
        parts = [f"{len(v)} {kind} (e.g. {v[0]})" for kind, v in
                 (("missing", missing), ("unexpected", unexpected), ("with a wrong shape", shape),
                  ("with a wrong dtype", dtype)) if v]  # fmt: skip
        raise ModelFolderError(f"{weights}: weights do not match {cls_name} config.json: " + "; ".join(parts))


def from_pretrained(name_or_folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> TasNet:
    """Rebuild a model from a model folder or a shipped model's name, in eval mode.

    The model's sample rate is in ``model.sample_rate``, its calibrated gain (or ``None``) in
    ``model.output_gain``.

    Raises:
        ModelFolderError: the folder is missing, is not a dereverb model, lacks a file, its config
            is out of range, its weights do not match its config (names, shapes, dtypes) or are not
            finite; the message says which, in one line.
    """
    folder, config = read_config(name_or_folder)
    cls, cfg = MODELS[config["class"]], config["config"]
    try:
        cls.check_config(cfg)  # cheap: bounds the sizes before anything is built
        with torch.device("meta"):  # the model's tensors without their memory
            skeleton = cls(**cfg)
    except (TypeError, ValueError) as err:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: invalid model configuration ({err})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFolderError(f"{folder}: {WEIGHTS_FILE} is missing")
    _check_against_header(weights, config["class"], skeleton, _read_header(weights))
    model = cls(**cfg)
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFolderError(f"{weights}: not a readable safetensors file ({err})") from None
    for key, tensor in state.items():
        bad = _count_non_finite(tensor)
        if bad:
            raise ModelFolderError(f"{weights}: tensor {key} has {bad} NaN/Inf values")
    model.load_state_dict(state)
    model.sample_rate = config["sample_rate"]
    gain = config.get("output_gain")
    model.output_gain = None if gain is None else float(gain)
    return model.to(map_location).eval()
