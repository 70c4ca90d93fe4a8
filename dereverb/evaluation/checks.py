"""The refusals of an evaluation, made before any work: bad settings, an output folder it must not
write or replace, and test files it cannot read.

``overwrite`` replaces only an earlier evaluation's folder: one whose ``summary.json`` carries
``"format": "dereverb-evaluation"`` (or, from before that field, an evaluation's keys) and which
holds nothing an evaluation does not write; an empty folder is replaced too. A training run, the
model or the data being evaluated, the current folder, a file or a symbolic link never is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dereverb.errors import ConfigError, DataError, EvaluationError
from dereverb.evaluation.summary import FORMAT
from dereverb.evaluation.testset import TestSet, Utterance, check_target, is_config
from dereverb.loading import LoadedModel

__all__ = [
    "Rates",
    "check_arguments",
    "check_data_outside",
    "check_files",
    "check_out",
    "check_replaceable",
    "check_runtime",
    "inside",
    "on_exists",
    "protected_paths",
]

_REFUSE = "refusing to replace it (move it away or choose another --out)"


def check_arguments(target: str, baselines, batch_size, pad_tolerance, jobs, examples, limit) -> None:
    """Refuse a bad setting in one line naming the option (without importing torch: this comes first).

    Raises:
        DataError: an unknown ``target``.
        EvaluationError: an unknown baseline, an integer out of range, a negative or NaN ``pad_tolerance``.
    """
    from dereverb.baselines import BASELINES

    check_target(target)
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise EvaluationError(f"--baselines {unknown[0]}: unknown (known: {', '.join(BASELINES)})")
    for option, value, low in (("--batch-size", batch_size, 1), ("--limit", limit, 1), ("--examples", examples, 0),
                               ("--jobs", jobs, 0)):  # fmt: skip
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise EvaluationError(f"{option} {value}: expected an integer >= {low}")
    if not (isinstance(pad_tolerance, int | float) and pad_tolerance >= 0):  # NaN fails too
        raise EvaluationError(f"--pad-tolerance {pad_tolerance}: expected a number >= 0")


def check_runtime(device: str, plots: bool) -> None:
    """Refuse a device this machine cannot run the model on, or ``plots`` without matplotlib.

    Raises:
        EvaluationError: ``--device ...: why`` (:func:`dereverb.loading.check_device`), or the missing matplotlib.
    """
    from dereverb.loading import check_device

    try:
        check_device(device)
    except ConfigError as err:
        raise EvaluationError(f"--device {err}") from None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise EvaluationError("--plots and --report need matplotlib: pip install matplotlib") from None


def protected_paths(model, data) -> list[tuple[str, Path]]:
    """The paths an evaluation must never replace: the model and the data it reads, ``(what, path)``."""
    paths = []
    if isinstance(model, LoadedModel):
        if model.checkpoint is not None:
            paths.append(("the training run of the model", model.checkpoint.parent.parent))
    elif Path(model).exists():
        paths.append(("the model", Path(model)))
    if not isinstance(data, TestSet):
        items = [data] if isinstance(data, str | os.PathLike) else list(data)
        for item in map(str, items):
            value = item.split("=", 1)[1] if is_config(items) and "=" in item else item
            if value and Path(value).expanduser().exists():
                paths.append(("the data", Path(value).expanduser()))
    return paths


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved).

    Example:
        >>> inside(Path("/a/b/c"), Path("/a/b")), inside(Path("/a/bc"), Path("/a/b"))
        (True, False)
    """
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_out(out: Path, overwrite: bool, protected: Sequence[tuple[str, Path]] = ()) -> None:
    """Refuse an output folder the evaluation must not write, or (``overwrite``) must not replace.

    Raises:
        EvaluationError: one line saying why (see the module docstring for what may be replaced).
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
    if inside(Path.cwd(), out):
        raise EvaluationError(f"--out {out}: the current folder (or one holding it); refusing to replace it")
    for what, path in protected:
        if inside(path, out):
            verb = "is" if path.resolve() == out.resolve() else "holds"
            raise EvaluationError(f"--out {out}: {verb} {what} ({path}); refusing to replace it")
    check_replaceable(out)


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier evaluation's output (one line saying why)."""
    from dereverb.baselines import BASELINES

    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as err:
        raise EvaluationError(f"--out {out}: cannot list it ({err.strerror or err})") from None
    if not entries:
        return
    if "model_config.json" in entries or "save" in entries or "config.json" in entries:
        raise EvaluationError(f"--out {out}: a training run or a model folder, not an evaluation folder; {_REFUSE}")
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise EvaluationError(
            f"--out {out}: not an evaluation folder written by dereverb-evaluate (no summary.json); {_REFUSE}"
        )
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        summary = None
    legacy = isinstance(summary, dict) and {"model", "metrics", "columns", "n_utterances"} <= set(summary)
    if not (isinstance(summary, dict) and (summary.get("format") == FORMAT or legacy)):
        raise EvaluationError(
            f'--out {out}: its summary.json was not written by dereverb-evaluate (no "format": "{FORMAT}"); {_REFUSE}'
        )
    known = {"results.csv", "summary.json", "summary.md", "report.html", "plots", "examples", "enhanced", *BASELINES}
    foreign = [name for name in entries if name not in known]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise EvaluationError(
            f"--out {out}: holds {foreign[0]}{more}, which dereverb-evaluate did not write; {_REFUSE}"
        )


def on_exists(overwrite: bool) -> Callable[[Path], bool]:
    """The ``on_exists`` policy of :func:`dereverb.atomic.atomic_folder` for the results folder.

    At publish time an existing folder (it may have appeared, or changed, while evaluating) is
    replaced only with ``overwrite`` and only if it still is an earlier evaluation's folder.
    """

    def decide(out: Path) -> bool:
        if not overwrite:
            raise EvaluationError(f"{out} appeared while evaluating (pass --overwrite to replace it)")
        if out.is_symlink() or not out.is_dir():
            raise EvaluationError(f"--out {out}: became a file or a link while evaluating; refusing to replace it")
        check_replaceable(out)
        return True

    return decide


def check_data_outside(out: Path, overwrite: bool, utterances: Sequence[Utterance]) -> None:
    """Refuse to replace a folder that holds a file of the test set."""
    if not (overwrite and out.is_dir()):
        return
    for utt in utterances:
        for path in utt.files():
            if inside(path, out):
                raise EvaluationError(f"--out {out}: holds the test set's {path}; refusing to replace it")


@dataclass
class Rates:
    """The sample rates of a test set's files.

    Attributes:
        target: the most common rate of the primary target's files.
        other_targets: how many of those files have another rate.
        inputs: rate -> how many inputs have it.
    """

    target: int
    other_targets: int
    inputs: dict[int, int]

    @property
    def input(self) -> int:
        """The most common input rate (the higher on a tie)."""
        return max(self.inputs, key=lambda r: (self.inputs[r], r))


def check_files(utterances: Sequence[Utterance]) -> Rates:
    """Read every header: a missing, empty, unreadable or multi-channel file fails now, in one line.

    Returns:
        The rates of the inputs and of the primary target's files.

    Raises:
        DataError: naming the file.
    """
    from dereverb.data.audio import audio_info

    targets: dict[int, int] = {}
    inputs: dict[int, int] = {}
    for utt in utterances:
        for path in utt.files():
            info = audio_info(path)
            if info.channels != 1:
                raise DataError(f"{path}: {info.channels} channels; only mono audio is supported")
            if info.frames == 0:
                raise DataError(f"{path}: contains no samples")
            if path == utt.reverberant:
                inputs[info.sample_rate] = inputs.get(info.sample_rate, 0) + 1
            elif path == utt.target:
                targets[info.sample_rate] = targets.get(info.sample_rate, 0) + 1
    common = max(targets, key=lambda r: (targets[r], r))
    return Rates(common, sum(n for r, n in targets.items() if r != common), inputs)
