"""Evaluation of a saved model on labelled data: predictions, metrics, per-class rows.

``tympan evaluate``: the model scores every clip exactly as ``tympan predict``
does (:class:`tympan.inference.predict.Predictor`); the metrics are the ones a
cross-validation report uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tympan.data.manifest import BadFile, Manifest
from tympan.errors import DatasetError, ModelOutputError
from tympan.inference.predict import NON_FINITE_OUTPUT, Predictor


@dataclass
class Evaluation:
    """A saved model scored on labelled clips.

    ``y_true`` ``(n_clips,)`` indexes the model's ``classes``; ``probabilities``
    is ``(n_clips, n_classes)``. Metrics cover the classes present in the data
    or predicted, so a model with more classes than the data is not penalised
    for classes the data never shows.
    """

    classes: list[str]
    paths: list[Path]
    y_true: np.ndarray
    probabilities: np.ndarray
    bad_files: list[BadFile] = field(default_factory=list)
    dataset: str = "dataset"

    @property
    def y_pred(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def label_ids(self) -> np.ndarray:
        """Model class ids that occur in the data or the predictions, sorted."""
        return np.union1d(self.y_true, self.y_pred).astype(np.int64)

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] for i in self.label_ids]

    @property
    def accuracy(self) -> float:
        return float((self.y_true == self.y_pred).mean()) if len(self.y_true) else 0.0

    @property
    def macro_f1(self) -> float:
        """Macro-F1 over the classes present in the data."""
        present = np.unique(self.y_true)
        rows = self._prfs(present)
        return float(np.mean(rows[2])) if len(present) else 0.0

    def _prfs(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.metrics import precision_recall_fscore_support

        return precision_recall_fscore_support(  # type: ignore[no-any-return]
            self.y_true, self.y_pred, labels=labels, zero_division=0)

    def per_class(self) -> list[dict[str, Any]]:
        """Precision, recall, F1 and support per class (classes in data or predictions)."""
        precision, recall, f1, support = self._prfs(self.label_ids)
        return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
                 "support": int(s)}
                for name, p, r, f, s in zip(self.label_names, precision, recall, f1, support,
                                            strict=True)]

    def confusion(self, normalize: bool = False) -> np.ndarray:
        """Confusion over :attr:`label_names` (rows = true class), optionally row-normalised."""
        from sklearn.metrics import confusion_matrix

        matrix = confusion_matrix(self.y_true, self.y_pred, labels=self.label_ids)
        if not normalize:
            return matrix
        totals = matrix.sum(axis=1, keepdims=True)
        return np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)

    def summary(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "n_clips": int(len(self.y_true)),
                "n_skipped": len(self.bad_files), "accuracy": self.accuracy,
                "macro_f1": self.macro_f1, "n_classes_model": len(self.classes),
                "n_classes_data": int(len(np.unique(self.y_true)))}


def evaluate_model(predictor: Predictor, manifest: Manifest, *, progress: Any = None) -> Evaluation:
    """Score ``predictor`` on a labelled manifest; undecodable clips join its bad files.

    Raises:
        DatasetError: the data holds labels the model does not know, or no clip decodes.
        ModelOutputError: the model gives NaN or infinite probabilities for any clip
            (skipping those clips would score the model on the clips it did not fail).
    """
    where = manifest.root or manifest.name
    unknown = sorted(set(manifest.classes) - set(predictor.classes))
    if unknown:
        raise DatasetError(
            f"{where}: label(s) not in the model: {', '.join(unknown)} "
            f"(the model knows {len(predictor.classes)}: {', '.join(predictor.classes)})"
        )
    index = {name: i for i, name in enumerate(predictor.classes)}
    predictions = predictor.predict_files(manifest.paths, progress=progress)
    failed = [p.path for p in predictions if p.error == NON_FINITE_OUTPUT]
    if failed:
        model = predictor.loaded.path or predictor.loaded.metadata.model_name
        raise ModelOutputError(
            f"{model}: {NON_FINITE_OUTPUT} for {len(failed)} of {len(predictions)} clip(s) "
            f"(first: {failed[0]}); no accuracy computed: check the model's weights"
        )
    bad = list(manifest.bad_files)
    kept_paths, labels, rows = [], [], []
    for clip, prediction in zip(manifest.clips, predictions, strict=True):
        if prediction.probabilities is None:
            bad.append(BadFile(clip.path, prediction.error or "could not be decoded"))
            continue
        kept_paths.append(clip.path)
        labels.append(index[clip.label])
        rows.append(prediction.probabilities)
    if not rows:
        raise DatasetError(f"{where}: no clip could be decoded ({len(bad)} skipped)")
    return Evaluation(classes=list(predictor.classes), paths=kept_paths,
                      y_true=np.array(labels, dtype=np.int64), probabilities=np.stack(rows),
                      bad_files=bad, dataset=manifest.name)


__all__ = ["Evaluation", "evaluate_model"]
