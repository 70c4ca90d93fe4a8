"""The Python examples of docs/inference.md run as written (on a generated ``in.wav``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from inference_helpers import ROOT, write_wav

DOC = ROOT / "docs" / "inference.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_python_examples():
    assert len(BLOCKS) >= 2
    assert all("from dereverb import" in block for block in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index, tmp_path, monkeypatch, reverberant):
    x = 0.5 * reverberant[0][:24000] / np.abs(reverberant[0][:24000]).max()
    write_wav(tmp_path / "in.wav", np.stack([x, 0.8 * x]), 8000)  # stereo
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"{DOC}, Python example {index + 1}", "exec"), {})
    if "out.wav" in BLOCKS[index]:
        assert (tmp_path / "out.wav").is_file()
