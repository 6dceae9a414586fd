"""Windows scored in worker processes, each with its own single-thread engine.

Two cores are better used as two single-thread ONNX Runtime sessions in two
processes, each scoring a different batch of windows, than as one session
with two threads (whose spinning threads also starve the decoder). The
parent decodes, resamples and cuts windows (:class:`~tympan.inference.detect.
Detector`) and keeps a few batches in flight; results come back in order, so
the scores are the ones a single process gives. Workers are forked
(:func:`tympan.parallel.process_pool`) and die with the parent.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from tympan.parallel import process_pool

#: How a worker builds its engine: ``(factory, args, kwargs)``, e.g. an OnnxPredictor's path.
ScorerSpec = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_scorer: Any = None  # the engine of this worker process


def _build(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    global _scorer
    _scorer = factory(*args, **kwargs)


def _score(windows: np.ndarray, keep_spectrum: bool) -> tuple[np.ndarray, np.ndarray | None]:
    result: tuple[np.ndarray, np.ndarray | None] = _scorer.score(windows,
                                                                 keep_spectrum=keep_spectrum)
    return result


class ScorerPool:
    """``workers`` processes, each holding the engine ``spec`` builds; :meth:`submit` scores
    a batch ``(n, samples)`` in one of them. Close it (or use ``with``) when done."""

    def __init__(self, spec: ScorerSpec, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = process_pool(workers, initializer=_build, initargs=spec)

    def submit(self, windows: np.ndarray, keep_spectrum: bool = False
               ) -> Future[tuple[np.ndarray, np.ndarray | None]]:
        """A future of ``(probabilities (n, n_classes), mean log-mel (n, n_mels) or None)``;
        it raises what the engine raised (e.g. ModelOutputError)."""
        return self._pool.submit(_score, windows, keep_spectrum)

    def close(self) -> None:
        """Stop the workers (batches not started are cancelled)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ScorerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ScorerPool", "ScorerSpec"]
