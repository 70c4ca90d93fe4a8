"""``DereverbBrain``: the SpeechBrain ``Brain`` of the training recipe, and its atomic checkpointer.

The Brain overrides only what SpeechBrain does not already do: the forward pass, the loss, and
what happens at the start and end of each stage (metrics beside the unprocessed input, the
learning-rate schedule, checkpoints kept by the best validation score, test results). Mixed
precision, gradient clipping, skipping non-finite updates, progress bars, intra-epoch
checkpoints, resuming and DDP are SpeechBrain's own.

The checkpointer reads every parameter file with ``torch.load(..., weights_only=True)`` (see
:func:`~dereverb.weights.load_weights`): a checkpoint folder is data, never code, whatever the
environment says.

At the start of each call of ``fit`` the main process logs what the run will cost on this machine,
measured on its first training steps (see :mod:`dereverb.training.cost`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataloader import LoopedLoader, SaveableDataLoader
from speechbrain.nnet.schedulers import ReduceLROnPlateau
from speechbrain.utils.checkpoints import Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process
from speechbrain.utils.epoch_loop import EpochCounter

from dereverb.atomic import atomic_file, write_text
from dereverb.errors import CheckpointError
from dereverb.metrics import Scorer, summarize
from dereverb.training.config import best_metric
from dereverb.training.cost import RunCost, StepClock
from dereverb.training.faults import RESUME_HINT, checkpoint_write_failure
from dereverb.weights import load_weights

__all__ = ["TRAIN_MODEL", "AtomicCheckpointer", "DereverbBrain", "update_average"]

TRAIN_MODEL = "train_model"
"""The checkpoint name of the trained weights when ``model`` holds their moving average (``run.ema_decay``)."""

logger = logging.getLogger(__name__)

_TMP_PREFIX = "tmp-"


def _load_state_dict(obj, path, end_of_epoch):
    """Load hook of modules, optimizers, torch schedulers and gradient scalers (their ``load_state_dict``)."""
    del end_of_epoch
    state = load_weights(path)
    try:
        obj.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"{path}: does not fit this run's {type(obj).__name__} ({reason}); delete that checkpoint folder "
            "or choose another run folder"
        ) from None


def _load_plateau(obj, path, end_of_epoch):
    """Load hook of SpeechBrain's ``ReduceLROnPlateau`` (the three values its ``save`` writes)."""
    del end_of_epoch
    data = load_weights(path)
    if not isinstance(data, dict) or not {"losses", "anchor", "patience_counter"} <= set(data):
        raise CheckpointError(f"{path}: not a learning-rate schedule state; delete that checkpoint folder")
    obj.losses, obj.anchor, obj.patience_counter = data["losses"], data["anchor"], data["patience_counter"]


_STATE_DICT_TYPES = (
    torch.nn.Module,
    torch.optim.Optimizer,
    torch.optim.lr_scheduler.LRScheduler,
    torch.optim.lr_scheduler.ReduceLROnPlateau,
    torch.amp.GradScaler,
)
# SpeechBrain's own loaders of these read plain text or YAML with yaml.safe_load
_TEXT_STATE_TYPES = (EpochCounter, sb.Brain, SaveableDataLoader, LoopedLoader)


def _weights_only_hook(name: str, obj):
    """The load hook of a recoverable that reads no pickle beyond weights (None: SpeechBrain's is safe)."""
    if isinstance(obj, ReduceLROnPlateau):
        return _load_plateau
    if isinstance(obj, _STATE_DICT_TYPES):
        return _load_state_dict
    if isinstance(obj, _TEXT_STATE_TYPES):
        return None
    raise TypeError(f"checkpoint recoverable {name!r}: no weights-only loader for {type(obj).__name__}")


@torch.no_grad()
def update_average(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """One step of an exponential moving average of ``model``'s weights: ``a <- decay * a + (1 - decay) * w``.

    Buffers (none in the TasNets) are copied.

    Example:
        >>> a, m = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
        >>> _ = a.weight.data.fill_(0.0), m.weight.data.fill_(1.0)
        >>> update_average(a, m, 0.9); round(a.weight.item(), 6)
        0.1
    """
    for avg, w in zip(averaged.parameters(), model.parameters(), strict=True):
        avg.lerp_(w.detach(), 1.0 - decay)
    for avg, b in zip(averaged.buffers(), model.buffers(), strict=True):
        avg.copy_(b)


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` whose checkpoints appear whole or not at all.

    SpeechBrain writes ``CKPT.yaml`` first and the parameter files after it, so a process killed
    during a save leaves a folder that looks like a checkpoint but cannot be loaded. Here each
    checkpoint is written into a temporary folder (a name SpeechBrain does not list) and renamed
    to its final ``CKPT+...`` name once every file is on disk. Temporary folders left by a killed
    save are removed, with a warning, the next time the checkpointer starts; a save that fails
    (a full disk) removes its own and raises :class:`CheckpointError`, the earlier checkpoints intact.

    Every parameter file is read with :func:`load_weights` (``weights_only=True``), through load
    hooks that replace SpeechBrain's ``torch.load`` calls; objects whose SpeechBrain loader reads
    plain text or YAML (epoch counter, Brain, data loaders) keep it, and any other kind of
    recoverable is refused when a checkpoint is loaded.
    """

    def __init__(self, checkpoints_dir, *args, **kwargs):
        super().__init__(checkpoints_dir, *args, **kwargs)
        if if_main_process():
            for stale in Path(self.checkpoints_dir).glob(_TMP_PREFIX + "*"):
                logger.warning("removing %s: an incomplete checkpoint left by an interrupted save", stale)
                shutil.rmtree(stale, ignore_errors=True)

    def _new_checkpoint_dirpath(self):
        final = super()._new_checkpoint_dirpath()
        self._saving = final.with_name(_TMP_PREFIX + final.name)
        return self._saving

    def _custom_checkpoint_dirpath(self, name):
        final = super()._custom_checkpoint_dirpath(name)
        self._saving = final.with_name(_TMP_PREFIX + final.name)
        return self._saving

    def _call_load_hooks(self, checkpoint):
        averaged_there, averaged_here = TRAIN_MODEL in checkpoint.paramfiles, TRAIN_MODEL in self.recoverables
        if averaged_there != averaged_here:  # its model.ckpt holds the other kind of weights
            there = "with" if averaged_there else "without"
            raise CheckpointError(
                f"{checkpoint.path}: trained {there} a moving average of the weights (run.ema_decay); resume it "
                f"{there} one, or start a new run from its model (init_from=)"
            )
        for name, obj in self.recoverables.items():
            if name not in self.custom_load_hooks:
                hook = _weights_only_hook(name, obj)
                if hook is not None:
                    self.custom_load_hooks[name] = hook
        super()._call_load_hooks(checkpoint)

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006 (SB's signature)
        self._saving = None
        try:
            # SpeechBrain would log the temporary folder's name; the final one is logged below
            ckpt = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=logging.DEBUG)
        except (OSError, RuntimeError) as err:  # e.g. a full disk: torch.save raises RuntimeError or OSError
            if self._saving is not None:
                shutil.rmtree(self._saving, ignore_errors=True)
            raise CheckpointError(
                f"{self.checkpoints_dir}: could not write a checkpoint: {checkpoint_write_failure(err)}; {RESUME_HINT}"
            ) from None
        if ckpt is not None:  # main process: every file is written, publish the folder
            final = ckpt.path.with_name(ckpt.path.name[len(_TMP_PREFIX) :])
            if final.exists():  # a custom name saved twice: replace the old one
                shutil.rmtree(final)
            os.replace(ckpt.path, final)
            ckpt = Checkpoint(final, ckpt.meta, {k: final / Path(p).name for k, p in ckpt.paramfiles.items()})
            kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
            logger.log(verbosity, "saved an %s checkpoint in %s", kind, final)
        ddp_barrier()
        return ckpt


def _trim(batch_tensor: tuple[torch.Tensor, torch.Tensor], i: int) -> np.ndarray:
    """Utterance ``i`` of a SpeechBrain ``PaddedData`` without its padding, as float64 numpy."""
    data, lengths = batch_tensor
    n = round(float(lengths[i]) * data.shape[-1])
    return data[i, :n].detach().to("cpu", torch.float64).numpy()


@sb.utils.checkpoints.register_checkpoint_hooks  # the overridden _save/_recover below
class DereverbBrain(sb.Brain):
    """Trains a TCN/DTCN (``self.modules.model``) to map ``batch.reverberant`` to ``batch.target``.

    Hyperparameters read from ``self.hparams``: ``loss`` (a module ``(est, target, lengths) ->
    Tensor[B]``), ``sample_rate``, ``best_key`` (``pesq``, ``stoi``, ``estoi`` or ``si_sdr``),
    ``lr_scheduler`` (SpeechBrain's ``ReduceLROnPlateau``), ``epoch_counter``, ``train_logger``,
    ``metric_jobs``, ``output_dir`` and, optionally, ``max_minutes``: a training-time budget for
    this call of ``fit`` (see :meth:`_optimizer_step_limit_exceeded`).

    The main process logs the run's cost estimate once per call of ``fit``, after its first steps
    (:class:`~dereverb.training.cost.RunCost`).
    """

    def on_fit_start(self):
        self._seconds_before = 0.0  # training wall time of earlier calls, restored from the checkpoint
        averaged = getattr(self.hparams, "averaged_model", None)
        if averaged is not None:  # not one of the modules (never trained): moved and set to eval here
            averaged.to(self.device).eval()
        super().on_fit_start()
        self._fit_started, self._time_up, self._cost = time.monotonic(), False, None

    def train_seconds(self) -> float:
        """Wall-clock seconds spent in ``fit`` (validation included), summed over every resumed call."""
        started = getattr(self, "_fit_started", None)
        return getattr(self, "_seconds_before", 0.0) + (time.monotonic() - started if started is not None else 0.0)

    @sb.utils.checkpoints.mark_as_saver
    def _save(self, path):
        super()._save(path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"train_seconds: {self.train_seconds():.3f}\n")

    @sb.utils.checkpoints.mark_as_loader
    def _recover(self, path, end_of_epoch):
        super()._recover(path, end_of_epoch)
        import yaml

        with open(path, encoding="utf-8") as f:
            self._seconds_before = float((yaml.safe_load(f) or {}).get("train_seconds", 0.0))

    @property
    def _optimizer_step_limit_exceeded(self):
        """SpeechBrain's step limit (``run.max_steps``), or the time budget (``run.max_minutes``).

        SpeechBrain asks before every training batch and after every epoch's validation: once the
        budget is spent, the epoch in progress stops before its next batch, is validated and
        checkpointed, and ``fit`` returns. Under DDP every process asks at the same points, and the
        processes agree (an all-reduce of the decision) so that all stop at the same batch.
        """
        if super()._optimizer_step_limit_exceeded:
            return True
        budget = getattr(self.hparams, "max_minutes", None)
        if budget is None or not hasattr(self, "_fit_started"):
            return False
        if not self._time_up:
            up = time.monotonic() - self._fit_started >= 60.0 * budget
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                flag = torch.tensor([float(up)], device=self.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                up = bool(flag.item())
            if up:
                self._time_up = True
                logger.info(
                    "run.max_minutes=%g reached after %d optimizer steps: this epoch stops here, is validated "
                    "and checkpointed",
                    budget,
                    self.optimizer_step,
                )
        return self._time_up

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        reverberant, _ = batch.reverberant
        averaged = getattr(self.hparams, "averaged_model", None)
        if averaged is not None and stage != sb.Stage.TRAIN:  # what is validated, tested and exported
            return averaged(reverberant)
        return self.modules.model(reverberant)

    def compute_objectives(self, predictions, batch, stage):
        target, lengths = batch.target
        loss = self.hparams.loss.to(predictions.device)(predictions, target, lengths)  # a loss may hold buffers
        if stage != sb.Stage.TRAIN and if_main_process():  # only the main process scores (see on_stage_end)
            for i, utt_id in enumerate(batch.id):
                est = (_trim((predictions, lengths), i), _trim(batch.target, i), _trim(batch.reverberant, i))
                self._outputs.append((utt_id, *est))
        return loss.mean()

    # stages

    def on_stage_start(self, stage, epoch=None):
        self._outputs = []
        if stage == sb.Stage.TRAIN:
            # self.step is the batch count restored from an intra-epoch checkpoint (0 on a fresh epoch)
            self._resumed_at, self._batches_run = self.step, 0
            if self.step:
                logger.info("epoch %d: resuming after batch %d (restored from the last checkpoint)", epoch, self.step)
            self._start_clock(epoch)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        self._batches_run += 1
        averaged = getattr(self.hparams, "averaged_model", None)
        if averaged is not None and should_step:
            model = self.modules.model
            update_average(averaged, getattr(model, "module", model), self.hparams.ema_decay)  # DDP: its module

    # the cost estimate

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:  # this process's batches per epoch (its shard under DDP)
            self._steps_per_epoch = len(loader) if hasattr(loader, "__len__") else None
        return loader

    def _start_clock(self, epoch) -> None:
        """Time the first steps of this call's first epoch, on the main process only."""
        self._clock = None
        steps = getattr(self, "_steps_per_epoch", None)
        if not steps or self.step >= steps or getattr(self, "_cost", None) is not None or not if_main_process():
            return  # measured already in this call, or no step to measure in this epoch
        epochs = self.hparams.epoch_counter.limit
        done = (epoch or 1) - 1 + self.step / steps  # epochs trained before this call
        self._clock = StepClock(steps - self.step)
        self._cost = RunCost(
            steps_per_epoch=steps,
            seconds_per_step=math.nan,
            epochs=epochs,
            measured=self._clock.measured,
            epochs_left=epochs - done if done else None,
            max_minutes=getattr(self.hparams, "max_minutes", None),
            max_steps=self.optimizer_step_limit,
            steps_done=self.optimizer_step,
        )

    def fit_batch(self, batch):
        loss = super().fit_batch(batch)  # its loss.cpu() waits for the device: the step is done
        seconds = self._clock.tick() if getattr(self, "_clock", None) is not None else None
        if seconds is not None:
            self._clock, self._cost.seconds_per_step = None, seconds
            logger.info("%s", self._cost.line())
        return loss

    def _scorer(self) -> Scorer:
        if getattr(self, "_metric_scorer", None) is None:
            self._metric_scorer = Scorer(self.hparams.sample_rate, jobs=self.hparams.metric_jobs)
        return self._metric_scorer

    def _score(self, stage) -> tuple[list[dict], dict]:
        """Score the collected outputs and, once per stage, the unprocessed inputs."""
        ids, estimates, targets, inputs = zip(*self._outputs, strict=True) if self._outputs else ((),) * 4
        scorer = self._scorer()
        out = scorer.score_many(estimates, targets)
        cache = self.__dict__.setdefault("_input_scores", {})
        if stage not in cache or len(cache[stage]) != len(ids):  # the input's scores never change
            cache[stage] = scorer.score_many(inputs, targets)
        rows = []
        for utt_id, s, s_in in zip(ids, out, cache[stage], strict=True):
            failures = "; ".join(f"{k}: {v}" for k, v in {**s.failures, **s_in.failures}.items())
            rows.append({"id": utt_id, **s.values, **s_in.row("input_"), "failures": failures})
        names = [n for r in rows[:1] for n in r if n not in ("id", "failures")]
        return rows, summarize(rows, names)

    def _best_name(self) -> str:
        return best_metric(self.hparams.best_key, self.hparams.sample_rate)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            if self._resumed_at:
                run, at = self._batches_run, self._resumed_at
                logger.info("epoch %d: %d batches trained after resuming at batch %d", epoch, run, at)
            return
        # Validation and test sets are not sharded across DDP processes: every process computes the
        # same loss (for the learning-rate schedule), and only the main process, which writes the
        # checkpoints and results, runs the metric workers.
        rows, summary = self._score(stage) if if_main_process() else ([], {})
        stats = {"loss": stage_loss}
        for name, s in summary.items():
            stats[name] = s["mean"]
            if s["missing"]:
                stats[f"{name}_missing"] = s["missing"]
        if stage == sb.Stage.VALID:
            old_lr, _ = self.hparams.lr_scheduler([self.optimizer], epoch, stage_loss)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr, "steps": self.optimizer_step},
                train_stats={"loss": self.train_loss} if hasattr(self, "train_loss") else None,
                valid_stats=stats,
            )
            best = self._best_name()
            meta = {k: (v if math.isfinite(v) else -math.inf) for k, v in stats.items() if isinstance(v, float)}
            meta["best_key"] = meta.get(best, -math.inf)
            self.checkpointer.save_and_keep_only(meta=meta, max_keys=["best_key"], num_to_keep=1)
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
            if if_main_process():
                self._write_results(rows, summary)

    def _write_results(self, rows: list[dict], summary: dict) -> None:
        out = Path(self.hparams.output_dir)
        with atomic_file(out / "test_results.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id"])
            writer.writeheader()
            writer.writerows(rows)
        write_text(out / "test_summary.json", json.dumps(summary, indent=2, default=float) + "\n")
        logger.info("test results written to %s", out / "test_results.csv")

    def on_fit_end(self):
        self.close_scorer()

    def close_scorer(self):
        """Stop the metric worker processes (started on the first validation; started again if needed)."""
        if getattr(self, "_metric_scorer", None) is not None:
            self._metric_scorer.close()
            self._metric_scorer = None
