"""The training recipe: ``main(cfg)`` prepares the data, builds everything once, trains, tests, exports.

``python train.py conf/dtcn.yaml [overrides]`` (:mod:`dereverb.cli.train`) composes the config with
Hydra and calls :func:`main`; tests call :func:`main` directly with a composed config.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from dereverb.errors import CheckpointError, TrainingError
from dereverb.training.config import output_folder
from dereverb.training.experiment import Experiment, build
from dereverb.training.faults import write_error

__all__ = ["main"]

logger = logging.getLogger(__name__)

_NONFINITE = "Loss is not finite and patience is exhausted"  # SpeechBrain's message


def main(cfg: DictConfig) -> Path:
    """Run the recipe described by a composed config (see ``conf/dtcn.yaml``).

    Returns:
        The output folder ``results/<name>/<seed>``.

    Raises:
        ConfigError: a bad configuration value, before any work starts.
        dereverb.errors.DataError: bad data settings (before anything is written) or bad data.
        TrainingError: another training holds the output folder (see
            :class:`~dereverb.training.lock.RunLock`); the loss stayed non-finite (see
            ``run.nonfinite_patience``); a checkpoint of the folder is not a plain weights file; a
            write failed (a full disk). The earlier checkpoints stay intact.
    """
    try:
        exp = build(cfg)
    except OSError as err:
        raise (write_error(err, output_folder(cfg)) or err) from None
    try:
        _train_test_export(cfg, exp)
    except ValueError as err:
        if _NONFINITE in str(err):
            raise TrainingError(
                f"training stopped: the loss was not finite in more than run.nonfinite_patience="
                f"{cfg.run.nonfinite_patience} batches of an epoch (those updates were skipped; the weights are "
                "finite). Lower optim.lr or check the data"
            ) from None
        raise
    except CheckpointError as err:
        raise TrainingError(str(err)) from None
    except OSError as err:
        raise (write_error(err, exp.output_dir) or err) from None
    finally:
        exp.close()
    return exp.output_dir


def _train_test_export(cfg: DictConfig, exp: Experiment) -> None:
    """Fit, score the test set with the best checkpoint (``run.test``), export it (``run.export``)."""
    brain = exp.brain
    try:
        brain.fit(
            exp.epoch_counter,
            exp.train_set,
            exp.valid_set,
            train_loader_kwargs=exp.train_loader,
            valid_loader_kwargs={"batch_size": 1},
        )
        if cfg.run.test:
            brain.evaluate(exp.test_set, max_key="best_key", test_loader_kwargs={"batch_size": 1})
    finally:
        brain.close_scorer()
    from speechbrain.utils.distributed import if_main_process

    if cfg.run.export and if_main_process():
        _export_best(cfg, exp)


def _export_best(cfg: DictConfig, exp: Experiment) -> None:
    """Load the best checkpoint's weights into the model and save it as ``<output_dir>/model``."""
    from dereverb.pretrained import save_pretrained
    from dereverb.weights import load_weights

    best = exp.checkpointer.find_checkpoint(max_key="best_key")
    if best is None:
        return
    folder = exp.output_dir / "model"
    exp.model.load_state_dict(load_weights(best.paramfiles["model"]))
    try:
        save_pretrained(exp.model.cpu(), folder, cfg.sample_rate, overwrite=True)
    except (ValueError, FileExistsError) as err:  # non-finite weights, or a foreign folder there
        raise TrainingError(f"export to {folder} refused: {err}") from None
    logger.info("best model (%s = %.3f) exported to %s", cfg.run.best_key, best.meta["best_key"], folder)
