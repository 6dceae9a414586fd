"""Score or embed one unit's windows with a model loaded once per worker.

Probabilities are :meth:`Detector.score_windows
<tympan.inference.detect.Detector.score_windows>`: each window exactly as
``tympan detect`` and ``tympan predict`` score it, by the model file's torch
network or, for an ``.onnx`` export, by :class:`~tympan.inference.onnx_predict.OnnxPredictor`
on ONNX Runtime (no torch imported: a worker stays torch-free). An embedding is the frozen
recipe's backbone embedding (``embed_shifted``: each patch and its time
shifts), averaged over the window's patches and shifts: ``(dim,)`` float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tympan.corpus.decode import decode_span
from tympan.corpus.units import Unit, WindowGeometry
from tympan.errors import AudioError, ConfigError, ModelOutputError

Kind = Literal["predict", "embed"]


@dataclass
class UnitResult:
    """What one unit gave: window offsets in samples ``(n,)``, values ``(n, width)`` float32
    (probabilities or embeddings), and ``(path, seconds or None, reason)`` errors."""

    unit: Unit
    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    errors: list[tuple[str, float | None, str]] = field(default_factory=list)


def describe_failure(exc: BaseException) -> str:
    """The reason recorded for an unexpected exception while decoding a file."""
    return f"decoding failed ({type(exc).__name__}: {exc})"


def _empty(unit: Unit, width: int, reason: str, seconds: float | None) -> UnitResult:
    return UnitResult(unit, np.zeros(0, np.int64), np.zeros(0, np.int64),
                      np.zeros((0, width), np.float32), [(unit.path, seconds, reason)])


class UnitScorer:
    """Loads ``model_path`` (a model file, or its ``.onnx`` export) once; :meth:`run` decodes
    and scores (or embeds) a unit.

    ``batch_size`` is windows per forward pass; ``threads`` torch (or ONNX Runtime intra-op)
    threads; ``quiet`` hides the model file's warnings (a worker: the parent has shown them
    once).

    Raises:
        ModelFileError: the model file cannot be loaded.
        ConfigError: ``kind="embed"`` with a model that has no backbone embedding (or an
            ``.onnx`` export).
    """

    def __init__(self, model_path: str | Path, kind: Kind, geometry: WindowGeometry, *,
                 batch_size: int = 8, verify: bool = True, threads: int | None = None,
                 quiet: bool = False) -> None:
        from tympan.inference.detect import Detector
        from tympan.inference.onnx_predict import OnnxPredictor, is_onnx_model

        self.kind = kind
        self.geometry = geometry
        self.batch_size = batch_size
        self.loaded: Any = None  # the torch model file (None for an .onnx export)
        self._extractor: Any = None  # the frozen recipe's EmbeddingExtractor, for embed
        hop = geometry.hop_samples / geometry.sample_rate
        if is_onnx_model(model_path):
            if kind == "embed":
                raise ConfigError(f"{model_path}: `tympan embed` runs the model file's torch "
                                  "network; give the .safetensors model file, not its export")
            predictor = OnnxPredictor(model_path, threads=threads, batch_size=batch_size)
            self.detector = Detector(predictor, hop_seconds=hop, batch_size=batch_size)
        else:
            self.loaded = self._load_torch(model_path, verify, threads, quiet)
            self.detector = Detector(self.loaded, hop_seconds=hop, batch_size=batch_size,
                                     device="cpu")
        if self.detector.hop_samples != geometry.hop_samples:
            raise ConfigError(f"{model_path}: hop of {geometry.hop_samples} samples does not fit "
                              "the model's rate")
        if kind == "embed" and not callable(getattr(self.loaded.model, "embed_shifted", None)):
            raise ConfigError(f"{model_path}: model {self.loaded.metadata.model_name!r} has no "
                              "backbone embedding; `tympan embed` needs a pretrained-backbone "
                              "model such as mn04_as (use predict-corpus for this one)")
        self.width = (int(self.loaded.model.embedding_dim) if kind == "embed"
                      else len(self.detector.classes))

    @staticmethod
    def _load_torch(model_path: str | Path, verify: bool, threads: int | None,
                    quiet: bool) -> Any:
        import warnings

        import torch

        from tympan.models.modelfile import load_model

        if threads is not None:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            return load_model(model_path, verify=verify)

    def _embed(self, windows: np.ndarray) -> np.ndarray:
        """Each window's frozen-recipe embedding ``(n, dim)``: the mean over its patches and
        time shifts of what :class:`EmbeddingExtractor` gives the frozen recipe."""
        if self._extractor is None:
            from tympan.workflows.recipes.embeddings import EmbeddingExtractor

            loaded = self.loaded
            self._extractor = EmbeddingExtractor(
                loaded.model, loaded.feature_config,
                int(getattr(loaded.model, "time_shifts", 1)), self.batch_size)
        values = np.stack([e.mean(axis=(0, 1)) for e in self._extractor(list(windows))])
        if not np.isfinite(values).all():
            raise ModelOutputError("non-finite embedding (NaN or infinite values)")
        return values

    def _values(self, windows: np.ndarray) -> np.ndarray:
        if self.kind == "embed":
            return self._embed(windows)
        return self.detector.score_windows(windows)

    def score(self, unit: Unit, samples: np.ndarray, failure: str | None) -> UnitResult:
        """Score the unit's windows found in ``samples`` (its span, from :meth:`decode`);
        windows past a decoding failure are dropped and the failure is an error row."""
        geometry = self.geometry
        starts = unit.starts(geometry)
        begin, _ = unit.span(geometry)
        ends = np.minimum(starts + geometry.window_samples, unit.total_samples)
        have = begin + samples.shape[0]
        keep = ends <= have
        starts, ends = starts[keep], ends[keep]
        rows = []
        try:
            for at in range(0, len(starts), self.detector.batch_size):
                batch = [samples[s - begin:e - begin]
                         for s, e in zip(starts[at:at + self.detector.batch_size],
                                         ends[at:at + self.detector.batch_size], strict=True)]
                if batch[0].shape[0] < geometry.window_samples:  # a file shorter than a window
                    rows.append(self._values(batch[0][None]))
                else:
                    rows.append(self._values(np.stack(batch)))
        except (ModelOutputError, ValueError) as exc:  # ValueError: e.g. too few samples
            return _empty(unit, self.width, str(exc), None)
        except Exception as exc:  # one odd file must not end a run over millions
            return _empty(unit, self.width, f"scoring failed ({type(exc).__name__}: {exc})",
                          None)
        values = (np.concatenate(rows) if rows
                  else np.zeros((0, self.width), np.float32)).astype(np.float32)
        errors = []
        if failure is not None:
            errors.append((unit.path, have / geometry.sample_rate, failure))
        return UnitResult(unit, starts, ends, values, errors)

    def decode(self, unit: Unit) -> tuple[np.ndarray, str | None]:
        """The unit's span at the model's rate and the decoding failure, if any.

        Raises:
            AudioError: the file cannot be opened as audio.
        """
        begin, end = unit.span(self.geometry)
        return decode_span(unit.path, self.geometry.sample_rate, begin, end)

    def run(self, unit: Unit) -> UnitResult:
        """Decode and score one unit; a file that cannot be decoded gives an error row."""
        try:
            samples, failure = self.decode(unit)
        except AudioError as exc:
            return _empty(unit, self.width, exc.reason, None)
        except Exception as exc:  # a decoder's own failure: an error row, not a failed run
            return _empty(unit, self.width, describe_failure(exc), None)
        return self.score(unit, samples, failure)


__all__ = ["Kind", "UnitResult", "UnitScorer", "describe_failure"]
