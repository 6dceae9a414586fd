"""Per-class thresholds from held-out probabilities: the lowest reaching the target precision."""

from __future__ import annotations

import numpy as np
import pytest

from tympan.workflows.results import CVResult, FoldResult
from tympan.workflows.thresholds import class_threshold, class_thresholds, thresholds_metadata


def test_the_lowest_threshold_reaching_the_target_precision() -> None:
    probability = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3])
    is_class = np.array([1, 1, 1, 0, 1, 0, 1], dtype=bool)
    # calling >= 0.6 gives 4 of 5 right (0.8); >= 0.8 gives 3 of 3
    assert class_threshold(is_class, probability, target_precision=0.9) == 0.8
    assert class_threshold(is_class, probability, target_precision=0.75, floor=0.0) == 0.6
    # with the 0.5 floor, 0.5 calls the same held-out clips as 0.6: the lower one is kept
    assert class_threshold(is_class, probability, target_precision=0.75) == 0.5
    # >= 0.3 calls all 7 with 5 right: 0.71; the floor keeps thresholds at 0.5 or above
    assert class_threshold(is_class, probability, target_precision=0.7, floor=0.0) == 0.3
    assert class_threshold(is_class, probability, target_precision=0.7) == 0.5


def test_ties_are_called_together_and_an_unreachable_target_falls_back() -> None:
    probability = np.array([0.9, 0.9, 0.2])
    assert class_threshold(np.array([True, False, False]), probability, fallback=0.5) == 0.5
    assert class_threshold(np.array([False, False, True]), probability, fallback=0.42,
                           floor=0.0) == 0.42


def test_thresholds_per_class_and_as_model_metadata() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    assert class_thresholds(y, p, ["a", "b"], floor=0.0) == {"a": 0.7, "b": 0.6}
    assert class_thresholds(y, p, ["a", "b"]) == {"a": 0.5, "b": 0.5}
    cv = CVResult(["a", "b"], [FoldResult("1", np.arange(2), y[:2], p[:2]),
                               FoldResult("2", np.arange(2, 4), y[2:], p[2:])])
    extra = thresholds_metadata(cv)
    assert extra["thresholds"] == {"a": 0.5, "b": 0.5}
    assert extra["thresholds_target_precision"] == pytest.approx(0.9)
    assert thresholds_metadata(None) == {}
