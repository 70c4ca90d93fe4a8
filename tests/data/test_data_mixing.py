"""Dynamic mixing shared by the demo and simulate kinds: room settings, the simulator in the hash."""

from __future__ import annotations

import logging

import pytest

from dereverb.data import data_settings, mixing, prepare
from dereverb.data.preparation import locate
from dereverb.data.rooms import RoomConfig
from dereverb.errors import DataError

RATE = 8000


def test_room_config_names_the_setting():
    assert mixing.room_config({"rooms": {"t60_range": [0.3, 0.5]}}).t60_range == (0.3, 0.5)
    with pytest.raises(DataError, match=r"^data.rooms: .*unexpected keyword argument 'size'$"):
        mixing.room_config({"rooms": {"size": 3}})


def test_room_settings_are_checked_and_normalised(tmp_path, fake):
    with pytest.raises(DataError, match=r"t60_range"):
        prepare(fake.demo_cfg(tmp_path, rooms={"t60_range": [1.0, 0.5]}), RATE, progress=False)
    with pytest.raises(DataError, match=r"data.rooms: .*unexpected keyword argument 'size'"):
        prepare(fake.demo_cfg(tmp_path, rooms={"size": 3}), RATE, progress=False)
    spelled = data_settings(fake.demo_cfg(tmp_path, rooms=RoomConfig().to_dict()), RATE)
    empty = data_settings(fake.demo_cfg(tmp_path, rooms={}), RATE)
    assert locate(spelled, RATE).content == locate(empty, RATE).content
    assert locate(spelled, RATE).content["rooms"] == RoomConfig().to_dict()


def test_simulator_fingerprint_is_stable_and_depends_on_the_rooms():
    assert mixing.simulator_fingerprint(RATE, True) == mixing.simulator_fingerprint(RATE, True)
    assert mixing.simulator_fingerprint(RATE, True) != mixing.simulator_fingerprint(RATE, False)
    assert mixing.simulator_fingerprint(RATE, False) != mixing.simulator_fingerprint(16000, False)


def test_changed_room_code_is_a_changed_setting(tmp_path, fake, monkeypatch, caplog):
    from dereverb.data import rooms

    cfg = fake.demo_cfg(tmp_path, train_rirs=1, eval_rirs=1)
    first = prepare(cfg, RATE, progress=False)
    original = rooms.reverberate

    def louder(clean, rir, target="direct"):
        reverberant, out = original(clean, rir, target)
        return reverberant, 2 * out

    monkeypatch.setattr(rooms, "reverberate", louder)
    mixing.simulator_fingerprint.cache_clear()
    with caplog.at_level(logging.INFO, logger="dereverb.data"):
        second = prepare(cfg, RATE, progress=False)
    mixing.simulator_fingerprint.cache_clear()
    assert second["train"].parent != first["train"].parent
    assert "changed: simulator" in caplog.text
