"""Fixtures of the training tests: generated paired data and one smoke run, shared by the whole session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from recipe_runs import make_pairs, run_train, smoke_args


@pytest.fixture
def one_thread():
    """Run in-process training on one thread (tiny models; oversubscribed threads are many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    """20 generated pairs of 0.5 s: 16 train, 2 valid, 2 test (the folder kind's default split)."""
    return make_pairs(tmp_path_factory.mktemp("pairs"), 20)


@pytest.fixture(scope="session")
def smoke_run(pairs, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One ``debug=smoke data=folder`` run; returns (its tmp folder, output folder, process)."""
    tmp = tmp_path_factory.mktemp("smoke")
    out = tmp / "out"
    proc = run_train(tmp / "cwd", *smoke_args(pairs, tmp, out))
    return tmp, out, proc
