"""Evaluate a dereverberation model on a reverberant test set, beside the input and classical baselines.

``python scripts/evaluate.py --model MODEL --data DATA --out OUTDIR`` (or ``dereverb-evaluate``)
enhances every utterance of the test set, scores the model output, the unprocessed input and
(``--baselines wpe``) single-channel WPE against the reference with :class:`dereverb.metrics.Scorer`,
and writes a per-utterance CSV and a summary (Markdown and JSON); optionally the enhanced audio,
figures and a self-contained HTML report. See ``docs/evaluation.md`` for every option and column.

``MODEL`` is a shipped model name, a model folder written by
:func:`~dereverb.pretrained.save_pretrained`, or a training folder ``results/<name>/<seed>``
(its ``model/`` export, else its best ``save/CKPT+*`` checkpoint). ``DATA`` is a paired folder
(``reverb/``, ``clean/``, optional ``early/``), a prepared manifest CSV, or a dataset config given
as Hydra overrides (``data=demo``; ``data=whamr data.root=/data/whamr``): its prepared test split.

Policies:

* **Rates.** Metrics are computed at the reference's rate (8 or 16 kHz; a reference at another
  rate is resampled to 16 kHz, or 8 kHz below 16 kHz). The model gets the input resampled from
  its file to the model's rate, and its output is resampled to the metric rate; the summary says
  so, and flags ``pesq_wb`` of an 8 kHz model's upsampled output.
* **Lengths.** All signals of an utterance are cropped to the shortest (from the start); the CSV
  records the difference, and a difference above 1 % of the reference is logged and counted.
* **Failures.** A metric that cannot be computed is missing (an empty cell, the reason in the
  ``failures`` column), counted in the summary, never 0 and never dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dereverb.errors import DataError, EvaluationError
from dereverb.loading import LoadedModel, load_model

__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "TestSet",
    "Utterance",
    "evaluate",
    "load_test_set",
    "main",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("wav", "flac")
METRIC_RATES = (8000, 16000)
LENGTH_WARNING = 0.01
"""A length difference above this fraction of the reference is logged and counted."""


# --------------------------------------------------------------------------------------------
# the test set


@dataclass
class Utterance:
    """One test item: the reverberant input, the reference (and a second one when the test set is
    scored against two) and the manifest's numeric columns."""

    id: str
    reverb: Path
    reference: Path
    meta: dict = field(default_factory=dict)
    second_reference: Path | None = None


@dataclass
class TestSet:
    """The utterances to score and a description of where they came from."""

    __test__ = False  # not a pytest test class

    utterances: list[Utterance]
    source: str
    reference: str
    second_reference: str | None = None  # "early" when scored against both the clean and early references

    @property
    def references(self) -> list[str]:
        return [self.reference] + ([self.second_reference] if self.second_reference else [])


REFERENCES = ("auto", "both", "clean", "early")


def load_test_set(spec: str | os.PathLike | Sequence[str], reference: str = "auto", sample_rate: int = 8000) -> TestSet:
    """Find the utterances of a test set (paired folder, manifest CSV, or dataset config overrides).

    Args:
        spec: a folder with ``reverb/`` and ``clean/`` (optional ``early/``), a prepared manifest
            ``*.csv``, or Hydra overrides of ``conf/prepare.yaml`` such as ``["data=demo"]``.
        reference: ``clean`` (the direct path for simulated data), ``early`` (direct path + 50 ms),
            ``both`` (metrics against ``clean``, and against ``early`` in ``early_*`` columns), or
            ``auto`` (``both`` where the test set has early references, else ``clean``).
        sample_rate: the rate a dataset config is prepared at unless the overrides set
            ``sample_rate=`` (the model's rate is a good choice).

    Raises:
        DataError: missing pairs (the first few named), a missing folder, column or early reference.
    """
    if reference not in REFERENCES:
        raise DataError(f"--reference {reference}: expected one of {', '.join(REFERENCES)}")
    items = [str(spec)] if isinstance(spec, str | os.PathLike) else [str(s) for s in spec]
    if not items:
        raise DataError("--data: give a folder, a manifest CSV or a dataset config such as data=demo")
    if _is_config(items):
        return _from_config(items, reference, sample_rate)
    path = Path(items[0]).expanduser()
    if path.is_dir():
        return _from_folder(path, reference)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_manifest(path, reference)
    if path.exists():
        raise DataError(f"{path}: not a folder or a .csv manifest")
    raise DataError(f"{path}: no such folder or manifest (or give a dataset config such as data=demo)")


def _is_config(spec) -> bool:
    """Dataset config overrides (``data=demo ...``) rather than one folder or manifest."""
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    return len(items) > 1 or (len(items) == 1 and "=" in str(items[0]) and not Path(items[0]).exists())


def _audio_files(folder: Path) -> dict[str, Path]:
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS
    }


def _roles(reference: str, has_early: bool) -> list[str]:
    """The reference roles to score: the primary one first."""
    if reference == "auto":
        return ["clean", "early"] if has_early else ["clean"]
    return ["clean", "early"] if reference == "both" else [reference]


def _from_folder(root: Path, reference: str) -> TestSet:
    roles = _roles(reference, (root / "early").is_dir())
    for role in ("reverb", *roles):
        if not (root / role).is_dir():
            hint = f" (--reference {reference} needs one)" if role == "early" else ""
            raise DataError(f"{root}: no {role}/ folder{hint}; a paired test folder holds reverb/ and clean/")
    inputs = _audio_files(root / "reverb")
    if not inputs:
        raise DataError(f"{root / 'reverb'}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    refs = {role: _audio_files(root / role) for role in roles}
    for role, files in refs.items():
        unpaired = [f"reverb/{n}" for n in sorted(set(inputs) - set(files))]
        unpaired += [f"{role}/{n}" for n in sorted(set(files) - set(inputs))]
        if unpaired:
            raise DataError(
                f"{root}: {len(unpaired)} files without a partner of the same name in reverb/ and {role}/ "
                f"(first: {', '.join(unpaired[:5])})"
            )
    second = roles[1] if len(roles) > 1 else None
    utts = [
        Utterance(Path(n).stem, inputs[n], refs[roles[0]][n], second_reference=second and refs[second][n])
        for n in sorted(inputs)
    ]
    return TestSet(utts, f"paired folder {root}", roles[0], second)


def _from_manifest(path: Path, reference: str) -> TestSet:
    from dereverb.data.manifests import NUMERIC_COLUMNS, find_prepared, read_manifest

    meta = find_prepared(path.parent) or {}
    replacements = {**meta.get("roots", {}), "prep_root": str(path.parent.resolve())}
    try:
        rows = read_manifest(path, replacements)
    except DataError:
        raise
    except Exception as err:  # a CSV that is not a manifest: say which file, in one line
        raise DataError(
            f"{path}: not a readable manifest ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from None
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    first = next(iter(rows.values()))
    roles = _roles(reference, "early" in first)
    for column in ("reverb", *roles):
        if column not in first:
            hint = " (a training manifest holds clean speech only: use the test manifest)" if column == "reverb" else ""
            raise DataError(f"{path}: no {column!r} column{hint}")
    second = roles[1] if len(roles) > 1 else None
    utts = []
    for uid, row in rows.items():
        numeric = {k: row[k] for k in NUMERIC_COLUMNS if k in row and k != "duration_s"}
        extra = Path(row[second]) if second else None
        utts.append(Utterance(uid, Path(row["reverb"]), Path(row[roles[0]]), numeric, extra))
    return TestSet(utts, f"manifest {path}", roles[0], second)


def _from_config(overrides: list[str], reference: str, sample_rate: int) -> TestSet:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dereverb.config import compose
    from dereverb.data import prepare

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise DataError(f"--data: {bad[0]!r} is not a config override (key=value); a folder or CSV comes alone")
    if not any(o.split("=", 1)[0].lstrip("+~") == "sample_rate" for o in overrides):
        overrides = [*overrides, f"sample_rate={sample_rate}"]
    try:
        cfg = compose("prepare", overrides)
        manifests = prepare(cfg.data, cfg.sample_rate, progress=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise DataError(f"--data {' '.join(overrides)}: {' '.join(str(err).split())}") from None
    test = _from_manifest(manifests["test"], reference)
    test.source = f"{' '.join(overrides)} (test split, {manifests['test']})"
    return test


# --------------------------------------------------------------------------------------------
# enhancement


def _batches(lengths: list[int], batch_size: int, pad_tolerance: float) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, longest first).

    An utterance joins a batch only if padding it to the batch's longest costs at most
    ``pad_tolerance`` of its length (0: only equal lengths share a batch, so every output is
    exactly what the model gives the utterance alone).

    Example:
        >>> _batches([100, 100, 90, 100], 2, 0.0)
        [[0, 1], [3], [2]]
        >>> _batches([100, 100, 95, 100], 4, 0.1)
        [[0, 1, 3, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and lengths[out[-1][0]] <= lengths[i] * (1 + pad_tolerance):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _enhance(model, signals: list[np.ndarray], batch_size: int, pad_tolerance: float, device: str, timing: list):
    """Model outputs (float32, each the length of its input); appends seconds per utterance to ``timing``."""
    import torch

    outputs: list[np.ndarray | None] = [None] * len(signals)
    with torch.inference_mode():
        for batch in _batches([len(s) for s in signals], batch_size, pad_tolerance):
            longest = len(signals[batch[0]])
            x = torch.zeros(len(batch), longest)
            for row, i in enumerate(batch):
                x[row, : len(signals[i])] = torch.from_numpy(signals[i])
            start = time.perf_counter()
            y = model(x.to(device)).float().cpu().numpy()
            elapsed = time.perf_counter() - start
            timing.extend([elapsed / len(batch)] * len(batch))
            for row, i in enumerate(batch):
                outputs[i] = np.ascontiguousarray(y[row, : len(signals[i])])
    return outputs


# --------------------------------------------------------------------------------------------
# the evaluation


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote and computed.

    Attributes:
        out: the output folder.
        rows: one dict per utterance (the CSV's columns; NaN where a metric is missing).
        summary: the content of ``summary.json``.
    """

    out: Path
    rows: list[dict]
    summary: dict


def _safe_name(uid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", uid) or "utt"


def _metric_rate(reference_rate: int) -> int:
    if reference_rate in METRIC_RATES:
        return reference_rate
    return 16000 if reference_rate > 16000 else 8000


@dataclass
class _Rates:
    """The sample rates of a test set's files: the most common reference rate, how many references
    have another one, and how many inputs have each rate."""

    reference: int
    other_references: int
    inputs: dict[int, int]

    @property
    def input(self) -> int:
        """The most common input rate (the higher on a tie)."""
        return max(self.inputs, key=lambda r: (self.inputs[r], r))


def _check_files(test: TestSet) -> _Rates:
    """Read every header (missing, empty, unreadable, multi-channel files fail now, in one line) and
    count the rates of the references and of the inputs."""
    from dereverb.data.audio import audio_info

    rates: dict[int, int] = {}
    inputs: dict[int, int] = {}
    for utt in test.utterances:
        for path in (utt.reverb, utt.reference, *([utt.second_reference] if utt.second_reference else [])):
            info = audio_info(path)
            if info.channels != 1:
                raise DataError(f"{path}: {info.channels} channels; only mono audio is supported")
            if info.frames == 0:
                raise DataError(f"{path}: contains no samples")
            if path == utt.reverb:
                inputs[info.sample_rate] = inputs.get(info.sample_rate, 0) + 1
            elif path == utt.reference:
                rates[info.sample_rate] = rates.get(info.sample_rate, 0) + 1
    common = max(rates, key=lambda r: (rates[r], r))
    return _Rates(common, sum(n for r, n in rates.items() if r != common), inputs)


def _input_rate_note(rates: _Rates, metric_rate: int, model_rate: int) -> str | None:
    """The note on inputs whose rate is not the references' (None when they all match).

    Example:
        >>> print(_input_rate_note(_Rates(16000, 0, {8000: 3}), 16000, 8000))
        inputs at 8000 Hz, references at 16000 Hz: each input was resampled to 16000 Hz to be scored (input_*, \
baselines) and to 8000 Hz for the model; the input has no content above 4 kHz, so check that the inputs and \
references belong together
    """
    common = rates.input
    others = sum(n for r, n in rates.inputs.items() if r != common)
    if common == rates.reference and not others:
        return None
    text = f"inputs at {common} Hz" + (f" ({others} at other rates)" if others else "")
    text += (
        f", references at {rates.reference} Hz: each input was resampled to {metric_rate} Hz to be scored "
        f"(input_*, baselines) and to {model_rate} Hz for the model"
    )
    if common < metric_rate:
        text += f"; the input has no content above {common // 2000} kHz"
    return text + ", so check that the inputs and references belong together"


def _check_arguments(baselines, batch_size, pad_tolerance, jobs, examples, limit, device) -> None:
    """Refuse a bad setting in one line naming the option."""
    from dereverb.baselines import BASELINES

    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise EvaluationError(f"--baselines {unknown[0]}: unknown (known: {', '.join(BASELINES)})")
    for option, value, low in (("--batch-size", batch_size, 1), ("--limit", limit, 1), ("--examples", examples, 0),
                               ("--jobs", jobs, 0)):  # fmt: skip
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise EvaluationError(f"{option} {value}: expected an integer >= {low}")
    if not (isinstance(pad_tolerance, int | float) and pad_tolerance >= 0):  # NaN fails too
        raise EvaluationError(f"--pad-tolerance {pad_tolerance}: expected a number >= 0")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise EvaluationError(f"--device {device}: expected cpu or cuda[:N] (the model runs on one of those)")


def _check_device(device: str) -> None:
    """Refuse a CUDA device that is not here (the syntax was checked by :func:`_check_arguments`)."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise EvaluationError(f"--device {device}: no CUDA device is available here")
    index = int(str(device).partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise EvaluationError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def _protected(model, data) -> list[tuple[str, Path]]:
    """The paths an evaluation must never replace: the model and the data it reads."""
    paths = []
    if isinstance(model, LoadedModel):
        if model.checkpoint is not None:
            paths.append(("the training run of the model", model.checkpoint.parent.parent))
    elif Path(model).exists():
        paths.append(("the model", Path(model)))
    if not isinstance(data, TestSet):
        items = [data] if isinstance(data, str | os.PathLike) else list(data)
        for item in map(str, items):
            value = item.split("=", 1)[1] if _is_config(items) and "=" in item else item
            if value and Path(value).expanduser().exists():
                paths.append(("the data", Path(value).expanduser()))
    return paths


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_out(out: Path, overwrite: bool, protected: Sequence[tuple[str, Path]] = ()) -> None:
    """Refuse an output folder the evaluation must not write, or (``overwrite``) must not replace.

    ``--overwrite`` replaces only an earlier evaluation's folder: one whose ``summary.json`` carries
    ``"format": "dereverb-evaluation"`` (or, from before that field, an evaluation's keys) and which
    holds nothing an evaluation does not write; an empty folder is replaced too. A training run, the
    model or the data being evaluated, the current folder, a file or a symbolic link never is.
    """
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise EvaluationError(f"--out {out}: {parent} is a file, not a folder")
    if out.is_symlink():
        raise EvaluationError(f"--out {out}: a symbolic link; give the results folder itself")
    if not out.exists():
        return
    if not out.is_dir():
        raise EvaluationError(f"--out {out}: an existing file, not a results folder; refusing to replace it")
    if not overwrite:
        raise EvaluationError(f"{out} already exists (pass --overwrite to replace an earlier evaluation there)")
    if _inside(Path.cwd(), out):
        raise EvaluationError(f"--out {out}: the current folder (or one holding it); refusing to replace it")
    for what, path in protected:
        if _inside(path, out):
            verb = "is" if path.resolve() == out.resolve() else "holds"
            raise EvaluationError(f"--out {out}: {verb} {what} ({path}); refusing to replace it")
    _check_replaceable(out)


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier evaluation's output (one line saying why)."""
    from dereverb.baselines import BASELINES
    from dereverb.report import FORMAT

    refuse = "refusing to replace it (move it away or choose another --out)"
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as err:
        raise EvaluationError(f"--out {out}: cannot list it ({err.strerror or err})") from None
    if not entries:
        return
    if "model_config.json" in entries or "save" in entries or "config.json" in entries:
        raise EvaluationError(f"--out {out}: a training run or a model folder, not an evaluation folder; {refuse}")
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise EvaluationError(
            f"--out {out}: not an evaluation folder written by dereverb-evaluate (no summary.json); {refuse}"
        )
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        summary = None
    legacy = isinstance(summary, dict) and {"model", "metrics", "columns", "n_utterances"} <= set(summary)
    if not (isinstance(summary, dict) and (summary.get("format") == FORMAT or legacy)):
        raise EvaluationError(
            f'--out {out}: its summary.json was not written by dereverb-evaluate (no "format": "{FORMAT}"); {refuse}'
        )
    known = {"results.csv", "summary.json", "summary.md", "report.html", "plots", "examples", "enhanced", *BASELINES}
    foreign = [name for name in entries if name not in known]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise EvaluationError(f"--out {out}: holds {foreign[0]}{more}, which dereverb-evaluate did not write; {refuse}")


def _check_data_outside(out: Path, overwrite: bool, utterances: Sequence[Utterance]) -> None:
    """Refuse to replace a folder that holds a file of the test set."""
    if not (overwrite and out.is_dir()):
        return
    for utt in utterances:
        for path in (utt.reverb, utt.reference, utt.second_reference):
            if path is not None and _inside(Path(path), out):
                raise EvaluationError(f"--out {out}: holds the test set's {path}; refusing to replace it")


def _row(utt: Utterance, rate: int, n_ref: int, n_scored: int, diff: int) -> dict:
    row = {"id": utt.id, "duration_s": n_ref / rate}
    row.update(utt.meta)
    row.update({"reference_samples": n_ref, "scored_samples": n_scored, "length_diff_samples": diff})
    return row


def evaluate(
    model: str | os.PathLike | LoadedModel,
    data: str | os.PathLike | Sequence[str] | TestSet,
    out: str | os.PathLike,
    *,
    reference: str = "auto",
    baselines: Sequence[str] = (),
    batch_size: int = 2,
    pad_tolerance: float = 0.0,
    jobs: int | None = None,
    device: str = "cpu",
    save_audio: bool = False,
    plots: bool = False,
    report: bool = False,
    examples: int = 3,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """Enhance a test set, score output / input / baselines, and write the results folder.

    Everything is written into a temporary folder next to ``out`` and renamed at the end, so
    ``out`` holds a complete evaluation or nothing new.

    Args:
        model: see :func:`load_model` (or an already loaded model).
        data: see :func:`load_test_set` (or a loaded test set).
        out: the results folder; must not exist unless ``overwrite``.
        reference: see :func:`load_test_set`; with two references the second one's metrics are
            the ``early_*`` columns (``early_si_sdr``, ``input_early_si_sdr``, ``delta_early_si_sdr``, ...).
        baselines: names from :data:`dereverb.baselines.BASELINES` (``"wpe"``).
        batch_size: utterances per model call.
        pad_tolerance: the padding an utterance may get to share a batch, as a fraction of its
            length (0: only equal lengths are batched; see :func:`_batches`).
        jobs: metric worker processes (None: one per CPU).
        device: where the model runs.
        save_audio: write the enhanced (and baseline) signals to ``enhanced/`` (``wpe/``).
        plots: write figures to ``plots/`` (needs matplotlib).
        report: write ``report.html`` (implies ``plots``).
        examples: utterances shown in the figures and the report.
        limit: evaluate only the first ``limit`` utterances.
        overwrite: replace ``out`` if an earlier evaluation wrote it (see :func:`_check_out`; anything
            else is refused before any work).
        progress: show a tqdm bar.

    Returns:
        The rows and the summary.

    Raises:
        EvaluationError, DataError, ModelFolderError: one line each.
    """
    from tqdm.auto import tqdm

    from dereverb.baselines import BASELINES, WpeSettings
    from dereverb.metrics import Scorer, metric_names

    total_start = time.perf_counter()
    out = Path(out)
    # every refusal comes before any work: arguments, the output folder, the test set's files, then the model
    _check_arguments(baselines, batch_size, pad_tolerance, jobs, examples, limit, device)
    _check_out(out, overwrite, _protected(model, data))
    plots = plots or report
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise EvaluationError("--plots and --report need matplotlib: pip install matplotlib") from None
    # a folder or manifest is listed before the model loads (its errors come first and fast); a dataset
    # config is prepared after, at the model's rate
    is_config = not isinstance(data, TestSet) and _is_config(data)
    test = data if isinstance(data, TestSet) or is_config else load_test_set(data, reference)
    if not is_config:
        _check_data_outside(out, overwrite, test.utterances)
    _check_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device)
    if is_config:
        test = load_test_set(data, reference, loaded.sample_rate)
        _check_data_outside(out, overwrite, test.utterances)
    from dereverb.data.audio import read_audio, resample_audio  # imports torch

    utterances = test.utterances[:limit] if limit else test.utterances
    rates = _check_files(TestSet(utterances, test.source, test.reference))
    ref_rate, other_rates = rates.reference, rates.other_references
    rate = _metric_rate(ref_rate)
    model_rate = loaded.sample_rate
    base_names = metric_names(rate)
    second = test.second_reference
    names = [*base_names, *([f"{second}_{n}" for n in base_names] if second else [])]
    notes = []
    if rate != ref_rate or other_rates:
        notes.append(f"references resampled to {rate} Hz for the metrics (PESQ is defined at 8 and 16 kHz only)")
    mismatch = _input_rate_note(rates, rate, model_rate)
    if mismatch:
        log.warning("%s", mismatch)
        notes.append(mismatch)
    if model_rate != rate:
        notes.append(
            f"the model works at {model_rate} Hz: each input was resampled from its file to {model_rate} Hz for "
            f"the model, and the output from {model_rate} Hz to {rate} Hz for the metrics"
        )
    flags = {}
    if model_rate < rate and "pesq_wb" in names:
        flags["pesq_wb"] = (
            f"the output's pesq_wb is that of a signal at {model_rate} Hz upsampled to {rate} Hz (no content above "
            f"{model_rate // 2000} kHz), compared with a full-band input"
        )
        notes.append(flags["pesq_wb"])
        if second:
            flags[f"{second}_pesq_wb"] = flags["pesq_wb"]
    wpe_settings = WpeSettings()

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    timing = {"read_s": 0.0, "enhance_s": 0.0, "baselines_s": 0.0, "metrics_s": 0.0, "write_s": 0.0}
    per_utt: dict[str, list[float]] = {"enhance": [], "metrics": [], "baselines": []}
    rows: list[dict] = []
    kept: list[dict] = []  # the signals of the example utterances, for figures and the report
    length_warnings = 0
    signals = ["output", "input", *baselines]
    try:
        for folder in (["enhanced"] if save_audio else []) + ([b for b in baselines] if save_audio else []):
            (tmp / folder).mkdir()
        chunk = max(16, batch_size)
        bar = tqdm(total=len(utterances), desc="evaluate", unit="utt", disable=not progress)

        def prepare(part: list[Utterance]) -> dict:
            """Read, enhance, run the baselines and crop one chunk (in this thread)."""
            nonlocal length_warnings
            t0 = time.perf_counter()
            model_in = [read_audio(u.reverb, model_rate, resample=True) for u in part]
            inputs = [read_audio(u.reverb, rate, resample=True) for u in part]
            refs = [read_audio(u.reference, rate, resample=True) for u in part]
            refs2 = [read_audio(u.second_reference, rate, resample=True) for u in part] if second else []
            timing["read_s"] += time.perf_counter() - t0
            bar.set_postfix_str("enhance")
            t0 = time.perf_counter()
            enhanced = _enhance(loaded.model, model_in, batch_size, pad_tolerance, device, per_utt["enhance"])
            estimates = {"output": [resample_audio(y, model_rate, rate) for y in enhanced], "input": inputs}
            timing["enhance_s"] += time.perf_counter() - t0
            for name in baselines:
                bar.set_postfix_str(name)
                estimates[name] = []
                for x in inputs:
                    t1 = time.perf_counter()
                    estimates[name].append(BASELINES[name](x, rate))
                    per_utt["baselines"].append(time.perf_counter() - t1)
                    timing["baselines_s"] += per_utt["baselines"][-1]
            # the length policy: crop every signal of an utterance to the shortest
            part_rows, ref_list, est_list, ref2_list = [], [], [], []
            for i, utt in enumerate(part):
                lengths = [len(refs[i]), *(len(r[i]) for r in [refs2] if second)]
                lengths += [len(estimates[s][i]) for s in signals]
                n, diff = min(lengths), max(lengths) - min(lengths)
                if diff > LENGTH_WARNING * len(refs[i]):
                    length_warnings += 1
                    log.warning(
                        "%s: signal lengths differ by %d samples (%.1f %% of the reference); cropped to %d",
                        utt.id, diff, 100 * diff / len(refs[i]), n,
                    )  # fmt: skip
                part_rows.append(_row(utt, rate, len(refs[i]), n, diff))
                for s in signals:
                    ref_list.append(refs[i][:n])
                    est_list.append(estimates[s][i][:n])
                    if second:
                        ref2_list.append(refs2[i][:n])
            # scored together (one parallel call): against the reference, then against the second one
            return {"part": part, "rows": part_rows, "refs": ref_list + ref2_list,
                    "ests": est_list + (est_list if second else []),
                    "estimates": estimates, "reference": refs, "model_in": model_in}  # fmt: skip

        def score(scorer, ctx: dict) -> tuple[list, float]:
            t0 = time.perf_counter()
            return scorer.score_many(ctx["refs"], ctx["ests"]), time.perf_counter() - t0

        def finish(ctx: dict, scores: list, elapsed: float) -> None:
            """Fill a chunk's rows from its scores, save its audio, keep its examples."""
            timing["metrics_s"] += elapsed
            part, estimates = ctx["part"], ctx["estimates"]
            per_utt["metrics"].extend([elapsed / len(part)] * len(part))
            n_first = len(part) * len(signals)
            for i, row in enumerate(ctx["rows"]):
                failures, values = [], {}
                for j, s in enumerate(signals):
                    sc = scores[i * len(signals) + j]
                    values[s] = dict(sc.values)
                    failures += [f"{s}.{k}: {why}" for k, why in sc.failures.items()]
                    if second:
                        sc2 = scores[n_first + i * len(signals) + j]
                        values[s].update(sc2.row(f"{second}_"))
                        failures += [f"{s}.{second}_{k}: {why}" for k, why in sc2.failures.items()]
                # columns grouped: output, input_, delta_, then each baseline's and its delta
                row.update(values["output"])
                row.update({f"input_{k}": v for k, v in values["input"].items()})
                row.update({f"delta_{k}": values["output"][k] - values["input"][k] for k in names})
                for b in baselines:
                    row.update({f"{b}_{k}": v for k, v in values[b].items()})
                    row.update({f"{b}_delta_{k}": values[b][k] - values["input"][k] for k in names})
                row["failures"] = "; ".join(failures)
                rows.append(row)
            t0 = time.perf_counter()
            for i, utt in enumerate(part):
                if save_audio:
                    for s, folder in [("output", "enhanced"), *[(b, b) for b in baselines]]:
                        _save(tmp / folder / f"{_safe_name(utt.id)}.wav", estimates[s][i], rate)
                if len(kept) < examples:
                    kept.append(
                        {"id": utt.id, "reference": ctx["reference"][i], "model_input": ctx["model_in"][i],
                         **{s: estimates[s][i] for s in signals}}
                    )  # fmt: skip
            timing["write_s"] += time.perf_counter() - t0
            bar.update(len(part))

        # one stage after the other: on 2 cores, scoring a chunk in the worker processes while the next one
        # was enhanced made both stages twice as slow (torch's threads and the workers fought for the cores)
        with Scorer(rate, jobs=jobs) as scorer, bar:
            for start in range(0, len(utterances), chunk):
                ctx = prepare(utterances[start : start + chunk])
                bar.set_postfix_str("metrics")
                finish(ctx, *score(scorer, ctx))
        from dereverb import report as rep

        summary = rep.build_summary(
            rows,
            names,
            signals,
            {
                "model": loaded.source,
                "model_class": type(loaded.model).__name__,
                "model_rate": model_rate,
                "data": test.source,
                "reference": test.reference,
                "second_reference": second,
                "reference_rate": ref_rate,
                "metric_rate": rate,
                "notes": notes,
                "flags": flags,
                "length_policy": (
                    "every signal of an utterance cropped to the shortest, from the start; "
                    f"differences above {LENGTH_WARNING:.0%} of the reference logged"
                ),
                "length_warnings": length_warnings,
                "baselines": {"wpe": wpe_settings.describe(rate)} if "wpe" in baselines else {},
                "batch_size": batch_size,
                "pad_tolerance": pad_tolerance,
            },
        )
        rep.write_csv(tmp / "results.csv", rows)
        figures = {}
        t0 = time.perf_counter()
        if plots:
            figures = rep.write_plots(tmp, kept, rows, loaded, rate, names, baselines)
        if report:
            rep.write_report(tmp, summary, figures, kept, rate)
        timing["plots_s"] = time.perf_counter() - t0
        timing["total_s"] = time.perf_counter() - total_start
        summary["timing"] = {
            **{k: round(v, 3) for k, v in timing.items()},
            "n_utterances": len(rows),
            **{f"{k}_s_per_utt_median": _median(v) for k, v in per_utt.items() if v},
        }
        rep.write_summary(tmp, summary)
        _publish(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s (%d utterances, %.1f s)", out, len(rows), time.perf_counter() - total_start)
    return EvaluationResult(out, rows, summary)


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 4)


def _save(path: Path, x: np.ndarray, rate: int) -> None:
    from dereverb.data.audio import write_audio

    if not np.isfinite(x).all():
        log.warning("%s: not written (non-finite samples)", path)
        return
    write_audio(path, x, rate)


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder to ``out`` (replacing an earlier evaluation only when asked)."""
    if os.path.lexists(out):
        if not overwrite:
            raise EvaluationError(f"{out} appeared while evaluating (pass --overwrite to replace it)")
        if out.is_symlink() or not out.is_dir():
            raise EvaluationError(f"--out {out}: became a file or a link while evaluating; refusing to replace it")
        _check_replaceable(out)  # again: it may have changed while evaluating
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        try:
            shutil.rmtree(old)
        except OSError as err:
            log.warning("%s: the replaced results could not be removed (%s)", old, err.strerror or err)
    else:
        os.replace(tmp, out)


# --------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dereverb-evaluate",
        description="Score a dereverberation model beside the unprocessed input (and WPE) on a test set.",
        epilog="Example: dereverb-evaluate --model results/dtcn/0 --data data=demo --out eval/dtcn --baselines wpe "
        "--report. Documentation: docs/evaluation.md",
    )
    p.add_argument("--model", required=True, help="shipped model name, model folder, or training folder results/N/S")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="DATA",
        help="paired folder (reverb/, clean/, early/), manifest CSV, or config overrides: data=demo | data=whamr "
        "data.root=DIR [sample_rate=16000]",
    )
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument(
        "--reference",
        choices=REFERENCES,
        default="auto",
        help="clean (the direct path for simulated data), early (direct path + 50 ms), both (early_* columns "
        "against early), or auto (default: both where the test set has early references, else clean)",
    )
    p.add_argument("--baselines", nargs="*", default=[], metavar="NAME", help="classical baselines to score: wpe")
    p.add_argument("--batch-size", type=int, default=2, help="utterances per model call (default 2)")
    p.add_argument(
        "--pad-tolerance",
        type=float,
        default=0.0,
        help="padding an utterance may get to share a batch, as a fraction of its length (default 0: equal "
        "lengths only, outputs exactly as unbatched)",
    )
    p.add_argument("--jobs", type=int, default=None, help="metric worker processes (default: one per CPU)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--save-audio", action="store_true", help="write the enhanced wavs (enhanced/, and wpe/)")
    p.add_argument("--plots", action="store_true", help="write figures to plots/ (needs matplotlib)")
    p.add_argument("--report", action="store_true", help="write report.html (implies --plots)")
    p.add_argument("--examples", type=int, default=3, help="utterances in the figures and the report (default 3)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N utterances")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier evaluation's output folder (nothing else)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 after one ``error:`` line)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    from dereverb.allocator import tune_glibc_malloc

    tune_glibc_malloc()  # as the training recipe: much faster CPU inference (DEREVERB_MALLOC=default opts out)
    try:
        result = evaluate(
            args.model,
            args.data,
            args.out,
            reference=args.reference,
            baselines=args.baselines,
            batch_size=args.batch_size,
            pad_tolerance=args.pad_tolerance,
            jobs=args.jobs,
            device=args.device,
            save_audio=args.save_audio,
            plots=args.plots,
            report=args.report,
            examples=args.examples,
            limit=args.limit,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (DataError, EvaluationError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except ValueError as err:  # imported here: a data error is reported without importing torch
        from dereverb.pretrained import ModelFolderError

        if not isinstance(err, ModelFolderError):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        print((result.out / "summary.md").read_text())
    return 0
