"""Fixtures of the evaluation tests: tiny paired test sets of real speech, a tiny model, a fake training folder."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dereverb.data import rooms, speech_pack
from dereverb.data.audio import read_audio, write_audio
from dereverb.data.manifests import write_manifest
from dereverb.models import DTCN, TCN
from dereverb.pretrained import save_pretrained

TINY = {"N": 32, "B": 16, "H": 32, "X": 2, "R": 1}
"""A tiny TCN/DTCN: fast enough to evaluate in a test."""


def _speech(n: int, rate: int) -> list[tuple[str, np.ndarray]]:
    """``n`` short utterances (1 to 2.5 s) of the shipped speech pack at ``rate``."""
    files = [f for f in speech_pack.load_manifest("test", min_sample_rate=16000) if 1.0 <= f.duration_s <= 2.5]
    return [(f.id, read_audio(f.path, rate, resample=True)) for f in files[:n]]


def _synthetic_rir(rate: int, t60: float = 0.5, seed: int = 0) -> rooms.Rir:
    """A direct path at sample 0 plus exponentially decaying noise from 5 ms on."""
    n = int(t60 * rate)
    t = np.arange(n) / rate
    h = 0.3 * np.random.default_rng(seed).standard_normal(n) * np.exp(-6.9 * t / t60) * (t > 0.005)
    h[0] = 1.0
    return rooms.Rir(h.astype(np.float32), rate, 0, t60, t60, math.nan, 0.0, (math.nan,) * 3)


def _write_pairs(root: Path, utterances, rirs, early: bool = True) -> list[dict]:
    """``reverberant/``, ``direct/`` (and ``early/``) of the utterances in the rooms; returns manifest rows."""
    roles = ("reverberant", "direct", "early") if early else ("reverberant", "direct")
    for role in roles:
        (root / role).mkdir(parents=True)
    rows = []
    for i, (uid, x) in enumerate(utterances):
        rir = rirs[i % len(rirs)]
        reverberant, direct = rooms.reverberate(x, rir, "direct")
        signals = {"reverberant": reverberant, "direct": direct, "early": rooms.reverberate(x, rir, "early")[1]}
        row = {"ID": uid, "duration_s": len(x) / rir.sample_rate, "t60_s": rir.t60_s, "drr_db": rir.drr_db}
        for role in roles:
            write_audio(root / role / f"{uid}.wav", signals[role], rir.sample_rate)
            row[role] = f"$prep_root/{role}/{uid}.wav"
        rows.append(row)
    return rows


def _fake_training_folder(root: Path) -> dict[str, dict]:
    """results/<name>/<seed> as the recipe leaves it: model_config.json and save/CKPT+*/ (no export)."""
    model = TCN(**TINY)
    (root / "save").mkdir(parents=True)
    record = {"class": "TCN", "config": model.get_config(), "sample_rate": 8000}
    (root / "model_config.json").write_text(json.dumps(record))
    states = {}
    for i, best in enumerate(["0.5", "0.9", "-.inf"]):
        torch.manual_seed(i)
        state = TCN(**TINY).state_dict()
        ckpt = root / "save" / f"CKPT+2026-01-0{i + 1}+00-00-00+00"
        ckpt.mkdir()
        (ckpt / "CKPT.yaml").write_text(f"best_key: {best}\nend-of-epoch: true\n")
        torch.save(state, ckpt / "model.ckpt")
        states[ckpt.name] = state
    return states


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def speech():
    """``speech(n, rate)``: ``n`` short utterances ``(id, signal)`` of the shipped speech pack."""
    return _speech


@pytest.fixture(scope="session")
def synthetic_rir():
    """``synthetic_rir(rate, t60=0.5, seed=0)``: a direct path plus exponentially decaying noise."""
    return _synthetic_rir


@pytest.fixture(scope="session")
def write_pairs():
    """``write_pairs(root, utterances, rirs, early=True)``: a paired test folder; returns its manifest rows."""
    return _write_pairs


@pytest.fixture(scope="session")
def fake_training_folder():
    """``fake_training_folder(root)``: a training folder with three checkpoints; returns their states by name."""
    return _fake_training_folder


@pytest.fixture(scope="session")
def read_csv():
    """``read_csv(path)``: the rows of a CSV as dicts of strings."""
    return _read_csv


@pytest.fixture(scope="session")
def pairs8k(tmp_path_factory, rir_bank) -> Path:
    """Three utterances at 8 kHz as a paired folder with early targets, and its manifest ``test.csv`` (read-only)."""
    root = tmp_path_factory.mktemp("pairs8k")
    rows = _write_pairs(root, _speech(3, 8000), [rir_bank[i] for i in range(len(rir_bank))])
    columns = ["ID", "duration_s", "reverberant", "direct", "early", "t60_s", "drr_db"]
    write_manifest(root / "test.csv", rows, columns)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny untrained DTCN model folder at 8 kHz (read-only)."""
    torch.manual_seed(0)
    return save_pretrained(DTCN(**TINY), tmp_path_factory.mktemp("models") / "dtcn8k", 8000)
