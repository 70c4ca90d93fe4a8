"""Fixtures of the inference tests: real speech in a simulated room, and a tiny DTCN model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import TINY, perturbed

from dereverb.data import rooms, speech_pack
from dereverb.data.audio import read_audio
from dereverb.models import DTCN
from dereverb.pretrained import save_pretrained


@pytest.fixture(scope="module")
def speech8k() -> np.ndarray:
    """About 6 s of real speech from the shipped pack at 8 kHz (a few test utterances joined)."""
    files = [f for f in speech_pack.load_manifest("test") if f.duration_s >= 1.0][:4]
    return np.concatenate([read_audio(f.path, 8000, resample=True) for f in files])


@pytest.fixture(scope="module")
def reverberant(speech8k, rir_bank) -> tuple[np.ndarray, np.ndarray]:
    """``(reverberant, direct)`` at 8 kHz."""
    return rooms.reverberate(speech8k, rir_bank[0], "direct")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny DTCN at 8 kHz with random non-zero weights, as a model folder."""
    torch.manual_seed(0)
    return save_pretrained(perturbed(DTCN(**TINY)), tmp_path_factory.mktemp("models") / "dtcn8k", 8000)
