"""Per-window scores and simple events for a long upload: threshold, then merge.

The model's patches are the windows (``patch_frames`` wide every
``patch_hop_frames``, as in training), so one forward pass gives both the clip
answer (their mean) and this timeline. :func:`window_timeline` is the one entry
point; a fuller detector (smoothing, hysteresis) can replace it without the
server changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tympan.config import FeatureConfig
from tympan.windows import patch_starts


@dataclass(frozen=True)
class Event:
    """``label`` present from ``start_seconds`` to ``end_seconds``; ``score`` is its peak."""

    label: str
    start_seconds: float
    end_seconds: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "start_seconds": round(self.start_seconds, 3),
                "end_seconds": round(self.end_seconds, 3), "score": round(self.score, 4)}


@dataclass(frozen=True)
class Timeline:
    """Window start times ``(n_windows,)`` in seconds, scores ``(n_windows, n_classes)``, events."""

    starts_seconds: np.ndarray
    window_seconds: float
    hop_seconds: float
    scores: np.ndarray
    events: list[Event] = field(default_factory=list)

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        return {"window_seconds": round(self.window_seconds, 4),
                "hop_seconds": round(self.hop_seconds, 4),
                "labels": list(classes),
                "starts_seconds": [round(float(s), 3) for s in self.starts_seconds],
                "scores": np.round(self.scores, 4).tolist(),
                "events": [e.to_dict() for e in self.events]}


def window_timeline(
    patch_probs: np.ndarray,
    frames: int,
    config: FeatureConfig,
    classes: Sequence[str],
    *,
    duration_seconds: float,
    threshold: float = 0.5,
    merge_gap_seconds: float = 0.0,
) -> Timeline:
    """Scores per window and the events they make.

    ``patch_probs`` ``(n_windows, n_classes)`` are the softmaxes of the patches
    :func:`tympan.windows.split_patches` cut from a ``frames``-long log-mel. A
    class is present in every window where its score is at least ``threshold``;
    present windows that overlap or lie within ``merge_gap_seconds`` of each
    other merge into one event (clipped to ``duration_seconds``).

    Raises:
        ValueError: ``patch_probs`` does not have one row per window, or a bad threshold.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    starts = patch_starts(max(frames, config.patch_frames), config.patch_frames,
                          config.patch_hop_frames)
    if patch_probs.shape != (len(starts), len(classes)):
        raise ValueError(f"expected scores of shape ({len(starts)}, {len(classes)}), got "
                         f"{patch_probs.shape}")
    frame_seconds = config.hop_samples / config.sample_rate
    starts_seconds = np.asarray(starts, dtype=np.float64) * frame_seconds
    window_seconds = config.patch_frames * frame_seconds
    events: list[Event] = []
    for c, label in enumerate(classes):
        current: list[float] | None = None  # [start, end, peak]
        for i in np.flatnonzero(patch_probs[:, c] >= threshold):
            start = float(starts_seconds[i])
            end = min(start + window_seconds, duration_seconds)
            score = float(patch_probs[i, c])
            if current is not None and start <= current[1] + merge_gap_seconds:
                current[1] = max(current[1], end)
                current[2] = max(current[2], score)
                continue
            if current is not None:
                events.append(Event(label, current[0], current[1], current[2]))
            current = [start, end, score]
        if current is not None:
            events.append(Event(label, current[0], current[1], current[2]))
    events.sort(key=lambda e: (e.start_seconds, -e.score))
    return Timeline(starts_seconds, window_seconds, config.patch_hop_frames * frame_seconds,
                    np.asarray(patch_probs, dtype=np.float32), events)
