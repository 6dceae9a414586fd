"""The transform contract: p, seeding, freezing, Compose and OneOf."""

from __future__ import annotations

import numpy as np
import pytest
import synth

from tympan.augment import Compose, Gain, OneOf, PitchShift, TimeStretch
from tympan.augment.base import BaseTransform


def test_p_zero_is_identity_and_p_one_always_applies() -> None:
    x = synth.tone(440, 0.2)
    assert np.array_equal(Gain(-6, -6, p=0.0, seed=1)(x, 44100), x)
    out = Gain(-6, -6, p=1.0, seed=1)(x, 44100)
    np.testing.assert_allclose(out, x * 10 ** (-6 / 20), rtol=1e-6)


def test_p_is_a_frequency() -> None:
    t = Gain(-6, -6, p=0.3, seed=0)
    x = np.ones(8, np.float32)
    applied = sum(not np.array_equal(t(x, 8000), x) for _ in range(2000))
    assert 0.25 < applied / 2000 < 0.35


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_unit_interval_is_rejected(p: float) -> None:
    with pytest.raises(ValueError, match="probability"):
        Gain(p=p)


def test_bad_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        Gain(p=1.0)(np.zeros((1, 2, 3), np.float32), 8000)
    with pytest.raises(ValueError, match="floating"):
        Gain(p=1.0)(np.zeros(4, np.int16), 8000)
    with pytest.raises(ValueError, match="sample_rate"):
        Gain(p=1.0)(np.zeros(4, np.float32), 0)


def test_same_seed_same_outputs_other_seed_differs() -> None:
    x = synth.noise_burst(0.3, 22050)
    a = Compose([Gain(p=0.5), PitchShift(p=0.5), TimeStretch(p=0.5)], seed=7)
    b = Compose([Gain(p=0.5), PitchShift(p=0.5), TimeStretch(p=0.5)], seed=7)
    c = Compose([Gain(p=0.5), PitchShift(p=0.5), TimeStretch(p=0.5)], seed=8)
    outs_a = [a(x, 22050) for _ in range(4)]
    outs_b = [b(x, 22050) for _ in range(4)]
    outs_c = [c(x, 22050) for _ in range(4)]
    for u, v in zip(outs_a, outs_b, strict=True):
        assert np.array_equal(u, v)
    assert any(not np.array_equal(u, w) for u, w in zip(outs_a, outs_c, strict=True))


def test_frozen_parameters_repeat_the_same_change() -> None:
    t = Gain(-12, 12, p=1.0, seed=3)
    x = np.ones(4, np.float32)
    first = t(x, 8000)
    t.freeze_parameters()
    assert np.array_equal(t(x, 8000), first)
    t.unfreeze_parameters()
    assert not np.array_equal(t(x, 8000), first)


def test_one_of_applies_exactly_one_and_describes_it() -> None:
    t = OneOf([Gain(-6, -6, p=1.0), Gain(6, 6, p=1.0)], seed=0)
    x = np.ones(4, np.float32)
    seen = set()
    for _ in range(40):
        out = t(x, 8000)
        gain_db = 20 * np.log10(out[0])
        assert gain_db == pytest.approx(-6, abs=1e-4) or gain_db == pytest.approx(6, abs=1e-4)
        seen.add(t.describe())
    assert seen == {"GAIN:-6dB", "GAIN:6dB"}


def test_one_of_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="weights"):
        OneOf([Gain(), Gain()], weights=[1.0])
    with pytest.raises(ValueError, match="positive sum"):
        OneOf([Gain(), Gain()], weights=[0.0, 0.0])


def test_compose_needs_transforms() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Compose([])
    with pytest.raises(ValueError, match="not a BaseTransform"):
        Compose([lambda x, sr: x])  # type: ignore[list-item]


def test_compose_describes_the_chain() -> None:
    t = Compose([Gain(3, 3, p=1.0), Gain(-3, -3, p=0.0)], seed=0)
    t(np.ones(4, np.float32), 8000)
    assert t.describe() == "GAIN:3dB"


def test_base_transform_apply_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        BaseTransform(p=1.0)(np.ones(4, np.float32), 8000)
