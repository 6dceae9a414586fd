"""mixup conserves label mass and mixes inputs with the same weights as labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tympan.augment.mixup import mixup, mixup_parameters


def test_labels_sum_to_one_and_lambda_in_unit_interval() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, 10)
    y = torch.nn.functional.one_hot(torch.arange(32) % 5, 5).float()
    mixed_x, mixed_y = mixup(x, y, alpha=0.4, generator=g)
    assert mixed_x.shape == x.shape and mixed_y.shape == y.shape
    torch.testing.assert_close(mixed_y.sum(dim=1), torch.ones(32))
    assert (mixed_y >= 0).all() and (mixed_y <= 1).all()


def test_inputs_and_labels_mix_with_the_same_weights() -> None:
    lam, perm = mixup_parameters(16, 1.0, np.random.default_rng(3))
    assert ((lam >= 0) & (lam <= 1)).all()
    assert sorted(perm) == list(range(16))
    x = torch.randn(16, 4)
    y = torch.eye(16)
    mixed_x, mixed_y = mixup(x, y, 1.0, np.random.default_rng(3))
    lam_t = torch.as_tensor(lam, dtype=torch.float32)
    torch.testing.assert_close(mixed_x, lam_t[:, None] * x + (1 - lam_t[:, None]) * x[perm])
    # With identity labels, each row holds λ at itself and 1-λ at its partner.
    for i in range(16):
        if perm[i] != i:
            assert mixed_y[i, i].item() == pytest.approx(lam[i], abs=1e-6)
            assert mixed_y[i, perm[i]].item() == pytest.approx(1 - lam[i], abs=1e-6)


def test_reproducible_with_a_seed() -> None:
    x, y = torch.randn(8, 3), torch.eye(8)
    a = mixup(x, y, 0.3, torch.Generator().manual_seed(5))
    b = mixup(x, y, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        mixup(torch.zeros(2, 3), torch.eye(2), alpha=0.0)
    with pytest.raises(ValueError, match="examples"):
        mixup(torch.zeros(3, 3), torch.eye(2))
    with pytest.raises(ValueError, match="n_classes"):
        mixup(torch.zeros(2, 3), torch.zeros(2))
