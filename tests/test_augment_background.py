"""MixBackground: the requested SNR, looping short backgrounds, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth

from tympan.augment import MixBackground

SR = 16000


@pytest.fixture
def backgrounds(tmp_path: Path) -> Path:
    folder = tmp_path / "bg"
    synth.write(folder / "noise.wav", synth.noise_burst(2.0, SR, seed=3), SR)
    synth.write(folder / "deep" / "hum.flac", synth.tone(60, 2.0, SR, 0.2), SR)
    (folder / "readme.txt").write_text("not audio")
    return folder


def test_mix_reaches_the_drawn_snr(backgrounds: Path) -> None:
    clip = synth.tone(1000, 1.0, SR)
    t = MixBackground(backgrounds, 5, 15, p=1.0, seed=1)
    for _ in range(6):
        out = t(clip, SR)
        added = out - clip
        snr = 20 * np.log10(np.sqrt(np.mean(clip**2)) / np.sqrt(np.mean(added**2)))
        assert snr == pytest.approx(t.parameters["snr_db"], abs=0.05)
        assert 5 <= t.parameters["snr_db"] <= 15
    assert len(t.files) == 2  # the .txt file is not a background


def test_short_background_is_looped_to_the_clip_length(tmp_path: Path) -> None:
    synth.write(tmp_path / "short.wav", synth.noise_burst(0.1, SR), SR)
    clip = synth.tone(500, 1.0, SR)
    out = MixBackground(tmp_path / "short.wav", 0, 0, p=1.0, seed=0)(clip, SR)
    added = out - clip
    assert len(out) == len(clip)
    # Looped noise is present in every tenth of the clip.
    assert all(np.abs(part).max() > 0.01 for part in np.array_split(added, 10))


def test_deterministic_and_describes_the_background(backgrounds: Path) -> None:
    clip = synth.tone(1000, 0.5, SR)
    a, b = MixBackground(backgrounds, p=1.0, seed=9), MixBackground(backgrounds, p=1.0, seed=9)
    for _ in range(3):
        assert np.array_equal(a(clip, SR), b(clip, SR))
    tag = a.describe()
    assert tag is not None and tag.startswith("BG:") and tag.endswith("dB")


def test_silent_clip_is_left_unchanged(backgrounds: Path) -> None:
    silent = np.zeros(SR, np.float32)
    assert np.array_equal(MixBackground(backgrounds, p=1.0)(silent, SR), silent)


def test_folder_without_audio_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no background audio"):
        MixBackground(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        MixBackground(tmp_path / "missing")
    with pytest.raises(ValueError, match="min_snr_db"):
        MixBackground(tmp_path / "empty", 10, 0)
