"""CV metrics: accuracy, macro-F1, confusion and per-class numbers from fold predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tympan.workflows.results import CVResult, FoldResult


def _fold(name: str, y_true: list[int], y_pred: list[int], n_classes: int = 3) -> FoldResult:
    probs = np.full((len(y_pred), n_classes), 0.1)
    probs[np.arange(len(y_pred)), y_pred] = 0.8
    return FoldResult(name, np.arange(len(y_true)), np.array(y_true), probs)


def test_summary_means_and_stds_over_folds() -> None:
    cv = CVResult(["a", "b", "c"], [_fold("1", [0, 1, 2, 2], [0, 1, 2, 2]),
                                    _fold("2", [0, 1, 2, 2], [0, 1, 1, 0])])
    summary = cv.summary()
    assert summary["folds"][0]["accuracy"] == 1.0
    assert summary["folds"][1]["accuracy"] == 0.5
    assert summary["accuracy_mean"] == pytest.approx(0.75)
    assert summary["accuracy_std"] == pytest.approx(0.25)
    json.dumps(summary)  # JSON-ready


def test_confusion_rows_are_true_classes_and_normalise() -> None:
    cv = CVResult(["a", "b"], [_fold("1", [0, 0, 1, 1], [0, 1, 1, 1], n_classes=2)])
    assert cv.confusion().tolist() == [[1, 1], [0, 2]]
    assert cv.confusion(normalize=True).tolist() == [[0.5, 0.5], [0.0, 1.0]]


def test_per_class_precision_recall() -> None:
    cv = CVResult(["a", "b"], [_fold("1", [0, 0, 1, 1], [0, 1, 1, 1], n_classes=2)])
    rows = {r["class"]: r for r in cv.per_class()}
    assert rows["a"]["precision"] == 1.0 and rows["a"]["recall"] == 0.5
    assert rows["b"]["precision"] == pytest.approx(2 / 3) and rows["b"]["support"] == 2
