"""The training recipe: ``main(cfg)`` prepares the data, builds everything once, trains, tests, exports.

``python train.py conf/dtcn.yaml [overrides]`` (the root ``train.py``) composes the config with
Hydra and calls :func:`main`; tests call :func:`main` directly with a composed config.

One training at a time uses a run folder: :class:`RunLock` (an advisory lock on ``<folder>/.lock``)
refuses a second one before it writes or deletes anything there.
"""

from __future__ import annotations

import errno
import fcntl
import inspect
import json
import logging
import math
import os
import platform
import random
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from dereverb import __version__
from dereverb.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import torch

# torch, SpeechBrain and the data modules are imported where they are used: a bad config or a Hydra
# error on the command line is reported in about a second, not after seconds of imports

__all__ = [
    "ConfigError",
    "Experiment",
    "RunLock",
    "TrainingError",
    "build",
    "init_from",
    "main",
    "output_folder",
    "validate",
]

logger = logging.getLogger(__name__)

BEST_KEYS = ("pesq", "stoi", "estoi", "si_sdr")

# the keys of the run and optim groups that the recipe reads (a key appended with ``+`` is refused)
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
OPTIM_KEYS = frozenset({"lr", "weight_decay", "max_grad_norm", "plateau_factor", "plateau_patience", "min_lr"})

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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


def _arguments(cls) -> set[str]:
    """The keyword arguments a model or loss class takes (its config keys)."""
    return {
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def validate(cfg: DictConfig) -> None:
    """Check the values a typo or a bad override can break, before anything runs.

    Raises:
        ConfigError: one line naming the key, its value and what is expected.
    """
    _check(cfg.sample_rate in (8000, 16000), "sample_rate", cfg.sample_rate, "8000 or 16000")
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            key = missing[0]
            raise ConfigError(f"{key} is required: set {key}=<value> on the command line or in the config")
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that cannot be resolved
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError) else err
        raise ConfigError(str(cause).splitlines()[0]) from None
    _check(isinstance(cfg.seed, int), "seed", cfg.seed, "an integer")
    source = cfg.get("init_from")
    ok = source is None or (isinstance(source, str) and source != "")
    _check(ok, "init_from", source, "null, a model name or a folder")
    o, r = cfg.optim, cfg.run
    _check_known_keys("run", r, RUN_KEYS)
    _check_known_keys("optim", o, OPTIM_KEYS)
    _check(isinstance(o.lr, (int, float)) and o.lr > 0, "optim.lr", o.lr, "a positive number")
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, ">= 0")
    _check(o.max_grad_norm >= 0, "optim.max_grad_norm", o.max_grad_norm, ">= 0; 0 disables clipping")
    _check(0 < o.plateau_factor < 1, "optim.plateau_factor", o.plateau_factor, "between 0 and 1")
    _check(o.plateau_patience >= 0, "optim.plateau_patience", o.plateau_patience, ">= 0")
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
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
        _check(ok, f"run.{key}", value, "null or an integer >= 1")
    minutes = r.get("max_minutes")
    ok = minutes is None or (isinstance(minutes, (int, float)) and not isinstance(minutes, bool) and minutes > 0)
    _check(ok and (minutes is None or math.isfinite(minutes)), "run.max_minutes", minutes, "null or minutes > 0")
    device = str(r.device)
    _check(device in ("auto", "cpu") or device.split(":")[0] == "cuda", "run.device", device, "auto, cpu or cuda[:N]")
    target = cfg.model.get("_target_", "")
    _check(target in ("dereverb.models.DTCN", "dereverb.models.TCN"), "model._target_", target, "a dereverb model")
    for key in ("N", "L", "B", "H", "P", "X", "R", "offset_groups", "skip_channels"):
        if key in cfg.model:
            value, least = cfg.model[key], 0 if key == "skip_channels" else 1
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
            _check(ok, f"model.{key}", value, f"an integer >= {least}")
    import torch

    from dereverb.data import data_settings
    from dereverb.losses import LOSSES
    from dereverb.models import DTCN, TCN

    _check_known_keys(
        "model",
        cfg.model,
        {"_target_"} | _arguments({"dereverb.models.DTCN": DTCN, "dereverb.models.TCN": TCN}[target]),
    )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device: {device!r} but no CUDA device is available here (use run.device=cpu)")
    _check(cfg.loss.name in LOSSES, "loss.name", cfg.loss.name, "one of " + ", ".join(LOSSES))
    _check_known_keys("loss", cfg.loss, {"name"} | _arguments(LOSSES[cfg.loss.name]))
    settings = data_settings(cfg.data, cfg.sample_rate)  # DataError naming the key
    for key in ("root", "clean_root", "rir_root", "pack_dir"):  # reported now, not after the imports
        if settings.get(key) is not None and not Path(settings[key]).is_dir():
            raise ConfigError(f"data.{key}={settings[key]}: no such folder")


def output_folder(cfg: DictConfig) -> Path:
    """``results/<name>/<seed>``, or the folder Hydra gave this job of a ``-m`` sweep."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.output_dir)


def _build_model(cfg: DictConfig) -> torch.nn.Module:
    from hydra.utils import instantiate

    try:
        return instantiate(cfg.model)
    except Exception as err:  # the model's own checks name the argument
        cause = err.__cause__ or err
        raise ConfigError(f"model: {str(cause).splitlines()[0]}") from None


def init_from(model: torch.nn.Module, name_or_folder: str, sample_rate: int) -> None:
    """Load the weights of a shipped model or model folder into ``model`` (a warm start).

    The folder's class, constructor arguments and sample rate must equal the config's; the
    architecture is checked before any weight is read.

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
    if ours != theirs:
        keys = sorted(k for k in set(config) | set(saved["config"]) if config.get(k) != saved["config"].get(k))
        diff = [f"{k}: {saved['config'].get(k)!r} there, {config.get(k)!r} here" for k in keys]
        if ours[0] != theirs[0]:
            diff.insert(0, f"class: {theirs[0]} there, {ours[0]} here")
        if ours[2] != theirs[2]:
            diff.append(f"sample_rate: {theirs[2]} there, {ours[2]} here")
        raise ConfigError(f"init_from={name_or_folder}: {folder} holds another model ({'; '.join(diff)})")
    try:
        model.load_state_dict(from_pretrained(folder).state_dict())
    except ModelFolderError as err:
        raise ConfigError(f"init_from={name_or_folder}: {err}") from None
    logger.info("weights initialised from %s", folder)


class RunLock:
    """An advisory lock (``fcntl.flock``) on a run folder's ``.lock`` file: one training per folder.

    The lock file holds the process id, host and start time of the training that holds it, so that a
    refused training can name it. The kernel releases the lock when its process ends, however it
    ends, so a lock file left by a killed training does not block: the next training takes it over.
    The file itself stays (removing it would let two trainings lock two different files).

    Args:
        folder: the run folder; created if missing.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     lock = RunLock(Path(tmp) / "run")
        ...     lock.acquire()
        ...     lock.release()
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse at once.

        Raises:
            TrainingError: another process holds it; one line naming that process.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise TrainingError(
                f"{self.folder} is in use by another training ({holder}); wait for it or choose another name or seed"
            ) from None
        except OSError as err:  # a file system without locks: train, as before locks existed
            os.close(fd)
            logger.warning("%s cannot be locked (%s): make sure no other training uses this folder", self.path, err)
            return
        except BaseException:
            os.close(fd)
            raise
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        """The lock holder as written in the file (the holder may be writing it: a short wait)."""
        for _ in range(20):
            try:
                info = json.loads(os.pread(fd, 4096, 0).decode())
                return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                time.sleep(0.05)
        return "its process id is not recorded yet"

    def release(self) -> None:
        """Release the lock (also released by the kernel when the process ends)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _check_resume_compatible(out: Path, model: torch.nn.Module, sample_rate: int, record_it: bool = True) -> None:
    """Refuse to resume a run folder that holds another model configuration.

    With ``record_it``, a folder without a record gets one (call it so only while holding the folder's lock).
    """
    record = out / "model_config.json"
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
    if not record_it:
        return
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, record)


def _environment() -> dict:
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


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _subset(dataset, n: int | None):
    return dataset if n is None or n >= len(dataset) else dataset.filtered_sorted(select_n=n)


@dataclass
class Experiment:
    """Everything :func:`main` builds once before training (see :func:`build`)."""

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


def build(cfg: DictConfig) -> Experiment:
    """Validate the config, prepare the data and build the model, Brain and checkpointer, once each.

    Used by :func:`main` and by ``scripts/bench_recipe.py`` (which times the recipe's own training
    steps against the bare model's).

    The main process holds the run folder's :class:`RunLock` from before its first write until
    :meth:`Experiment.close` (or the end of the process).

    Raises:
        ConfigError, DataError: as :func:`main`, before anything is written.
        TrainingError: another training holds the run folder.
    """
    validate(cfg)
    if cfg.run.tune_malloc:
        from dereverb.allocator import tune_glibc_malloc

        tune_glibc_malloc()
    import torch

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg)  # the model's own checks, before SpeechBrain's imports and the data preparation
    if cfg.get("init_from"):  # a resumed run's checkpoint replaces these weights when it is recovered
        init_from(model, str(cfg.init_from), cfg.sample_rate)

    from speechbrain.utils.distributed import ddp_init_group, if_main_process, run_on_main

    from dereverb.data import prepare

    r = cfg.run
    out = output_folder(cfg)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if r.device == "auto" else str(r.device)
    distributed = os.environ.get("RANK") is not None and os.environ.get("LOCAL_RANK") is not None
    if distributed and device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    run_opts = {
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
    ddp_init_group(run_opts)
    # before the output folder is written, so that missing or bad data leaves nothing behind
    run_on_main(prepare, kwargs={"data_cfg": cfg.data, "sample_rate": cfg.sample_rate, "progress": r.progress})
    lock = log_handler = None
    if if_main_process():  # other DDP processes share the folder of the main one, which holds the lock
        _check_resume_compatible(out, model, cfg.sample_rate, record_it=False)  # refused: nothing written
        lock = RunLock(out)
        lock.acquire()
    try:
        if lock is not None:
            _check_resume_compatible(out, model, cfg.sample_rate)
            log_handler = _log_to_file(out / "train.log")
            _write(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            _write(out / "environment.json", json.dumps(_environment(), indent=2) + "\n")
        return _build_locked(cfg, model, out, run_opts, lock, log_handler)
    except BaseException:
        _release(lock, log_handler)
        raise


def _build_locked(cfg, model, out: Path, run_opts: dict, lock, log_handler) -> Experiment:
    """The objects of :func:`build` made once the run folder is locked (the data, the Brain, the checkpointer)."""
    import speechbrain as sb
    import torch
    from speechbrain.nnet.schedulers import ReduceLROnPlateau
    from speechbrain.utils.train_logger import FileTrainLogger

    from dereverb.brain import AtomicCheckpointer, DereverbBrain
    from dereverb.data import build_datasets
    from dereverb.losses import LOSSES

    r = cfg.run
    datasets = build_datasets(cfg.data, cfg.sample_rate, progress=r.progress)
    loss_kwargs = {k: v for k, v in cfg.loss.items() if k != "name"}
    epoch_counter = sb.utils.epoch_loop.EpochCounter(r.epochs)
    lr_scheduler = ReduceLROnPlateau(
        lr_min=cfg.optim.min_lr, factor=cfg.optim.plateau_factor, patience=cfg.optim.plateau_patience
    )
    checkpointer = AtomicCheckpointer(
        out / "save", recoverables={"model": model, "counter": epoch_counter, "lr_scheduler": lr_scheduler}
    )
    hparams = {
        "loss": LOSSES[cfg.loss.name](**loss_kwargs),
        "sample_rate": cfg.sample_rate,
        "best_key": r.best_key,
        "lr_scheduler": lr_scheduler,
        "epoch_counter": epoch_counter,
        "train_logger": FileTrainLogger(out / "train_log.txt"),
        "metric_jobs": r.metric_jobs,
        "output_dir": str(out),
        "max_minutes": r.get("max_minutes"),
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


def _write_error(err: OSError, out: Path) -> TrainingError | None:
    """A failed write of the run (a full disk) as one line, or None for another ``OSError``."""
    if err.errno not in _DISK_FULL:
        return None
    return TrainingError(
        f"{err.filename or out}: the write failed: the disk is full or a file size limit was reached "
        f"({err.strerror}); the earlier checkpoints are intact: free some space and run the same command to resume"
    )


def main(cfg: DictConfig) -> Path:
    """Run the recipe described by a composed config (see ``conf/dtcn.yaml``).

    Returns:
        The output folder ``results/<name>/<seed>``.

    Raises:
        ConfigError: a bad configuration value, before any work starts.
        dereverb.errors.DataError: bad data settings (before anything is written) or bad data.
        TrainingError: another training holds the output folder (see :class:`RunLock`); the loss
            stayed non-finite (see ``run.nonfinite_patience``); a checkpoint of the folder is not a
            plain weights file; a write failed (a full disk). The earlier checkpoints stay intact.
    """
    try:
        exp = build(cfg)
    except OSError as err:
        raise (_write_error(err, output_folder(cfg)) or err) from None
    from speechbrain.utils.distributed import if_main_process

    from dereverb.brain import CheckpointError, load_weights
    from dereverb.pretrained import save_pretrained

    r, brain, out = cfg.run, exp.brain, exp.output_dir
    try:
        try:
            brain.fit(
                exp.epoch_counter,
                exp.train_set,
                exp.valid_set,
                train_loader_kwargs=exp.train_loader,
                valid_loader_kwargs={"batch_size": 1},
            )
            if r.test:
                brain.evaluate(exp.test_set, max_key="best_key", test_loader_kwargs={"batch_size": 1})
        finally:
            brain._close_scorer()
        if r.export and if_main_process():
            best = exp.checkpointer.find_checkpoint(max_key="best_key")
            if best is not None:
                exp.model.load_state_dict(load_weights(best.paramfiles["model"]))
                try:
                    save_pretrained(exp.model.cpu(), out / "model", cfg.sample_rate, overwrite=True)
                except (ValueError, FileExistsError) as err:  # non-finite weights, or a foreign folder there
                    raise TrainingError(f"export to {out / 'model'} refused: {err}") from None
                logger.info("best model (%s = %.3f) exported to %s", r.best_key, best.meta["best_key"], out / "model")
    except ValueError as err:
        if "Loss is not finite and patience is exhausted" in str(err):
            raise TrainingError(
                f"training stopped: the loss was not finite in more than run.nonfinite_patience="
                f"{r.nonfinite_patience} batches of an epoch (those updates were skipped; the weights are finite). "
                "Lower optim.lr or check the data"
            ) from None
        raise
    except CheckpointError as err:
        raise TrainingError(str(err)) from None
    except OSError as err:
        raise (_write_error(err, out) or err) from None
    finally:
        exp.close()
    return out
