"""Decode any audio file libsndfile reads to mono float32 at a chosen rate.

Every decoding failure is an :class:`~tympan.errors.AudioError` whose message
names the file and the cause; an all-silent clip is a warning, not an error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tympan.errors import AudioError, SilentAudioWarning

#: File extensions tried when walking folders (libsndfile reads all of these).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
     ".au", ".snd", ".caf", ".w64", ".rf64"}
)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts about a file: rate in Hz, channel count, length in samples."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libsndfile repeats the path ("Error opening '<path>': ..."); AudioError already names it
    if text.startswith("Error opening ") and "': " in text:
        text = text.split("': ", 1)[1]
    lowered = text.lower()
    if "format not recognised" in lowered or "unknown format" in lowered:
        return "not an audio file (libsndfile does not recognise the format)"
    if "does not exist or is not a regular file" in lowered or not text:
        # libsndfile's words when a decoder (e.g. MP3) rejects an existing, readable file
        return "not decodable audio (libsndfile cannot decode its content)"
    return f"corrupt or unreadable audio ({text})"


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file (symlink loop, permission …), or None if it can.

    Checks the file system only (no decoding); the reason is one short phrase.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (the link resolves to itself)"
        if exc.errno == errno.EACCES:
            return "permission denied (cannot open a folder on its path)"
        if path.is_symlink():
            return f"broken symlink (points to {os.readlink(path)}, which does not exist)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return f"cannot read the file ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an audio file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return "permission denied (the file is not readable: check its permissions)"
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"
    return None


def _check_file(path: Path) -> None:
    problem = file_problem(path)
    if problem is not None:
        raise AudioError(path, problem)


@contextlib.contextmanager
def _quiet_decoder(path: Path) -> Iterator[None]:
    """Silence what a C decoder prints on the process's stderr (libmpg123's "Note: Illegal
    Audio-MPEG-Header …" on a broken MP3): the failure is reported as an AudioError instead."""
    if path.suffix.lower() != ".mp3":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def probe(path: str | Path, *, min_duration_seconds: float = 0.0) -> AudioInfo:
    """Read a file's header only (fast) and check it is usable audio.

    Raises:
        AudioError: missing, empty, not audio, corrupt header, no samples, or
            shorter than ``min_duration_seconds``.
    """
    path = Path(path)
    _check_file(path)
    try:
        with _quiet_decoder(path):
            info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for bad input
        raise AudioError(path, _describe(exc)) from exc
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header ({info.samplerate} Hz, {info.channels} channels)")
    result = AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                       str(info.format), str(info.subtype))
    if result.frames <= 0:
        raise AudioError(path, "empty: the file holds no samples")
    _check_duration(path, result.duration_seconds, min_duration_seconds)
    return result


def _check_duration(path: Path, seconds: float, min_duration_seconds: float) -> None:
    if seconds < min_duration_seconds:
        raise AudioError(
            path, f"{seconds:.3g} s, shorter than the {min_duration_seconds:g} s minimum"
        )


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mix ``(samples, channels)`` to ``(samples,)`` by averaging channels."""
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a float32 waveform ``(samples,)`` or ``(samples, channels)`` with soxr (HQ)."""
    if from_rate == to_rate:
        return samples
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(
    path: str | Path,
    sample_rate: int | None = 44100,
    *,
    min_duration_seconds: float = 0.0,
    silence_threshold_db: float = -90.0,
) -> np.ndarray:
    """Decode ``path`` to mono float32 ``(samples,)`` at ``sample_rate`` Hz.

    Any channel count is averaged to mono; any rate is resampled with soxr
    (``sample_rate=None`` keeps the file's rate). A clip whose peak is below
    ``silence_threshold_db`` dBFS triggers :class:`SilentAudioWarning`.

    Raises:
        AudioError: unreadable/corrupt, not audio, empty, NaN or infinite
            samples, or shorter than ``min_duration_seconds``.
    """
    samples, rate = read_audio(path, min_duration_seconds=min_duration_seconds,
                               silence_threshold_db=silence_threshold_db)
    mono = to_mono(samples)
    if sample_rate is not None:
        mono = resample(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def read_audio(
    path: str | Path,
    *,
    min_duration_seconds: float = 0.0,
    silence_threshold_db: float = -90.0,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` as-is: float32 ``(samples, channels)`` and its rate in Hz.

    Raises:
        AudioError: as :func:`load_audio`.
    """
    path = Path(path)
    _check_file(path)
    try:
        with _quiet_decoder(path):
            samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for bad input
        raise AudioError(path, _describe(exc)) from exc
    if rate <= 0:
        raise AudioError(path, f"invalid sample rate {rate}")
    if samples.size == 0:
        raise AudioError(path, "empty: the file holds no samples")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(path, f"contains NaN or infinite samples ({bad} of {samples.size})")
    _check_duration(path, samples.shape[0] / rate, min_duration_seconds)
    peak = float(np.abs(samples).max())
    if peak <= 10 ** (silence_threshold_db / 20):
        warnings.warn(f"{path}: all-silent (peak {peak:.2g})", SilentAudioWarning, stacklevel=2)
    return samples, int(rate)


def pad(samples: np.ndarray, n_samples: int, *, align: str = "start") -> np.ndarray:
    """Zero-pad ``(samples,)`` to at least ``n_samples``; ``align`` is start|center|end."""
    missing = n_samples - samples.shape[-1]
    if missing <= 0:
        return samples
    if align == "start":
        before = 0
    elif align == "center":
        before = missing // 2
    elif align == "end":
        before = missing
    else:
        raise ValueError(f"align must be start, center or end, got {align!r}")
    widths = [(0, 0)] * (samples.ndim - 1) + [(before, missing - before)]
    return np.pad(samples, widths)


def crop(samples: np.ndarray, n_samples: int, *, offset_samples: int = 0) -> np.ndarray:
    """Cut ``(samples,)`` to at most ``n_samples`` starting at ``offset_samples``."""
    if offset_samples < 0:
        raise ValueError(f"offset_samples must be >= 0, got {offset_samples}")
    return samples[..., offset_samples:offset_samples + n_samples]


def fix_length(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """Pad with zeros or crop at the end so the result has exactly ``n_samples``."""
    return pad(crop(samples, n_samples), n_samples)


def split_windows(
    samples: np.ndarray, window_samples: int, hop_samples: int, *, pad_last: bool = True
) -> np.ndarray:
    """Split ``(samples,)`` into ``(n_windows, window_samples)`` with a hop.

    A clip shorter than one window gives one zero-padded window. With
    ``pad_last`` a trailing partial window is kept (zero-padded) so no sample
    is dropped; without it, it is dropped.
    """
    if window_samples <= 0 or hop_samples <= 0:
        raise ValueError("window_samples and hop_samples must be positive")
    n = samples.shape[-1]
    if n <= window_samples:
        return pad(samples, window_samples)[None, :window_samples]
    n_full = 1 + (n - window_samples) // hop_samples
    starts = [i * hop_samples for i in range(n_full)]
    if pad_last and starts[-1] + window_samples < n:
        starts.append(starts[-1] + hop_samples)
    return np.stack([pad(samples[s:s + window_samples], window_samples) for s in starts])


def window_starts_seconds(
    n_windows: int, hop_samples: int, sample_rate: int
) -> np.ndarray:
    """Start time in seconds of each window made by :func:`split_windows`."""
    return np.arange(n_windows) * hop_samples / sample_rate
