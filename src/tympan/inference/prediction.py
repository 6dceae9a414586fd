"""What prediction hands back, shared by the torch and the ONNX Runtime predictors.

:class:`Prediction` (one file's probabilities or the reason it was skipped),
:func:`top_k` and :func:`collect_audio_files`. This module imports no torch, so
a runtime-only install (``tympan[runtime]``) can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tympan.audio import AUDIO_EXTENSIONS, file_problem
from tympan.data.manifest import BadFile

#: The reason a file is skipped when the model's probabilities for it are NaN or infinite.
NON_FINITE_OUTPUT = "non-finite model output (NaN or infinite probabilities)"


@dataclass
class Prediction:
    """One file's outcome: clip probabilities ``(n_classes,)``, or the reason it was skipped."""

    path: Path
    classes: list[str]
    probabilities: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.probabilities is not None

    @property
    def label(self) -> str | None:
        """The most probable class (None for a skipped file)."""
        top = self.top(1)
        return top[0][0] if top else None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable ``(label, probability)`` pairs, best first."""
        if self.probabilities is None:
            return []
        return top_k(self.probabilities, self.classes, k)

    def to_dict(self, k: int = 3) -> dict[str, Any]:
        if not self.ok:
            return {"path": str(self.path), "error": self.error}
        return {"path": str(self.path), "label": self.label,
                "top": [{"label": name, "probability": p} for name, p in self.top(k)]}


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` largest entries of ``(n_classes,)`` probabilities as ``(label, p)``, best first.

    Ties keep class order (a stable sort), so the result is deterministic.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def collect_audio_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[BadFile]]:
    """Expand files and folders (recursively, audio extensions only) into a file list.

    A file named explicitly is kept whatever its extension (decoding decides);
    a missing path, a symlink loop or a folder without audio comes back as a
    :class:`BadFile`, as does an audio-named link inside a folder that leads nowhere.
    """
    files: list[Path] = []
    bad: list[BadFile] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, broken = [], []
            for p in sorted(path.rglob("*")):
                if (p.suffix.lower() not in AUDIO_EXTENSIONS
                        or any(part.startswith(".") for part in p.relative_to(path).parts)):
                    continue
                if p.is_file():
                    found.append(p)
                elif p.is_symlink():  # a loop or a dangling link: say so, do not omit it
                    broken.append(BadFile(p, file_problem(p) or "unreadable link"))
            bad += broken
            if not found and not broken:
                bad.append(BadFile(path, "folder holds no audio files "
                                         f"({', '.join(sorted(AUDIO_EXTENSIONS))})"))
            candidates = found
        elif path.exists():
            candidates = [path]
        else:
            problem = file_problem(path)
            bad.append(BadFile(path, "no such file or folder" if problem == "no such file"
                               else problem or "no such file or folder"))
            candidates = []
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files, bad


def check_finite_rows(rows: np.ndarray, items: Sequence[Any], advice: str) -> np.ndarray:
    """``rows`` ``(n_items, n_classes)`` unchanged when every value is finite.

    Raises:
        ModelOutputError: a row holds NaN or infinity (the message names the first
            such item, path or index, how many there are, and ``advice``).
    """
    from tympan.errors import ModelOutputError

    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        name = items[first] if isinstance(items[first], str | Path) else f"item {first}"
        raise ModelOutputError(f"{name}: {NON_FINITE_OUTPUT} for {int((~finite).sum())} of "
                               f"{len(items)} input(s); {advice}")
    return rows


def predict_in_chunks(paths: Iterable[str | Path], classes: Sequence[str], chunk_size: int,
                      prepare: Callable[[Path], Any],
                      forward: Callable[[list[Any]], np.ndarray],
                      progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """Every file's :class:`Prediction`, ``chunk_size`` files at a time.

    ``prepare(path)`` decodes one file (an :class:`AudioError` or ``ValueError``
    makes that file's error, not the run's); ``forward`` turns a chunk's prepared
    inputs into ``(n, n_classes)`` probabilities; a row that is not finite becomes
    the file's error. ``progress`` is called with the files finished per chunk.
    """
    from tympan.errors import AudioError

    files = [Path(p) for p in paths]
    results: list[Prediction] = []
    step = max(1, chunk_size)
    for start in range(0, len(files), step):
        chunk = files[start:start + step]
        inputs: list[Any] = []
        slots: list[int] = []
        for path in chunk:
            try:
                inputs.append(prepare(path))
            except AudioError as exc:
                results.append(Prediction(path, list(classes), error=exc.reason))
                continue
            except ValueError as exc:  # e.g. too few samples for the front end's padding
                results.append(Prediction(path, list(classes), error=str(exc)))
                continue
            slots.append(len(results))
            results.append(Prediction(path, list(classes)))
        if inputs:
            for slot, row in zip(slots, forward(inputs), strict=True):
                if np.isfinite(row).all():
                    results[slot].probabilities = row
                else:
                    results[slot].error = NON_FINITE_OUTPUT
        if progress is not None:
            progress(len(chunk))
    return results


__all__ = ["NON_FINITE_OUTPUT", "Prediction", "check_finite_rows", "collect_audio_files",
           "predict_in_chunks", "top_k"]
