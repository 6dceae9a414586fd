"""Inference with a trained model: audio in, clip probabilities out.

Staged like Hugging Face pipelines: :meth:`Predictor.preprocess` (decode at the
model's rate → log-mel), :meth:`Predictor.forward` (patches → network →
softmax → mean per clip), :meth:`Predictor.postprocess` (top-k labels). The
clip rule, "a clip's probabilities are the mean of its patches' softmaxes", is
:func:`clip_probabilities`; training's validation uses the same function, so
the numbers a run reports are the numbers prediction gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from tympan.audio import load_audio
from tympan.config import FeatureConfig
from tympan.errors import ConfigError
from tympan.features import LogMel
from tympan.inference.prediction import (  # re-exported: their home before the torch-free split
    NON_FINITE_OUTPUT,
    Prediction,
    check_finite_rows,
    collect_audio_files,
    predict_in_chunks,
    top_k,
)
from tympan.models.modelfile import LoadedModel, ModelMetadata
from tympan.windows import (  # noqa: F401 (clip_patches re-exported)
    bucket_patches,
    clip_mean,
    clip_patch_groups,
    clip_patches,
)

T = TypeVar("T")

#: What :meth:`Predictor.predict_proba` accepts: a path, or a mono waveform at the model's rate.
Item = str | Path | np.ndarray | Tensor


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` picks CUDA when available, else CPU.

    Raises:
        ConfigError: not a torch device name, or CUDA asked for where it is absent.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {device!r}: not a torch device; use cpu, cuda, cuda:1 "
                          "or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use cpu")
    return parsed


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def takes_lengths(model: nn.Module) -> bool:
    """Whether ``model(x, lengths)`` scores a zero-padded batch of unequal widths, each
    item as if alone (:class:`tympan.models.cnn.CNN`)."""
    return bool(getattr(model, "takes_lengths", False))


@torch.no_grad()
def patch_probabilities(model: nn.Module, patches: Tensor, *, batch_size: int = 64,
                        lengths: Tensor | None = None) -> np.ndarray:
    """Softmax of ``model`` over ``(n_patches, n_mels, patch_frames)``, ``batch_size`` at a time.

    Runs on the model's device (the model's mode is left as it is: call
    ``model.eval()`` first); returns ``(n_patches, n_classes)`` float32.
    ``lengths`` ``(n_patches,)``: real frames of each patch (zero padding after
    them), for a model that :func:`takes_lengths`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _model_device(model)
    out = []
    for start in range(0, patches.shape[0], batch_size):
        part = patches[start:start + batch_size].to(device)
        real = lengths[start:start + batch_size] if lengths is not None else None
        if real is not None and bool((real < part.shape[-1]).any()):
            logits = model(part, real.to(device))
        else:
            logits = model(part)
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


#: Clips patched and scored together by :func:`clip_probabilities`.
SCORE_CHUNK_CLIPS = 512


def clip_probabilities(
    model: nn.Module,
    specs: Sequence[Tensor | np.ndarray] | Tensor,
    config: FeatureConfig,
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """Clip probabilities ``(n_clips, n_classes)`` float32: the mean of each clip's patch softmaxes.

    ``specs`` are clip log-mels ``(n_mels, frames)`` (lengths may differ) or a
    ``(n_clips, n_mels, frames)`` tensor; ``batch_size`` is patches per forward
    pass. The one definition training, cross-validation and prediction share;
    a clip shorter than a patch is scored at its own length when the config
    has ``min_patch_frames``: patches of one width go through together, or for a
    model that :func:`takes_lengths` zero-padded to buckets as wide as its
    ``min_frames`` and masked (each patch scored as if alone).
    """
    n_clips = len(specs)
    parts = []
    # a bounded number of clips' patches at a time: memory does not grow with the clip count
    for first in range(0, max(n_clips, 1), SCORE_CHUNK_CLIPS):
        chunk = [specs[i] for i in range(first, min(n_clips, first + SCORE_CHUNK_CLIPS))]
        groups = clip_patch_groups(chunk, config)
        if len(groups) > 1 and takes_lengths(model):
            buckets = bucket_patches(groups, config.patch_frames,
                                     int(getattr(model, "min_frames", 32)))
            probs = np.concatenate([patch_probabilities(model, patches, batch_size=batch_size,
                                                        lengths=lengths)
                                    for patches, lengths, _ in buckets])
            clip_index = np.concatenate([owners for _, _, owners in buckets])
        else:
            probs = np.concatenate([patch_probabilities(model, patches, batch_size=batch_size)
                                    for patches, _ in groups])
            clip_index = np.concatenate([owners for _, owners in groups])
        parts.append(clip_mean(probs, clip_index, len(chunk)))
    return np.concatenate(parts)


class Predictor:
    """Run a model on files or waveforms, batching patches across clips.

    ``batch_size`` is patches per forward pass. The front end is the model
    file's :class:`FeatureConfig`, so a file at any rate is decoded and
    resampled to the rate the model was trained at.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        *,
        min_duration_seconds: float = 0.1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.loaded = loaded
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.min_duration_seconds = min_duration_seconds
        self.classes = loaded.classes
        self.feature_config = loaded.feature_config
        self.model = loaded.model.to(self.device).eval()
        self.frontend = LogMel(self.feature_config).to(self.device)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        classes: Sequence[str],
        feature_config: FeatureConfig,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> Predictor:
        """A predictor around an in-memory model (e.g. right after ``fit``)."""
        metadata = ModelMetadata(labels=list(classes),
                                 model_name=str(getattr(model, "model_name", type(model).__name__)),
                                 feature_config=feature_config.to_dict())
        return cls(LoadedModel(model, metadata), device=device, batch_size=batch_size)

    # -- stages ---------------------------------------------------------------------------

    def load(self, item: Item) -> np.ndarray:
        """A mono float32 waveform ``(samples,)`` at the model's rate.

        Raises:
            AudioError: a path that cannot be decoded or is too short.
            ValueError: an array that is not 1-D, empty, or not finite.
        """
        if isinstance(item, str | Path):
            return load_audio(item, self.feature_config.sample_rate,
                              min_duration_seconds=self.min_duration_seconds)
        wave = item.detach().cpu().numpy() if isinstance(item, Tensor) else np.asarray(item)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono waveform (samples,), got shape {wave.shape}; "
                             "mix channels down first (tympan.audio.to_mono)")
        if wave.size == 0:
            raise ValueError("empty waveform")
        if not np.isfinite(wave).all():
            raise ValueError("waveform contains NaN or infinite samples")
        return np.ascontiguousarray(wave, dtype=np.float32)

    def preprocess(self, item: Item) -> Tensor:
        """Log-mel ``(n_mels, frames)`` of one path or waveform, on the predictor's device."""
        wave = torch.from_numpy(self.load(item)).to(self.device)
        with torch.no_grad():
            return self.frontend(wave)

    def forward(self, specs: Sequence[Tensor]) -> np.ndarray:
        """Clip probabilities ``(len(specs), n_classes)`` float32 for log-mel specs."""
        return clip_probabilities(self.model, specs, self.feature_config,
                                  batch_size=self.batch_size)

    def postprocess(self, probabilities: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(label, probability)`` per row of ``(n, n_classes)`` probabilities."""
        return [top_k(row, self.classes, k) for row in probabilities]

    # -- whole pipeline -------------------------------------------------------------------

    def _chunks(self, items: Sequence[T]) -> Iterator[Sequence[T]]:
        # Bounds memory: only one chunk of clips' spectrograms is alive at a time.
        step = max(1, self.batch_size)
        for start in range(0, len(items), step):
            yield items[start:start + step]

    def predict_proba(self, items: Iterable[Item]) -> np.ndarray:
        """Clip probabilities ``(n_items, n_classes)`` for paths or mono waveforms.

        Raises:
            AudioError: a path cannot be decoded (use :meth:`predict_files` to skip).
            ValueError: an array is not a usable mono waveform.
            ModelOutputError: the model gives NaN or infinite probabilities for an item.
        """
        items = list(items)
        if not items:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        rows = np.concatenate([self.forward([self.preprocess(item) for item in chunk])
                               for chunk in self._chunks(items)])
        return check_finite_rows(rows, items, "check the model's weights")

    def predict(self, items: Iterable[Item]) -> list[str]:
        """The most probable label per item."""
        probabilities = self.predict_proba(items)
        return [self.classes[i] for i in probabilities.argmax(axis=1)]

    def predict_files(
        self, paths: Iterable[str | Path], *, progress: Any = None
    ) -> list[Prediction]:
        """Predict every file; one that cannot be decoded, or for which the model's
        probabilities are not finite, is returned with its reason, not raised.

        ``progress`` (optional) is called with the number of files finished after each chunk.
        """
        return predict_in_chunks(paths, self.classes, self.batch_size, self.preprocess,
                                 self.forward, progress)


__all__ = [
    "NON_FINITE_OUTPUT",
    "Item",
    "Prediction",
    "Predictor",
    "clip_probabilities",
    "collect_audio_files",
    "patch_probabilities",
    "resolve_device",
    "takes_lengths",
    "top_k",
]
