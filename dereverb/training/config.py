"""The checks of a composed training config, run before anything is imported, prepared or written.

:func:`validate` refuses a bad value with one line naming the key, its value and what is expected
(:class:`~dereverb.errors.ConfigError`); :func:`output_folder` is where the run writes. Importing
this module registers the ``dereverb.window`` resolver the model configs use (``L``: 2 ms).

Example:
    >>> from dereverb.config import compose
    >>> cfg = compose("dtcn", ["run.epochs=0"])
    >>> try:
    ...     validate(cfg)
    ... except ConfigError as err:
    ...     print(err)
    run.epochs: 0 is not valid (a positive integer)
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dereverb.errors import ConfigError

__all__ = ["BEST_KEYS", "OPTIM_KEYS", "RUN_KEYS", "best_metric", "config_keys", "output_folder", "validate"]

BEST_KEYS = ("pesq", "stoi", "estoi", "si_sdr")
"""The validation scores ``run.best_key`` may keep the best checkpoint by."""


def best_metric(best_key: str, sample_rate: int) -> str:
    """The validation score a ``run.best_key`` names at ``sample_rate``: ``pesq`` is wide-band PESQ
    at 16 kHz and narrow-band PESQ at 8 kHz; the other keys name themselves.

    Example:
        >>> best_metric("pesq", 16000), best_metric("pesq", 8000), best_metric("estoi", 16000)
        ('pesq_wb', 'pesq_nb', 'estoi')
    """
    if best_key == "pesq":
        return "pesq_wb" if sample_rate == 16000 else "pesq_nb"
    return best_key


RUN_KEYS = frozenset(
    {
        "epochs",
        "batch_size",
        "num_workers",
        "device",
        "precision",
        "ckpt_interval_minutes",
        "ckpt_interval_steps",
        "best_key",
        "ema_decay",
        "nonfinite_patience",
        "metric_jobs",
        "limit_train_batches",
        "max_minutes",
        "max_steps",
        "limit_valid_items",
        "limit_test_items",
        "test",
        "export",
        "progress",
        "tune_malloc",
    }
)
"""The keys of the ``run`` group the recipe reads (a key appended with ``+`` is refused)."""

OPTIM_KEYS = frozenset({"lr", "weight_decay", "max_grad_norm", "plateau_factor", "plateau_patience", "min_lr"})
"""The keys of the ``optim`` group the recipe reads."""

MODELS = ("dereverb.models.DTCN", "dereverb.models.TCN")
_MODEL_INTEGERS = ("N", "L", "B", "H", "P", "X", "R", "offset_groups", "skip_channels")
_DATA_FOLDERS = ("root", "clean_root", "rir_root", "pack_dir")


def _window(sample_rate) -> int:
    """Encoder window for a sample rate: 2 ms (16 samples at 8 kHz, 32 at 16 kHz)."""
    if int(sample_rate) not in (8000, 16000):
        raise ConfigError(f"sample_rate: {sample_rate} is not supported (8000 or 16000)")
    return int(sample_rate) // 500


if not OmegaConf.has_resolver("dereverb.window"):
    OmegaConf.register_new_resolver("dereverb.window", _window)


def _check(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {value!r} is not valid ({expected})")


def _check_known_keys(group: str, keys, known) -> None:
    """Refuse a key of ``group`` that the recipe does not read (a typo appended with ``+``)."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]}: unknown key (the recipe does not read it; {group} takes {', '.join(sorted(known))})"
        )


def config_keys(cls) -> set[str]:
    """The keyword arguments a model or loss class takes: the config keys its group may set.

    Example:
        >>> from dereverb.losses import SISDRPlusSTOI
        >>> sorted(config_keys(SISDRPlusSTOI))
        ['extended', 'sample_rate', 'stoi_weight']
    """
    return {
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _is_count(value, least: int = 1) -> bool:
    """An integer (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def validate(cfg: DictConfig) -> None:
    """Check the values a typo or a bad override can break, before anything runs.

    Raises:
        ConfigError: one line naming the key, its value and what is expected.
        dereverb.errors.DataError: a bad data setting, naming its key.
    """
    _check(cfg.sample_rate in (8000, 16000), "sample_rate", cfg.sample_rate, "8000 or 16000")
    _check_resolves(cfg)
    _check(isinstance(cfg.seed, int), "seed", cfg.seed, "an integer")
    source = cfg.get("init_from")
    ok = source is None or (isinstance(source, str) and source != "")
    _check(ok, "init_from", source, "null, a model name or a folder")
    _check_known_keys("run", cfg.run, RUN_KEYS)
    _check_known_keys("optim", cfg.optim, OPTIM_KEYS)
    _check_optim(cfg.optim)
    _check_run(cfg.run)
    _check_model(cfg.model)
    _check_imported(cfg)


def _check_resolves(cfg: DictConfig) -> None:
    """Every ``???`` is set and every interpolation resolves."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            key = missing[0]
            raise ConfigError(f"{key} is required: set {key}=<value> on the command line or in the config")
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that cannot be resolved
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError) else err
        raise ConfigError(str(cause).splitlines()[0]) from None


def _check_optim(o: DictConfig) -> None:
    _check(isinstance(o.lr, (int, float)) and o.lr > 0, "optim.lr", o.lr, "a positive number")
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, ">= 0")
    _check(o.max_grad_norm >= 0, "optim.max_grad_norm", o.max_grad_norm, ">= 0; 0 disables clipping")
    _check(0 < o.plateau_factor < 1, "optim.plateau_factor", o.plateau_factor, "between 0 and 1")
    _check(o.plateau_patience >= 0, "optim.plateau_patience", o.plateau_patience, ">= 0")


def _check_run(r: DictConfig) -> None:
    for key in ("epochs", "batch_size"):
        _check(isinstance(r[key], int) and r[key] >= 1, f"run.{key}", r[key], "a positive integer")
    _check(r.num_workers >= 0, "run.num_workers", r.num_workers, ">= 0")
    _check(r.precision in ("fp32", "fp16", "bf16"), "run.precision", r.precision, "fp32, fp16 or bf16")
    _check(r.best_key in BEST_KEYS, "run.best_key", r.best_key, "one of " + ", ".join(BEST_KEYS))
    _check(r.nonfinite_patience >= 0, "run.nonfinite_patience", r.nonfinite_patience, ">= 0")
    _check(
        not (r.ckpt_interval_minutes > 0 and r.ckpt_interval_steps > 0),
        "run.ckpt_interval_steps",
        r.ckpt_interval_steps,
        "0 when run.ckpt_interval_minutes is set (choose one)",
    )
    for key in ("test", "export", "progress", "tune_malloc"):
        _check(isinstance(r[key], bool), f"run.{key}", r[key], "true or false")
    for key in ("limit_train_batches", "limit_valid_items", "limit_test_items", "metric_jobs", "max_steps"):
        value = r.get(key)
        _check(value is None or _is_count(value), f"run.{key}", value, "null or an integer >= 1")
    decay = r.get("ema_decay")
    ok = decay is None or (isinstance(decay, float) and 0.0 < decay < 1.0)
    _check(ok, "run.ema_decay", decay, "null or a number between 0 and 1 (e.g. 0.999)")
    minutes = r.get("max_minutes")
    ok = minutes is None or (isinstance(minutes, (int, float)) and not isinstance(minutes, bool) and minutes > 0)
    _check(ok and (minutes is None or math.isfinite(minutes)), "run.max_minutes", minutes, "null or minutes > 0")
    device = str(r.device)
    _check(device in ("auto", "cpu") or device.split(":")[0] == "cuda", "run.device", device, "auto, cpu or cuda[:N]")


def _check_model(model: DictConfig) -> None:
    target = model.get("_target_", "")
    _check(target in MODELS, "model._target_", target, "a dereverb model")
    for key in _MODEL_INTEGERS:
        if key in model:
            least = 0 if key == "skip_channels" else 1
            _check(_is_count(model[key], least), f"model.{key}", model[key], f"an integer >= {least}")


def _check_imported(cfg: DictConfig) -> None:
    """The checks that need torch, the models, the losses or the data settings (imported here, not at start)."""
    import torch

    from dereverb.data import data_settings
    from dereverb.losses import LOSSES
    from dereverb.models import DTCN, TCN

    model_class = {"dereverb.models.DTCN": DTCN, "dereverb.models.TCN": TCN}[cfg.model._target_]
    _check_known_keys("model", cfg.model, {"_target_"} | config_keys(model_class))
    device = str(cfg.run.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device: {device!r} but no CUDA device is available here (use run.device=cpu)")
    _check(cfg.loss.name in LOSSES, "loss.name", cfg.loss.name, "one of " + ", ".join(LOSSES))
    _check_known_keys("loss", cfg.loss, {"name"} | config_keys(LOSSES[cfg.loss.name]) - {"sample_rate"})
    for key in (k for k in cfg.loss if str(k).endswith("_weight")):  # a term's weight: >= 0, finite
        value = cfg.loss[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf")
        _check(ok, f"loss.{key}", value, "a finite number >= 0")
    settings = data_settings(cfg.data, cfg.sample_rate)  # DataError naming the key
    for key in _DATA_FOLDERS:  # reported now, not after the imports
        if settings.get(key) is not None and not Path(settings[key]).is_dir():
            raise ConfigError(f"data.{key}={settings[key]}: no such folder")


def output_folder(cfg: DictConfig) -> Path:
    """``results/<name>/<seed>``, or the folder Hydra gave this job of a ``-m`` sweep."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.output_dir)
