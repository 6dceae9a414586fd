"""TimeStretch: duration changes by 1/rate, pitch stays; length policy; validation."""

from __future__ import annotations

import numpy as np
import pytest
import synth

from tympan.augment import TimeStretch
from tympan.augment.time_stretch import rubberband

SR = 44100


def dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    """Peak of the magnitude spectrum of the middle of ``x``, refined by a parabola."""
    mid = x[len(x) // 4: 3 * len(x) // 4].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid)), n=8 * len(mid)))
    k = int(spectrum[1:].argmax()) + 1
    a, b, c = np.log(spectrum[k - 1: k + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * sample_rate / (8 * len(mid))


@pytest.mark.parametrize("rate", [0.81, 0.93, 1.07, 1.23])
def test_stretch_changes_duration_by_one_over_rate_and_keeps_pitch(rate: float) -> None:
    x = synth.tone(440, 2.0, SR)
    out = TimeStretch(rates=[rate], length="stretch", p=1.0, seed=0)(x, SR)
    assert len(out) == pytest.approx(len(x) / rate, rel=0.01)
    assert dominant_hz(out, SR) == pytest.approx(440, rel=0.01)


def test_keep_length_crops_or_pads_back_to_the_input_length() -> None:
    x = synth.tone(440, 1.0, SR)
    slow = TimeStretch(rates=[0.8], p=1.0)(x, SR)
    fast = TimeStretch(rates=[1.25], p=1.0)(x, SR)
    assert len(slow) == len(fast) == len(x)
    natural = round(len(x) / 1.25)
    # A faster clip ends early: the padding is silence.
    assert np.abs(fast[natural + 64:]).max() == 0.0
    assert np.abs(fast[: natural - 4096]).max() > 0.1


def test_deterministic_under_a_seed() -> None:
    x = synth.noise_burst(0.5, SR)
    a = [TimeStretch(0.8, 1.25, p=1.0, seed=5)(x, SR) for _ in range(2)]
    t1, t2 = TimeStretch(0.8, 1.25, p=1.0, seed=5), TimeStretch(0.8, 1.25, p=1.0, seed=5)
    for _ in range(3):
        assert np.array_equal(t1(x, SR), t2(x, SR))
    assert np.array_equal(a[0], a[1])
    assert t1.describe() is not None and t1.describe().startswith("TS:")


def test_p_zero_is_identity() -> None:
    x = synth.chirp(200, 2000, 0.5, SR)
    assert np.array_equal(TimeStretch(p=0.0)(x, SR), x)


def test_multichannel_keeps_channels() -> None:
    x = np.stack([synth.tone(440, 0.5, SR), synth.tone(660, 0.5, SR)])
    out = TimeStretch(rates=[1.07], length="stretch", p=1.0)(x, SR)
    assert out.shape[0] == 2
    assert out.shape[1] == pytest.approx(x.shape[1] / 1.07, rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_rate": 1.2, "max_rate": 0.9}, "min_rate"),
        ({"rates": [0.0]}, r"\[0.1, 10"),
        ({"rates": []}, "at least one"),
        ({"length": "same"}, "length"),
        ({"engine": "best"}, "engine"),
        ({"p": 2.0}, "probability"),
    ],
)
def test_invalid_parameters_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimeStretch(**kwargs)


def test_faster_engine_also_changes_duration_by_one_over_rate() -> None:
    x = synth.tone(440, 1.0, SR)
    out = rubberband(x, SR, rate=1.23, engine="faster")
    assert len(out) == pytest.approx(len(x) / 1.23, rel=0.01)
