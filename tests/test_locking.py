"""Folder locks: one live holder at a time, named by PID; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tympan.locking import LockedError, folder_lock, holder_pid, lock_path_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX only")

#: Holds the lock on argv[1] and prints "held" until killed.
_HOLDER = """
import sys, time
from tympan.locking import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _start_holder(folder: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    holder = _start_holder(folder)
    try:
        assert holder_pid(lock_path_for(folder)) == holder.pid
        with pytest.raises(LockedError) as caught, folder_lock(folder, "run"):
            pass
        assert f"process {holder.pid}" in str(caught.value)
        assert str(folder) in str(caught.value)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    holder = _start_holder(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock_file = lock_path_for(folder)
    assert holder_pid(lock_file) == holder.pid  # the dead holder's file is still there
    with folder_lock(folder) as held:
        assert holder_pid(held) == os.getpid()
    assert not lock_file.exists()  # released and cleaned up


def test_a_lock_is_released_after_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    with pytest.raises(RuntimeError), folder_lock(folder):
        raise RuntimeError("boom")
    with folder_lock(folder):
        pass


def test_waiting_mode_says_who_it_waits_for_then_gets_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    holder = _start_holder(folder)
    waited_for: list[int | None] = []
    killer = threading.Timer(1.0, lambda: os.kill(holder.pid, signal.SIGKILL))
    killer.start()
    try:
        started = time.monotonic()
        with folder_lock(folder, on_wait=waited_for.append):
            elapsed = time.monotonic() - started
    finally:
        killer.cancel()
        holder.kill()
        holder.wait()
    assert waited_for == [holder.pid]
    assert elapsed >= 0.5
