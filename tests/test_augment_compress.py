"""Compress / compand: the DRC presets follow their transfer curves."""

from __future__ import annotations

import numpy as np
import pytest
import synth

from tympan.augment import DRC_PRESETS, CompandSettings, Compress, compand
from tympan.augment.compress import _envelope_python, envelope

SR = 16000


def square(level_db: float, seconds: float = 16.0) -> np.ndarray:
    """A square wave: |x| is constant, so the envelope settles at the level (16 s: the
    radio preset decays from its 0 dB start with a 1 s time constant)."""
    n = int(seconds * SR)
    sign = np.where((np.arange(n) // 40) % 2 == 0, 1.0, -1.0)
    return (10 ** (level_db / 20) * sign).astype(np.float32)


@pytest.mark.parametrize(
    ("preset", "level_db", "out_db"),
    [
        ("film standard", -43, -37),   # a listed point of the curve
        ("film standard", -25, -25),   # inside the unity stretch -31..-21
        ("music standard", -55, -43),
        ("speech", -50, -35),
        ("radio", -60, -20 - 5),       # the radio curve then its -5 dB gain
        ("film standard", -10.5, -20.5),  # halfway between (-21,-21) and (0,-20)
    ],
)
def test_steady_level_follows_the_transfer_curve(preset: str, level_db: float,
                                                 out_db: float) -> None:
    x = square(level_db)
    y = compand(x, SR, DRC_PRESETS[preset])
    settled = np.abs(y[-SR // 2:]).max()
    assert 20 * np.log10(settled) == pytest.approx(out_db, abs=0.05)


def test_compression_narrows_the_dynamic_range() -> None:
    quiet, loud = square(-50, 2.0), square(-6, 2.0)
    x = np.concatenate([quiet, loud])
    y = compand(x, SR, DRC_PRESETS["speech"])
    before = 20 * np.log10(np.abs(x[-SR // 2:]).max() / np.abs(x[SR: SR + SR // 2]).max())
    after = 20 * np.log10(np.abs(y[-SR // 2:]).max() / np.abs(y[SR: SR + SR // 2]).max())
    assert before == pytest.approx(44, abs=0.1)
    assert after < before - 20


def test_output_keeps_length_and_channels() -> None:
    x = np.stack([synth.tone(440, 0.5, SR), 0.1 * synth.tone(660, 0.5, SR)])
    y = compand(x, SR, DRC_PRESETS["radio"])
    assert y.shape == x.shape and y.dtype == np.float32
    assert compand(x[0], SR, DRC_PRESETS["radio"]).shape == x[0].shape


def test_compiled_envelope_matches_the_python_loop() -> None:
    level = np.abs(synth.noise_burst(0.2, SR)).astype(np.float64)
    np.testing.assert_allclose(envelope(level, 1.0, 0.01, 0.001),
                               _envelope_python(level, 1.0, 0.01, 0.001), rtol=1e-12)


def test_compress_picks_a_preset_and_is_deterministic() -> None:
    x = synth.noise_burst(0.3, SR)
    a, b = Compress(p=1.0, seed=4), Compress(p=1.0, seed=4)
    names = set()
    for _ in range(20):
        assert np.array_equal(a(x, SR), b(x, SR))
        names.add(a.parameters["preset"])
    assert names == set(DRC_PRESETS)
    assert a.describe() is not None and a.describe().startswith("DRC:")
    assert np.array_equal(Compress(p=0.0)(x, SR), x)


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown DRC preset"):
        Compress(["loud"])
    with pytest.raises(ValueError, match="strictly increasing"):
        CompandSettings(0.1, 0.3, ((-20.0, -20.0), (-30.0, -25.0)))
    with pytest.raises(ValueError, match="<= 0 dB"):
        CompandSettings(0.1, 0.3, ((-20.0, 3.0),))
    with pytest.raises(ValueError, match=">= 0"):
        CompandSettings(-0.1, 0.3, ((-20.0, -20.0),))
