"""PitchShift: a tone moves by 2^(n/12), the duration stays; validation."""

from __future__ import annotations

import numpy as np
import pytest
import synth
from test_augment_time_stretch import dominant_hz

from tympan.augment import PitchShift

SR = 44100


@pytest.mark.parametrize("semitones", [-3.5, -2, -1, 1, 2, 2.5])
def test_tone_moves_by_two_to_the_n_over_twelve_and_keeps_duration(semitones: float) -> None:
    x = synth.tone(440, 2.0, SR)
    out = PitchShift(semitones=[semitones], p=1.0, seed=0)(x, SR)
    assert len(out) == len(x)
    assert dominant_hz(out, SR) == pytest.approx(440 * 2 ** (semitones / 12), rel=0.01)


def test_deterministic_under_a_seed_and_draws_within_range() -> None:
    x = synth.tone(440, 0.3, SR)
    a, b = PitchShift(-3, 3, p=1.0, seed=11), PitchShift(-3, 3, p=1.0, seed=11)
    for _ in range(3):
        assert np.array_equal(a(x, SR), b(x, SR))
        assert -3 <= a.parameters["semitones"] <= 3


def test_discrete_set_draws_only_its_values() -> None:
    t = PitchShift(semitones=[-2, -1, 1, 2], p=1.0, seed=0)
    x = np.zeros(64, np.float32)
    x[10] = 1
    drawn = set()
    for _ in range(40):
        t.randomize_parameters(x, SR)
        drawn.add(t.parameters["semitones"])
    assert drawn == {-2.0, -1.0, 1.0, 2.0}


def test_p_zero_is_identity() -> None:
    x = synth.tone(440, 0.3, SR)
    assert np.array_equal(PitchShift(p=0.0)(x, SR), x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_semitones": 2, "max_semitones": -2}, "min_semitones"),
        ({"semitones": [30]}, "24"),
        ({"semitones": [float("nan")]}, "finite"),
        ({"engine": "x"}, "engine"),
    ],
)
def test_invalid_parameters_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PitchShift(**kwargs)
