"""AudioSet tagging with a pretrained backbone's own 527-class head, before any training.

A clip up to ``window_seconds`` (10 s, AudioSet's clip length) is scored
whole; a longer recording is cut into 10 s windows and each tag keeps its
highest probability over the windows (a tag is present if it occurs
anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tympan.audio import load_audio, resample, split_windows
from tympan.features import LogMel
from tympan.models.pretrained import (
    PretrainedCfg,
    audioset_labels,
    get_pretrained,
    load_pretrained,
)


@dataclass(frozen=True)
class Tag:
    """One AudioSet class: its output index, display name and sigmoid probability in [0, 1]."""

    index: int
    label: str
    probability: float


class AudioSetTagger:
    """A loaded backbone plus its front end: waveforms in, AudioSet probabilities out.

    Args:
        backbone: registered pretrained name. (Default: ``"mn04_as"``)
        weights: explicit weight file (else ``$TYMPAN_WEIGHTS``, cache, download).
        window_seconds: longest stretch scored in one pass. (Default: ``10.0``)
    """

    def __init__(
        self,
        backbone: str = "mn04_as",
        weights: str | Path | None = None,
        *,
        window_seconds: float = 10.0,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.cfg: PretrainedCfg = get_pretrained(backbone)
        self.model: nn.Module = load_pretrained(self.cfg, weights)
        self.frontend = LogMel(self.cfg.features)
        self.labels = audioset_labels(self.cfg)
        self.window_seconds = window_seconds

    @property
    def sample_rate(self) -> int:
        return self.cfg.features.sample_rate

    def probabilities(self, waveform: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Per-class probabilities ``(n_classes,)`` of a mono ``(samples,)`` waveform.

        ``sample_rate`` (Hz) defaults to the backbone's; other rates are resampled.
        """
        wave = np.asarray(waveform, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono waveform (samples,), got shape {wave.shape}")
        if sample_rate is not None and sample_rate != self.sample_rate:
            wave = resample(wave, sample_rate, self.sample_rate)
        window = int(round(self.window_seconds * self.sample_rate))
        # reflect padding in the STFT needs more than n_fft / 2 samples
        minimum = self.cfg.features.n_fft // 2 + 2
        if wave.shape[0] < minimum:
            wave = np.pad(wave, (0, minimum - wave.shape[0]))
        windows = split_windows(wave, window, window) if wave.shape[0] > window else wave[None]
        with torch.inference_mode():
            spec = self.frontend(torch.from_numpy(np.ascontiguousarray(windows)))
            logits = self.model(spec[:, None])
            return torch.sigmoid(logits).amax(dim=0).numpy()

    def tags(
        self, waveform: np.ndarray, sample_rate: int | None = None, top_k: int = 10
    ) -> list[Tag]:
        """The ``top_k`` most probable AudioSet classes of ``waveform``, most probable first."""
        probs = self.probabilities(waveform, sample_rate)
        order = np.argsort(-probs, kind="stable")[:top_k]
        return [Tag(int(i), self.labels[i], float(probs[i])) for i in order]


_TAGGERS: dict[tuple[str, str | None], AudioSetTagger] = {}


def audioset_tags(
    path_or_wave: str | Path | np.ndarray,
    top_k: int = 10,
    *,
    sample_rate: int | None = None,
    backbone: str = "mn04_as",
    weights: str | Path | None = None,
) -> list[Tag]:
    """The backbone's own AudioSet tags for a file or a mono waveform, most probable first.

    A path is decoded and resampled to the backbone's rate; a waveform is
    ``(samples,)`` at ``sample_rate`` Hz (default: the backbone's, 32 kHz for
    mn04). The loaded backbone is kept for later calls.

    Raises:
        AudioError: the file cannot be decoded.
        ChecksumError: the weight file is not the registered one.
    """
    key = (backbone, None if weights is None else str(weights))
    tagger = _TAGGERS.get(key)
    if tagger is None:
        tagger = _TAGGERS.setdefault(key, AudioSetTagger(backbone, weights))
    if isinstance(path_or_wave, (str, Path)):
        wave = load_audio(path_or_wave, tagger.sample_rate)
        return tagger.tags(wave, tagger.sample_rate, top_k)
    return tagger.tags(path_or_wave, sample_rate, top_k)


__all__ = ["AudioSetTagger", "Tag", "audioset_tags"]
