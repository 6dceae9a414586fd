"""Gain: decibels in, scaled samples out."""

from __future__ import annotations

import numpy as np
import pytest

from tympan.augment import Gain


def test_gain_scales_by_decibels_within_range() -> None:
    t = Gain(-6, 6, p=1.0, seed=0)
    x = np.full(16, 0.1, np.float32)
    for _ in range(20):
        out = t(x, 8000)
        gain_db = 20 * np.log10(out[0] / 0.1)
        assert gain_db == pytest.approx(t.parameters["gain_db"], abs=1e-4)
        assert -6 <= gain_db <= 6


def test_discrete_gains() -> None:
    t = Gain(gains_db=[-20], p=1.0)
    np.testing.assert_allclose(t(np.ones(4, np.float32), 8000), 0.1, rtol=1e-6)


def test_invalid_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_gain_db"):
        Gain(6, -6)
    with pytest.raises(ValueError, match="finite"):
        Gain(gains_db=[float("inf")])
