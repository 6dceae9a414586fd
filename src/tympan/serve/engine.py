"""One inference thread that owns the model and micro-batches concurrent requests.

Requests hand in their patches ``(n_patches, n_mels, patch_frames)`` and get a
future; the worker waits up to ``max_wait_ms`` for more requests (or until
``max_batch_patches`` are queued), runs one forward pass over all of them and
hands each request its rows back. Only this thread touches the network, so
concurrent requests share one model safely.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tympan.inference.predict import patch_probabilities


@dataclass
class EngineStats:
    """Counters: requests served, forward passes run, and the largest batch (patches)."""

    requests: int = 0
    batches: int = 0
    largest_batch_patches: int = 0


class BatchingEngine:
    """Serialise and micro-batch forward passes of ``model`` (in eval mode) on one thread.

    ``max_wait_ms`` is how long the first request of a batch waits for company
    (milliseconds); gathering stops once ``max_batch_patches`` are queued (a
    request's patches are never split, so a batch may pass it by one request);
    ``forward_batch`` is patches per forward call within it.
    """

    def __init__(self, model: nn.Module, *, max_wait_ms: float = 5.0,
                 max_batch_patches: int = 64, forward_batch: int = 64) -> None:
        if max_wait_ms < 0 or max_batch_patches <= 0 or forward_batch <= 0:
            raise ValueError("max_wait_ms must be >= 0, max_batch_patches and forward_batch > 0")
        self.model = model.eval()
        self.max_wait_seconds = max_wait_ms / 1000.0
        self.max_batch_patches = max_batch_patches
        self.forward_batch = forward_batch
        self.stats = EngineStats()
        self._queue: queue.Queue[tuple[Tensor, Future[np.ndarray]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tympan-inference", daemon=True)
        self._thread.start()

    def submit(self, patches: Tensor) -> Future[np.ndarray]:
        """Queue ``(n_patches, n_mels, patch_frames)``; the future holds their softmaxes
        ``(n_patches, n_classes)`` float32 (or the exception the forward pass raised)."""
        if not self._thread.is_alive():
            raise RuntimeError("the inference engine is closed")
        future: Future[np.ndarray] = Future()
        self._queue.put((patches, future))
        return future

    def close(self) -> None:
        """Finish queued work and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _gather(self, first: tuple[Tensor, Future[np.ndarray]]
                ) -> tuple[list[tuple[Tensor, Future[np.ndarray]]], bool]:
        batch = [first]
        size = first[0].shape[0]
        deadline = time.monotonic() + self.max_wait_seconds
        while size < self.max_batch_patches:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            size += item[0].shape[0]
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            live = [(p, f) for p, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                patches = torch.cat([p for p, _ in live])
                probs = patch_probabilities(self.model, patches, batch_size=self.forward_batch)
            except Exception as exc:  # handed to every waiting request, the thread lives on
                for _, future in live:
                    future.set_exception(exc)
                continue
            self.stats.requests += len(live)
            self.stats.batches += 1
            self.stats.largest_batch_patches = max(self.stats.largest_batch_patches,
                                                   patches.shape[0])
            offset = 0
            for p, future in live:
                future.set_result(probs[offset:offset + p.shape[0]])
                offset += p.shape[0]
