"""Small synthetic sounds and file writers for tests (no downloads, no fixtures on disk).

Signals are float32 ``(samples,)`` in [-1, 1]; writers take ``(samples,)`` or
``(samples, channels)`` and any rate/subtype libsndfile accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aiff": ("AIFF", "PCM_16"),
}


def _time(duration_seconds: float, sample_rate: int) -> np.ndarray:
    return np.arange(round(duration_seconds * sample_rate)) / sample_rate


def tone(freq_hz: float, duration_seconds: float = 1.0, sample_rate: int = 44100,
         amplitude: float = 0.5) -> np.ndarray:
    """A sine at ``freq_hz``."""
    t = _time(duration_seconds, sample_rate)
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def chirp(f0_hz: float, f1_hz: float, duration_seconds: float = 1.0, sample_rate: int = 44100,
          amplitude: float = 0.5) -> np.ndarray:
    """A linear sweep from ``f0_hz`` to ``f1_hz``."""
    t = _time(duration_seconds, sample_rate)
    phase = 2 * np.pi * (f0_hz * t + (f1_hz - f0_hz) * t**2 / (2 * duration_seconds))
    return (amplitude * np.sin(phase)).astype(np.float32)


def noise_burst(duration_seconds: float = 1.0, sample_rate: int = 44100, amplitude: float = 0.3,
                burst_seconds: tuple[float, float] | None = None, seed: int = 0) -> np.ndarray:
    """White noise; with ``burst_seconds=(start, stop)`` silent outside that span."""
    rng = np.random.default_rng(seed)
    x = amplitude * rng.uniform(-1, 1, round(duration_seconds * sample_rate))
    if burst_seconds is not None:
        start, stop = (round(s * sample_rate) for s in burst_seconds)
        x[:start] = 0
        x[stop:] = 0
    return x.astype(np.float32)


def click_train(rate_hz: float = 10.0, duration_seconds: float = 1.0, sample_rate: int = 44100,
                amplitude: float = 0.9) -> np.ndarray:
    """Single-sample clicks every ``1 / rate_hz`` seconds."""
    x = np.zeros(round(duration_seconds * sample_rate), dtype=np.float32)
    x[:: max(1, round(sample_rate / rate_hz))] = amplitude
    return x


def write(path: str | Path, samples: np.ndarray, sample_rate: int = 44100, *,
          channels: int = 1, subtype: str | None = None) -> Path:
    """Write ``samples`` to ``path`` in the format its extension names.

    A 1-D signal is duplicated to ``channels`` channels. ``subtype`` overrides the
    default (e.g. ``"FLOAT"``, ``"PCM_24"``, ``"PCM_U8"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, default_subtype = FORMATS[path.suffix.lower()]
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1 and channels > 1:
        data = np.stack([data] * channels, axis=1)
    sf.write(str(path), data, sample_rate, format=fmt, subtype=subtype or default_subtype)
    return path


def write_nan_wav(
    path: str | Path, sample_rate: int = 44100, duration_seconds: float = 0.5
) -> Path:
    """A float WAV whose header is fine but which holds NaN samples."""
    x = tone(440, duration_seconds, sample_rate)
    x[100:110] = np.nan
    return write(path, x, sample_rate, subtype="FLOAT")


@dataclass(frozen=True)
class BadFolder:
    """What :func:`make_bad_folder` wrote: good files, and bad file → reason fragment."""

    root: Path
    good: list[Path]
    bad: dict[Path, str]


def make_bad_folder(root: str | Path, sample_rate: int = 22050) -> BadFolder:
    """Write the issue's bad-input zoo as a two-class folder-per-class dataset.

    Good: tones and noise (wav/flac/ogg) plus a stereo 8 kHz mp3 (valid; it
    exercises resampling and mixdown). Bad: a corrupt file, a zero-byte file, a
    0.05 s file, a text file named ``.wav`` and a float wav with NaNs. ``bad``
    maps each bad file to a fragment of the reason it must be reported with.
    """
    root = Path(root)
    beep, hiss = root / "beep", root / "hiss"
    good = [
        write(beep / "a.wav", tone(440, 0.5, sample_rate), sample_rate),
        write(beep / "b.flac", tone(880, 0.5, sample_rate), sample_rate),
        write(beep / "c.ogg", tone(1320, 0.5, sample_rate), sample_rate),
        write(hiss / "a.wav", noise_burst(0.5, sample_rate, seed=1), sample_rate),
        write(hiss / "b.wav", noise_burst(0.5, sample_rate, seed=2), sample_rate),
        write(hiss / "stereo8k.mp3", noise_burst(0.5, 8000, seed=3), 8000, channels=2),
    ]
    corrupt = beep / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    empty = beep / "empty.wav"
    empty.write_bytes(b"")
    short = write(hiss / "short.wav", tone(440, 0.05, sample_rate), sample_rate)
    text = hiss / "notes.wav"
    text.write_text("these are my field notes, not audio\n")
    nan = write_nan_wav(beep / "nan.wav", sample_rate)
    bad = {
        corrupt: "corrupt",
        empty: "empty",
        short: "shorter than",
        text: "not an audio file",
        nan: "NaN",
    }
    return BadFolder(root, good, bad)


ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def make_fake_esc50(root: str | Path, *, classes: tuple[str, ...] = ("dog", "rain"),
                    folds: int = 2, duration_seconds: float = 0.25,
                    sample_rate: int = 22050) -> Path:
    """A tiny ESC-50 layout (``meta/esc50.csv`` + ``audio/*.ogg``): one clip per class per fold.

    The first class is marked ESC-10. Returns ``root``.
    """
    root = Path(root)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rows = [ESC50_HEADER]
    for fold in range(1, folds + 1):
        for target, label in enumerate(classes):
            name = f"{fold}-{100 + target}-A-{target}.ogg"
            signal = (tone(300.0 * (target + 1), duration_seconds, sample_rate) if target % 2 == 0
                      else noise_burst(duration_seconds, sample_rate, seed=fold))
            write(root / "audio" / name, signal, sample_rate)
            rows.append(f"{name},{fold},{target},{label},{target == 0},{100 + target},A\n")
    (root / "meta" / "esc50.csv").write_text("".join(rows))
    return root


def zip_folder(folder: str | Path, archive: str | Path, prefix: str = "ESC-50-master") -> Path:
    """Zip ``folder``'s contents under ``prefix/`` (as GitHub's master zip does)."""
    import zipfile

    folder, archive = Path(folder), Path(archive)
    with zipfile.ZipFile(archive, "w") as zf:
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                zf.write(item, f"{prefix}/{item.relative_to(folder).as_posix()}")
    return archive


#: Browser-recording containers :func:`encode` writes: suffix → (PyAV format, codec, rate Hz).
ENCODINGS = {
    ".webm": ("webm", "libopus", 48000),
    ".opus": ("ogg", "libopus", 48000),
    ".m4a": ("mp4", "aac", 48000),
}


def encode(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono ``samples`` as WebM/Opus, Ogg/Opus or MP4/AAC (by suffix) with PyAV,
    resampled to the codec's rate as a browser's MediaRecorder would record it."""
    import av
    import soxr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, codec, rate = ENCODINGS[path.suffix.lower()]
    data = soxr.resample(np.asarray(samples, dtype=np.float32), sample_rate, rate)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(data[None, :].astype(np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
