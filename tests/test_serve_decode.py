"""Decoding uploads: every container a browser or a user sends, and the refusals."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import synth

pytest.importorskip("av", reason="the serve extra (PyAV) is not installed")

from tympan.serve.decode import decode_upload, sniff_container  # noqa: E402
from tympan.serve.errors import AudioTooShort, UnsupportedAudio, UploadTooLarge  # noqa: E402


def _decode(path: Path, rate: int = 16000, max_seconds: float = 60.0):  # type: ignore[no-untyped-def]
    with open(path, "rb") as body:
        return decode_upload(body, path.name, rate, max_seconds=max_seconds)


@pytest.mark.parametrize(("suffix", "container"), [
    (".wav", "wav"), (".flac", "flac"), (".ogg", "ogg"), (".mp3", "mp3"), (".aiff", "aiff"),
    (".webm", "matroska"), (".opus", "ogg"), (".m4a", "mp4"),
])
def test_every_container_decodes_to_mono_at_the_model_rate(tmp_path: Path, suffix: str,
                                                            container: str) -> None:
    clip = synth.tone(1000, 1.5, 44100)
    path = tmp_path / f"clip{suffix}"
    if suffix in synth.ENCODINGS:
        synth.encode(path, clip, 44100)
    else:
        synth.write(path, clip, 44100, channels=2)
    decoded = _decode(path)
    assert decoded.container == container
    assert decoded.sample_rate == 16000 and decoded.wave.ndim == 1
    assert decoded.wave.dtype == np.float32
    assert decoded.duration_seconds == pytest.approx(1.5, abs=0.1)  # codecs pad a few ms
    spectrum = np.abs(np.fft.rfft(decoded.wave[4000:20000]))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=5)  # 1 Hz bins: the tone survives


def test_sniffing_recognises_containers_by_their_first_bytes() -> None:
    assert sniff_container(b"RIFF\0\0\0\0WAVEfmt ") == "wav"
    assert sniff_container(b"\x1aE\xdf\xa3\x01\0\0\0\0\0\0\0") == "matroska"
    assert sniff_container(b"\0\0\0\x20ftypM4A ") == "mp4"
    assert sniff_container(b"\xff\xf1\x50\x80\0\0\0\0\0\0\0\0") == "aac"
    assert sniff_container(b"\xff\xfb\x90\x64\0\0\0\0\0\0\0\0") == "mp3"
    assert sniff_container(b"#EXTM3U\n#EXT-X") is None  # playlists are never handed to FFmpeg
    assert sniff_container(b"ffconcat versi") is None


@pytest.mark.parametrize("body", [
    b"these are my field notes, not audio\n",
    b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n",
    b"ffconcat version 1.0\nfile /etc/passwd\n",
])
def test_non_audio_is_unsupported_and_named(body: bytes) -> None:
    with pytest.raises(UnsupportedAudio, match="notes.txt: not a recognised audio container"):
        decode_upload(io.BytesIO(body), "notes.txt", 16000, max_seconds=60)


@pytest.mark.parametrize("suffix", [".flac", ".webm"])
def test_a_corrupt_body_is_unsupported(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    if suffix in synth.ENCODINGS:
        synth.encode(path, synth.tone(440, 1.0, 16000), 16000)
    else:
        synth.write(path, synth.tone(440, 1.0, 16000), 16000)
    head = path.read_bytes()[:16]  # the right magic, then garbage
    body = io.BytesIO(head + bytes(range(256)) * 8)
    with pytest.raises(UnsupportedAudio, match=f"bad{suffix}"):
        decode_upload(body, f"bad{suffix}", 16000, max_seconds=60)


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".webm"])
def test_audio_over_the_duration_cap_is_too_large(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"long{suffix}"
    clip = synth.noise_burst(3.0, 16000)
    if suffix in synth.ENCODINGS:
        synth.encode(path, clip, 16000)
    else:
        synth.write(path, clip, 16000)
    with pytest.raises(UploadTooLarge, match="longer than the server's 2 s limit"):
        _decode(path, max_seconds=2.0)


def test_too_short_audio_is_refused(tmp_path: Path) -> None:
    path = synth.write(tmp_path / "blip.wav", synth.tone(440, 0.05, 16000), 16000)
    with pytest.raises(AudioTooShort, match="blip.wav: 0.05 s of audio, shorter than the 0.1 s"):
        _decode(path)


def test_nan_samples_are_unsupported(tmp_path: Path) -> None:
    path = synth.write_nan_wav(tmp_path / "nan.wav", 16000)
    with pytest.raises(UnsupportedAudio, match="NaN"):
        _decode(path)
