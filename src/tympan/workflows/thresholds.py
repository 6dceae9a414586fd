"""Per-class detection thresholds chosen from cross-validation's held-out probabilities.

For each class (one-vs-rest over the held-out clips), the threshold is the
lowest probability, not below ``floor``, at which calling the class reaches
``target_precision`` (the most recall for that precision); a class that
never reaches it gets ``fallback``. The floor (0.5) is there because every
held-out clip holds one of the classes: they say nothing about how silence
or other sounds score, and on them a softmax score below 0.5 is not the
window's majority (measured on ESC-10, thresholds without a floor fell to
0.01-0.2 and detection in a recording with silences lost its precision).
A training run stores them in the model file as ``extra["thresholds"]``
and ``tympan detect`` uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tympan.workflows.results import CVResult

#: Precision the chosen thresholds aim for on held-out clips.
TARGET_PRECISION = 0.9
#: Threshold of a class that never reaches the target precision.
FALLBACK_THRESHOLD = 0.5
#: No threshold is chosen below this.
FLOOR_THRESHOLD = 0.5


def class_threshold(is_class: np.ndarray, probability: np.ndarray, *,
                    target_precision: float = TARGET_PRECISION,
                    fallback: float = FALLBACK_THRESHOLD,
                    floor: float = FLOOR_THRESHOLD) -> float:
    """The lowest threshold ``>= floor`` whose precision (``probability >= t`` called
    positive) reaches ``target_precision``; ``fallback`` when none does. Inputs are
    ``(n_clips,)``."""
    is_class = np.asarray(is_class, dtype=bool)
    probability = np.asarray(probability, dtype=np.float64)
    order = np.argsort(-probability, kind="stable")
    sorted_p, hits = probability[order], is_class[order]
    true_positives = np.cumsum(hits)
    called = np.arange(1, len(hits) + 1)
    # a threshold equal to a clip's probability calls every clip with that probability
    last_of_value = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    precision = true_positives / called
    eligible = (sorted_p >= floor) & (sorted_p > 0)
    ok = last_of_value & (precision >= target_precision) & eligible
    if not ok.any():
        return float(fallback)
    lowest = int(np.flatnonzero(ok)[-1])
    if lowest == int(np.flatnonzero(eligible)[-1]):
        return float(floor) if floor > 0 else float(sorted_p[lowest])  # same calls, lower t
    return float(sorted_p[lowest])


def class_thresholds(y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], *,
                     target_precision: float = TARGET_PRECISION,
                     fallback: float = FALLBACK_THRESHOLD,
                     floor: float = FLOOR_THRESHOLD) -> dict[str, float]:
    """``{class: threshold}`` from held-out labels ``(n_clips,)`` (class indices) and
    probabilities ``(n_clips, n_classes)`` (see :func:`class_threshold`)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    return {name: round(class_threshold(y_true == k, probabilities[:, k],
                                        target_precision=target_precision, fallback=fallback,
                                        floor=floor), 6)
            for k, name in enumerate(classes)}


def thresholds_metadata(cv: CVResult | None, *,
                        target_precision: float = TARGET_PRECISION) -> dict[str, Any]:
    """The model-file ``extra`` entries for ``cv``'s thresholds (empty without CV)."""
    if cv is None or not cv.folds:
        return {}
    probabilities = np.concatenate([f.probabilities for f in cv.folds])
    return {"thresholds": class_thresholds(cv.y_true, probabilities, cv.classes,
                                           target_precision=target_precision),
            "thresholds_target_precision": target_precision}


__all__ = ["FALLBACK_THRESHOLD", "FLOOR_THRESHOLD", "TARGET_PRECISION", "class_threshold",
           "class_thresholds", "thresholds_metadata"]
