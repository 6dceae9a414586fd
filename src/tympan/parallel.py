"""Process pools for the CPU-bound, torch-free work (decoding, Rubber Band copies).

Linux pools fork: a spawned worker re-imports the user's ``__main__``, so a
plain script calling ``Classifier.fit(path)`` without an
``if __name__ == "__main__":`` guard would re-run itself in every worker and
break the pool. Workers only decode and resample (libsndfile, soxr) or run
Rubber Band, never torch or BLAS, so the parent's OpenMP threads they inherit
stay idle. Elsewhere (macOS, Windows) the platform default is used.
"""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` with ``workers`` processes, forked on Linux."""
    if sys.platform.startswith("linux"):
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context()
    return _QuietForkPool(max_workers=workers, mp_context=context)


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
