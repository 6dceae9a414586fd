"""Prediction with an exported ``.onnx`` model on ONNX Runtime; imports no torch.

:class:`OnnxPredictor` keeps :class:`~tympan.inference.predict.Predictor`'s
contract (``predict_proba``, ``predict``, ``predict_files``) for a graph written
by :func:`tympan.inference.onnx_export.export_onnx`: files are decoded with
soundfile and resampled with soxr (:func:`tympan.audio.load_audio`) to the rate
the graph's metadata names, and the graph does the rest. This is the module a
runtime-only install (``pip install tympan[runtime]``: onnxruntime, soundfile,
soxr, numpy) uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tympan.audio import load_audio
from tympan.config import FeatureConfig
from tympan.errors import AudioError, ModelFileError, ModelOutputError
from tympan.inference.prediction import (
    NON_FINITE_OUTPUT,
    Prediction,
    check_finite_rows,
    predict_in_chunks,
    top_k,
)

#: What :meth:`OnnxPredictor.predict_proba` accepts: a path or a mono waveform at the model's rate.
OnnxItem = str | Path | np.ndarray


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelFileError("running an .onnx model needs onnxruntime: "
                             "pip install 'tympan[runtime]'") from None
    return onnxruntime


def read_onnx_metadata(session: Any, path: Path) -> dict[str, str]:
    """The ``tympan.*`` metadata of a loaded session.

    Raises:
        ModelFileError: the graph was not exported by tympan (no classes or rate).
    """
    props = dict(session.get_modelmeta().custom_metadata_map)
    for key in ("tympan.classes", "tympan.sample_rate", "tympan.feature_config"):
        if key not in props:
            raise ModelFileError(f"{path}: an ONNX file without tympan metadata ({key} missing); "
                                 "export it with `tympan export`")
    return props


class OnnxPredictor:
    """Run an exported ``.onnx`` model on files or waveforms with ONNX Runtime.

    ``batch_size`` is clips decoded and scored per chunk; ``run_batch`` is clips
    of one length per ``session.run`` (1 is fastest on a CPU: measured 8.6 ms of
    CPU per 5 s mn04 window at 1, 11.4 ms at 8, the front end's buffers then
    outgrow the cache); ``threads`` is ONNX Runtime's intra-op thread count
    (None: its default).

    Raises:
        ModelFileError: missing, unreadable or foreign ONNX file, or no onnxruntime.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, batch_size: int = 8,
                 run_batch: int = 1, min_duration_seconds: float = 0.1) -> None:
        if batch_size <= 0 or run_batch <= 0:
            raise ValueError(f"batch_size and run_batch must be positive, got {batch_size}, "
                             f"{run_batch}")
        ort = _import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such ONNX model file")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelFileError(f"{self.path}: not a readable ONNX model ({exc})") from None
        self.metadata = read_onnx_metadata(self.session, self.path)
        try:
            self.classes: list[str] = list(json.loads(self.metadata["tympan.classes"]))
            self.feature_config = FeatureConfig.from_json(self.metadata["tympan.feature_config"])
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{self.path}: invalid tympan metadata ({exc})") from None
        self.sample_rate = self.feature_config.sample_rate
        self.batch_size = batch_size
        self.run_batch = run_batch
        self.threads = threads
        self.min_duration_seconds = min_duration_seconds
        self._input = self.session.get_inputs()[0].name
        self._mel_matrix: np.ndarray | None = None

    def min_samples(self) -> int:
        """The fewest samples the front end takes (reflect padding needs more than n_fft / 2)."""
        c = self.feature_config
        need = c.n_fft // 2 + 1 if c.center and c.pad_mode == "reflect" else 1
        return need + (1 if c.preemphasis else 0)

    def load(self, item: OnnxItem) -> np.ndarray:
        """A mono float32 waveform ``(samples,)`` at the model's rate.

        Raises:
            AudioError: a path that cannot be decoded or is too short.
            ValueError: an array that is not 1-D, too short, or not finite.
        """
        if isinstance(item, str | Path):
            wave = load_audio(item, self.sample_rate,
                              min_duration_seconds=self.min_duration_seconds)
            if wave.size < self.min_samples():
                raise AudioError(item, f"{wave.size} samples at {self.sample_rate} Hz are too "
                                       f"few for the front end (need {self.min_samples()})")
            return wave
        wave = np.asarray(item)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono waveform (samples,), got shape {wave.shape}; "
                             "mix channels down first (tympan.audio.to_mono)")
        if wave.size < self.min_samples():
            raise ValueError(f"{wave.size} samples are too few for the front end "
                             f"(need {self.min_samples()})")
        if not np.isfinite(wave).all():
            raise ValueError("waveform contains NaN or infinite samples")
        return np.ascontiguousarray(wave, dtype=np.float32)

    def forward(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Clip probabilities ``(len(waves), n_classes)`` float32 of mono waveforms.

        Clips of equal length go through the graph together, ``run_batch`` at a time.
        """
        out = np.zeros((len(waves), len(self.classes)), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, wave in enumerate(waves):
            by_length.setdefault(wave.shape[0], []).append(i)
        for members in by_length.values():
            for start in range(0, len(members), self.run_batch):
                rows = members[start:start + self.run_batch]
                batch = np.stack([waves[i] for i in rows])
                out[rows] = self.session.run(None, {self._input: batch})[0]
        return out

    @property
    def thresholds(self) -> dict[str, float]:
        """Per-class detection thresholds the source model file stored (may be empty)."""
        try:
            found = json.loads(self.metadata.get("tympan.thresholds", "{}"))
        except ValueError:
            return {}
        if not isinstance(found, dict):
            return {}
        return {str(k): float(v) for k, v in found.items() if isinstance(v, int | float)}

    def worker_spec(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """How a worker process builds a single-thread copy of this predictor
        (:class:`~tympan.inference.scorer_pool.ScorerPool`)."""
        return (OnnxPredictor, (str(self.path),),
                {"threads": 1, "batch_size": self.batch_size, "run_batch": self.run_batch,
                 "min_duration_seconds": self.min_duration_seconds})

    def score(self, windows: np.ndarray, *, keep_spectrum: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(n, n_classes)`` of equal-length windows ``(n, samples)`` (the
        :class:`~tympan.inference.detect.Detector`'s engine) and, with ``keep_spectrum``,
        each window's mean log-mel ``(n, n_mels)`` (NumPy, for timeline plots).

        Raises:
            ModelOutputError: the model gives NaN or infinite probabilities.
        """
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        probs = self.forward(list(windows))
        if not np.isfinite(probs).all():
            raise ModelOutputError(NON_FINITE_OUTPUT)
        if not keep_spectrum:
            return probs, None
        from tympan.melspec import log_mel_numpy, mel_matrix

        if self._mel_matrix is None:
            self._mel_matrix = mel_matrix(self.feature_config)
        spectrum = log_mel_numpy(windows, self.feature_config, self._mel_matrix).mean(axis=-1)
        return probs, spectrum

    def predict_proba(self, items: Iterable[OnnxItem]) -> np.ndarray:
        """Clip probabilities ``(n_items, n_classes)`` for paths or mono waveforms.

        Raises:
            AudioError: a path cannot be decoded (use :meth:`predict_files` to skip).
            ValueError: an array is not a usable mono waveform.
            ModelOutputError: the model gives NaN or infinite probabilities for an item.
        """
        items = list(items)
        if not items:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        rows = self.forward([self.load(item) for item in items])
        return check_finite_rows(rows, items, "check the model")

    def predict(self, items: Iterable[OnnxItem]) -> list[str]:
        """The most probable label per item."""
        return [self.classes[i] for i in self.predict_proba(items).argmax(axis=1)]

    def postprocess(self, probabilities: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(label, probability)`` per row of ``(n, n_classes)`` probabilities."""
        return [top_k(row, self.classes, k) for row in probabilities]

    def predict_files(self, paths: Iterable[str | Path], *, progress: Any = None
                      ) -> list[Prediction]:
        """Predict every file; one that cannot be decoded, or whose probabilities are not
        finite, comes back with its reason instead of raising.

        ``progress`` (optional) is called with the number of files finished after each chunk.
        """
        return predict_in_chunks(paths, self.classes, self.batch_size, self.load,
                                 self.forward, progress)


def is_onnx_model(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX model (by its ``.onnx`` suffix)."""
    return Path(path).suffix.lower() == ".onnx"


__all__ = ["OnnxItem", "OnnxPredictor", "is_onnx_model", "read_onnx_metadata"]
