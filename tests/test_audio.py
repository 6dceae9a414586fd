"""Decoding (formats, rates, channels, subtypes), bad input, fixed-length helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import synth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tympan.audio import (
    crop,
    fix_length,
    load_audio,
    pad,
    probe,
    read_audio,
    resample,
    split_windows,
    to_mono,
    window_starts_seconds,
)
from tympan.errors import AudioError, SilentAudioWarning


def _peak_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sample_rate / len(x))


@pytest.mark.parametrize("suffix, rate, channels, subtype", [
    (".wav", 44100, 1, "PCM_16"),
    (".wav", 16000, 2, "PCM_24"),
    (".wav", 48000, 3, "FLOAT"),
    (".wav", 8000, 1, "PCM_U8"),
    (".flac", 22050, 2, None),
    (".ogg", 48000, 1, None),
    (".mp3", 32000, 2, None),
    (".aiff", 11025, 1, None),
])
def test_any_format_rate_channels_decodes_to_mono_float32(tmp_path, suffix, rate, channels,
                                                          subtype):
    path = synth.write(tmp_path / f"clip{suffix}", synth.tone(1000, 0.5, rate), rate,
                       channels=channels, subtype=subtype)
    info = probe(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    x = load_audio(path, 44100)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    # mp3 frames add encoder padding; everything else keeps the length exactly
    tolerance = 0.1 if suffix == ".mp3" else 0.002
    assert abs(len(x) / 44100 - 0.5) <= tolerance
    assert abs(_peak_hz(x, 44100) - 1000) < 5
    assert 0.3 < np.abs(x).max() < 0.7


@pytest.mark.parametrize("from_rate, to_rate, freq", [
    (8000, 44100, 1000.0), (16000, 44100, 3000.0), (48000, 44100, 12000.0),
    (44100, 32000, 440.0), (22050, 16000, 5000.0),
])
def test_resampling_keeps_a_tones_frequency(from_rate, to_rate, freq):
    y = resample(synth.tone(freq, 1.0, from_rate), from_rate, to_rate)
    assert y.dtype == np.float32
    assert len(y) == pytest.approx(to_rate, abs=2)
    assert abs(_peak_hz(y, to_rate) - freq) <= to_rate / len(y)
    assert np.abs(y[100:-100]).max() == pytest.approx(0.5, abs=0.02)


def test_load_audio_without_rate_keeps_the_files_rate(tmp_path):
    path = synth.write(tmp_path / "a.flac", synth.tone(440, 0.25, 22050), 22050)
    assert len(load_audio(path, None)) == round(0.25 * 22050)


def test_mono_mixdown_averages_channels(tmp_path):
    left, right = synth.tone(440, 0.2, 16000), synth.noise_burst(0.2, 16000)
    stereo = np.stack([left, right], axis=1)
    path = synth.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, None), (left + right) / 2, atol=1e-6)
    assert to_mono(stereo[:, :1]).shape == (len(left),)
    assert to_mono(left) is left


def test_read_audio_keeps_channels(tmp_path):
    path = synth.write(tmp_path / "s.wav", synth.tone(440, 0.2, 16000), 16000, channels=2)
    samples, rate = read_audio(path)
    assert samples.shape == (3200, 2) and rate == 16000


# ---- bad input: one exception type, naming the file and the cause -----------------------

def test_every_bad_file_in_the_zoo_is_an_audio_error_naming_file_and_cause(bad_folder):
    for path, cause in bad_folder.bad.items():
        with pytest.raises(AudioError) as info:
            load_audio(path, 44100, min_duration_seconds=0.1)
        assert info.value.path == path
        assert str(path) in str(info.value) and cause in str(info.value)
        assert str(path) not in info.value.reason  # the path is said once, not twice
    for path in bad_folder.good:
        assert load_audio(path, 44100, min_duration_seconds=0.1).size > 0


def test_header_probe_catches_all_but_sample_level_faults(bad_folder):
    nan = next(p for p, cause in bad_folder.bad.items() if cause == "NaN")
    assert probe(nan).frames > 0  # NaNs need the full decode
    for path in set(bad_folder.bad) - {nan}:
        with pytest.raises(AudioError):
            probe(path, min_duration_seconds=0.1)


def test_infinite_samples_are_rejected(tmp_path):
    x = synth.tone(440, 0.2, 16000)
    x[5] = np.inf
    path = synth.write(tmp_path / "inf.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path)


def test_missing_file_and_folder_are_audio_errors(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="folder"):
        probe(tmp_path)


def test_too_short_names_duration_and_minimum(tmp_path):
    path = synth.write(tmp_path / "short.wav", synth.tone(440, 0.04, 16000), 16000)
    with pytest.raises(AudioError, match=r"0\.04 s, shorter than the 0\.1 s minimum"):
        load_audio(path, min_duration_seconds=0.1)
    assert len(load_audio(path, None)) == 640  # no minimum by default


def test_all_silent_is_a_warning_not_an_error(tmp_path):
    path = synth.write(tmp_path / "silence.wav", np.zeros(8000, np.float32), 16000)
    with pytest.warns(SilentAudioWarning, match="silence.wav"):
        x = load_audio(path, 16000)
    assert x.shape == (8000,) and not x.any()


def test_quiet_but_not_silent_does_not_warn(tmp_path):
    path = synth.write(tmp_path / "quiet.wav", synth.tone(440, 0.2, 16000, amplitude=1e-3),
                       16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SilentAudioWarning)
        load_audio(path)


# ---- property: the decoder never fails with anything but AudioError ---------------------

_FUZZ = settings(max_examples=30, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _decode_or_audio_error(path) -> None:
    for call in (probe, lambda p: load_audio(p, 16000, min_duration_seconds=0.01)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SilentAudioWarning)
                call(path)
        except AudioError:
            pass


@_FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_random_bytes_raise_only_audio_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _decode_or_audio_error(path)


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    signal = synth.chirp(200, 6000, 0.3, 16000) + synth.noise_burst(0.3, 16000, amplitude=0.1)
    return {suffix: synth.write(root / f"real{suffix}", signal, 16000, channels=2).read_bytes()
            for suffix in (".wav", ".flac", ".ogg")}


@_FUZZ
@given(suffix=st.sampled_from([".wav", ".flac", ".ogg"]), fraction=st.floats(0.0, 1.0),
       flip=st.integers(0, 255))
def test_truncated_or_damaged_real_files_raise_only_audio_error(tmp_path, real_files, suffix,
                                                                fraction, flip):
    data = bytearray(real_files[suffix][: int(len(real_files[suffix]) * fraction)])
    if data and flip:
        data[flip % len(data)] ^= flip  # and a damaged byte somewhere in the kept part
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(bytes(data))
    _decode_or_audio_error(path)


# ---- fixed-length helpers ----------------------------------------------------------------

def test_pad_aligns_and_never_shortens():
    x = np.arange(1, 5, dtype=np.float32)
    np.testing.assert_array_equal(pad(x, 6), [1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(pad(x, 6, align="end"), [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(pad(x, 7, align="center"), [0, 1, 2, 3, 4, 0, 0])
    assert pad(x, 2) is x
    with pytest.raises(ValueError, match="align"):
        pad(x, 6, align="middle")


def test_crop_and_fix_length():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop(x, 3, offset_samples=2), [2, 3, 4])
    assert len(fix_length(x, 4)) == 4 and len(fix_length(x, 12)) == 12
    assert fix_length(x, 12)[10:].tolist() == [0, 0]
    with pytest.raises(ValueError):
        crop(x, 3, offset_samples=-1)


def test_split_windows_hop_padding_and_short_clips():
    x = np.arange(10, dtype=np.float32)
    w = split_windows(x, 4, 3)
    assert w.shape == (3, 4)  # starts 0, 3, 6: the last window ends at 10
    np.testing.assert_array_equal(w[2], [6, 7, 8, 9])
    w = split_windows(np.arange(11, dtype=np.float32), 4, 3)
    np.testing.assert_array_equal(w[-1], [9, 10, 0, 0])  # partial tail kept, zero-padded
    assert split_windows(np.arange(11, dtype=np.float32), 4, 3, pad_last=False).shape == (3, 4)
    short = split_windows(np.ones(3, np.float32), 8, 4)
    np.testing.assert_array_equal(short, [[1, 1, 1, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(window_starts_seconds(3, 4000, 16000), [0, 0.25, 0.5])
    with pytest.raises(ValueError):
        split_windows(x, 0, 1)


def test_links_and_permissions_are_named_not_called_missing(tmp_path, monkeypatch):
    import builtins

    import tympan.audio

    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop.name)
    dangling = tmp_path / "gone.wav"
    dangling.symlink_to("nowhere.wav")
    with pytest.raises(AudioError, match="symlink loop"):
        load_audio(loop)
    with pytest.raises(AudioError, match="broken symlink"):
        probe(dangling)
    locked = synth.write(tmp_path / "locked.wav", synth.tone(440, 0.2, 8000), 8000)
    real_open = builtins.open

    def no_read(path, *args, **kwargs):  # chmod 000 as a user (root reads anything)
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tympan.audio, "open", no_read, raising=False)
    with pytest.raises(AudioError, match="permission denied") as caught:
        load_audio(locked)
    assert str(locked) in str(caught.value)


def test_random_bytes_named_mp3_are_not_decodable_and_silent(tmp_path, capfd):
    fake = tmp_path / "song.mp3"
    fake.write_bytes(np.random.default_rng(0).bytes(20000))
    for decode in (probe, load_audio):
        with pytest.raises(AudioError) as caught:
            decode(fake)
        assert "not decodable audio" in str(caught.value) or "not an audio file" in str(
            caught.value)
        assert "does not exist" not in str(caught.value)
    captured = capfd.readouterr()
    assert "Note:" not in captured.err and "MPEG" not in captured.err
