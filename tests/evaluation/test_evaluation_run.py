"""evaluate(): tiny generated test sets, both targets, the model sources, rates, lengths, honest metrics."""

from __future__ import annotations

import json
import re

import pytest
import torch

from dereverb.cli.evaluate import main
from dereverb.data.audio import read_audio, write_audio
from dereverb.errors import EvaluationError
from dereverb.evaluation import evaluate
from dereverb.loading import load_model
from dereverb.models import DTCN, TCN
from dereverb.pretrained import save_pretrained

TINY = {"N": 32, "B": 16, "H": 32, "X": 2, "R": 1}
BASE = ("pesq_nb", "stoi", "estoi", "si_sdr")


def test_both_targets_in_one_run(pairs8k, tiny_model, tmp_path):
    """With early targets present, the default scores against the direct path and the early target: the
    early_* columns equal a run against early alone, the direct_* ones a run against direct alone; the
    summary and its table show both."""
    both = evaluate(tiny_model, pairs8k, tmp_path / "both", baselines=["wpe"], jobs=1, progress=False)
    direct = evaluate(tiny_model, pairs8k, tmp_path / "direct", target="direct", baselines=["wpe"], jobs=1,
                      progress=False)  # fmt: skip
    early = evaluate(tiny_model, pairs8k, tmp_path / "early", target="early", baselines=["wpe"], jobs=1,
                     progress=False)  # fmt: skip
    assert both.summary["targets"] == ["direct", "early"]
    assert direct.summary["targets"] == ["direct"]
    assert early.summary["targets"] == ["early"]
    assert both.summary["metrics"] == [f"direct_{n}" for n in BASE] + [f"early_{n}" for n in BASE]
    for b, d, e in zip(both.rows, direct.rows, early.rows, strict=True):
        assert not any("early" in k for k in d)
        assert not any("direct" in k for k in e)
        for name in BASE:
            for prefix in ("", "input_", "delta_", "wpe_", "wpe_delta_"):
                assert b[f"{prefix}direct_{name}"] == pytest.approx(d[f"{prefix}direct_{name}"], abs=1e-4), prefix
                assert b[f"{prefix}early_{name}"] == pytest.approx(e[f"{prefix}early_{name}"], abs=1e-4), prefix
        # the targets differ, so do the scores: the early target keeps the first reflections
        assert b["input_early_si_sdr"] > b["input_direct_si_sdr"]
    table = (tmp_path / "both" / "summary.md").read_text()
    assert "| early_si_sdr |" in table
    assert "| direct_si_sdr |" in table
    assert "Targets: direct (the direct_* columns) and early (the early_* columns)" in table
    header = (tmp_path / "both" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"direct_si_sdr", "early_si_sdr", "input_early_si_sdr", "delta_early_si_sdr",
            "wpe_delta_early_si_sdr", "target_samples"} <= set(header)  # fmt: skip


def test_auto_target_without_early_files_is_direct_only(tiny_model, tmp_path, rir_bank, speech, write_pairs):
    write_pairs(tmp_path / "data", speech(1, 8000), [rir_bank[0]], early=False)
    result = evaluate(tiny_model, tmp_path / "data", tmp_path / "eval", jobs=1, progress=False)
    assert result.summary["targets"] == ["direct"]
    assert "direct_si_sdr" in result.rows[0]
    assert not any("early" in k for k in result.rows[0])
    rc = main(["--model", str(tiny_model), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "e2"),
               "--target", "both", "--quiet"])  # fmt: skip
    assert rc == 2
    assert not (tmp_path / "e2").exists()


def test_dataset_config_evaluates_its_prepared_test_split(pairs8k, tiny_model, tmp_path):
    data = ["data=folder", f"data.root={pairs8k}", f"data.save_folder={tmp_path / 'prepared'}"]
    result = evaluate(tiny_model, data, tmp_path / "eval", jobs=1, progress=False)
    assert len(result.rows) == 1  # 3 pairs: one each for train, valid and test
    assert "test split" in result.summary["data"]
    assert list((tmp_path / "prepared").glob("8k-*/test.csv"))  # prepared at the model's rate


def test_manifest_with_baseline_plots_and_report(pairs8k, tiny_model, tmp_path, read_csv):
    out = tmp_path / "eval"
    result = evaluate(
        tiny_model, pairs8k / "test.csv", out, target="early", baselines=["wpe"], report=True,
        save_audio=True, examples=2, jobs=1, progress=False,
    )  # fmt: skip
    rows = read_csv(out / "results.csv")
    assert len(rows) == 3
    assert {"t60_s", "drr_db", "wpe_early_si_sdr", "wpe_delta_early_si_sdr"} <= set(rows[0])
    assert all(r["wpe_early_si_sdr"] != r["input_early_si_sdr"] for r in rows)  # WPE changed the signal
    summary = result.summary
    assert summary["targets"] == ["early"]
    assert summary["baselines"]["wpe"]["stft_size"] == 512
    assert sum(b["n"] for b in summary["breakdown"]["t60_s"]["bins"]) == 3
    assert "## By T60" in (out / "summary.md").read_text()
    for name in ("enhanced", "wpe"):
        assert len(list((out / name).glob("*.wav"))) == 3
    assert len(list((out / "plots").glob("spectrogram_*.png"))) == 2
    assert (out / "plots" / "improvement_vs_t60.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    links = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    wavs = [x for x in links if x.endswith(".wav")]
    assert len(wavs) == 2 * 4  # input, output, WPE, early target
    assert sorted({x.rsplit("/", 1)[1] for x in wavs}) == ["early.wav", "input.wav", "output.wav", "wpe.wav"]
    for link in links:
        assert "://" not in link, link
        assert not link.startswith(("/", "\\")), link
        assert (out / link).is_file(), link
    assert "<table>" in page
    assert "WPE" in page


def test_16k_targets_with_an_8k_model_are_resampled_and_flagged(tiny_model, tmp_path, speech, write_pairs,
                                                                synthetic_rir, read_csv):  # fmt: skip
    write_pairs(tmp_path / "pairs16k", speech(2, 16000), [synthetic_rir(16000)], early=False)
    result = evaluate(tiny_model, tmp_path / "pairs16k", tmp_path / "eval", jobs=1, progress=False)
    summary = result.summary
    assert summary["metric_rate"] == 16000
    assert summary["model_rate"] == 8000
    assert summary["target_rate"] == 16000
    assert list(summary["flags"]) == ["direct_pesq_wb"]
    assert "upsampled" in summary["flags"]["direct_pesq_wb"]
    assert any("resampled" in n for n in summary["notes"])
    rows = read_csv(tmp_path / "eval" / "results.csv")
    assert len(rows) == 2
    assert {"direct_pesq_wb", "input_direct_pesq_wb", "delta_direct_pesq_wb"} <= set(rows[0])
    assert all(r["scored_samples"] == r["target_samples"] for r in rows)  # 16k -> 8k -> 16k kept the length
    assert "direct_pesq_wb †" not in (tmp_path / "eval" / "summary.md").read_text()  # the dagger follows the value
    assert "†" in (tmp_path / "eval" / "summary.md").read_text()


def test_training_folder_uses_the_best_checkpoint_then_the_export(pairs8k, tmp_path, fake_training_folder):
    folder = tmp_path / "results" / "tcn" / "0"
    states = fake_training_folder(folder)
    loaded = load_model(folder)
    assert "CKPT+2026-01-02" in loaded.source
    assert loaded.sample_rate == 8000
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, states["CKPT+2026-01-02+00-00-00+00"][key])
    assert main(["--model", str(folder), "--data", str(pairs8k), "--out", str(tmp_path / "e"), "--quiet"]) == 0
    assert "CKPT+2026-01-02" in json.loads((tmp_path / "e" / "summary.json").read_text())["model"]
    torch.manual_seed(9)
    save_pretrained(TCN(**TINY), folder / "model", 8000)
    assert "export model/" in load_model(folder).source


def test_failures_are_missing_and_counted_lengths_cropped(tiny_model, tmp_path, caplog, speech, write_pairs,
                                                          synthetic_rir, read_csv):  # fmt: skip
    root = tmp_path / "set"
    (uid, x), rir = speech(1, 8000)[0], synthetic_rir(8000, 0.3)
    write_pairs(root, [(uid, x), ("short", x[:1600])], [rir], early=False)  # 0.2 s: too short for PESQ
    reverberant = read_audio(root / "reverberant" / f"{uid}.wav")
    write_audio(root / "reverberant" / f"{uid}.wav", reverberant[: int(len(reverberant) * 0.95)], 8000,
                overwrite=True)  # fmt: skip
    result = evaluate(tiny_model, root, tmp_path / "eval", jobs=1, progress=False)
    rows = {r["id"]: r for r in read_csv(tmp_path / "eval" / "results.csv")}
    assert rows["short"]["direct_pesq_nb"] == ""
    assert rows["short"]["input_direct_pesq_nb"] == ""
    assert "output.direct_pesq_nb: PESQ needs at least 0.25 s" in rows["short"]["failures"]
    assert result.summary["columns"]["direct_pesq_nb"]["missing"] == 1
    assert result.summary["columns"]["direct_pesq_nb"]["n"] == 1
    assert result.summary["utterances_with_failures"] == 1
    assert "(1 missing)" in (tmp_path / "eval" / "summary.md").read_text()
    long = rows[uid]
    assert int(long["scored_samples"]) == int(len(reverberant) * 0.95)  # cropped to the shorter input
    assert result.summary["length_warnings"] == 1
    assert "signal lengths differ" in caplog.text


def test_inputs_at_another_rate_than_the_targets_are_noted(tmp_path, caplog, speech, write_pairs, synthetic_rir):
    """8 kHz reverberant inputs against 16 kHz targets: scored, with a note in the summary and a warning."""
    root = tmp_path / "mixed"
    write_pairs(root, speech(2, 16000), [synthetic_rir(16000, 0.3)], early=False)
    for f in (root / "reverberant").iterdir():
        write_audio(f, read_audio(f, 8000, resample=True), 8000, overwrite=True)
    torch.manual_seed(0)
    model = save_pretrained(DTCN(**TINY), tmp_path / "m16", 16000)
    result = evaluate(model, root, tmp_path / "eval", jobs=1, progress=False)
    expected = "inputs at 8000 Hz, targets at 16000 Hz"
    assert [n for n in result.summary["notes"] if n.startswith(expected)], result.summary["notes"]
    assert any(expected in n for n in json.loads((tmp_path / "eval" / "summary.json").read_text())["notes"])
    assert f"- Note: {expected}" in (tmp_path / "eval" / "summary.md").read_text()
    assert expected in caplog.text


def test_an_existing_folder_that_appears_while_evaluating_is_not_replaced(pairs8k, tiny_model, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    """The output folder is checked again when the finished results are renamed into place."""
    import dereverb.evaluation.run as run

    out = tmp_path / "eval"
    real = run.write_summary

    def write_then_race(folder, summary):
        real(folder, summary)
        out.mkdir()
        (out / "mine.txt").write_text("keep me\n")

    monkeypatch.setattr(run, "write_summary", write_then_race)
    with pytest.raises(EvaluationError, match="appeared while evaluating"):
        evaluate(tiny_model, pairs8k, out, jobs=1, limit=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temporary folder left
