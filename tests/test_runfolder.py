"""Run folders: one live process per run name; stale work is cleaned on resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tympan.config import TrainConfig
from tympan.data.sources import discover
from tympan.locking import LockedError, holder_pid, lock_path_for
from tympan.workflows.demo import DEMO_FEATURES
from tympan.workflows.run import run
from tympan.workflows.runfolder import (
    RunFolderError,
    lock_run,
    prepare_run_dir,
    work_dir_for,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX only")

_TYMPAN = [sys.executable, "-c", "import sys; sys.argv[0] = 'tympan'; "
           "from tympan.cli import main; main()"]


def _tympan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_TYMPAN, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_second_process_can_neither_overwrite_nor_resume_a_live_run(
        sound_classes_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"
    TrainConfig(model="cnn-s", features=DEMO_FEATURES, batch_size=8).save(recipe)
    runs = tmp_path / "runs"
    train = ["train", str(sound_classes_dir), "--config", str(recipe), "--no-cv",
             "--name", "X", "--runs-dir", str(runs), "--no-progress"]
    # a run that trains until it is killed
    first = subprocess.Popen([*_TYMPAN, *train, "--epochs", "100000", "--patience", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    work = work_dir_for(runs, "X")
    try:
        deadline = time.monotonic() + 120
        while not (work / "final").is_dir() and first.poll() is None:
            assert time.monotonic() < deadline, "the first run never started training"
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert holder_pid(lock_path_for(runs / "X")) == first.pid

        second = _tympan(*train, "--epochs", "1", "--overwrite")
        assert second.returncode == 1, second.stderr
        assert f"in use by process {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert work.is_dir() and first.poll() is None  # the first run's work is untouched
        # this test process is a second process too: --resume is refused the same way
        config = TrainConfig.load(recipe).replace(epochs=1, folds=0)
        with pytest.raises(LockedError, match=f"in use by process {first.pid}"):
            run(discover(sound_classes_dir), config, runs_dir=runs, name="X", resume=True)
        assert work.is_dir() and first.poll() is None
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # the dead run's lock is stale: the next process takes it, and is steered to --resume
    assert lock_path_for(runs / "X").exists()
    with lock_run(runs, "X"), pytest.raises(RunFolderError) as caught:
        prepare_run_dir(runs, "X")
    assert "no process is working on it" in str(caught.value)
    assert "--resume" in str(caught.value)


def test_resume_removes_temporary_files_a_killed_run_left(tmp_path: Path) -> None:
    work = prepare_run_dir(tmp_path, "r")
    (work / "cv").mkdir()
    stale = [work / ".confusion.png.abc123.tmp", work / "cv" / ".metrics.json.x.tmp"]
    for path in stale:
        path.write_bytes(b"")
    (work / "keep.json").write_text("{}")
    again = prepare_run_dir(tmp_path, "r", resume=True)
    assert again == work
    assert not any(p.exists() for p in stale)
    assert (work / "keep.json").exists()


def test_a_command_without_resume_does_not_suggest_it(tmp_path: Path) -> None:
    prepare_run_dir(tmp_path, "eval")
    with pytest.raises(RunFolderError) as caught:
        prepare_run_dir(tmp_path, "eval", resumable=False)
    assert "--resume" not in str(caught.value) and "--overwrite" in str(caught.value)
