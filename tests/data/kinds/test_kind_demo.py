"""``data=demo``: the speech pack in simulated rooms; dynamic mixing for training, cached valid/test."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from dereverb.data import build_datasets, prepare

RATE = 8000
VALID_COLUMNS = ["ID", "duration_s", "speaker", "reverberant", "direct", "early"]
VALID_COLUMNS += ["rir", "t60_s", "t60_measured_s", "drr_db", "distance_m"]


def test_demo_items_alignment_and_manifests(tmp_path, fake):
    cfg = fake.demo_cfg(tmp_path)
    manifests = prepare(cfg, RATE, progress=False)
    folder = manifests["train"].parent
    valid = fake.rows(manifests["valid"])
    assert len(valid) == 6
    assert len(fake.rows(manifests["train"])) == 9
    assert list(valid[0]) == VALID_COLUMNS
    assert valid[0]["reverberant"].startswith("$prep_root/valid/reverberant/")
    assert valid[0]["direct"].startswith("$prep_root/valid/direct/")
    assert sorted(p.name for p in (folder / "valid").iterdir()) == ["direct", "early", "reverberant"]
    assert all(0.15 < float(r["t60_s"]) < 0.35 for r in valid)
    train = fake.rows(manifests["train"])
    assert list(train[0]) == ["ID", "duration_s", "speaker", "clean", "source_rate"]  # the dry source
    assert train[0]["clean"].startswith("$pack_root/")
    # no room shared between the splits' banks
    banks = {s: sorted((folder / "rirs" / s / "rirs").glob("*.wav")) for s in ("train", "valid", "test")}
    arrays = {s: [sf.read(p)[0] for p in ps] for s, ps in banks.items()}
    assert [len(arrays[s]) for s in ("train", "valid", "test")] == [3, 2, 2]
    for a in arrays["train"]:
        assert not any(a.shape == b.shape and np.allclose(a, b) for b in arrays["valid"] + arrays["test"])

    data = build_datasets(cfg, RATE, progress=False)
    torch.manual_seed(0)
    for split, dataset in data.items():
        for item in dataset:
            assert item["reverberant"].dtype == torch.float32
            assert item["reverberant"].shape == item["target"].shape
            assert torch.isfinite(item["reverberant"]).all()
            if split == "train":
                assert item["reverberant"].shape == (4000,)  # 0.5 s crop of >= 0.6 s utterances
            else:
                rows = fake.rows(manifests[split])
                duration = next(float(r["duration_s"]) for r in rows if r["ID"] == item["id"])
                assert item["reverberant"].shape == (round(duration * RATE),)
            assert fake.lag_of_peak(item["reverberant"], item["target"]) == 0
    # dynamic mixing: the same training utterance comes out differently each time
    first, second = data["train"][0]["reverberant"], data["train"][0]["reverberant"]
    assert not torch.equal(first, second)


def test_demo_16k_uses_only_16k_sources(tmp_path, fake):
    cfg = fake.demo_cfg(tmp_path, train_rirs=1, eval_rirs=1)
    manifests = prepare(cfg, 16000, progress=False)
    for split, path in manifests.items():
        rows = fake.rows(path)
        assert len(rows) == {"train": 6, "valid": 4, "test": 4}[split]
        assert all(not r["ID"].startswith("tel_") for r in rows)
    assert manifests["train"].parent.name.startswith("16k-")
    item = build_datasets(cfg, 16000, progress=False)["valid"][0]
    assert item["reverberant"].shape[0] == round(float(fake.rows(manifests["valid"])[0]["duration_s"]) * 16000)


def test_demo_targets_read_their_columns(tmp_path, fake):
    for target in ("early", "direct"):
        cfg = fake.demo_cfg(tmp_path, target=target, train_rirs=1, eval_rirs=1)
        item = build_datasets(cfg, RATE, progress=False)["valid"][0]
        folder = prepare(cfg, RATE, progress=False)["valid"].parent
        expected, _ = sf.read(folder / "valid" / target / f"{item['id']}.wav", dtype="float32")
        torch.testing.assert_close(item["target"], torch.from_numpy(expected))


def test_demo_short_utterances_fill_the_segment(tmp_path, fake):
    # the pack's utterances: 0.6-0.8 s; the direct target is silent exactly outside the utterance
    cfg = fake.demo_cfg(tmp_path, segment_s=2.0, train_rirs=1, eval_rirs=1, target="direct")
    train = build_datasets(cfg, RATE, progress=False)["train"]
    torch.manual_seed(0)
    for i in range(len(train)):
        item = train[i]
        assert item["reverberant"].shape == (16000,)
        assert item["target"].shape == (16000,)
        active = (item["target"].abs() > 0).nonzero()
        n = round(float(fake.rows(next((tmp_path / "save").iterdir()) / "train.csv")[i]["duration_s"]) * RATE)
        assert n - 100 <= int(active[-1] - active[0]) + 1 <= n + 100  # the whole utterance, once
        assert item["reverberant"][active[-1] + 1 :].abs().sum() > 0 or active[-1] == 15999  # the tail continues
