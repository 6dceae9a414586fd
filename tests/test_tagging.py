"""AudioSet tagging with the backbone's own head (needs the mn04_as weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth

from tympan.errors import AudioError
from tympan.inference.tagging import AudioSetTagger, audioset_tags


@pytest.fixture
def tagger(mn04_weights: Path) -> AudioSetTagger:
    return AudioSetTagger("mn04_as", mn04_weights)


def test_a_tone_file_at_another_rate_is_tagged_sine_wave(mn04_weights: Path,
                                                         tmp_path: Path) -> None:
    path = synth.write(tmp_path / "tone.wav", synth.tone(440, 3.0, 44100, 0.5), 44100)
    tags = audioset_tags(path, top_k=5, weights=mn04_weights)
    assert len(tags) == 5
    assert tags[0].label == "Sine wave" and tags[0].index == 501
    probabilities = [t.probability for t in tags]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities)


def test_waveforms_are_resampled_to_the_backbone_rate(tagger: AudioSetTagger) -> None:
    at_16k = tagger.tags(synth.tone(440, 3.0, 16000, 0.5), sample_rate=16000, top_k=1)
    assert at_16k[0].label == "Sine wave"


def test_a_long_recording_keeps_a_sound_heard_in_any_window(tagger: AudioSetTagger) -> None:
    sr = tagger.sample_rate
    noise = synth.noise_burst(10.0, sr, 0.5, seed=2)
    # 30 s: 20 s of silence, then the noise, which fills exactly the third 10 s window
    wave = np.concatenate([np.zeros(20 * sr, np.float32), noise])
    white_noise = tagger.labels.index("White noise")
    whole = tagger.probabilities(wave)[white_noise]
    np.testing.assert_allclose(whole, tagger.probabilities(noise)[white_noise], rtol=1e-5)
    assert "White noise" in [t.label for t in tagger.tags(wave, top_k=3)]


def test_tiny_clips_are_padded_not_refused(tagger: AudioSetTagger) -> None:
    assert len(tagger.tags(synth.tone(440, 0.01, 32000), top_k=2)) == 2


def test_stereo_arrays_are_refused_with_a_hint(tagger: AudioSetTagger) -> None:
    with pytest.raises(ValueError, match="mono"):
        tagger.probabilities(np.zeros((2, 32000), np.float32))


def test_an_undecodable_file_names_the_file(mn04_weights: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    with pytest.raises(AudioError, match="bad.wav"):
        audioset_tags(bad, weights=mn04_weights)
