"""Decode an uploaded body (wav, flac, ogg, mp3, webm, mp4/aac …) to mono float32.

libsndfile (soundfile) reads wav/flac/ogg/mp3/aiff; what it cannot read and
browsers record (WebM/Opus from Chromium, Ogg/Opus from Firefox, MP4/AAC from
Safari) goes through FFmpeg via PyAV. The container is recognised from its
first bytes and only an allow-list of demuxers is used, so an upload can never
make FFmpeg open another file or URL (playlists, concat lists). Channels are
averaged, the rate is converted with soxr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

import numpy as np
import soundfile as sf

from tympan.audio import resample, to_mono
from tympan.serve.errors import AudioTooShort, UnsupportedAudio, UploadTooLarge

#: Containers libsndfile is tried on first (PyAV is the fallback for the codecs it lacks).
SOUNDFILE_FIRST = frozenset({"wav", "flac", "ogg", "mp3", "aiff"})


@dataclass(frozen=True)
class DecodedAudio:
    """A mono float32 waveform ``(samples,)`` at ``sample_rate`` Hz and where it came from."""

    wave: np.ndarray
    sample_rate: int
    source_rate: int
    container: str

    @property
    def duration_seconds(self) -> float:
        return self.wave.shape[0] / self.sample_rate


def sniff_container(head: bytes) -> str | None:
    """The container named by a body's first bytes (at least 12), or None when unknown."""
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"RF64"):
        return "wav"
    if head[:4] in (b"RF64", b"BW64"):
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska"  # also WebM
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 mean ADTS AAC
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def decode_upload(
    body: IO[bytes],
    name: str,
    sample_rate: int,
    *,
    max_seconds: float,
    min_seconds: float = 0.1,
) -> DecodedAudio:
    """Decode ``body`` (a seekable binary file) to mono float32 at ``sample_rate`` Hz.

    ``name`` only labels messages (it is never opened). Decoding stops as soon
    as the audio passes ``max_seconds``.

    Raises:
        UnsupportedAudio: not a known container, or neither decoder can read it.
        UploadTooLarge: longer than ``max_seconds``.
        AudioTooShort: shorter than ``min_seconds``.
    """
    body.seek(0)
    container = sniff_container(body.read(12))
    if container is None:
        raise UnsupportedAudio(f"{name}: not a recognised audio container (send wav, flac, ogg, "
                               "mp3, webm, mp4/m4a or aac)")
    samples: np.ndarray | None = None
    rate = 0
    if container in SOUNDFILE_FIRST:
        try:
            samples, rate = _read_soundfile(body, name, max_seconds)
        except UnsupportedAudio:
            samples = None  # e.g. Ogg/Opus on an older libsndfile: FFmpeg may know it
    if samples is None:
        samples, rate = _read_pyav(body, name, container, max_seconds)
    if samples.shape[0] == 0:
        raise UnsupportedAudio(f"{name}: the {container} body holds no audio samples")
    if not np.isfinite(samples).all():
        raise UnsupportedAudio(f"{name}: contains NaN or infinite samples")
    seconds = samples.shape[0] / rate
    if seconds < min_seconds:
        raise AudioTooShort(f"{name}: {seconds:.3g} s of audio, shorter than the "
                            f"{min_seconds:g} s minimum")
    wave = resample(to_mono(samples), rate, sample_rate)
    return DecodedAudio(np.ascontiguousarray(wave, dtype=np.float32), sample_rate, rate,
                        container)


def _too_long(name: str, max_seconds: float) -> UploadTooLarge:
    return UploadTooLarge(f"{name}: audio longer than the server's {max_seconds:g} s limit; "
                          "send a shorter excerpt")


def _read_soundfile(body: IO[bytes], name: str, max_seconds: float) -> tuple[np.ndarray, int]:
    body.seek(0)
    try:
        with sf.SoundFile(body) as f:
            if f.samplerate <= 0 or f.channels <= 0:
                raise UnsupportedAudio(f"{name}: invalid header ({f.samplerate} Hz, "
                                       f"{f.channels} channels)")
            limit = int(max_seconds * f.samplerate)
            # frames is exact for wav/flac, an estimate or 0 for compressed streams
            if f.frames > limit:
                raise _too_long(name, max_seconds)
            samples = f.read(limit + 1, dtype="float32", always_2d=True)
            rate = int(f.samplerate)
    except (UnsupportedAudio, UploadTooLarge):
        raise
    except Exception as exc:  # libsndfile raises several types for bad input
        raise UnsupportedAudio(f"{name}: libsndfile cannot decode it ({exc})") from exc
    if samples.shape[0] > limit:
        raise _too_long(name, max_seconds)
    return samples, rate


def _read_pyav(body: IO[bytes], name: str, container: str,
               max_seconds: float) -> tuple[np.ndarray, int]:
    import av

    body.seek(0)
    chunks: list[np.ndarray] = []
    total = 0
    rate = 0
    try:
        # format= pins the demuxer we recognised: FFmpeg never probes (or follows) anything else
        with av.open(body, mode="r", format=container) as box:
            if not box.streams.audio:
                raise UnsupportedAudio(f"{name}: the {container} container holds no audio stream")
            stream = box.streams.audio[0]
            for frame in box.decode(stream):
                if rate == 0:
                    rate = int(frame.sample_rate)
                elif int(frame.sample_rate) != rate:
                    raise UnsupportedAudio(f"{name}: the sample rate changes mid-stream "
                                           f"({rate} → {frame.sample_rate} Hz)")
                chunk = _frame_samples(frame)
                chunks.append(chunk)
                total += chunk.shape[0]
                if rate and total > max_seconds * rate:
                    raise _too_long(name, max_seconds)
    except (UnsupportedAudio, UploadTooLarge):
        raise
    except Exception as exc:  # av.error.FFmpegError and friends
        raise UnsupportedAudio(f"{name}: FFmpeg cannot decode it as {container} "
                               f"({type(exc).__name__}: {exc})") from exc
    if not chunks or rate <= 0:
        raise UnsupportedAudio(f"{name}: the {container} body holds no audio samples")
    return np.concatenate(chunks), rate


def _frame_samples(frame: object) -> np.ndarray:
    """One PyAV audio frame as float32 ``(samples, channels)``."""
    data = frame.to_ndarray()  # type: ignore[attr-defined]
    channels = len(frame.layout.channels)  # type: ignore[attr-defined]
    fmt = frame.format  # type: ignore[attr-defined]
    data = data.reshape(channels, -1) if fmt.is_planar else data.reshape(-1, channels).T
    if data.dtype.kind == "f":
        out = data.astype(np.float32)
    elif data.dtype.kind == "u":  # 8-bit PCM is unsigned around 128
        out = (data.astype(np.float32) - 128.0) / 128.0
    else:
        out = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return np.ascontiguousarray(out.T)
