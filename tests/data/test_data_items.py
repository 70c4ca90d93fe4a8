"""The dynamic items: a pair of files read and cropped, or a pair mixed afresh in a room of a bank."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dereverb.data.items import MixingItem, PairedItem, random_start, torch_rng
from dereverb.errors import DataError

RATE = 8000


def test_torch_rng_follows_torch_seed():
    torch.manual_seed(3)
    a = torch_rng().integers(10**9, size=4)
    torch.manual_seed(3)
    assert np.array_equal(a, torch_rng().integers(10**9, size=4))
    assert not np.array_equal(a, torch_rng().integers(10**9, size=4))


def test_random_start_covers_every_position():
    rng = np.random.default_rng(0)
    starts = {random_start(12, 10, rng) for _ in range(200)}
    assert starts == {0, 1, 2}
    assert random_start(5, 10, rng) == 0


def test_paired_item_crops_both_alike(tmp_path, fake):
    x = fake.noise(3000, 0)
    fake.write(tmp_path / "r.wav", 0.5 * x)
    fake.write(tmp_path / "d.wav", x)
    reverberant, target = PairedItem(RATE, 1000)(str(tmp_path / "r.wav"), str(tmp_path / "d.wav"))
    assert reverberant.shape == target.shape == (1000,)
    assert reverberant.dtype == target.dtype == torch.float32
    torch.testing.assert_close(reverberant, 0.5 * target)
    start = int(np.flatnonzero(np.isclose(x, target[0].item()))[0])
    torch.testing.assert_close(target, torch.from_numpy(x[start : start + 1000]))
    whole = list(PairedItem(RATE, None)(str(tmp_path / "r.wav"), str(tmp_path / "d.wav")))
    assert whole[0].shape == (3000,)


def test_paired_item_resamples_and_checks_lengths(tmp_path, fake):
    fake.write(tmp_path / "r.wav", fake.noise(3200, 0), 16000)
    fake.write(tmp_path / "d.wav", fake.noise(3200, 1), 16000)
    fake.write(tmp_path / "short.wav", fake.noise(1000, 1))
    reverberant, _ = PairedItem(RATE, None)(str(tmp_path / "r.wav"), str(tmp_path / "d.wav"))
    assert reverberant.shape == (1600,)
    with pytest.raises(DataError, match=r"r.wav: 1600 samples, but .*short.wav has 1000"):
        list(PairedItem(RATE, None)(str(tmp_path / "r.wav"), str(tmp_path / "short.wav")))


def test_mixing_item_fills_the_segment_and_aligns_the_target(tmp_path, fake, rir_bank):
    fake.write(tmp_path / "u.wav", fake.noise(2000, 0, 0.3))
    item = MixingItem(rir_bank.folder, RATE, 4000, "direct")
    torch.manual_seed(0)
    reverberant, target = item(str(tmp_path / "u.wav"))
    assert reverberant.shape == target.shape == (4000,)
    active = (target.abs() > 0).nonzero()
    assert 1990 <= int(active[-1] - active[0]) + 1 <= 2090  # the whole utterance once (plus the filter's taps)
    assert fake.lag_of_peak(reverberant, target) == 0
    torch.manual_seed(0)
    again, _ = item(str(tmp_path / "u.wav"))
    torch.testing.assert_close(again, reverberant)  # seeded by torch


def test_mixing_item_crops_long_utterances_with_their_reverberant_context(tmp_path, fake, rir_bank):
    fake.write(tmp_path / "u.wav", fake.noise(16000, 1, 0.3))
    item = MixingItem(rir_bank.folder, RATE, 2000, "early")
    torch.manual_seed(1)
    reverberant, target = item(str(tmp_path / "u.wav"))
    assert reverberant.shape == target.shape == (2000,)
    assert reverberant[:50].abs().sum() > 0  # the tail of the speech before the crop is there


def test_mixing_item_pickles_without_its_bank(rir_bank):
    item = MixingItem(rir_bank.folder, RATE, 2000, "early")
    assert len(item.bank) == len(rir_bank)
    copy = pickle.loads(pickle.dumps(item))
    assert copy._bank is None
    assert len(copy.bank) == len(rir_bank)
