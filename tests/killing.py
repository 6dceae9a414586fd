"""SIGKILL a ``tympan`` command at a random moment of its work (seeded), for resume tests.

The command runs in its own process; once ``started()`` says it has made
progress (a first output exists), it is killed after a delay drawn from
``random.Random(seed)``: a moment inside the work, repeatable per seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CLI = "import torch; torch.set_num_threads(1); from tympan.cli import main; main()"


def tympan_command(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``tympan ARGV`` with this checkout's sources."""
    return [sys.executable, "-c", CLI, *argv]


def tympan(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``tympan ARGV`` to completion in a fresh process (as a user would rerun it)."""
    return subprocess.run(tympan_command(argv), capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def kill_midway(command: Sequence[str], started: Callable[[], bool], *, seed: int,
                max_delay_seconds: float, timeout: float = 60,
                before_kill: Callable[[int], None] | None = None) -> float:
    """Start ``command``, wait for ``started()``, SIGKILL it after a seeded random delay.

    ``before_kill(pid)`` is called just before the kill (e.g. to note the processes the
    command started). Returns the delay. Fails the test if the command ends before it is killed
    (the work is then too short to be interrupted and the test proves nothing).
    """
    delay = random.Random(seed).uniform(0.0, max_delay_seconds)
    proc = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + timeout
    try:
        while not started():
            if proc.poll() is not None:
                raise AssertionError(f"ended ({proc.returncode}) before any progress: "
                                     f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise AssertionError("no progress before the timeout")
            time.sleep(0.01)
        time.sleep(delay)
        if before_kill is not None:
            before_kill(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"finished ({proc.returncode}) before the kill at +{delay:.2f} s: give it more work")
    return delay


def temporaries(folder: Path) -> list[Path]:
    """Files under ``folder`` with tympan's temporary names (``.NAME.XXXX.tmp``)."""
    return sorted(p for p in folder.rglob(".*.tmp") if p.is_file())
