"""``data=whamr``: the official WHAMR! tree, its tasks, versions and rates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dereverb.data import build_datasets, prepare
from dereverb.errors import DataError

RATE = 8000


@pytest.mark.parametrize("version", ["min", "max"])
@pytest.mark.parametrize(("task", "input_value"), [("dereverb", 0.1), ("denoise_dereverb", 0.3)])
def test_whamr_tasks_and_versions(tmp_path, fake, task, input_value, version):
    fake.whamr(tmp_path / "whamr")
    cfg = {"kind": "whamr", "root": str(tmp_path / "whamr"), "save_folder": str(tmp_path / "save")}
    cfg |= {"task": task, "version": version, "segment_s": 0.35}
    data = build_datasets(cfg, RATE, progress=False)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    offset = 1.0 if version == "max" else 0.0
    for split, dataset in data.items():
        for item in dataset:
            assert item["id"] in {Path(n).stem for n in fake.WHAMR_NAMES}
            expected = torch.full_like(item["reverberant"], input_value + offset)
            torch.testing.assert_close(item["reverberant"], expected)
            torch.testing.assert_close(item["target"], torch.full_like(item["target"], 0.2 + offset))
            if split == "train":
                assert len(item["reverberant"]) == min(2800, 800 * (3 + fake.WHAMR_NAMES.index(item["id"] + ".wav")))
    (folder,) = (tmp_path / "save").iterdir()
    rows = fake.rows(folder / "test.csv")
    expected = f"$data_root/wav8k/{version}/tt/{'s1_reverb' if task == 'dereverb' else 'mix_single_reverb'}/"
    assert rows[0]["reverberant"].startswith(expected)
    assert rows[0]["direct"] == f"$data_root/wav8k/{version}/tt/s1_anechoic/{fake.WHAMR_NAMES[0]}"


def test_whamr_16k_uses_wav16k_and_8k_falls_back_to_it(tmp_path, fake):
    fake.whamr(tmp_path / "whamr", rates=("wav16k",), versions=("min",))
    cfg = {"kind": "whamr", "root": str(tmp_path / "whamr"), "save_folder": str(tmp_path / "save")}
    assert build_datasets(cfg, 16000, progress=False)["test"][0]["reverberant"].shape == (8000,)  # 0.5 s
    assert build_datasets(cfg, 8000, progress=False)["test"][0]["reverberant"].shape == (4000,)  # resampled


def test_whamr_missing_folders(tmp_path, fake):
    fake.whamr(tmp_path / "whamr", versions=("min",))
    cfg = {"kind": "whamr", "root": str(tmp_path / "whamr"), "save_folder": str(tmp_path / "save")}
    with pytest.raises(DataError, match=r"data.version=max: no folder"):
        prepare({**cfg, "version": "max"}, RATE, progress=False)
    with pytest.raises(DataError, match=r"no wav16k/ folder"):
        prepare(cfg, 16000, progress=False)
    shutil.rmtree(tmp_path / "whamr" / "wav8k" / "min" / "cv" / "mix_single_reverb")
    with pytest.raises(DataError, match=r"cv/mix_single_reverb .needed by data.task=denoise_dereverb"):
        prepare({**cfg, "task": "denoise_dereverb"}, RATE, progress=False)
    (tmp_path / "whamr" / "wav8k" / "min" / "tr" / "s1_anechoic" / fake.WHAMR_NAMES[1]).unlink()
    with pytest.raises(DataError, match=f"1 files without a partner \\(first: {fake.WHAMR_NAMES[1]}\\)"):
        prepare(cfg, RATE, progress=False)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"task": "separate"}, "data.task='separate': expected one of dereverb, denoise_dereverb"),
        ({"version": "mid"}, "data.version='mid': expected one of min, max"),
        ({"target": "direct"}, "data.target: unknown key for data.kind=whamr"),
    ],
)
def test_whamr_settings_are_checked(tmp_path, cfg, match):
    with pytest.raises(DataError, match=match):
        prepare({"kind": "whamr", "root": str(tmp_path), "save_folder": str(tmp_path), **cfg}, RATE, progress=False)
