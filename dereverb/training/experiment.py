"""Everything a training builds once before it trains: :func:`build` returns an :class:`Experiment`.

The order matters for what a refused run leaves behind: the config is checked and the model
built (its own checks) before SpeechBrain's imports; the data is prepared before the run folder
is written; the folder is locked (:class:`~dereverb.training.lock.RunLock`) and checked against
the model it holds before its records are written; only then are the datasets, the Brain and the
checkpointer made.
"""

from __future__ import annotations

import copy
import logging
import os
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from dereverb.errors import ConfigError
from dereverb.training.config import config_keys, output_folder, validate
from dereverb.training.lock import RunLock
from dereverb.training.records import check_resume_compatible, write_run_records

if TYPE_CHECKING:
    import torch

# torch, SpeechBrain and the data modules are imported where they are used: a bad config or a Hydra
# error on the command line is reported in about a second, not after seconds of imports

__all__ = ["Experiment", "build", "build_model", "init_from"]

logger = logging.getLogger(__name__)


@dataclass
class Experiment:
    """Everything :func:`~dereverb.training.run.main` builds once before training (see :func:`build`)."""

    brain: object  # DereverbBrain
    model: torch.nn.Module
    checkpointer: object  # AtomicCheckpointer
    epoch_counter: object
    train_set: object
    valid_set: object
    test_set: object
    train_loader: dict
    output_dir: Path
    lock: RunLock | None = None  # held by the main process until close()
    log_handler: logging.Handler | None = field(default=None, repr=False)

    def close(self) -> None:
        """Release the run folder: stop logging into its ``train.log`` and release its lock."""
        _release(self.lock, self.log_handler)
        self.lock = self.log_handler = None


def _release(lock: RunLock | None, log_handler: logging.Handler | None) -> None:
    if log_handler is not None:
        logging.getLogger().removeHandler(log_handler)
        log_handler.close()
    if lock is not None:
        lock.release()


def _log_to_file(path: Path) -> logging.Handler:
    """Append the run's log (every logger, INFO and up) to ``path``, as Hydra's job log did."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The model of ``cfg.model``, instantiated; its own checks become one line.

    Raises:
        ConfigError: ``model: <the model's message>``.
    """
    from hydra.utils import instantiate

    try:
        return instantiate(cfg.model)
    except Exception as err:  # the model's own checks name the argument
        cause = err.__cause__ or err
        raise ConfigError(f"model: {str(cause).splitlines()[0]}") from None


def init_from(model: torch.nn.Module, name_or_folder: str, sample_rate: int) -> None:
    """Load the weights of a shipped model or model folder into ``model`` (a warm start).

    The folder's class, constructor arguments and sample rate must equal the config's, except that
    the config may have more repeats ``R`` (a deeper model grown from a shallower one: the extra
    repeats start as identity blocks, :meth:`~dereverb.models.tasnet.TasNet.load_shallower`), or
    another sample rate with an encoder window ``L`` of the same duration (e.g. a 16 kHz model with
    ``L=64`` starts an 8 kHz one with ``L=32``: its encoder and decoder are resampled,
    :meth:`~dereverb.models.tasnet.TasNet.load_resampled`). The architecture is checked before any
    weight is read.

    Raises:
        ConfigError: one line naming ``init_from`` and what differs.
    """
    from dereverb.pretrained import ModelFolderError, from_pretrained, read_config

    try:
        folder, saved = read_config(name_or_folder)
    except ModelFolderError as err:
        raise ConfigError(f"init_from={name_or_folder}: {err}") from None
    config = model.get_config()
    ours = (type(model).__name__, config, int(sample_rate))
    theirs = (saved["class"], saved["config"], saved["sample_rate"])
    deeper = _deeper(config, saved["config"]) and ours[0] == theirs[0] and ours[2] == theirs[2]
    resampled = ours[0] == theirs[0] and _resampled(config, int(sample_rate), saved["config"], saved["sample_rate"])
    if ours != theirs and not deeper and not resampled:
        keys = sorted(k for k in set(config) | set(saved["config"]) if config.get(k) != saved["config"].get(k))
        diff = [f"{k}: {saved['config'].get(k)!r} there, {config.get(k)!r} here" for k in keys]
        if ours[0] != theirs[0]:
            diff.insert(0, f"class: {theirs[0]} there, {ours[0]} here")
        if ours[2] != theirs[2]:
            diff.append(f"sample_rate: {theirs[2]} there, {ours[2]} here")
            window = saved["config"].get("L", 0) * ours[2] / theirs[2]
            if window == int(window) and ours[0] == theirs[0] and set(keys) <= {"L"}:
                same = f"only model.L={int(window)}, a window of the same duration, starts from it at {ours[2]} Hz"
                diff.append(same)
        raise ConfigError(f"init_from={name_or_folder}: {folder} holds another model ({'; '.join(diff)})")
    try:
        weights = from_pretrained(folder).state_dict()
    except ModelFolderError as err:
        raise ConfigError(f"init_from={name_or_folder}: {err}") from None
    if resampled:
        model.load_resampled(weights, saved["config"]["L"])
        logger.info(
            "weights initialised from %s (%d Hz, L=%d); encoder and decoder resampled to %d Hz (L=%d)",
            folder,
            saved["sample_rate"],
            saved["config"]["L"],
            sample_rate,
            config["L"],
        )
    elif deeper:
        model.load_shallower(weights, saved["config"]["R"])
        first, last = saved["config"]["R"] + 1, config["R"]
        added = (
            f"repeat {last} added as an identity block"
            if first == last
            else f"repeats {first}-{last} added as identity blocks"
        )
        logger.info("weights initialised from %s (R=%d); %s", folder, saved["config"]["R"], added)
    else:
        model.load_state_dict(weights)
        logger.info("weights initialised from %s", folder)


def _resampled(config: dict, rate: int, saved: dict, saved_rate: int) -> bool:
    """Whether ``config`` at ``rate`` is ``saved`` at another rate with a window of the same duration."""
    others = lambda c: {k: v for k, v in c.items() if k != "L"}  # noqa: E731
    L, saved_L = int(config.get("L", 0)), int(saved.get("L", 0))
    return rate != saved_rate and others(config) == others(saved) and L * saved_rate == saved_L * rate


def _deeper(config: dict, saved: dict) -> bool:
    """Whether ``config`` is ``saved`` with more repeats ``R`` and nothing else changed."""
    others = lambda c: {k: v for k, v in c.items() if k != "R"}  # noqa: E731
    return others(config) == others(saved) and int(config.get("R", 0)) > int(saved.get("R", 0))


def _run_options(cfg: DictConfig) -> dict:
    """SpeechBrain's ``run_opts`` of the config: the device (this process's GPU under DDP), precision, limits."""
    import torch

    r = cfg.run
    device = ("cuda" if torch.cuda.is_available() else "cpu") if r.device == "auto" else str(r.device)
    distributed = os.environ.get("RANK") is not None and os.environ.get("LOCAL_RANK") is not None
    if distributed and device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return {
        "device": device,
        "precision": r.precision,
        "max_grad_norm": float(cfg.optim.max_grad_norm) or 1e30,
        "skip_nonfinite_grads": True,
        "nonfinite_patience": r.nonfinite_patience,
        "ckpt_interval_minutes": r.ckpt_interval_minutes,
        "ckpt_interval_steps": r.ckpt_interval_steps,
        "noprogressbar": not r.progress,
        "optimizer_step_limit": r.get("max_steps"),
        "distributed_backend": "nccl" if device.startswith("cuda") else "gloo",
    }


def build(cfg: DictConfig) -> Experiment:
    """Validate the config, prepare the data and build the model, Brain and checkpointer, once each.

    Used by :func:`~dereverb.training.run.main` and by ``scripts/bench_recipe.py`` (which times the
    recipe's own training steps against the bare model's).

    The main process holds the run folder's :class:`RunLock` from before its first write until
    :meth:`Experiment.close` (or the end of the process).

    Raises:
        ConfigError, DataError: as :func:`~dereverb.training.run.main`, before anything is written.
        TrainingError: another training holds the run folder.
    """
    validate(cfg)
    if cfg.run.tune_malloc:
        from dereverb.allocator import tune_glibc_malloc

        tune_glibc_malloc()
    import torch

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)  # the model's own checks, before SpeechBrain's imports and the data preparation
    if cfg.get("init_from"):  # a resumed run's checkpoint replaces these weights when it is recovered
        init_from(model, str(cfg.init_from), cfg.sample_rate)

    from speechbrain.utils.distributed import ddp_init_group, if_main_process, run_on_main

    from dereverb.data import prepare

    out = output_folder(cfg)
    run_opts = _run_options(cfg)
    ddp_init_group(run_opts)
    # before the output folder is written, so that missing or bad data leaves nothing behind
    run_on_main(prepare, kwargs={"data_cfg": cfg.data, "sample_rate": cfg.sample_rate, "progress": cfg.run.progress})
    lock = log_handler = None
    if if_main_process():  # other DDP processes share the folder of the main one, which holds the lock
        check_resume_compatible(out, model, cfg.sample_rate, record_it=False)  # refused: nothing written
        lock = RunLock(out)
        lock.acquire()
    try:
        if lock is not None:
            check_resume_compatible(out, model, cfg.sample_rate)
            log_handler = _log_to_file(out / "train.log")
            write_run_records(out, cfg)
        return _build_locked(cfg, model, out, run_opts, lock, log_handler)
    except BaseException:
        _release(lock, log_handler)
        raise


def build_loss(cfg: DictConfig) -> torch.nn.Module:
    """The ``loss`` group's loss; one that takes a ``sample_rate`` gets the recipe's (not a loss key)."""
    from dereverb.losses import LOSSES

    cls = LOSSES[cfg.loss.name]
    kwargs = {k: v for k, v in cfg.loss.items() if k != "name"}
    if "sample_rate" in config_keys(cls):
        kwargs["sample_rate"] = cfg.sample_rate
    return cls(**kwargs)


def _subset(dataset, n: int | None):
    return dataset if n is None or n >= len(dataset) else dataset.filtered_sorted(select_n=n)


def _build_locked(cfg, model, out: Path, run_opts: dict, lock, log_handler) -> Experiment:
    """The objects of :func:`build` made once the run folder is locked (the data, the Brain, the checkpointer)."""
    import speechbrain as sb
    import torch
    from speechbrain.nnet.schedulers import ReduceLROnPlateau
    from speechbrain.utils.train_logger import FileTrainLogger

    from dereverb.data import build_datasets
    from dereverb.training.brain import TRAIN_MODEL, AtomicCheckpointer, DereverbBrain

    r = cfg.run
    datasets = build_datasets(cfg.data, cfg.sample_rate, progress=r.progress)
    epoch_counter = sb.utils.epoch_loop.EpochCounter(r.epochs)
    lr_scheduler = ReduceLROnPlateau(
        lr_min=cfg.optim.min_lr, factor=cfg.optim.plateau_factor, patience=cfg.optim.plateau_patience
    )
    # with a moving average, "model" is the average (what is validated, tested and exported) and
    # "train_model" the weights the optimizer trains
    averaged = None if r.get("ema_decay") is None else copy.deepcopy(model).requires_grad_(False)
    models = {"model": model} if averaged is None else {"model": averaged, TRAIN_MODEL: model}
    checkpointer = AtomicCheckpointer(
        out / "save", recoverables={**models, "counter": epoch_counter, "lr_scheduler": lr_scheduler}
    )
    hparams = {
        "loss": build_loss(cfg),
        "sample_rate": cfg.sample_rate,
        "best_key": r.best_key,
        "lr_scheduler": lr_scheduler,
        "epoch_counter": epoch_counter,
        "train_logger": FileTrainLogger(out / "train_log.txt", precision=4),
        "metric_jobs": r.metric_jobs,
        "output_dir": str(out),
        "max_minutes": r.get("max_minutes"),
        "averaged_model": averaged,
        "ema_decay": r.get("ema_decay"),
    }
    brain = DereverbBrain(
        modules={"model": model},
        opt_class=partial(torch.optim.Adam, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay),
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=checkpointer,
    )
    return Experiment(
        brain=brain,
        model=model,
        checkpointer=checkpointer,
        epoch_counter=epoch_counter,
        train_set=_subset(datasets["train"], r.limit_train_batches and r.limit_train_batches * r.batch_size),
        valid_set=_subset(datasets["valid"], r.limit_valid_items),
        test_set=_subset(datasets["test"], r.limit_test_items),
        train_loader={"batch_size": r.batch_size, "num_workers": r.num_workers, "shuffle": True},
        output_dir=out,
        lock=lock,
        log_handler=log_handler,
    )
