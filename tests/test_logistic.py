"""The logistic head: scikit-learn's objective, folded into a network's Linear layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tympan import models
from tympan.errors import TympanError
from tympan.workflows.recipes.logistic import LogisticHead, fit_logistic, install_head


def test_fit_logistic_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    weight, bias = fit_logistic(x, y, 3, C=0.5, max_iter=500)
    reference = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(weight, reference.coef_, atol=2e-3)
    np.testing.assert_allclose(bias, reference.intercept_, atol=2e-3)


def test_folded_head_gives_the_same_logits_in_the_model() -> None:
    rng = np.random.default_rng(1)
    head = LogisticHead(weight=rng.normal(size=(3, 384)), bias=rng.normal(size=3),
                        mean=rng.normal(size=384), scale=rng.uniform(0.5, 2, 384), C=1.0)
    model = models.create("mn04_as", 3, pretrained=False).eval()
    install_head(model, head)
    x = torch.randn(2, 128, 64)
    with torch.no_grad():
        embedding = model.embed(x).double().numpy()
        np.testing.assert_allclose(model(x).double().numpy(), head.logits(embedding),
                                   rtol=1e-4, atol=1e-4)


def test_an_mlp_head_cannot_take_a_logistic_regression() -> None:
    model = models.create("mn04_as", 3, pretrained=False, head_hidden=16)
    head = LogisticHead(np.zeros((3, 384)), np.zeros(3), np.zeros(384), np.ones(384), 1.0)
    with pytest.raises(TympanError, match="one Linear layer"):
        install_head(model, head)


def test_copies_identical_to_their_clips_leave_the_head_unchanged() -> None:
    # a clip and its k copies weigh as much as the clip alone: C keeps its meaning, where
    # unweighted, 8 copies made the fit behave like one with a 9 times larger C
    from tympan.workflows.recipes.logistic import fit_head

    rng = np.random.default_rng(2)
    labels = np.arange(30) % 3
    items = [(rng.normal(size=(2, 1, 8)) + labels[i]).astype(np.float32) for i in range(30)]
    copies = [[e.copy() for _ in range(8)] for e in items]
    everything = np.arange(30)
    alone = fit_head(items, labels, everything, 3, C=0.05, max_iter=200)
    with_copies = fit_head(items, labels, everything, 3, C=0.05, max_iter=200,
                           variants=copies)
    np.testing.assert_allclose(with_copies.weight, alone.weight, atol=1e-4)
    np.testing.assert_allclose(with_copies.bias, alone.bias, atol=1e-4)


def test_sample_weights_scale_the_data_term_like_c() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 5))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    halved = fit_logistic(x, y, 3, C=1.0, max_iter=300, sample_weight=np.full(90, 0.5))
    smaller_c = fit_logistic(x, y, 3, C=0.5, max_iter=300)
    np.testing.assert_allclose(halved[0], smaller_c[0], atol=2e-3)
    np.testing.assert_allclose(halved[1], smaller_c[1], atol=2e-3)
