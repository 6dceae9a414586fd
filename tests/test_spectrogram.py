"""Spectrogram figure and raw patch images."""

from __future__ import annotations

import numpy as np
import pytest
import synth
from PIL import Image

from tympan.errors import AudioError, TympanError
from tympan.spectrogram import patch_paths, save_patches, save_spectrogram


@pytest.fixture
def clip(tmp_path):
    return synth.write(tmp_path / "low tone.wav", synth.tone(200, 4.0, 22050), 22050)


def test_figure_is_a_png_and_is_not_overwritten(clip, tmp_path):
    out = save_spectrogram(clip, tmp_path / "fig.png")
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > image.size[1] > 300
    before = out.read_bytes()
    with pytest.raises(TympanError, match="--overwrite"):
        save_spectrogram(clip, out)
    assert out.read_bytes() == before
    save_spectrogram(clip, out, overwrite=True)


def test_raw_patches_are_the_networks_128x128_images(clip, tmp_path):
    outputs = save_patches(clip, tmp_path / "p.png")
    # 4 s at 44.1 kHz = 173 frames: patches start at 0 and 45 (end-aligned)
    assert outputs == patch_paths(tmp_path / "p.png", 2)
    assert [p.name for p in outputs] == ["p-000.png", "p-001.png"]
    pixels = np.asarray(Image.open(outputs[0]))
    assert pixels.shape == (128, 128) and pixels.dtype == np.uint8
    rows = pixels.mean(axis=1)
    assert rows[-20:].mean() > rows[:20].mean() + 100  # a 200 Hz tone: bright at the bottom
    with pytest.raises(TympanError):
        save_patches(clip, tmp_path / "p.png")


def test_short_clip_gives_one_padded_patch_and_bad_audio_is_an_audio_error(tmp_path):
    short = synth.write(tmp_path / "s.wav", synth.noise_burst(0.5, 16000), 16000)
    assert len(save_patches(short, tmp_path / "s.png")) == 1
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    with pytest.raises(AudioError, match="not an audio file"):
        save_spectrogram(bad, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
