"""Turn a finished training run into a shipped model folder: ``dereverb/checkpoints/<name>/``.

    python scripts/ship_model.py results/dtcn-8k/1234 --name dtcn-8k

Takes the run's best checkpoint (highest ``best_key`` in its ``CKPT.yaml``), calibrates
its ``output_gain`` on the run's own validation split (:func:`dereverb.inference.calibrate_gain`:
the median least-squares gain from the raw output to the target, so enhanced files come at the
level of the direct sound), and writes the model folder with a ``training`` record (run folder,
checkpoint, epoch and optimizer steps, its validation scores, the command line). An existing
``MODEL_CARD.md`` of the destination is kept; otherwise a stub is written, to be completed with
the evaluation's table (see the README, "Shipped models").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from dereverb.data.audio import read_audio
from dereverb.data.errors import DataError
from dereverb.evaluate import LoadedModel, load_best_checkpoint, load_test_set
from dereverb.inference import calibrate_gain
from dereverb.pretrained import CARD_FILE, PRETRAINED_DIR, ModelFolderError, save_pretrained


def _training_record(run: Path, loaded: LoadedModel) -> dict:
    """What the run folder says about the shipped checkpoint."""
    ckpt = loaded.checkpoint
    record: dict = {"run": str(run), "source": loaded.source, "checkpoint": ckpt.name}
    env = run / "environment.json"
    if env.is_file():
        record["environment"] = yaml.safe_load(env.read_text())
    meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text()) or {}
    record["validation"] = {
        k: round(float(v), 4) for k, v in meta.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    brain = ckpt / "brain.ckpt"
    if brain.is_file():
        record["optimizer_steps"] = int((yaml.safe_load(brain.read_text()) or {}).get("optimizer_step", 0))
    counter = ckpt / "counter.ckpt"
    if counter.is_file():
        record["epoch"] = int(counter.read_text().strip())
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training folder results/<name>/<seed>")
    p.add_argument("--name", required=True, help="shipped model name, e.g. dtcn-8k")
    p.add_argument("--out", default=None, help="write the model folder here instead of dereverb/checkpoints/<name>")
    p.add_argument("--calibration-items", type=int, default=None, help="validation utterances (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shipped model")
    args = p.parse_args(argv)
    run = Path(args.run)
    dest = Path(args.out) if args.out else PRETRAINED_DIR / args.name
    try:
        if dest.exists() and not args.overwrite:
            raise DataError(f"{dest} exists (pass --overwrite to replace it)")
        if not (run / "config.yaml").is_file():
            raise DataError(f"{run} is not a training folder results/<name>/<seed>: no config.yaml")
        loaded = load_best_checkpoint(run)  # the checkpoint itself, whether or not the run exported it
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        from omegaconf import OmegaConf

        from dereverb.data.datasets import prepare

        manifests = prepare(OmegaConf.create(cfg["data"]), loaded.sample_rate, progress=False)
        valid = load_test_set(manifests["valid"], reference="clean")
        utts = valid.utterances[: args.calibration_items]
        pairs = [(read_audio(u.reverb, loaded.sample_rate), read_audio(u.reference, loaded.sample_rate)) for u in utts]
        gain = calibrate_gain(loaded.model, pairs)
        card = (dest / CARD_FILE).read_text() if (dest / CARD_FILE).is_file() else None
        record = _training_record(run, loaded)
        record["output_gain_calibration"] = f"median over {len(pairs)} utterances of {valid.source}"
        save_pretrained(loaded.model, dest, loaded.sample_rate, model_card=card, overwrite=args.overwrite,
                        extra={"output_gain": gain, "training": record})  # fmt: skip
    except (DataError, ModelFolderError, FileExistsError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"{dest}: {loaded.source}; output_gain {gain:.4g} ({record['output_gain_calibration']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
