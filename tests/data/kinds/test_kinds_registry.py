"""The registry of dataset kinds: the package's kinds, their configs, and a kind added from outside the package."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dereverb.config import compose
from dereverb.data import build_datasets, prepare
from dereverb.data.audio import write_audio
from dereverb.data.kinds import KINDS, DatasetKind, kind_class, kind_names, register_kind
from dereverb.data.manifests import SPLITS, BadFiles, split_stats, write_manifest
from dereverb.errors import DataError

RATE = 8000


class Tones(DatasetKind):
    """A toy kind: ``n`` tones per split, the reverberant input half the direct one, written when prepared."""

    name = "tones"
    defaults: ClassVar[dict] = {"n": 2, "hz": 440.0}

    @classmethod
    def check(cls, settings: dict) -> None:
        if not settings["hz"] > 0:
            raise DataError(f"data.hz={settings['hz']!r}: expected a positive frequency")

    def fingerprint(self) -> list:
        return []  # no source files: the settings say it all

    def roots(self) -> dict[str, str]:
        return {}

    def prepare(self, folder: Path, progress: bool) -> dict:
        t = np.arange(self.sample_rate // 2) / self.sample_rate
        per_split = {}
        for split in SPLITS:
            per_split[split] = []
            for i in range(self.settings["n"]):
                direct = 0.5 * np.sin(2 * np.pi * self.settings["hz"] * (i + 1) * t)
                row = {"ID": f"{split}{i}", "duration_s": 0.5}
                for role, x in (("reverberant", 0.5 * direct), ("direct", direct)):
                    (folder / role).mkdir(exist_ok=True)
                    write_audio(folder / role / f"{split}{i}.wav", x, self.sample_rate)
                    row[role] = f"$prep_root/{role}/{split}{i}.wav"
                per_split[split].append(row)
            write_manifest(folder / f"{split}.csv", per_split[split], ["ID", "duration_s", "reverberant", "direct"])
        return split_stats(per_split, BadFiles("error"))


@pytest.fixture
def tones(tmp_path):
    """The toy kind registered, and a config folder holding ``data/tones.yaml``; unregistered afterwards."""
    kind_names()  # the package's own kinds first
    register_kind(Tones)
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    yaml = f"kind: tones\nsave_folder: {tmp_path / 'save'}\nsegment_s: 0.25\non_bad_file: error\nn: 2\nhz: 440.0\n"
    (conf / "data" / "tones.yaml").write_text("# @package data\n" + yaml)
    yield conf
    KINDS.pop("tones")


def test_the_package_kinds_are_found():
    assert kind_names() == ["demo", "folder", "simulate", "whamr"]
    assert {name: kind_class(name).name for name in kind_names()} == {n: n for n in kind_names()}


def test_a_kind_from_a_test_module_prepares_and_builds(tones, tmp_path):
    cfg = compose("prepare", [f"hydra.searchpath=[file://{tones}]", "data=tones", "data.n=3"])
    assert kind_class(cfg.data.kind) is Tones
    manifests = prepare(cfg.data, cfg.sample_rate, progress=False)
    assert manifests["train"].parent.parent == tmp_path / "save"
    data = build_datasets(cfg.data, cfg.sample_rate, progress=False)
    assert [len(data[s]) for s in SPLITS] == [3, 3, 3]
    item = data["valid"][1]
    assert item["id"] == "valid1"
    assert item["reverberant"].shape == (4000,)  # whole, not cropped
    torch.testing.assert_close(item["reverberant"], 0.5 * item["target"])
    assert data["train"][0]["reverberant"].shape == (2000,)  # cropped to segment_s
    with pytest.raises(DataError, match=r"^data.hz=-1.0: expected a positive frequency$"):
        prepare({**OmegaConf.to_container(cfg.data), "hz": -1.0}, RATE, progress=False)
    with pytest.raises(DataError, match=r"data.rooms: unknown key for data.kind=tones \(known: kind, "):
        prepare({**OmegaConf.to_container(cfg.data), "rooms": {}}, RATE, progress=False)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(DataError, match=r"^data.kind='wsj': unknown; expected one of demo, folder, simulate, whamr$"):
        kind_class("wsj")


def test_register_kind_refuses_what_is_not_a_kind():
    with pytest.raises(TypeError, match="DatasetKind subclass with a name"):
        register_kind(int)
    with pytest.raises(TypeError, match="DatasetKind subclass with a name"):
        register_kind(type("Nameless", (DatasetKind,), {}))
    other = type("Folder", (DatasetKind,), {"name": "folder", "__module__": __name__})
    with pytest.raises(ValueError, match=r"data.kind=folder: registered already by dereverb.data.kinds.folder.Folder"):
        register_kind(other)
    assert kind_class("folder").__module__ == "dereverb.data.kinds.folder"


def test_data_yaml_mirrors_python_defaults():
    for kind in kind_names():
        data = OmegaConf.to_container(compose("prepare", [f"data={kind}"]).data)
        defaults = kind_class(kind).all_defaults()
        assert data.pop("kind") == kind
        assert data.pop("save_folder").endswith(f"/{kind}")
        assert data == {k: v for k, v in defaults.items() if k not in ("kind", "save_folder")}, kind


@pytest.mark.parametrize("kind", ["demo", "simulate", "folder", "whamr"])
def test_every_data_config_composes_and_prepares(tmp_path, fake, kind):
    overrides = [f"data={kind}", f"data.save_folder={tmp_path / 'save'}", "data.segment_s=0.2"]
    if kind == "demo":
        overrides += [f"data.pack_dir={fake.pack(tmp_path / 'pack')}", "data.train_rirs=1", "data.eval_rirs=1"]
        overrides += ["+data.rooms.t60_range=[0.2,0.3]", "+data.rooms.distance_range=[0.5,1.5]"]
    elif kind == "simulate":
        for k in range(5):
            fake.write(tmp_path / "corpus" / f"u{k}.wav", fake.noise(4000, k))
        overrides += [f"data.clean_root={tmp_path / 'corpus'}", "data.train_rirs=1", "data.eval_rirs=1"]
        overrides += ["+data.rooms.t60_range=[0.2,0.3]", "data.valid_fraction=0.2", "data.test_fraction=0.2"]
    elif kind == "folder":
        fake.pairs(tmp_path / "pairs")
        overrides += [f"data.root={tmp_path / 'pairs'}"]
    else:
        fake.whamr(tmp_path / "whamr", versions=("max",))
        overrides += [f"data.root={tmp_path / 'whamr'}", "data.version=max", "data.task=denoise_dereverb"]
    cfg = compose("prepare", overrides)
    assert cfg.data.kind == kind
    assert cfg.sample_rate == RATE
    data = build_datasets(cfg.data, cfg.sample_rate, progress=False)
    assert all(len(data[s]) >= 1 for s in ("train", "valid", "test"))
    assert data["valid"][0]["reverberant"].dtype == torch.float32
