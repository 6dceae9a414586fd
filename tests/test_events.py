"""Window scores → events: smoothing, hysteresis, gap merging, minimum duration, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from tympan.errors import ConfigError
from tympan.inference.events import (
    EventConfig,
    events_from_scores,
    hysteresis_runs,
    model_thresholds,
    smooth,
)

CLASSES = ["a", "b"]


def _edges(n: int, hop: float = 1.0) -> np.ndarray:
    return np.arange(n + 1) * hop


def _scores(a: list[float], b: list[float] | None = None) -> np.ndarray:
    return np.stack([a, b if b is not None else [0.0] * len(a)], axis=1)


def test_smoothing_is_a_centred_moving_average_that_shrinks_at_the_ends() -> None:
    x = np.array([[0.0], [3.0], [0.0], [0.0], [6.0]])
    np.testing.assert_allclose(smooth(x, 3)[:, 0], [1.5, 1.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(smooth(x, 1), x)


def test_hysteresis_starts_at_on_and_ends_below_off() -> None:
    score = np.array([0.1, 0.6, 0.45, 0.41, 0.3, 0.55, 0.2])
    assert hysteresis_runs(score, on=0.5, off=0.4) == [(1, 3), (5, 5)]
    assert hysteresis_runs(score, on=0.5, off=0.5) == [(1, 1), (5, 5)]
    assert hysteresis_runs(np.array([0.9, 0.9]), 0.5, 0.4) == [(0, 1)]  # open at the end


def test_events_carry_span_peak_and_mean() -> None:
    scores = _scores([0.0, 0.7, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 0.8, 0.8])
    events = events_from_scores(scores, _edges(5, 0.5), CLASSES, EventConfig(hysteresis=0))
    assert [(e.label, e.start_seconds, e.end_seconds) for e in events] == [
        ("a", 0.5, 1.5), ("b", 1.5, 2.5)]
    assert events[0].peak_score == pytest.approx(0.9)
    assert events[0].mean_score == pytest.approx(0.8)
    assert events[0].duration_seconds == pytest.approx(1.0)


def test_events_at_the_very_start_and_end_reach_the_file_edges() -> None:
    edges = np.array([0.0, 0.75, 1.75, 2.75, 3.4])  # an end-aligned last window: shorter span
    events = events_from_scores(_scores([0.9, 0.0, 0.0, 0.9]), edges, CLASSES, EventConfig())
    assert [(e.start_seconds, e.end_seconds) for e in events] == [(0.0, 0.75), (2.75, 3.4)]


def test_gaps_merge_and_short_events_drop() -> None:
    a = [0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.9]
    config = EventConfig(hysteresis=0, min_gap_seconds=1.0)
    events = events_from_scores(_scores(a), _edges(7), CLASSES, config)
    assert [(e.start_seconds, e.end_seconds) for e in events] == [(0, 3), (6, 7)]
    assert events[0].mean_score == pytest.approx(0.6)  # over the merged span
    longer = EventConfig(hysteresis=0, min_gap_seconds=1.0, min_duration_seconds=2.0)
    assert [(e.start_seconds, e.end_seconds)
            for e in events_from_scores(_scores(a), _edges(7), CLASSES, longer)] == [(0, 3)]


def test_smoothing_removes_a_one_window_spike() -> None:
    a = [0.0, 0.0, 0.9, 0.0, 0.0, 0.6, 0.6, 0.6, 0.6, 0.0]
    plain = events_from_scores(_scores(a), _edges(10), CLASSES,
                               EventConfig(default_threshold=0.35, hysteresis=0))
    smoothed = events_from_scores(_scores(a), _edges(10), CLASSES,
                                  EventConfig(default_threshold=0.35, hysteresis=0,
                                              smooth_windows=3))
    assert len(plain) == 2 and len(smoothed) == 1
    assert (smoothed[0].start_seconds, smoothed[0].end_seconds) == (5.0, 9.0)
    assert smoothed[0].peak_score == pytest.approx(0.6)  # raw scores, not smoothed


def test_per_class_thresholds_and_the_default() -> None:
    scores = _scores([0.3, 0.3], [0.3, 0.3])
    config = EventConfig(thresholds={"a": 0.2}, default_threshold=0.5)
    assert config.threshold("a") == 0.2 and config.threshold("b") == 0.5
    assert [e.label for e in events_from_scores(scores, _edges(2), CLASSES, config)] == ["a"]


def test_hysteresis_is_relative_to_each_threshold() -> None:
    config = EventConfig(thresholds={"a": 0.1}, default_threshold=0.5, hysteresis=0.2)
    assert config.off_threshold("a") == pytest.approx(0.08)
    assert config.off_threshold("b") == pytest.approx(0.4)
    # 0.09 stays on (>= 0.08); 0.07 ends the event
    events = events_from_scores(_scores([0.12, 0.09, 0.07, 0.0]), _edges(4), CLASSES, config)
    assert [(e.start_seconds, e.end_seconds) for e in events] == [(0.0, 2.0)]


@pytest.mark.parametrize("kwargs", [{"default_threshold": 0.0}, {"thresholds": {"a": 1.5}},
                                    {"hysteresis": -0.1}, {"hysteresis": 1.0},
                                    {"smooth_windows": 0}, {"min_duration_seconds": -1.0}])
def test_bad_settings_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        EventConfig(**kwargs)


def test_thresholds_are_read_from_model_metadata() -> None:
    assert model_thresholds({"thresholds": {"a": 0.7, "b": 1}}) == {"a": 0.7, "b": 1.0}
    assert model_thresholds({}) == {}
    assert model_thresholds({"thresholds": "junk"}) == {}
