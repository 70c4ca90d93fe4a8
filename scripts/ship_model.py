"""Turn a training run into a model folder with its model card (a candidate or a shipped model).

    python scripts/ship_model.py results/dtcn-8k/1234 --name dtcn-8k --out recipes/demo/candidates/dtcn-8k --evaluate
    python scripts/ship_model.py results/dtcn-8k/1234 --name dtcn-8k --evaluate   # into dereverb/checkpoints/
    python scripts/ship_model.py dereverb/checkpoints/dtcn-8k --name dtcn-8k --card-only   # its card again

Takes the run's best checkpoint (highest ``best_key`` in its ``CKPT.yaml``), calibrates its
``output_gain`` on the run's own validation split against the run's training target
(:func:`dereverb.inference.calibrate_gain`: the median least-squares gain from the raw output to the
target), and writes the model folder with a ``training`` record: this run (checkpoint, epoch, optimizer
steps, training hours, hardware, command, validation scores) after the records of the stages it
continued from (``init_from=``), and the totals over all stages.

``--evaluate`` then scores the folder on a test set (default: the demo test set at the model's rate)
with ``dereverb.evaluation`` beside the unprocessed input and WPE, against the early and the direct-path
targets, and writes ``MODEL_CARD.md`` from the record and that evaluation: every figure in the card
comes from these two commands. Without ``--evaluate`` an existing card is kept (or a stub written).
The card lists every command that makes the model again: each stage's training calls and the
``ship_model.py`` call after it that wrote the folder the next stage starts from. ``--card-only``
evaluates an existing model folder and writes its card again from the record in its ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

from dereverb.atomic import write_text
from dereverb.cli.common import print_error
from dereverb.data.audio import read_audio
from dereverb.errors import DataError, DereverbError
from dereverb.evaluation import evaluate, load_test_set
from dereverb.evaluation.checks import check_out
from dereverb.inference import calibrate_gain
from dereverb.loading import LoadedModel, load_best_checkpoint
from dereverb.metrics import metric_names
from dereverb.pretrained import CARD_FILE, PRETRAINED_DIR, ModelFolderError, read_config, save_pretrained
from dereverb.training.config import best_metric
from dereverb.training.records import TRAIN_LOG, read_train_log

REPO = Path(__file__).resolve().parent.parent
METRICS = ("pesq", "stoi", "estoi", "si_sdr")
CURVE_KEYS = ("epoch", "steps", "pesq_nb", "pesq_wb", "stoi", "estoi", "si_sdr")
BAR = {"si_sdr": 2.0, "pesq": 0.25}  # least gain over the input against the early target


def _stage_record(run: Path, loaded: LoadedModel, cfg: dict) -> dict:
    """What the run folder says about its best checkpoint: one training stage."""
    ckpt = loaded.checkpoint
    record: dict = {"run": str(run), "checkpoint": ckpt.name, "init_from": cfg.get("init_from")}
    env = run / "environment.json"
    if env.is_file():
        environment = json.loads(env.read_text())
        argv = environment.pop("argv", [])
        record["command"] = environment.pop("command", None) or shlex.join(["python", *argv])
        record["calls"] = environment.pop("calls", None) or [record["command"]]  # a resumed run: every call
        record["environment"] = environment
    meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text()) or {}
    record["validation"] = {
        k: round(float(v), 4) for k, v in meta.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    brain = yaml.safe_load((ckpt / "brain.ckpt").read_text()) if (ckpt / "brain.ckpt").is_file() else {}
    record["optimizer_steps"] = int((brain or {}).get("optimizer_step", 0))
    if (brain or {}).get("train_seconds") is not None:
        record["train_seconds"] = round(float(brain["train_seconds"]), 1)
    else:  # a checkpoint written before the training clock existed: the run's first start to this checkpoint
        start = min(p.stat().st_mtime for p in (run / "model_config.json", run / "config.yaml") if p.is_file())
        record["train_seconds"] = round(float(meta.get("unixtime", start)) - start, 1)
        record["train_seconds_source"] = "file times (model_config.json to the checkpoint)"
    counter = ckpt / "counter.ckpt"
    if counter.is_file():
        record["epoch"] = int(counter.read_text().strip())
    data = cfg.get("data", {})
    record["data"] = {k: v for k, v in data.items() if k not in ("save_folder", "pack_dir", "root")}
    record["sample_rate"] = cfg.get("sample_rate")
    record["selected_by"] = best_metric(cfg.get("run", {}).get("best_key", "pesq"), cfg.get("sample_rate"))
    record["validation_curve"] = [
        {k: round(row[k], 4) for k in CURVE_KEYS if k in row} for row in read_train_log(run / TRAIN_LOG)
    ]
    return record


def training_record(run: Path, loaded: LoadedModel, cfg: dict) -> dict:
    """This stage after the stages of the model it started from, with totals."""
    stages = []
    if cfg.get("init_from"):
        try:
            _, previous = read_config(cfg["init_from"])
        except ModelFolderError as err:
            raise DataError(f"{run}: its init_from model is needed for the training record: {err}") from None
        # records written before stages kept their rate: they trained at the rate of the folder they made
        stages = [{"sample_rate": previous["sample_rate"], **s} for s in previous.get("training", {}).get("stages", [])]
    stages.append(_stage_record(run, loaded, cfg))
    return {
        "stages": stages,
        "total_optimizer_steps": sum(s["optimizer_steps"] for s in stages),
        "total_train_hours": round(sum(s.get("train_seconds", 0.0) for s in stages) / 3600, 3),
    }


def better_than(new: dict, old: dict, what: str) -> tuple[bool, str]:
    """Whether stage ``new``'s best checkpoint beats stage ``old``'s on validation (``what`` names ``old``).

    Both stages must be scored on the same validation data (the same data settings and sample rate); the
    metric is the one ``new`` selected its checkpoint by. Returns ``(better, one line saying why)``.
    """
    if new.get("data") != old.get("data") or new.get("sample_rate") != old.get("sample_rate"):
        raise DataError(f"--if-better: this stage and {what} were validated on different data settings or sample "
                        "rates; compare them on a test set instead")  # fmt: skip
    key = new["selected_by"]
    if key not in old.get("validation", {}):
        raise DataError(f"--if-better: the record of {what} has no validation {key}")
    a, b = new["validation"][key], old["validation"][key]
    return a > b, f"validation {key} {a:.4f} (this stage) against {b:.4f} ({what})"


def _last_stage_at(folder: Path) -> dict | None:
    """The last training stage of the model folder at ``folder`` (``None``: no model folder or no record)."""
    try:
        _, config = read_config(folder)
    except ModelFolderError:
        return None
    stages = config.get("training", {}).get("stages") or [None]
    return stages[-1] and {"sample_rate": config["sample_rate"], **stages[-1]}


def bar_check(summary: dict) -> list[tuple[str, bool]]:
    """The shipping bar on an evaluation summary with both targets: ``(condition, met)`` pairs."""
    cols, checks = summary["columns"], []
    pesq = next(n for n in metric_names(summary["metric_rate"]) if n.startswith("pesq"))
    names = {m: pesq if m == "pesq" else m for m in METRICS}
    for m, n in names.items():
        model, inp = cols[f"early_{n}"]["mean"], cols[f"input_early_{n}"]["mean"]
        wpe = cols.get(f"wpe_early_{n}", {}).get("mean")
        least = BAR.get(m, 0.0)
        checks.append((f"early {n}: model {model:.3f} > input {inp:.3f} + {least:g}", model > inp + least))
        if wpe is not None:
            checks.append((f"early {n}: model {model:.3f} > WPE {wpe:.3f}", model > wpe))
    for n in names.values():
        model, inp = cols[f"direct_{n}"]["mean"], cols[f"input_direct_{n}"]["mean"]
        checks.append((f"direct {n}: model {model:.3f} > input {inp:.3f}", model > inp))
    return checks


def _fmt(stats: dict, digits: int) -> str:
    return f"{stats['mean']:.{digits}f}" if stats["mean"] is not None else "missing"


def results_table(summary: dict) -> list[str]:
    """Markdown rows: each metric against both targets, input, model and WPE with the deltas."""
    cols = summary["columns"]
    has_wpe = "wpe" in summary["signals"]
    head = "| target | metric | input | model | Δ model - input [95 % CI] |"
    head += " WPE | Δ WPE - input |" if has_wpe else ""
    lines = [head, "|---|---|--:|--:|--:|" + ("--:|--:|" if has_wpe else "")]
    for ref, prefix in (("early (direct + 50 ms)", "early_"), ("direct path", "direct_")):
        for n in metric_names(summary["metric_rate"]):
            if f"{prefix}{n}" not in cols:
                continue
            c, d = f"{prefix}{n}", 2 if n.startswith(("pesq", "si_sdr")) else 3
            delta = cols[f"delta_{c}"]
            lo, hi = delta["ci95"]
            row = f"| {ref} | {n} | {_fmt(cols[f'input_{c}'], d)} | {_fmt(cols[c], d)} | "
            row += f"{delta['mean']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}] |"
            if has_wpe:
                row += f" {_fmt(cols[f'wpe_{c}'], d)} | {cols[f'wpe_delta_{c}']['mean']:+.{d}f} |"
            lines.append(row)
    return lines


def _data_text(data: dict) -> str:
    kind = data.get("kind")
    text = ""
    if kind == "demo":
        text = (
            "(the speech pack shipped in `dereverb/assets/speech`: real voices of the Asterisk prompts in English, "
            "Spanish and French plus two synthetic flite voices; see its ATTRIBUTION.md) "
        )
    if kind in ("demo", "simulate"):
        rooms = data.get("rooms") or "the defaults of dereverb.data.rooms.RoomConfig"
        text += f"reverberated on the fly by {data.get('train_rirs')} simulated rooms (settings: {rooms})"
    return text + f", {data.get('segment_s', '?')} s training segments"


def _rates_text(stages: list[dict], rate: int) -> str:
    """A sentence on the stages trained at another sample rate than the model's (empty if none)."""
    other = [(i, s["sample_rate"]) for i, s in enumerate(stages, 1) if s.get("sample_rate", rate) != rate]
    if not other:
        return ""
    first = other[-1][0] + 1  # the stage that started from the other rate's model
    rates = ", ".join(sorted({f"{r} Hz" for _, r in other}))
    return (f" Stage(s) {', '.join(str(i) for i, _ in other)} trained a model at {rates} on the same data set at that "
            f"rate; stage {first} started from it at {rate} Hz with its encoder and decoder resampled (`init_from=` "
            "across rates: the window lasts as long, the mask estimator carries over).")  # fmt: skip


def _curve_cell(value: float, metric: str) -> str:
    """PESQ and SI-SDR to 2 decimals, STOI and ESTOI to 3: the results tables' precision."""
    return f"{value:.{3 if metric in ('stoi', 'estoi') else 2}f}"


def curve_table(stages: list[dict], rate: int) -> list[str]:
    """The card's validation curve: every validation of every stage that recorded one."""
    pesq = best_metric("pesq", rate)
    missing = [str(i) for i, s in enumerate(stages, 1) if not s.get("validation_curve")]
    lines = ["", "Validation after each epoch (scores against the training target on the validation split):", ""]
    if missing:
        lines += [f"Stage(s) {', '.join(missing)}: no curve in the training record.", ""]
    rates = [s.get("sample_rate", rate) for s in stages]
    mixed = any(r != rate for r in rates)  # stages at another rate: scored on their own validation data
    if mixed:
        lines += [f"Stages at another rate were validated at that rate (their {pesq} is computed on their audio); "
                  f"the input row is the {rate // 1000} kHz validation data's.", ""]  # fmt: skip
    lines += [f"| stage |{' kHz |' * mixed} epoch | optimizer steps (all stages) | {pesq} | stoi | estoi | si_sdr |",
              f"|--:|{'--:|' * mixed}--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    given = stages[-1].get("validation", {})
    if all(f"input_{k}" in given for k in (pesq, *METRICS[1:])):
        scores = [_curve_cell(given[f"input_{k}"], k) for k in (pesq, *METRICS[1:])]
        lines.append(f"| input |{f' {rate / 1000:g} |' * mixed} | | " + " | ".join(scores) + " |")
    before = 0
    for i, (s, r) in enumerate(zip(stages, rates, strict=True), 1):
        for row in s.get("validation_curve", []):
            steps = f"{before + int(row['steps']):,}" if "steps" in row else ""
            scores = [_curve_cell(row[k], k) if k in row else "" for k in (pesq, *METRICS[1:])]
            lines.append(f"| {i} |{f' {r / 1000:g} |' * mixed} {int(row['epoch'])} | {steps} | " + " | ".join(scores)
                         + " |")  # fmt: skip
        before += s["optimizer_steps"]  # the next stage starts from this one's best checkpoint
    return lines


def _calls(stage: dict) -> list[str]:
    """The training commands of one stage as run: every call of a resumed run, in order."""
    return stage.get("calls") or ([stage["command"]] if stage.get("command") else [])


def shown_run(run: str | Path) -> str:
    """A run folder as the recipe names it, ``results/<name>/<seed>`` (the prefix of a checkout dropped)."""
    parts = Path(run).parts
    return str(Path(*parts[parts.index("results") :])) if "results" in parts else str(run)


def replay_commands(stages: list[dict], name: str, out: str) -> list[str]:
    """Every command that makes the model again, in order: each stage's training calls, then the
    ``ship_model.py`` call that writes the model folder the next stage starts from (its ``init_from=``:
    a shipped model's name or a folder), and last the call that writes ``out`` as model ``name``. The ship
    calls pass ``--overwrite``: a checkout already has the shipped folders, and a replay writes them again."""
    lines: list[str] = []
    for i, stage in enumerate(stages):
        lines += [c.replace(f"{REPO}/", "") for c in _calls(stage)]  # as run here
        last = i == len(stages) - 1
        target = out if last else str(stages[i + 1].get("init_from") or "").replace(f"{REPO}/", "")
        if not target:
            continue
        argv = ["python", "scripts/ship_model.py", shown_run(stage["run"]), "--name"]
        if last:
            argv += [name, "--out", target, "--evaluate"]
        else:  # init_from=NAME is the shipped model NAME, written without --out
            argv += [Path(target).name, *(["--out", target] if "/" in target else [])]
        lines.append(shlex.join([*argv, "--overwrite"]))
    return lines


def model_card(name: str, config: dict, summary: dict, commands: dict[str, str]) -> str:
    """``MODEL_CARD.md`` from a model folder's ``config.json`` and its evaluation summary."""
    from dereverb.pretrained import MODELS

    training, rate = config["training"], config["sample_rate"]
    model = MODELS[config["class"]](**config["config"])
    n_params = sum(p.numel() for p in model.parameters())
    _, samples, seconds = model.receptive_field(rate)
    arch = ", ".join(f"{k}={v!r}" for k, v in config["config"].items())
    data = training["stages"][-1].get("data", {})
    target = data.get("target", "early")
    checks = bar_check(summary)
    met = all(ok for _, ok in checks)
    lines = [
        f"# {name}",
        "",
        f"{config['class']} that removes reverberation from {rate // 1000} kHz single-channel speech, trained to keep "
        + (
            "the direct path and the first 50 ms of the room response (the `early` target)."
            if target == "early"
            else "the direct path only (the `direct` target)."
        ),
        "",
        "**Shipping bar** (against the early target: higher PESQ, STOI, ESTOI and SI-SDR than the input and WPE, "
        f"SI-SDR at least +{BAR['si_sdr']:g} dB and PESQ at least +{BAR['pesq']:g} over the input; against the "
        f"direct path: all four higher than the input): **{'met' if met else 'not met'}**"
        + ("" if met else f" ({sum(not ok for _, ok in checks)} of {len(checks)} conditions fail, listed below)."),
        "",
        "## Model",
        "",
        f"- `{config['class']}({arch})`: {n_params:,} parameters, receptive field {seconds:.2f} s "
        f"({samples} samples) at {rate} Hz.",
        "- Offset predictors: the published design (depthwise conv with the block's dilation, PReLU, gLN, "
        "pointwise conv), zero-initialised."
        if config["class"] == "DTCN"
        else "- Plain depthwise convolutions (the TCN baseline).",
        f"- `output_gain` {config.get('output_gain', 1.0):.4g}: "
        f"{training['stages'][-1].get('output_gain_calibration', '')}.",
        "",
        "## Training",
        "",
        f"- Data: the `{data.get('kind', '?')}` data set "
        + _data_text(data)
        + f"; target `{target}`."
        + _rates_text(training["stages"], rate),
        f"- {training['total_optimizer_steps']:,} optimizer steps in {len(training['stages'])} stage(s), "
        f"{training['total_train_hours']:.2f} h of training (wall clock, validation included).",
        "",
        "| stage | optimizer steps | hours | best epoch | hardware | validation (best checkpoint) |",
        "|--:|--:|--:|--:|---|---|",
    ]
    mixed = any(s.get("sample_rate", rate) != rate for s in training["stages"])
    for i, s in enumerate(training["stages"], 1):
        env = s.get("environment", {})
        hw = f"{'GPU' if env.get('cuda') else 'CPU'}, {env.get('threads', '?')} thread(s)"
        hw += f", torch {env.get('torch', '?')}"
        v = s.get("validation", {})
        val = ", ".join(f"{k} {v[k]:.3f}" for k in v if k.endswith(METRICS) or k.startswith("pesq"))
        val = f"at {s.get('sample_rate', rate) / 1000:g} kHz: {val}" if mixed else val
        hours = s.get("train_seconds", 0) / 3600
        estimated = " (from file times)" if s.get("train_seconds_source") else ""
        cells = [str(i), f"{s['optimizer_steps']:,}", f"{hours:.2f}{estimated}", str(s.get("epoch", "")), hw, val]
        lines.append("| " + " | ".join(cells) + " |")
    lines += curve_table(training["stages"], rate)
    lines += ["", "Commands, in order (each runs in the repository root; a resumed stage lists each of its "
              "calls, which train the same run folder; after each stage, `scripts/ship_model.py` writes the model "
              "folder that the next stage continues from with `init_from=`, replacing the one a checkout has):",
              "", "```bash"]  # fmt: skip
    lines += [*replay_commands(training["stages"], name, commands["out"]), "```", "", "## Results", ""]
    lines += [f"Test set: {commands['data']} (its test split, {summary['n_utterances']} utterances); metrics at "
              f"{summary['metric_rate']} Hz, means; Δ with the 95 % confidence interval of the mean:",
              "", "```bash", commands["evaluate"], "```", ""]  # fmt: skip
    lines += results_table(summary)
    lines += ["", "Shipping bar, condition by condition:", ""]
    lines += [f"- {'met' if ok else '**not met**'}: {text}" for text, ok in checks]
    lines += [
        "",
        "## Limitations",
        "",
        "- Few speakers (the speech pack's handful of voices) and short prompts; untested on other languages,"
        " spontaneous speech, children's voices.",
        "- Simulated shoebox rooms only (image method), one static source, no noise, no real recordings in training.",
        "- The early target keeps the first 50 ms of reflections: the output is not dry speech; the direct-path"
        " rows say how far from it.",
        f"- Trained at {rate} Hz: other rates are resampled to it and back, so nothing above {rate // 2000} kHz is"
        " enhanced.",
    ]
    return "\n".join(lines) + "\n"


def _eval_out(args: argparse.Namespace, steps: int) -> Path:
    """The evaluation folder of ``--evaluate``: ``--eval-out``, or ``results/eval/<name>-<steps>``."""
    return Path(args.eval_out) if args.eval_out else REPO / "results" / "eval" / f"{args.name}-{steps}"


def evaluate_and_write_card(args: argparse.Namespace, dest: Path, rate: int, steps: int) -> None:
    """``--evaluate``: score the model folder ``dest`` on the test set and write its ``MODEL_CARD.md``."""
    eval_out = _eval_out(args, steps)
    is_config = any("=" in d for d in args.data)  # dataset overrides, prepared at the model's rate
    given_rate = any(d.startswith("sample_rate=") for d in args.data)
    data = [*args.data, f"sample_rate={rate}"] if is_config and not given_rate else args.data
    result = evaluate(dest, data, eval_out, baselines=["wpe"], overwrite=args.overwrite, progress=False)
    if "early" not in result.summary["targets"]:
        raise DataError(f"--data {' '.join(args.data)}: the test set has no early targets")
    rel = dest.resolve().relative_to(REPO) if dest.resolve().is_relative_to(REPO) else dest
    again = ["python", "scripts/evaluate.py", "--model", str(rel), "--data", *data]
    again += ["--out", f"results/eval/{args.name}-{steps}", "--baselines", "wpe"]
    commands = {"data": " ".join(data), "out": str(rel), "evaluate": shlex.join(again)}
    config = json.loads((dest / "config.json").read_text())
    write_text(dest / CARD_FILE, model_card(args.name, config, result.summary, commands))
    checks = bar_check(result.summary)
    print(f"{dest / CARD_FILE}: shipping bar {'met' if all(ok for _, ok in checks) else 'not met'}")
    for text, ok in checks:
        print(f"  {'met    ' if ok else 'NOT MET'} {text}")


def write_card_again(args: argparse.Namespace, folder: Path) -> int:
    """``--card-only``: evaluate the model folder ``folder`` and write its card from its own record."""
    if args.out or args.if_better:
        raise DataError("--card-only writes the card of the model folder RUN itself: drop --out and --if-better")
    folder, config = read_config(folder)
    if not config.get("training", {}).get("stages"):
        raise DataError(f"{folder}: its config.json has no training record; ship it from its run instead")
    steps = config["training"]["total_optimizer_steps"]
    check_out(_eval_out(args, steps), args.overwrite)
    evaluate_and_write_card(args, folder, config["sample_rate"], steps)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training folder results/<name>/<seed>")
    p.add_argument("--name", required=True, help="model name, e.g. dtcn-8k")
    p.add_argument("--out", default=None, help="write the model folder here instead of dereverb/checkpoints/<name>")
    p.add_argument("--calibration-items", type=int, default=None, help="validation utterances (default: all)")
    p.add_argument("--evaluate", action="store_true", help="evaluate the folder and write its MODEL_CARD.md")
    p.add_argument("--data", nargs="+", default=["data=demo"], help="the test set of --evaluate (default data=demo)")
    p.add_argument("--eval-out", default=None, help="evaluation folder (default results/eval/<name>-<steps>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder (and evaluation)")
    p.add_argument("--card-only", action="store_true",
                   help="RUN is a model folder: evaluate it and write its MODEL_CARD.md again from its training "
                        "record (weights and record unchanged)")  # fmt: skip
    p.add_argument("--if-better", action="store_true",
                   help="write nothing unless the run beats, on validation, the model at --out (without one, the "
                        "model it continued from)")  # fmt: skip
    args = p.parse_args(argv)
    run = Path(args.run)
    dest = Path(args.out) if args.out else PRETRAINED_DIR / args.name
    try:
        if args.card_only:
            return write_card_again(args, run)
        if dest.exists() and not args.overwrite:
            raise DataError(f"{dest} exists (pass --overwrite to replace it)")
        if not (run / "config.yaml").is_file():
            raise DataError(f"{run} is not a training folder results/<name>/<seed>: no config.yaml")
        loaded = load_best_checkpoint(run)  # the checkpoint itself, whether or not the run exported it
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        from omegaconf import OmegaConf

        from dereverb.data import prepare

        record = training_record(run, loaded, cfg)
        old = _last_stage_at(dest) if dest.exists() else None
        if args.if_better and (old or len(record["stages"]) > 1):
            what = "the model at --out" if old else "the model it continued from"
            better, why = better_than(record["stages"][-1], old or record["stages"][-2], what)
            print(f"{run}: {'better' if better else 'not better; nothing written'}: {why}")
            if not better:
                return 0
        if args.evaluate:  # refused before the model folder is written, not after (no folder with a stub card)
            check_out(_eval_out(args, record["total_optimizer_steps"]), args.overwrite)
        manifests = prepare(OmegaConf.create(cfg["data"]), loaded.sample_rate, progress=False)
        target = "early" if cfg["data"].get("target") == "early" else "direct"
        valid = load_test_set(manifests["valid"], target=target)
        utts = valid.utterances[: args.calibration_items]
        pairs = [(read_audio(u.reverberant, loaded.sample_rate), read_audio(u.target, loaded.sample_rate))
                 for u in utts]  # fmt: skip
        gain = calibrate_gain(loaded.model, pairs)
        record["stages"][-1]["output_gain_calibration"] = (
            f"median least-squares gain to the `{cfg['data'].get('target', 'direct')}` target over {len(pairs)} "
            "validation utterances"
        )
        card = (dest / CARD_FILE).read_text() if (dest / CARD_FILE).is_file() else None
        save_pretrained(loaded.model, dest, loaded.sample_rate, model_card=card, overwrite=args.overwrite,
                        extra={"output_gain": gain, "training": record})  # fmt: skip
        print(f"{dest}: {loaded.source}; output_gain {gain:.4g}; {record['total_optimizer_steps']} optimizer steps")
        if args.evaluate:
            evaluate_and_write_card(args, dest, loaded.sample_rate, record["total_optimizer_steps"])
    except (DereverbError, FileExistsError) as err:
        return print_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
