"""Worker pools die with their parent: a SIGKILLed command leaves no orphan processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tympan.data.sources import discover
from tympan.parallel import process_pool


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_pool_runs_work(tmp_path: Path) -> None:
    with process_pool(2) as pool:
        assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_augment_leaves_no_workers_and_the_rerun_is_complete(tmp_path: Path) -> None:
    from tympan.workflows.demo import make_dataset

    data = make_dataset(tmp_path / "data", n_per_class=3, duration_seconds=2.0, seed=3)
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from tympan.cli import main; main()", "augment", str(data),
               "-o", str(out), "--preset", "TS,PS1", "--workers", "2"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and parent.poll() is None and time.monotonic() < deadline:
            workers = _children(parent.pid)
            time.sleep(0.05)
        assert len(workers) == 2 and parent.poll() is None, "augment never started its workers"
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in workers if _alive(pid)]
    for pid in orphans:  # do not leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"workers {orphans} outlived their killed parent"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = discover(data)
    copies = [p for p in out.rglob("*") if p.suffix in (".wav", ".flac")]
    assert len(copies) == len(manifest) * 8  # TS (4 rates) + PS1 (4 shifts)
    assert not list(out.rglob(".*.tmp"))
    # identical to copies made without any kill
    from tympan.augment.offline import make_copies
    from tympan.augment.presets import set_variants
    from tympan.fileio import sha256_file

    straight = make_copies(manifest, tmp_path / "straight",
                           set_variants("TS") + set_variants("PS1"), workers=1, limit=2)
    assert straight.written == 16
    for copy in (tmp_path / "straight").rglob("*.*"):
        if copy.suffix in (".wav", ".flac"):
            twin = out / copy.relative_to(tmp_path / "straight")
            assert sha256_file(twin) == sha256_file(copy), copy.name
