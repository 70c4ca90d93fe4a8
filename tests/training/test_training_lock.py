"""One training per run folder: the lock names its holder, a stale lock does not block, a second
training of a folder in use is refused before it touches anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from recipe_runs import (
    check_run_folder,
    lock_holder,
    manifest_ids,
    ok,
    one_line_error,
    run_env,
    run_train,
    smoke_args,
    wrapped_train,
)


def test_a_second_training_on_the_same_folder_is_refused_while_the_first_runs(pairs, tmp_path):
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    args = smoke_args(pairs, tmp_path, out)
    # the first training holds the folder, then waits for the test before its first batch
    hold = [
        "import os, time",
        "from dereverb.training.brain import DereverbBrain",
        "start = DereverbBrain.on_fit_start",
        "def waiting(self):",
        "    start(self)",
        f"    open({str(ready)!r}, 'w').close()",
        "    deadline = time.monotonic() + 240",
        f"    while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:",
        "        time.sleep(0.05)",
        "DereverbBrain.on_fit_start = waiting",
    ]
    (tmp_path / "cwd").mkdir()
    first = subprocess.Popen(
        wrapped_train(hold, args), cwd=tmp_path / "cwd", env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock_holder(out) == first.pid, "the first training did not lock its folder"
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

        line = one_line_error(run_train(tmp_path / "cwd", *args))
        assert line.startswith(f"train.py: error: {out} is in use by another training (pid {first.pid} on host "), line
        assert line.endswith("; wait for it or choose another name or seed")
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
        go.touch()
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    ok(subprocess.CompletedProcess(first.args, first.returncode, stdout, stderr))
    check_run_folder(out, n_test=len(manifest_ids(tmp_path / "prepared")))
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1  # one training wrote it


def test_run_lock_names_its_holder_and_a_stale_lock_file_does_not_block(tmp_path):
    from dereverb.errors import TrainingError
    from dereverb.training.lock import RunLock

    folder = tmp_path / "results" / "x" / "1"
    (folder).mkdir(parents=True)
    # left by a training that died (the kernel released its lock): taken over
    (folder / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone", "started": "long ago"}))
    held = RunLock(folder)
    held.acquire()
    assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    # another process is refused, with the holder's process id and host
    code = (
        "import sys; from dereverb.errors import TrainingError; from dereverb.training.lock import RunLock\n"
        f"try:\n    RunLock({str(folder)!r}).acquire()\nexcept TrainingError as err:\n    sys.exit(str(err))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=run_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{folder} is in use by another training (pid {os.getpid()} on host "), proc.stderr
    with pytest.raises(TrainingError, match=rf"\(pid {os.getpid()} on host .*, started "):
        RunLock(folder).acquire()  # a second lock in this process is refused too
    held.release()
    proc = subprocess.run([sys.executable, "-c", code], env=run_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    again = RunLock(folder)
    again.acquire()
    again.release()
