"""Run an evaluation: enhance a test set, score the output, the input and the baselines, write the results.

:func:`evaluate` makes every refusal first (:mod:`dereverb.evaluation.checks`), lists the test set
(:mod:`dereverb.evaluation.testset`), loads the model (:func:`dereverb.loading.load_model`), then
works through the utterances in chunks: read, enhance, run the baselines, crop, score
(:class:`dereverb.metrics.Scorer`), and writes the tables (:mod:`dereverb.evaluation.summary`),
figures and report into a temporary folder that becomes the results folder when complete
(:func:`dereverb.atomic.atomic_folder`).

Policies:

* **Rates.** Metrics are computed at the primary target's rate (8 or 16 kHz; a target at another
  rate is resampled to 16 kHz, or 8 kHz below 16 kHz). The model gets the input resampled from
  its file to the model's rate, and its output is resampled to the metric rate; the summary says
  so, and flags ``pesq_wb`` of an 8 kHz model's upsampled output.
* **Lengths.** All signals of an utterance are cropped to the shortest (from the start); the CSV
  records the difference, and a difference above 1 % of the target is logged and counted.
* **Failures.** A metric that cannot be computed is missing (an empty cell, the reason in the
  ``failures`` column), counted in the summary, never 0 and never dropped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dereverb.atomic import atomic_folder
from dereverb.evaluation.checks import check_arguments, check_out, check_runtime, on_exists, protected_paths
from dereverb.evaluation.figures import Example, write_plots
from dereverb.evaluation.html_report import write_report
from dereverb.evaluation.plan import Plan, make_plan, resolve
from dereverb.evaluation.summary import build_summary, safe_name, write_csv, write_summary
from dereverb.evaluation.testset import TestSet, Utterance
from dereverb.loading import LoadedModel

__all__ = ["LENGTH_WARNING", "EvaluationResult", "evaluate"]

log = logging.getLogger(__name__)

LENGTH_WARNING = 0.01
"""A length difference above this fraction of the target is logged and counted."""
_STAGES = ("read_s", "enhance_s", "baselines_s", "metrics_s", "write_s")


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


@dataclass
class _Options:
    """The settings of one run that the steps below need."""

    batch_size: int
    pad_tolerance: float
    jobs: int | None
    device: str
    save_audio: bool
    plots: bool
    report: bool
    examples: int
    progress: bool


@dataclass
class _Tally:
    """What the chunks add up to: rows, example signals, timings and length warnings."""

    timing: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_STAGES, 0.0))
    per_utt: dict[str, list[float]] = field(default_factory=lambda: {"enhance": [], "metrics": [], "baselines": []})
    rows: list[dict] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    length_warnings: int = 0


@dataclass
class _Chunk:
    """The signals of a few utterances on their way through one run (each list in utterance order)."""

    part: list[Utterance]
    model_in: list[np.ndarray]  # the inputs at the model's rate
    estimates: dict[str, list[np.ndarray]]  # signal ("output", "input", baselines) -> at the metric rate
    targets: dict[str, list[np.ndarray]]  # target -> at the metric rate
    rows: list[dict] = field(default_factory=list)
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (estimate, target) to score


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


def _enhance(model, signals: list[np.ndarray], opts: _Options, timing: list[float]) -> list[np.ndarray]:
    """Model outputs (float32, each the length of its input); appends seconds per utterance to ``timing``."""
    import torch

    outputs: list[np.ndarray | None] = [None] * len(signals)
    with torch.inference_mode():
        for batch in _batches([len(s) for s in signals], opts.batch_size, opts.pad_tolerance):
            longest = len(signals[batch[0]])
            x = torch.zeros(len(batch), longest)
            for row, i in enumerate(batch):
                x[row, : len(signals[i])] = torch.from_numpy(signals[i])
            start = time.perf_counter()
            y = model(x.to(opts.device)).float().cpu().numpy()
            elapsed = time.perf_counter() - start
            timing.extend([elapsed / len(batch)] * len(batch))
            for row, i in enumerate(batch):
                outputs[i] = np.ascontiguousarray(y[row, : len(signals[i])])
    return outputs


def _prepare(plan: Plan, part: list[Utterance], opts: _Options, tally: _Tally, bar) -> _Chunk:
    """Read, enhance and run the baselines on a few utterances, then crop them (:func:`_crop`)."""
    from dereverb.baselines import BASELINES
    from dereverb.data.audio import read_audio, resample_audio  # imports torch

    t0 = time.perf_counter()
    model_rate = plan.loaded.sample_rate
    model_in = [read_audio(u.reverberant, model_rate, resample=True) for u in part]
    inputs = [read_audio(u.reverberant, plan.rate, resample=True) for u in part]
    targets = {t: [read_audio(u.targets[t], plan.rate, resample=True) for u in part] for t in plan.targets}
    tally.timing["read_s"] += time.perf_counter() - t0
    bar.set_postfix_str("enhance")
    t0 = time.perf_counter()
    enhanced = _enhance(plan.loaded.model, model_in, opts, tally.per_utt["enhance"])
    estimates = {"output": [resample_audio(y, model_rate, plan.rate) for y in enhanced], "input": inputs}
    tally.timing["enhance_s"] += time.perf_counter() - t0
    for name in plan.baselines:
        bar.set_postfix_str(name)
        estimates[name] = []
        for x in inputs:
            t1 = time.perf_counter()
            estimates[name].append(BASELINES[name](x, plan.rate))
            tally.per_utt["baselines"].append(time.perf_counter() - t1)
            tally.timing["baselines_s"] += tally.per_utt["baselines"][-1]
    chunk = _Chunk(part, model_in, estimates, targets)
    _crop(plan, chunk, tally)
    return chunk


def _crop(plan: Plan, chunk: _Chunk, tally: _Tally) -> None:
    """The length policy: crop every signal of an utterance to the shortest; fill the chunk's rows (identity
    and lengths) and its pairs to score, target by target, utterance by utterance, signal by signal."""
    lengths = []
    for i, utt in enumerate(chunk.part):
        n_target = len(chunk.targets[plan.targets[0]][i])
        sizes = [len(chunk.targets[t][i]) for t in plan.targets] + [len(chunk.estimates[s][i]) for s in plan.signals]
        n, diff = min(sizes), max(sizes) - min(sizes)
        if diff > LENGTH_WARNING * n_target:
            tally.length_warnings += 1
            log.warning(
                "%s: signal lengths differ by %d samples (%.1f %% of the target); cropped to %d",
                utt.id, diff, 100 * diff / n_target, n,
            )  # fmt: skip
        row = {"id": utt.id, "duration_s": n_target / plan.rate, **utt.meta}
        row.update({"target_samples": n_target, "scored_samples": n, "length_diff_samples": diff})
        chunk.rows.append(row)
        lengths.append(n)
    for t in plan.targets:
        for i, n in enumerate(lengths):
            chunk.pairs += [(chunk.estimates[s][i][:n], chunk.targets[t][i][:n]) for s in plan.signals]


def _fill_rows(plan: Plan, chunk: _Chunk, scores: list) -> list[dict]:
    """The chunk's rows with their metric columns, grouped: output, input_, delta_, then each baseline and its
    delta; ``failures`` says why a value is missing."""
    n_utt, signals = len(chunk.part), plan.signals
    for i, row in enumerate(chunk.rows):
        failures, values = [], {s: {} for s in signals}
        for k, t in enumerate(plan.targets):
            for j, s in enumerate(signals):
                sc = scores[(k * n_utt + i) * len(signals) + j]
                values[s].update(sc.row(f"{t}_"))
                failures += [f"{s}.{t}_{m}: {why}" for m, why in sc.failures.items()]
        row.update(values["output"])
        row.update({f"input_{n}": v for n, v in values["input"].items()})
        row.update({f"delta_{n}": values["output"][n] - values["input"][n] for n in plan.names})
        for b in plan.baselines:
            row.update({f"{b}_{n}": v for n, v in values[b].items()})
            row.update({f"{b}_delta_{n}": values[b][n] - values["input"][n] for n in plan.names})
        row["failures"] = "; ".join(failures)
    return chunk.rows


def _keep(plan: Plan, chunk: _Chunk, folder: Path, opts: _Options, tally: _Tally) -> None:
    """Save the chunk's enhanced audio (``save_audio``) and keep the first ``examples`` utterances' signals."""
    t0 = time.perf_counter()
    first = plan.targets[0]
    for i, utt in enumerate(chunk.part):
        if opts.save_audio:
            for s, sub in [("output", "enhanced"), *[(b, b) for b in plan.baselines]]:
                _save(folder / sub / f"{safe_name(utt.id)}.wav", chunk.estimates[s][i], plan.rate)
        if len(tally.examples) < opts.examples:
            signals = {s: chunk.estimates[s][i] for s in plan.signals}
            tally.examples.append(Example(utt.id, chunk.model_in[i], signals, chunk.targets[first][i], first))
    tally.timing["write_s"] += time.perf_counter() - t0


def _save(path: Path, x: np.ndarray, rate: int) -> None:
    from dereverb.data.audio import write_audio

    if not np.isfinite(x).all():
        log.warning("%s: not written (non-finite samples)", path)
        return
    write_audio(path, x, rate)


def _run(plan: Plan, folder: Path, opts: _Options) -> _Tally:
    """Enhance and score every utterance, chunk by chunk, saving audio into ``folder`` as asked."""
    from tqdm.auto import tqdm

    from dereverb.metrics import Scorer

    tally = _Tally()
    if opts.save_audio:
        for name in ["enhanced", *plan.baselines]:
            (folder / name).mkdir()
    size = max(16, opts.batch_size)
    bar = tqdm(total=len(plan.utterances), desc="evaluate", unit="utt", disable=not opts.progress)
    # one stage after the other: on 2 cores, scoring a chunk in the worker processes while the next one
    # was enhanced made both stages twice as slow (torch's threads and the workers fought for the cores)
    with Scorer(plan.rate, jobs=opts.jobs) as scorer, bar:
        for start in range(0, len(plan.utterances), size):
            chunk = _prepare(plan, plan.utterances[start : start + size], opts, tally, bar)
            bar.set_postfix_str("metrics")
            t0 = time.perf_counter()
            scores = scorer.score_many(*zip(*chunk.pairs, strict=True))
            elapsed = time.perf_counter() - t0
            tally.timing["metrics_s"] += elapsed
            tally.per_utt["metrics"].extend([elapsed / len(chunk.part)] * len(chunk.part))
            tally.rows += _fill_rows(plan, chunk, scores)
            _keep(plan, chunk, folder, opts, tally)
            bar.update(len(chunk.part))
    return tally


def _write_outputs(folder: Path, plan: Plan, test: TestSet, tally: _Tally, opts: _Options, start: float) -> dict:
    """Write ``results.csv``, the figures, ``report.html`` and the summary into ``folder``; returns the summary."""
    from dereverb.baselines import WpeSettings

    info = {
        "model": plan.loaded.source,
        "model_class": type(plan.loaded.model).__name__,
        "model_rate": plan.loaded.sample_rate,
        "data": test.source,
        "targets": list(plan.targets),
        "target_rate": plan.target_rate,
        "metric_rate": plan.rate,
        "notes": plan.notes,
        "flags": plan.flags,
        "length_policy": (
            "every signal of an utterance cropped to the shortest, from the start; "
            f"differences above {LENGTH_WARNING:.0%} of the target logged"
        ),
        "length_warnings": tally.length_warnings,
        "baselines": {"wpe": WpeSettings().describe(plan.rate)} if "wpe" in plan.baselines else {},
        "batch_size": opts.batch_size,
        "pad_tolerance": opts.pad_tolerance,
    }
    summary = build_summary(tally.rows, plan.names, plan.signals, info)
    write_csv(folder / "results.csv", tally.rows)
    t0 = time.perf_counter()
    figures = {}
    if opts.plots:
        figures = write_plots(folder, tally.examples, tally.rows, plan.loaded, plan.rate, plan.names,
                              plan.baselines, plan.targets[0])  # fmt: skip
    if opts.report:
        write_report(folder, summary, figures, tally.examples, plan.rate)
    tally.timing["plots_s"] = time.perf_counter() - t0
    tally.timing["total_s"] = time.perf_counter() - start
    summary["timing"] = {
        **{k: round(v, 3) for k, v in tally.timing.items()},
        "n_utterances": len(tally.rows),
        **{f"{k}_s_per_utt_median": round(float(np.median(v)), 4) for k, v in tally.per_utt.items() if v},
    }
    write_summary(folder, summary)
    return summary


def evaluate(
    model: str | os.PathLike | LoadedModel,
    data: str | os.PathLike | Sequence[str] | TestSet,
    out: str | os.PathLike,
    *,
    target: str = "auto",
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
    """Enhance a test set, score output / input / baselines against each target, and write the results folder.

    Everything is written into a temporary folder next to ``out`` and renamed at the end, so
    ``out`` holds a complete evaluation or nothing new.

    Args:
        model: see :func:`dereverb.loading.load_model` (or an already loaded model).
        data: see :func:`dereverb.evaluation.load_test_set` (or a loaded test set).
        out: the results folder; must not exist unless ``overwrite``.
        target: see :func:`dereverb.evaluation.load_test_set`; each target's metrics are the columns
            prefixed by its name (``direct_si_sdr``, ``input_early_si_sdr``, ``delta_early_si_sdr``, ...).
        baselines: names from :data:`dereverb.baselines.BASELINES` (``"wpe"``).
        batch_size: utterances per model call.
        pad_tolerance: the padding an utterance may get to share a batch, as a fraction of its
            length (0: only equal lengths are batched).
        jobs: metric worker processes (None: one per CPU).
        device: where the model runs (``cpu``, ``cuda``, ``cuda:N``).
        save_audio: write the enhanced (and baseline) signals to ``enhanced/`` (``wpe/``).
        plots: write figures to ``plots/`` (needs matplotlib).
        report: write ``report.html`` (implies ``plots``).
        examples: utterances shown in the figures and the report.
        limit: evaluate only the first ``limit`` utterances.
        overwrite: replace ``out`` if an earlier evaluation wrote it (see :mod:`dereverb.evaluation.checks`;
            anything else is refused before any work).
        progress: show a tqdm bar.

    Returns:
        The rows and the summary.

    Raises:
        EvaluationError, DataError, ModelFolderError: one line each.
    """
    start = time.perf_counter()
    out = Path(out)
    # every refusal comes before any work: arguments, the output folder, the test set's files, then the model
    check_arguments(target, baselines, batch_size, pad_tolerance, jobs, examples, limit)
    check_out(out, overwrite, protected_paths(model, data))
    check_runtime(device, plots or report)
    opts = _Options(batch_size, pad_tolerance, jobs, device, save_audio, plots or report, report, examples, progress)
    test, loaded = resolve(model, data, out, target, device, overwrite)
    plan = make_plan(test, loaded, limit, list(baselines))
    with atomic_folder(out, on_exists=on_exists(overwrite)) as folder:
        tally = _run(plan, folder, opts)
        summary = _write_outputs(folder, plan, test, tally, opts, start)
    log.info("wrote %s (%d utterances, %.1f s)", out, len(tally.rows), time.perf_counter() - start)
    return EvaluationResult(out, tally.rows, summary)
