"""Process pools for the CPU-bound, torch-free work (decoding, Rubber Band copies).

Linux pools fork: a spawned worker re-imports the user's ``__main__``, so a
plain script calling ``Classifier.fit(path)`` without an
``if __name__ == "__main__":`` guard would re-run itself in every worker and
break the pool. Workers only decode and resample (libsndfile, soxr) or run
Rubber Band, never torch or BLAS, so the parent's OpenMP threads they inherit
stay idle. Elsewhere (macOS, Windows) the platform default is used.

Workers die with their parent: a ``kill -9`` of the parent leaves no orphan
writing files and then waiting forever. On Linux the kernel sends each worker
SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere a
watchdog thread in each worker exits when its parent process changes. (The
kernel's signal follows the *thread* that started a worker: start a pool from
a thread that outlives it, as every caller here does from the main thread.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1
#: How often a worker's watchdog checks that its parent is alive (seconds).
WATCHDOG_PERIOD_SECONDS = 0.5


def process_pool(workers: int, initializer: Callable[..., Any] | None = None,
                 initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` with ``workers`` processes (forked on Linux) that exit when
    this process dies; each then runs ``initializer(*initargs)`` (if given)."""
    if sys.platform.startswith("linux"):
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context()
    return _QuietForkPool(max_workers=workers, mp_context=context, initializer=_start_worker,
                          initargs=(os.getpid(), initializer, initargs))


def _start_worker(parent_pid: int, initializer: Callable[..., Any] | None,
                  initargs: tuple[Any, ...]) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when process ``parent_pid`` dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="tympan-parent-watchdog").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_SECONDS)
    os._exit(1)  # re-parented: the parent is gone and nobody will collect our results


class _QuietForkPool(ProcessPoolExecutor):
    """Silences Python's fork-with-threads DeprecationWarning (see module docstring)."""

    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            return super().submit(*args, **kwargs)

    def map(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            return super().map(*args, **kwargs)
