"""Per-window scores → events: threshold, merge, clip to the recording."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_features

from tympan.serve.timeline import window_timeline

CLASSES = ["dog", "rain"]


def _scores(dog: list[float]) -> np.ndarray:
    dog_arr = np.asarray(dog, dtype=np.float32)
    return np.stack([dog_arr, 1 - dog_arr], axis=1)


def test_windows_above_threshold_merge_into_events() -> None:
    config = tiny_features()  # windows of 32 frames (0.512 s) every 16 frames (0.256 s)
    frames = 32 + 16 * 6  # seven windows
    probs = _scores([0.9, 0.8, 0.7, 0.1, 0.2, 0.95, 0.6])
    timeline = window_timeline(probs, frames, config, CLASSES, duration_seconds=2.04)
    assert timeline.starts_seconds == pytest.approx(np.arange(7) * 0.256)
    assert timeline.window_seconds == pytest.approx(0.512)
    dogs = [e for e in timeline.events if e.label == "dog"]
    assert [(round(e.start_seconds, 3), round(e.end_seconds, 3), e.score) for e in dogs] == [
        (0.0, 1.024, pytest.approx(0.9)),     # windows 0-2 overlap: one event
        (1.28, 2.04, pytest.approx(0.95)),    # windows 5-6, the end clipped to the recording
    ]
    rains = [e for e in timeline.events if e.label == "rain"]
    assert [(round(e.start_seconds, 3), round(e.end_seconds, 3)) for e in rains] == [(0.768, 1.536)]
    assert [e.start_seconds for e in timeline.events] == sorted(e.start_seconds
                                                                for e in timeline.events)


def test_a_higher_threshold_keeps_fewer_events_and_a_gap_merges_them() -> None:
    config = tiny_features()
    probs = _scores([0.9, 0.1, 0.1, 0.1, 0.9])
    strict = window_timeline(probs, 32 + 16 * 4, config, CLASSES, duration_seconds=1.6,
                             threshold=0.95)
    assert strict.events == []
    bridged = window_timeline(probs, 32 + 16 * 4, config, CLASSES, duration_seconds=1.6,
                              merge_gap_seconds=1.0)
    assert [(e.label, round(e.start_seconds, 3)) for e in bridged.events if e.label == "dog"] \
        == [("dog", 0.0)]


def test_to_dict_is_json_ready() -> None:
    timeline = window_timeline(_scores([0.9, 0.2, 0.9]), 64, tiny_features(), CLASSES,
                               duration_seconds=1.0)
    data = timeline.to_dict(CLASSES)
    assert data["labels"] == CLASSES and len(data["scores"]) == 3
    # windows 0 and 2 touch (0.512 s), so they make one event, clipped to the 1 s recording
    assert data["events"][0] == {"label": "dog", "start_seconds": 0.0, "end_seconds": 1.0,
                                 "score": 0.9}


def test_bad_shapes_and_thresholds_are_errors() -> None:
    with pytest.raises(ValueError, match="expected scores of shape"):
        window_timeline(_scores([0.9, 0.1]), 32 + 16 * 6, tiny_features(), CLASSES,
                        duration_seconds=2.0)
    with pytest.raises(ValueError, match="threshold must be in"):
        window_timeline(_scores([0.9]), 32, tiny_features(), CLASSES, duration_seconds=0.5,
                        threshold=0.0)
