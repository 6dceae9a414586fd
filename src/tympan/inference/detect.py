"""Long recordings: streamed windows of the model's training length, scored in batches.

A window is ``feature_config.patch_frames * hop_samples`` samples (what the
model saw per patch in training), cut every ``hop`` samples from a stream
(:class:`~tympan.inference.stream.AudioStream`), so memory is bounded by the
batch, not the file. Each window is scored on its own samples by a :class:`WindowScorer`: a model
file's torch network (:class:`~tympan.inference.torch_scorer.TorchScorer`: a
window's probabilities are exactly what
:class:`~tympan.inference.predict.Predictor` gives for a clip of those
samples) or its ONNX export on ONNX Runtime
(:class:`~tympan.inference.onnx_predict.OnnxPredictor`, no torch). This module
holds only the window maths and imports no torch. Offsets are integer samples
at the model's rate, so times do not drift after hours. A file's clip
probabilities are the mean over its windows (``tympan predict``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from tympan.config import FeatureConfig
from tympan.errors import AudioError, ModelOutputError
from tympan.inference.prediction import NON_FINITE_OUTPUT, Prediction
from tympan.inference.stream import AudioStream, ChannelChoice, DecodeFailure

if TYPE_CHECKING:
    from tympan.models.modelfile import LoadedModel


@runtime_checkable
class WindowScorer(Protocol):
    """An engine that scores equal-length waveform windows at the model's rate."""

    classes: list[str]
    feature_config: FeatureConfig

    def score(self, windows: np.ndarray, *, keep_spectrum: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(n, n_classes)`` of ``(n, samples)`` windows and, with
        ``keep_spectrum``, each window's mean log-mel ``(n, n_mels)``.

        Raises:
            ModelOutputError: NaN or infinite probabilities.
        """
        ...


def window_samples(model: Any) -> int:
    """The model's training window in samples at its rate: ``patch_frames * hop_samples``
    (``model``: anything with a ``feature_config``)."""
    config = model.feature_config
    return int(config.patch_frames * config.hop_samples)


def hop_samples_for(window: int, sample_rate: int, hop_seconds: float | None) -> int:
    """The step in samples between windows of ``window`` samples at ``sample_rate`` (Hz):
    half a window when ``hop_seconds`` is None.

    Raises:
        ValueError: a hop that is not positive or longer than a window.
    """
    if hop_seconds is None:
        return max(1, window // 2)
    hop = round(hop_seconds * sample_rate)
    if not 0 < hop <= window:
        raise ValueError(f"hop_seconds must be in (0, {window / sample_rate:g}] (one window), "
                         f"got {hop_seconds}")
    return hop


@dataclass
class WindowScores:
    """Per-window class probabilities of one file (or what was decoded before a failure).

    ``starts`` ``(n_windows,)`` int64 are sample offsets at ``sample_rate``;
    ``scores`` is ``(n_windows, n_channels, n_classes)`` float32; ``channels``
    names each scored channel (1-based; ``[0]`` = all channels mixed).
    ``n_samples`` is how many samples (at ``sample_rate``) were decoded.
    """

    path: Path
    classes: list[str]
    sample_rate: int
    window_samples: int
    hop_samples: int
    starts: np.ndarray
    scores: np.ndarray
    n_samples: int
    channels: list[int] = field(default_factory=lambda: [0])
    failure: DecodeFailure | None = None
    #: with ``keep_spectrum``: each window's mean log-mel ``(n_windows, n_channels, n_mels)``
    spectrum: np.ndarray | None = None

    @property
    def n_windows(self) -> int:
        return int(self.starts.shape[0])

    @property
    def duration_seconds(self) -> float:
        """Seconds decoded (the whole file unless decoding failed)."""
        return self.n_samples / self.sample_rate

    def ends(self) -> np.ndarray:
        """Each window's end offset in samples ``(n_windows,)`` (a short file's one window
        ends at its last sample)."""
        return np.minimum(self.starts + self.window_samples, self.n_samples)

    def segment_edges_seconds(self) -> np.ndarray:
        """Edges ``(n_windows + 1,)`` in seconds of the span each window stands for: from
        the midpoint between its centre and the previous one's to the next midpoint; the
        first span starts at 0, the last ends at the end of the decoded audio."""
        centres2 = self.starts + self.ends()  # twice the centres, still integers
        edges = np.empty(self.n_windows + 1, dtype=np.float64)
        edges[0] = 0.0
        edges[-1] = self.n_samples / self.sample_rate
        edges[1:-1] = (centres2[:-1] + centres2[1:]) / (4.0 * self.sample_rate)
        return edges

    def clip_probabilities(self) -> np.ndarray:
        """The file's probabilities ``(n_channels, n_classes)``: the mean over its windows."""
        return self.scores.mean(axis=0, dtype=np.float64).astype(np.float32)


@dataclass
class FilePrediction(Prediction):
    """A :class:`Prediction` from windows: also how many windows and seconds it averaged."""

    n_windows: int = 0
    duration_seconds: float = 0.0


class Detector:
    """Score long recordings window by window with a trained model.

    ``model`` is a loaded model file (scored with torch on ``device``, with
    ``threads`` intra-op threads) or any :class:`WindowScorer` (e.g. an
    :class:`~tympan.inference.onnx_predict.OnnxPredictor`; ``device`` must then
    be None or ``"cpu"``). ``hop_seconds`` (None = half a window) is the step
    between windows; ``batch_size`` is windows per forward pass (memory grows
    with it, not with the file); ``block_seconds`` is how much audio is decoded
    per read. ``min_duration_seconds`` is the shortest usable file, as for
    prediction. ``workers`` > 1 scores batches in that many worker processes
    (each a single-thread copy of the engine; scorers with ``worker_spec``,
    i.e. ONNX exports) while this process decodes; call :meth:`close` (or use
    ``with``) to stop them.

    Raises:
        ValueError: a hop that is not positive or longer than a window; a device
            other than the CPU for a scorer that runs on the CPU; ``workers`` > 1
            for an engine that cannot be copied into workers.
    """

    def __init__(
        self,
        model: LoadedModel | WindowScorer,
        *,
        hop_seconds: float | None = None,
        batch_size: int = 8,
        device: Any = None,
        block_seconds: float = 30.0,
        min_duration_seconds: float = 0.1,
        threads: int | None = None,
        workers: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if isinstance(model, WindowScorer):
            if device not in (None, "cpu"):
                raise ValueError(f"device {device}: this model runs on the CPU (onnxruntime)")
            self.scorer: WindowScorer = model
        else:
            from tympan.inference.torch_scorer import TorchScorer

            self.scorer = TorchScorer(model, device=device, batch_size=batch_size,
                                      threads=threads)
        if workers > 1 and not hasattr(self.scorer, "worker_spec"):
            raise ValueError("workers > 1 runs an ONNX export (tympan export) in each worker; "
                             "this model runs in one process (use --threads)")
        self.workers = workers
        self._pool: Any = None  # a ScorerPool, started on the first file
        self.classes = list(self.scorer.classes)
        self.feature_config = self.scorer.feature_config
        self.sample_rate = self.feature_config.sample_rate
        self.window_samples = window_samples(self.scorer)
        self.hop_samples = hop_samples_for(self.window_samples, self.sample_rate, hop_seconds)
        self.batch_size = batch_size
        self.block_seconds = block_seconds
        self.min_duration_seconds = min_duration_seconds

    def close(self) -> None:
        """Stop the worker processes (if any); the detector starts new ones when used again."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _worker_pool(self) -> Any:
        if self._pool is None:
            from tympan.inference.scorer_pool import ScorerPool

            spec = self.scorer.worker_spec()  # type: ignore[attr-defined]
            self._pool = ScorerPool(spec, self.workers)
        return self._pool

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` of waveforms ``(n, samples)`` at the model's rate:
        each row exactly as :class:`Predictor` scores a clip of those samples.

        Raises:
            ModelOutputError: the model gives NaN or infinite probabilities.
        """
        return self.scorer.score(np.ascontiguousarray(windows, dtype=np.float32))[0]

    def _windows(self, stream: AudioStream) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, samples (channels, window))`` for each window of the stream, in order;
        the last window is end-aligned so no sample is left unscored, and a file shorter
        than a window is one window of all its samples."""
        size, hop = self.window_samples, self.hop_samples
        buffer = np.zeros((0, stream.channels_out), dtype=np.float32)
        buffer_start = 0  # absolute offset of buffer[0]
        next_start = 0
        emitted = False
        for block in stream:
            buffer = np.concatenate([buffer, block]) if buffer.size else block
            end = buffer_start + buffer.shape[0]
            while next_start + size <= end:
                offset = next_start - buffer_start
                yield next_start, buffer[offset:offset + size].T
                emitted = True
                next_start += hop
            # keep what the next window (or an end-aligned last one) may still need
            keep_from = max(buffer_start, min(next_start, end - size))
            buffer = buffer[keep_from - buffer_start:]
            buffer_start = keep_from
        self._decoded = buffer_start + buffer.shape[0]
        total = self._decoded
        if not emitted:
            if total > 0:
                yield 0, buffer.T
        elif next_start - hop + size < total:
            yield total - size, buffer[buffer.shape[0] - size:].T

    def score_file(self, path: str | Path, *, channel: ChannelChoice = "mix",
                   progress: Callable[[float], None] | None = None,
                   keep_spectrum: bool = False) -> WindowScores:
        """Window scores of one file (``channel``: ``"mix"``, ``"each"`` or a 0-based index).
        ``keep_spectrum`` also keeps each window's mean log-mel (for timeline plots).

        A file that is cut short or corrupt mid-way returns the windows decoded
        before the failure, with :attr:`WindowScores.failure` set. ``progress``
        is called with the seconds scored so far after each batch.

        Raises:
            AudioError: unreadable, empty, too short, or failing before any window.
            ModelOutputError: NaN or infinite probabilities.
        """
        path = Path(path)
        stream = AudioStream(path, self.sample_rate, channel=channel,
                             block_seconds=self.block_seconds)
        self._decoded = 0
        starts: list[int] = []
        rows: list[np.ndarray] = []
        spectra: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        batch_starts: list[int] = []
        n_channels = stream.channels_out
        pool = self._worker_pool() if self.workers > 1 else None
        Scored = tuple[np.ndarray, np.ndarray | None]
        pending: deque[tuple[Future[Scored], list[int]]] = deque()

        def collect(scored: Scored, batch_starts: list[int]) -> None:
            probs, spectrum = scored
            rows.append(probs.reshape(len(batch_starts), n_channels, -1))
            if spectrum is not None:
                spectra.append(spectrum.reshape(len(batch_starts), n_channels, -1))
            starts.extend(batch_starts)
            if progress is not None:
                progress(starts[-1] / self.sample_rate)

        def flush() -> None:
            stacked = np.concatenate(batch)  # (windows * channels, samples)
            if pool is None:
                collect(self.scorer.score(stacked, keep_spectrum=keep_spectrum),
                        list(batch_starts))
            else:  # a few batches in flight, collected in order
                pending.append((pool.submit(stacked, keep_spectrum), list(batch_starts)))
                while len(pending) > 2 * pool.workers:
                    drain_one()
            batch.clear()
            batch_starts.clear()

        def drain_one() -> None:
            future, its_starts = pending.popleft()
            collect(future.result(), its_starts)

        try:
            for start, samples in self._windows(stream):
                if samples.shape[1] < self.window_samples:  # a short file: scored on its own
                    if samples.shape[1] / self.sample_rate < self.min_duration_seconds:
                        reason = (str(stream.failure) if stream.failure is not None and
                                  samples.shape[1] == 0 else
                                  f"{samples.shape[1] / self.sample_rate:.3g} s, shorter than the "
                                  f"{self.min_duration_seconds:g} s minimum")
                        raise AudioError(path, reason)
                    if batch:
                        flush()
                batch.append(samples)
                batch_starts.append(start)
                if len(batch) >= self.batch_size or samples.shape[1] < self.window_samples:
                    flush()
            if batch:
                flush()
            while pending:
                drain_one()
        finally:
            for future, _ in pending:  # after an error: batches not needed any more
                future.cancel()
        if not starts:
            reason = str(stream.failure) if stream.failure is not None else "no samples decoded"
            raise AudioError(path, reason)
        channels = (list(range(1, n_channels + 1)) if channel == "each"
                    else [channel + 1] if isinstance(channel, int) else [0])
        return WindowScores(path, list(self.classes), self.sample_rate, self.window_samples,
                            self.hop_samples, np.asarray(starts, dtype=np.int64),
                            np.concatenate(rows), self._decoded, channels, stream.failure,
                            np.concatenate(spectra) if keep_spectrum else None)

    def predict_files(self, paths: Iterable[str | Path], *,
                      progress: Callable[[int], None] | None = None) -> list[FilePrediction]:
        """Clip probabilities per file, the mean over its windows (one window: exactly the
        :class:`Predictor`'s answer). A file that cannot be decoded, fails mid-way, or gets
        non-finite probabilities is returned with its reason, not raised."""
        results = []
        for raw in paths:
            path = Path(raw)
            try:
                scores = self.score_file(path)
            except AudioError as exc:
                results.append(FilePrediction(path, list(self.classes), error=exc.reason))
            except ModelOutputError:
                results.append(FilePrediction(path, list(self.classes), error=NON_FINITE_OUTPUT))
            except ValueError as exc:  # e.g. too few samples for the front end's padding
                results.append(FilePrediction(path, list(self.classes), error=str(exc)))
            else:
                if scores.failure is not None:
                    results.append(FilePrediction(path, list(self.classes),
                                                  error=str(scores.failure)))
                else:
                    results.append(FilePrediction(
                        path, list(self.classes), scores.clip_probabilities()[0],
                        n_windows=scores.n_windows, duration_seconds=scores.duration_seconds))
            if progress is not None:
                progress(1)
        return results


__all__ = ["Detector", "FilePrediction", "WindowScorer", "WindowScores", "hop_samples_for",
           "window_samples"]
