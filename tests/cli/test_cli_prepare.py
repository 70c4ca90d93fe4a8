"""``dereverb-prepare`` (:mod:`dereverb.cli.prepare`): a summary, or one ``error:`` line and status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

import dereverb
from dereverb.cli.prepare import main

REPO = Path(dereverb.__file__).resolve().parent.parent


def _pairs(root: Path, n: int = 10) -> Path:
    """``n`` pairs ``root/reverberant/uNN.wav`` = 0.5 ``root/direct/uNN.wav`` (0.3 s at 8 kHz)."""
    for i, x in enumerate(np.random.default_rng(0).standard_normal((n, 2400)).astype(np.float32) * 0.1):
        for role, gain in (("reverberant", 0.5), ("direct", 1.0)):
            (root / role).mkdir(parents=True, exist_ok=True)
            sf.write(root / role / f"u{i:02d}.wav", gain * x, 8000, subtype="FLOAT")
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "dereverb.cli.prepare", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_cli_bad_root_prints_one_line(tmp_path):
    proc = _cli("data=folder", f"data.root={tmp_path / 'nowhere'}", f"data.save_folder={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: data.root={tmp_path / 'nowhere'}: no such folder"]


def test_bad_overrides_print_one_line(tmp_path, capsys):
    assert main(["data=nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert "nosuch" in err[0]
    assert main(["data=folder", "data.rooot=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "rooot" in err[0]
    assert main(["data=folder", f"data.save_folder={tmp_path}", "data.target=clean"]) == 2
    assert (
        capsys.readouterr().err
        == "error: data.root is required: set data.root=<a folder> on the command line or in the config\n"
    )


def test_the_former_target_name_is_refused(tmp_path, capsys):
    _pairs(tmp_path / "pairs")
    assert (
        main(["data=folder", f"data.root={tmp_path / 'pairs'}", f"data.save_folder={tmp_path}", "data.target=clean"])
        == 2
    )
    assert (
        capsys.readouterr().err
        == "error: data.target=clean: this target is now called direct (set data.target=direct)\n"
    )


def test_cli_prepares_and_summarises(tmp_path, capsys):
    _pairs(tmp_path / "pairs")
    args = ["data=folder", f"data.root={tmp_path / 'pairs'}", f"data.save_folder={tmp_path / 's'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "prepared data.kind=folder at 8000 Hz" in out
    assert "train      8 utterances" in out
    assert "valid      1 utterances" in out
    assert "this run took" in out
    assert main([*args, "data.on_bad_file=skip"]) == 0  # another setting: another folder
    assert len(list((tmp_path / "s").iterdir())) == 2


def test_help_prints_the_usage(capsys):
    assert main(["--help"]) == 0
    assert "dereverb-prepare [hydra overrides]" in capsys.readouterr().out


def test_prepare_stays_callable_after_the_cli_module_is_imported(tmp_path):
    import importlib

    import dereverb.data

    importlib.import_module("dereverb.cli.prepare")  # as pytest's doctest collection does
    manifests = dereverb.data.prepare(
        {"kind": "folder", "root": str(_pairs(tmp_path / "pairs")), "save_folder": str(tmp_path / "s")},
        8000,
        progress=False,
    )
    assert manifests["train"].is_file()
