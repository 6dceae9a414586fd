"""Work units: each file's windows, planned from its header, cut into runs of whole windows.

The windows are :class:`~tympan.inference.detect.Detector`'s: ``window_samples``
long, every ``hop_samples``, the last one end-aligned so no sample is left
out, and a file shorter than a window is one window of all its samples. A
file's length at the model's rate comes from its header (soundfile), as soxr
will produce it, so planning never decodes audio. A unit is a run of at most
``unit_windows`` consecutive windows of one file: long recordings spread over
workers, and a worker never holds more than one unit's samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tympan.audio import _check_file, _describe
from tympan.config import FeatureConfig
from tympan.errors import AudioError
from tympan.inference.detect import hop_samples_for


@dataclass(frozen=True)
class WindowGeometry:
    """Window length and hop in samples at the model's ``sample_rate`` (Hz)."""

    sample_rate: int
    window_samples: int
    hop_samples: int

    @classmethod
    def from_features(cls, config: FeatureConfig, hop_seconds: float | None = None
                      ) -> WindowGeometry:
        """The geometry a :class:`~tympan.inference.detect.Detector` uses for ``config``:
        window = ``patch_frames * hop_samples``, hop = half a window unless ``hop_seconds``.

        Raises:
            ValueError: a hop that is not positive or longer than a window.
        """
        window = config.patch_frames * config.hop_samples
        return cls(config.sample_rate, window,
                   hop_samples_for(window, config.sample_rate, hop_seconds))


def window_starts(total_samples: int, window_samples: int, hop_samples: int) -> np.ndarray:
    """Start offsets ``(n_windows,)`` int64 of the windows of a ``total_samples`` signal:
    every ``hop_samples`` while a whole window fits, then one end-aligned window if samples
    are left; a signal shorter than a window is one window at 0 (none if it is empty)."""
    if total_samples <= 0:
        return np.zeros(0, dtype=np.int64)
    if total_samples < window_samples:
        return np.zeros(1, dtype=np.int64)
    n = (total_samples - window_samples) // hop_samples + 1
    starts = np.arange(n, dtype=np.int64) * hop_samples
    if starts[-1] + window_samples < total_samples:
        starts = np.append(starts, total_samples - window_samples)
    return starts


def resampled_length(frames: int, file_rate: int, sample_rate: int) -> int:
    """How many samples soxr makes of ``frames`` at ``file_rate`` resampled to ``sample_rate``
    (``frames * sample_rate / file_rate`` rounded half up)."""
    return (2 * frames * sample_rate + file_rate) // (2 * file_rate)


@dataclass(frozen=True)
class Unit:
    """Windows ``[first, stop)`` of file ``path`` (the ``file_index``-th of its shard), whose
    length at the model's rate is ``total_samples``."""

    path: str
    file_index: int
    first: int
    stop: int
    total_samples: int

    def starts(self, geometry: WindowGeometry) -> np.ndarray:
        """This unit's window starts in samples ``(stop - first,)``."""
        return window_starts(self.total_samples, geometry.window_samples,
                             geometry.hop_samples)[self.first:self.stop]

    def span(self, geometry: WindowGeometry) -> tuple[int, int]:
        """The samples ``[begin, end)`` at the model's rate its windows cover."""
        starts = self.starts(geometry)
        return int(starts[0]), min(int(starts[-1]) + geometry.window_samples,
                                   self.total_samples)


def file_samples(path: Path, sample_rate: int) -> int:
    """A file's length in samples at ``sample_rate``, from its header only.

    Raises:
        AudioError: missing, empty, unreadable, or a header without samples.
    """
    _check_file(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for bad input
        raise AudioError(path, _describe(exc)) from exc
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header ({info.samplerate} Hz, {info.channels} "
                               "channels)")
    if info.frames <= 0:
        raise AudioError(path, "empty: the file holds no samples")
    return resampled_length(int(info.frames), int(info.samplerate), sample_rate)


def plan_file(path: Path, file_index: int, geometry: WindowGeometry, unit_windows: int,
              min_duration_seconds: float = 0.1) -> list[Unit]:
    """The units of one file: its windows in runs of at most ``unit_windows``.

    Raises:
        AudioError: unreadable header, no samples, or shorter than ``min_duration_seconds``.
    """
    if unit_windows <= 0:
        raise ValueError(f"unit_windows must be positive, got {unit_windows}")
    total = file_samples(path, geometry.sample_rate)
    if total / geometry.sample_rate < min_duration_seconds:
        raise AudioError(path, f"{total / geometry.sample_rate:.3g} s, shorter than the "
                               f"{min_duration_seconds:g} s minimum")
    n = len(window_starts(total, geometry.window_samples, geometry.hop_samples))
    return [Unit(str(path), file_index, first, min(first + unit_windows, n), total)
            for first in range(0, n, unit_windows)]


__all__ = ["Unit", "WindowGeometry", "file_samples", "plan_file", "resampled_length",
           "window_starts"]
