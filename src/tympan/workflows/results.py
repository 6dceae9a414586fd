"""Cross-validation results and the metrics computed from them.

Shared by the workflows: training fills a :class:`CVResult`, reporting and the
model file read it. Probabilities are clip-level (mean over a clip's patches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


@dataclass
class EpochLog:
    """One epoch of one fold; losses are mean cross-entropy, accuracies in [0, 1]."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass
class FoldResult:
    """Held-out predictions of one fold.

    ``clip_indices`` index the CV manifest; ``y_true`` is ``(n_clips,)`` int and
    ``probabilities`` is ``(n_clips, n_classes)`` float, rows summing to 1.
    """

    fold: str
    clip_indices: np.ndarray
    y_true: np.ndarray
    probabilities: np.ndarray
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    #: what the recipe chose on this fold (e.g. the frozen head's ``C``), JSON-ready
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def y_pred(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(accuracy_score(self.y_true, self.y_pred))

    def macro_f1(self, n_classes: int) -> float:
        return float(f1_score(self.y_true, self.y_pred, labels=np.arange(n_classes),
                              average="macro", zero_division=0))


@dataclass
class CVResult:
    """All folds of one cross-validation run, with the class names they index."""

    classes: list[str]
    folds: list[FoldResult]
    seconds: float = 0.0

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def y_true(self) -> np.ndarray:
        return np.concatenate([f.y_true for f in self.folds])

    @property
    def y_pred(self) -> np.ndarray:
        return np.concatenate([f.y_pred for f in self.folds])

    def fold_accuracies(self) -> list[float]:
        return [f.accuracy for f in self.folds]

    def confusion(self, normalize: bool = False) -> np.ndarray:
        """``(n_classes, n_classes)`` confusion over all held-out clips, rows = true class."""
        labels = np.arange(self.n_classes)
        matrix = confusion_matrix(self.y_true, self.y_pred, labels=labels)
        if not normalize:
            return matrix
        totals = matrix.sum(axis=1, keepdims=True)
        return np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)

    def per_class(self) -> list[dict[str, Any]]:
        """Precision, recall, F1 and support per class, pooled over the folds' test clips."""
        precision, recall, f1, support = precision_recall_fscore_support(
            self.y_true, self.y_pred, labels=np.arange(self.n_classes), zero_division=0
        )
        return [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for name, p, r, f, s in zip(self.classes, precision, recall, f1, support, strict=True)
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics: per-fold and mean ± std accuracy and macro-F1."""
        accuracies = np.array(self.fold_accuracies())
        f1s = np.array([f.macro_f1(self.n_classes) for f in self.folds])
        return {
            "n_classes": self.n_classes,
            "n_clips": int(sum(len(f.y_true) for f in self.folds)),
            "folds": [
                {"fold": f.fold, "accuracy": f.accuracy, "macro_f1": f.macro_f1(self.n_classes),
                 "n_clips": int(len(f.y_true)), "best_epoch": f.best_epoch,
                 "seconds": round(f.seconds, 2), **({"info": f.info} if f.info else {})}
                for f in self.folds
            ],
            "accuracy_mean": float(accuracies.mean()),
            "accuracy_std": float(accuracies.std()),
            "macro_f1_mean": float(f1s.mean()),
            "macro_f1_std": float(f1s.std()),
            "seconds": round(self.seconds, 2),
        }
