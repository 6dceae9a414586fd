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
