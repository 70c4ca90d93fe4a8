"""The shipped speech pack: manifest consistent with the files, speakers, minutes, splits, size, licences."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from dereverb.data.speech_pack import PACK_DIR, SPLITS, format_summary, load_manifest, pack_summary, verify_pack
from dereverb.errors import DataError

# every source of the pack: English, Spanish and French Asterisk voices, and Flite (nothing else)
SOURCES = re.compile(r"(asterisk-(core-sounds|prompt)-(en|es|fr)(-[a-z0-9]+)*|flite|libflite1)=\S+")


@pytest.fixture(scope="module")
def rows():
    return load_manifest()


def minutes(items) -> float:
    return sum(r.duration_s for r in items) / 60


def test_manifest_matches_files(rows):
    assert len(rows) > 100
    assert len({r.id for r in rows}) == len(rows)
    on_disk = {p.resolve() for p in PACK_DIR.rglob("*.flac")}
    assert on_disk == {r.path for r in rows}, "FLAC files and manifest rows differ"
    for r in rows:
        info = sf.info(r.path)
        assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1), r.path
        assert info.samplerate == r.sample_rate in (8000, 16000), r.path
        assert info.frames == r.num_samples, r.path
        assert abs(info.frames / info.samplerate - r.duration_s) < 1e-3, r.path
    assert verify_pack() == len(rows)  # every sha256


def test_speakers(rows):
    speakers = {r.speaker: r for r in rows}
    assert len(speakers) >= 4
    assert any(r.sex == "male" for r in speakers.values())
    assert {r.sex for r in rows} <= {"female", "male"}
    assert {r.kind for r in rows} <= {"real", "synthetic"}
    assert len({r.speaker for r in rows if r.kind == "real"}) >= 4, "real recordings come first"
    for speaker in speakers:  # one speaker, one sex and one kind
        assert len({(r.sex, r.kind) for r in rows if r.speaker == speaker}) == 1, speaker


def test_minutes_and_splits(rows):
    assert minutes(rows) >= 30
    everyone = {r.speaker for r in rows}
    for split in ("valid", "test"):
        part = [r for r in rows if r.split == split]
        assert minutes(part) >= 3, split
        assert {r.speaker for r in part} == everyone, f"{split} misses a speaker"
    assert {r.split for r in rows} == set(SPLITS)


def test_no_prompt_in_two_splits(rows):
    splits = defaultdict(set)
    for r in rows:
        splits[r.prompt].add(r.split)
    shared = {p: s for p, s in splits.items() if len(s) > 1}
    assert not shared


def test_size_budget():
    size = sum(p.stat().st_size for p in PACK_DIR.rglob("*") if p.is_file())
    assert size <= 40e6


def test_only_allowed_sources(rows):
    for r in rows:
        assert SOURCES.fullmatch(r.source), (r.id, r.source)
        assert r.language.lower().startswith(("en", "es", "fr")), (r.id, r.language)
    assert not SOURCES.fullmatch("asterisk-core-sounds-de-g722=1.6.1-1")  # the check can fail


def test_licence_names_every_source(rows):
    text = (PACK_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for source in {r.source for r in rows}:
        name, version = source.split("=")
        assert re.search(rf"`{re.escape(name)}` \| {re.escape(version)} \| `[0-9a-f]{{64}}`", text), source
        assert f"## `{name}` {version}: copyright file" in text, source
    for licence in ("CC-BY-SA-3.0", "GNU General Public License", "Carnegie Mellon University"):
        assert licence in text


def test_verify_pack_detects_damage(tmp_path, rows):
    pack = tmp_path / "speech"
    shutil.copytree(PACK_DIR, pack)
    assert verify_pack(pack) == len(rows)
    victim = pack / rows[len(rows) // 2].path.relative_to(PACK_DIR)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(str(victim))):
        verify_pack(pack)
    victim.unlink()
    with pytest.raises(DataError, match=f"{re.escape(str(victim))}: missing"):
        verify_pack(pack)


def test_load_manifest_filters(rows):
    wide = load_manifest(min_sample_rate=16000)
    assert wide
    assert all(r.sample_rate >= 16000 for r in wide)
    assert len(wide) < len(rows)
    for split in SPLITS:
        part = load_manifest(split=split)
        assert part
        assert all(r.split == split for r in part)
    assert sum(len(load_manifest(split=s)) for s in SPLITS) == len(rows)
    with pytest.raises(DataError, match="split='dev'"):
        load_manifest(split="dev")
    with pytest.raises(DataError, match="manifest not found"):
        load_manifest(pack_dir=PACK_DIR / "nowhere")


def test_summary_matches_manifest(rows):
    summary = pack_summary()
    assert summary["total"]["minutes"] == pytest.approx(minutes(rows))
    assert summary["total"]["minutes_16k"] == pytest.approx(minutes(r for r in rows if r.sample_rate >= 16000))
    assert summary["splits"]["test"]["minutes"] == pytest.approx(minutes(r for r in rows if r.split == "test"))
    assert set(summary["speakers"]) == {r.speaker for r in rows}
    table = format_summary(summary)
    for speaker in summary["speakers"]:
        assert f"| {speaker} |" in table


def test_package_data_ships_the_pack():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dereverb"]
    package = root / "dereverb"
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    pack_files = {p for p in PACK_DIR.rglob("*") if p.is_file()}
    assert pack_files <= shipped, sorted(str(p) for p in pack_files - shipped)[:5]
