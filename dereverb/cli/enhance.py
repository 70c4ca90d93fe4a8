"""``dereverb-enhance IN... -o OUT``: dereverberate audio files with a shipped or trained model.

One input gives one output file; several inputs, or a folder, give a folder of outputs with the
same names. Every input is read through and checked (header, NaN/Inf, output format) and every
model is loaded before anything is written: one bad input refuses the run with one ``error:``
line per problem. A failure that only processing reveals (a model output with NaN or Inf, a full
disk) skips that file, and the run ends with ``error: written N, failed M (names)``;
``--skip-existing`` then completes the rest. Exit status: 0 when every input was enhanced (or
skipped with ``--skip-existing``), 2 after ``error:`` lines, 130 when interrupted (finished files
are kept). Options and behaviour: docs/inference.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from dereverb.allocator import tune_glibc_malloc
from dereverb.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    add_device,
    add_quiet,
    command,
    print_error,
    setup_logging,
)
from dereverb.data.audio import AudioInfo, check_samples
from dereverb.errors import ConfigError, DataError, EnhanceError, OutputExistsError, one_line
from dereverb.inference import AUDIO_SUFFIXES, DEFAULT_CHUNK_SECONDS, Dereverberator, default_model, output_format
from dereverb.loading import check_device

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)

OVERWRITE_HINT = "pass --overwrite to replace, or --skip-existing to keep"


def build_parser() -> argparse.ArgumentParser:
    """The options of ``dereverb-enhance``.

    Example:
        >>> build_parser().parse_args(["in.wav", "-o", "out.wav"]).gain
        'auto'
    """
    p = argparse.ArgumentParser(
        prog="dereverb-enhance",
        description="Dereverberate speech recordings with a shipped or trained dereverb model.",
        epilog="Examples: dereverb-enhance in.wav -o out.wav | dereverb-enhance recordings/ -o enhanced/ "
        "--model dtcn-16k. Documentation: docs/inference.md",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files (wav, flac, ...) or folders of them")
    p.add_argument(
        "-o", "--output", required=True, help="output file (one input) or folder (several inputs or a folder)"
    )
    p.add_argument("--model", default=None, help="shipped name (dtcn-8k, dtcn-16k) or model folder; default: the "
                   "shipped DTCN nearest to the input's rate")  # fmt: skip
    add_device(p)
    p.add_argument("--mix-down", action="store_true", help="average the channels and write mono")
    p.add_argument("--subtype", default=None, help="output subtype (PCM_16, FLOAT, ...); default: the input's")
    p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                   help=f"segment length for long files (default {DEFAULT_CHUNK_SECONDS:g})")  # fmt: skip
    p.add_argument("--gain", default="auto", help="auto (default: the model's calibrated output gain, else input), "
                   "input (match each segment to the input's level), none (raw output), or a number")  # fmt: skip
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep existing outputs, enhance the other inputs (resumes a run)"
    )
    add_quiet(p)
    return p


class Job(NamedTuple):
    """One input to enhance: where it is written, what it holds, and the model it gets."""

    src: Path
    dst: Path
    info: AudioInfo
    model: str


def collect_inputs(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """The input files (a folder gives its audio files) and whether the output is a folder.

    Raises:
        DataError: a folder without audio files, or two inputs with the same file name.
    """
    files: list[Path] = []
    folder_in = False
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise DataError(f"{p}: folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            files.extend(found)
            folder_in = True
        else:
            files.append(p)
    names = [f.name for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"several inputs share the file name {dupes[0]!r}: their outputs would collide")
    return files, folder_in or len(files) > 1


def _pairs(args: argparse.Namespace, files: list[Path], to_folder: bool) -> list[tuple[Path, Path]]:
    """``(input, output)`` of every input; refuses an output that is not where it can go."""
    out = Path(args.output)
    if to_folder:
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: several inputs need an output folder, and this is a file")
        pairs = [(f, out / f.name) for f in files]
    else:
        pairs = [(files[0], out / files[0].name if out.is_dir() else out)]
    for f, o in pairs:
        if o.exists() and o.resolve() == f.resolve():
            raise DataError(f"{o}: the output would replace its own input")
    taken = [o for _, o in pairs if os.path.lexists(o)]
    if taken and not (args.overwrite or args.skip_existing):
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise DataError(f"output exists: {', '.join(map(str, taken[:3]))}{more} ({OVERWRITE_HINT})")
    return pairs


def _settings(args: argparse.Namespace) -> tuple[str | float, torch.device]:
    """``(gain, device)`` from the command line, each checked before anything is read."""
    gain = args.gain
    if gain not in ("auto", "input", "none"):
        try:
            gain = float(gain)
        except ValueError:
            raise EnhanceError(f"--gain {gain!r}: expected auto, input, none or a number") from None
    if not (math.isfinite(args.chunk_seconds) and args.chunk_seconds > 0):
        raise EnhanceError(
            f"--chunk-seconds {args.chunk_seconds:g}: chunk_seconds must be a positive finite number of seconds"
        )
    try:
        device = check_device(args.device)
    except ConfigError as err:
        raise ConfigError(f"--device {err}") from None
    return gain, device


def _names(paths: Sequence[Path], limit: int = 10) -> str:
    names = [p.name for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _failure(err: BaseException, src: Path) -> str:
    """The ``error:`` text of an input that failed while it was processed."""
    if isinstance(err, OutputExistsError):
        return f"{err.path}: file exists ({OVERWRITE_HINT} it)"
    if isinstance(err, MemoryError | torch.cuda.OutOfMemoryError):
        return f"{src}: out of memory (try a smaller --chunk-seconds)"
    return one_line(err)


class EnhanceRun:
    """One run of the command: checked jobs and loaded models first, then the enhancing, then a summary."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.jobs: list[Job] = []
        self.skipped: list[Path] = []
        self.written: list[Path] = []
        self.failed: list[Path] = []
        self.models: dict[str, Dereverberator] = {}

    def prepare(self) -> bool:
        """Check every setting, input and output and load every model; nothing is written yet.

        Returns ``False`` when several inputs have problems (each printed as an ``error:`` line).

        Raises:
            DereverbError, OSError: a problem of the run as a whole, or of its one input.
        """
        args = self.args
        gain, device = _settings(args)
        files, to_folder = collect_inputs(args.inputs)
        pairs = _pairs(args, files, to_folder)
        self.skipped = [o for _, o in pairs if os.path.lexists(o)] if args.skip_existing else []
        checked, problems = [], []
        for src, dst in pairs:
            if dst in self.skipped:
                continue
            try:  # the whole file is read once: NaN/Inf, decoding errors and truncation refuse the run now
                info = check_samples(src)
                output_format(dst, info, args.subtype, args.mix_down)
                checked.append((src, dst, info))
            except DataError as err:
                problems.append(str(err))
        if problems and len(pairs) == 1:
            raise DataError(problems[0])
        if problems:
            for line in problems:
                print_error(line)
            print_error(f"nothing written: {len(problems)} of {len(pairs)} inputs cannot be processed")
            return False
        self.jobs = [Job(src, dst, info, args.model or default_model(info.sample_rate)) for src, dst, info in checked]
        tune_glibc_malloc()  # much faster CPU inference here (DEREVERB_MALLOC=default opts out)
        for job in self.jobs:  # every model loaded before anything is written
            if job.model not in self.models:
                self.models[job.model] = Dereverberator.from_pretrained(
                    job.model, device=device, chunk_seconds=args.chunk_seconds, gain=gain
                )
        if to_folder:
            Path(args.output).mkdir(parents=True, exist_ok=True)
        return True

    def enhance_all(self) -> None:
        """Enhance every job; a file that fails is reported in one line and skipped."""
        from tqdm import tqdm

        args = self.args
        for dst in self.skipped:
            log.info("%s exists: skipped", dst)
        total = sum(job.info.duration_s for job in self.jobs)
        with tqdm(total=round(total, 1), unit="s", desc="enhancing", disable=args.quiet or None) as bar:
            for src, dst, info, name in self.jobs:
                bar.set_postfix_str(src.name)
                try:
                    self.models[name].enhance_file(
                        src, dst, overwrite=args.overwrite, mix_down=args.mix_down, subtype=args.subtype,
                        progress=lambda n, r=info.sample_rate: bar.update(round(n / r, 1)),
                    )  # fmt: skip
                except (DataError, EnhanceError, OSError, MemoryError, torch.cuda.OutOfMemoryError) as err:
                    bar.clear()
                    print_error(_failure(err, src))
                    self.failed.append(src)
                    continue
                self.written.append(dst)
                log.info("%s -> %s (%s)", src, dst, name)

    def finish(self) -> int:
        """Report the run (``written N, failed M (names)`` after a failure); the exit status."""
        several = len(self.jobs) + len(self.skipped) > 1
        summary = f"written {len(self.written)}" + (f", skipped {len(self.skipped)}" if self.skipped else "")
        if self.failed:
            if several:
                print_error(f"{summary}, failed {len(self.failed)} ({_names(self.failed)})")
            return EXIT_ERROR
        if several or self.skipped:
            log.info(summary)
        return 0

    def interrupted(self) -> int:
        """Ctrl-C: say what was written and how to finish; the exit status."""
        done = f"written {len(self.written)} of {len(self.jobs)} (run again with --skip-existing to finish)"
        print_error(f"interrupted; {done if self.written else 'nothing written'}")
        return EXIT_INTERRUPTED


@command
def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    0 when every input was enhanced (or skipped with ``--skip-existing``); 2 after ``error:``
    lines: one when nothing could start (nothing is written), else one per failed file and a
    last ``written N, failed M (names)``; 130 when interrupted (finished files are kept).
    """
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    run = EnhanceRun(args)
    try:
        if not run.prepare():  # every input read and checked, every model loaded, before any work
            return EXIT_ERROR
        run.enhance_all()
    except KeyboardInterrupt:
        return run.interrupted()
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
