"""Window scores → timed events, per class.

Each class's window scores are smoothed (a centred moving average over
``smooth_windows`` windows), cut with hysteresis (an event starts where the
score reaches ``threshold`` and lasts while it stays at or above
``threshold * (1 - hysteresis)``), events of one class closer than
``min_gap_seconds`` are merged, and events shorter than
``min_duration_seconds`` dropped. A window stands for the span from the
midpoint with its previous window's centre to the midpoint with the next
(:meth:`WindowScores.segment_edges_seconds`), so boundaries fall within a
hop of where the score crosses the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tympan.errors import ConfigError
from tympan.inference.detect import WindowScores

#: Threshold of a class without one in the model file or on the command line.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class EventConfig:
    """How window scores become events.

    ``thresholds`` maps a class to its on-threshold (a class not named gets
    ``default_threshold``); the off-threshold is ``on * (1 - hysteresis)`` (relative, so a
    low threshold keeps a usable off-threshold).
    ``smooth_windows`` is the moving-average length in windows (1 = none).

    Raises:
        ConfigError: a threshold outside (0, 1], a negative hysteresis,
            duration or gap, or ``smooth_windows`` < 1.
    """

    thresholds: Mapping[str, float] | None = None
    default_threshold: float = DEFAULT_THRESHOLD
    hysteresis: float = 0.2
    smooth_windows: int = 1
    min_duration_seconds: float = 0.0
    min_gap_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name, value in {"default": self.default_threshold, **(self.thresholds or {})}.items():
            if not 0.0 < float(value) <= 1.0:
                raise ConfigError(f"threshold of {name} must be in (0, 1], got {value}")
        if not 0.0 <= self.hysteresis < 1.0:
            raise ConfigError(f"--hysteresis must be in [0, 1), got {self.hysteresis}")
        if self.smooth_windows < 1:
            raise ConfigError(f"--smooth must be at least 1 window, got {self.smooth_windows}")
        if self.min_duration_seconds < 0 or self.min_gap_seconds < 0:
            raise ConfigError("--min-duration and --merge-gap must be >= 0 seconds")

    def threshold(self, label: str) -> float:
        """The on-threshold of ``label``."""
        return float((self.thresholds or {}).get(label, self.default_threshold))

    def off_threshold(self, label: str) -> float:
        """The score below which an event of ``label`` ends."""
        return self.threshold(label) * (1.0 - self.hysteresis)


@dataclass(frozen=True)
class Event:
    """One detection: ``label`` from ``start_seconds`` to ``end_seconds`` of the file, the
    highest and mean window score over it, and its channel (1-based; 0 = mixed)."""

    label: str
    start_seconds: float
    end_seconds: float
    peak_score: float
    mean_score: float
    channel: int = 0

    @property
    def duration_seconds(self) -> float:
        return self.end_seconds - self.start_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def smooth(scores: np.ndarray, n_windows: int) -> np.ndarray:
    """Centred moving average of ``(n, n_classes)`` scores over ``n_windows`` windows
    (near the ends, over the windows that exist); ``n_windows=1`` returns a copy."""
    scores = np.asarray(scores, dtype=np.float64)
    if n_windows <= 1 or scores.shape[0] == 0:
        return scores.copy()
    before = (n_windows - 1) // 2
    after = n_windows - 1 - before
    n = scores.shape[0]
    sums = np.concatenate([np.zeros((1, scores.shape[1])), np.cumsum(scores, axis=0)])
    lo = np.clip(np.arange(n) - before, 0, n)
    hi = np.clip(np.arange(n) + after + 1, 0, n)
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def hysteresis_runs(score: np.ndarray, on: float, off: float) -> list[tuple[int, int]]:
    """Runs ``(first, last)`` (inclusive window indices) where ``score`` reaches ``on`` and
    stays at or above ``off`` (``off`` is capped at ``on``)."""
    off = min(off, on)
    runs: list[tuple[int, int]] = []
    first = -1
    for i, value in enumerate(np.asarray(score, dtype=np.float64)):
        if first < 0:
            if value >= on:
                first = i
        elif value < off:
            runs.append((first, i - 1))
            first = -1
    if first >= 0:
        runs.append((first, len(score) - 1))
    return runs


def _merge(runs: list[tuple[int, int]], edges: np.ndarray, gap: float) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in runs:
        if merged and edges[first] - edges[merged[-1][1] + 1] <= gap:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def events_from_scores(
    scores: np.ndarray,
    edges_seconds: np.ndarray,
    classes: Sequence[str],
    config: EventConfig,
    *,
    channel: int = 0,
) -> list[Event]:
    """Events from window scores ``(n_windows, n_classes)`` and the windows' span edges
    ``(n_windows + 1,)`` in seconds, sorted by start time then label.

    Peak and mean are over the event's raw (unsmoothed) window scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(f"scores must be (n_windows, {len(classes)}), got {scores.shape}")
    if edges_seconds.shape != (scores.shape[0] + 1,):
        raise ValueError(f"edges must be ({scores.shape[0] + 1},), got {edges_seconds.shape}")
    smoothed = smooth(scores, config.smooth_windows)
    events = []
    for k, label in enumerate(classes):
        on = config.threshold(label)
        runs = hysteresis_runs(smoothed[:, k], on, config.off_threshold(label))
        for first, last in _merge(runs, edges_seconds, config.min_gap_seconds):
            start, end = float(edges_seconds[first]), float(edges_seconds[last + 1])
            if end - start < config.min_duration_seconds:
                continue
            window = scores[first:last + 1, k]
            events.append(Event(label, start, end, float(window.max()), float(window.mean()),
                                channel))
    events.sort(key=lambda e: (e.start_seconds, e.channel, e.label))
    return events


def detect_events(window_scores: WindowScores, config: EventConfig) -> list[Event]:
    """Events of every scored channel of ``window_scores`` (see :func:`events_from_scores`)."""
    edges = window_scores.segment_edges_seconds()
    events: list[Event] = []
    for c, channel in enumerate(window_scores.channels):
        events += events_from_scores(window_scores.scores[:, c, :], edges,
                                     window_scores.classes, config, channel=channel)
    events.sort(key=lambda e: (e.start_seconds, e.channel, e.label))
    return events


def model_thresholds(extra: Mapping[str, Any]) -> dict[str, float]:
    """Per-class thresholds a training run stored in a model file's ``extra`` (may be empty)."""
    found = extra.get("thresholds") if isinstance(extra, Mapping) else None
    if not isinstance(found, Mapping):
        return {}
    return {str(k): float(v) for k, v in found.items() if isinstance(v, int | float)}


__all__ = ["DEFAULT_THRESHOLD", "Event", "EventConfig", "detect_events", "events_from_scores",
           "hysteresis_runs", "model_thresholds", "smooth"]
