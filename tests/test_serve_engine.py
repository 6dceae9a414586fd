"""The inference thread: same numbers as a direct forward pass, micro-batching, failures."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import tiny_model
from torch import nn

from tympan.inference.predict import patch_probabilities
from tympan.serve.engine import BatchingEngine


def _patches(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_results_equal_a_direct_forward_pass() -> None:
    model = tiny_model()
    engine = BatchingEngine(model, max_wait_ms=1)
    try:
        patches = _patches(5, 0)
        got = engine.submit(patches).result(timeout=10)
        np.testing.assert_allclose(got, patch_probabilities(model, patches), atol=1e-6)
    finally:
        engine.close()


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows() -> None:
    model = tiny_model()
    engine = BatchingEngine(model, max_wait_ms=200, max_batch_patches=1000)
    inputs = [_patches(1 + i % 3, i) for i in range(12)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(inputs))

    def client(i: int) -> None:
        barrier.wait()
        results[i] = engine.submit(inputs[i]).result(timeout=20)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(inputs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.close()
    for i, patches in enumerate(inputs):
        np.testing.assert_allclose(results[i], patch_probabilities(model, patches), atol=1e-5)
    assert engine.stats.requests == 12
    assert engine.stats.batches < 12  # requests that arrive together share a forward pass


class _Fails(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 2:
            raise RuntimeError("boom")
        return torch.zeros(x.shape[0], 3)


def test_a_failing_forward_reaches_its_request_and_the_engine_lives_on() -> None:
    engine = BatchingEngine(_Fails(), max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            engine.submit(_patches(2, 0)).result(timeout=10)
        assert engine.submit(_patches(1, 1)).result(timeout=10).shape == (1, 3)
    finally:
        engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(_patches(1, 2))
