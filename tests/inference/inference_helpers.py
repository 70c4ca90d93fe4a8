"""Helpers shared by the inference tests: tiny models, test signals written as files, the command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dereverb.data.audio import resample_audio

#: a tiny TCN/DTCN configuration
TINY = {"N": 32, "B": 16, "H": 32, "X": 3, "R": 1}
#: the repository
ROOT = Path(__file__).parents[2]


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-zero offsets too: an untrained DTCN's offset predictors are zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_wav(path: Path, x: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    """Write ``x`` (``[T]`` or ``[C, T]``) to ``path``; returns ``path``."""
    sf.write(str(path), x.T if x.ndim == 2 else x, rate, subtype=subtype)
    return path


def resample(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """``x`` from rate ``a`` to rate ``b``."""
    return resample_audio(np.asarray(x, np.float32), a, b)


def level(reverberant, peak: float, n: int = 8000) -> np.ndarray:
    """The first ``n`` samples of the reverberant signal, scaled to the peak ``peak``."""
    return peak * reverberant[0][:n] / np.abs(reverberant[0][:n]).max()


def left_behind(folder: Path) -> list[str]:
    """Temporary files (``.NAME.XXXX.tmp``) anywhere under ``folder``."""
    return sorted(p.name for p in folder.rglob(".*"))


# A command line whose model's output turns to NaN for inputs louder than $NAN_ABOVE: the weights of a
# model folder can be broken in ways a loader cannot see, and only the output shows it.
_BROKEN_CLI = """
import os, sys
import dereverb.pretrained as pretrained
from dereverb.cli.enhance import main

load = pretrained.from_pretrained
above = float(os.environ["NAN_ABOVE"])

def broken(*args, **kwargs):
    model = load(*args, **kwargs)
    model.register_forward_hook(lambda m, i, o: o * float("nan") if float(i[0].abs().max()) > above else o)
    return model

pretrained.from_pretrained = broken
sys.exit(main(sys.argv[1:]))
"""


def run_cli(*args, nan_above: float | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """``dereverb-enhance ARGS --quiet`` in a subprocess (with a broken model when ``nan_above`` is set),
    importing this checkout's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if nan_above is None:
        cmd = [sys.executable, str(ROOT / "scripts" / "enhance.py")]
    else:
        cmd = [sys.executable, "-c", _BROKEN_CLI]
        env["NAN_ABOVE"] = str(nan_above)
    return subprocess.run([*cmd, *map(str, args), "--quiet"], capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=preexec_fn)  # fmt: skip


def nan_weights(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with one weight set to NaN."""
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    return model
