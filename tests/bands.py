"""A deterministic, hand-built detector for tests: no training, exact answers.

``test-bands`` (in tympan's model registry inside :func:`registered`) takes tiny
log-mel patches and says, per patch, which fraction of frames holds energy in
a low band (below 1.5 kHz) and in a high band (above 2.5 kHz): its
probabilities are ``low = f_low / 2``, ``high = f_high / 2`` and
``background = 1 - low - high``. A window half-covered by a low tone scores
0.25 for ``low``: with threshold 0.25 an event boundary is where the sound
starts or stops, within a hop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import synth
import torch
from conftest import tiny_features
from torch import Tensor, nn

from tympan.models.registry import register_model

BAND_CLASSES = ["background", "low", "high"]
LOW_HZ, HIGH_HZ = 500.0, 4000.0  # the tones the two classes stand for


class BandModel(nn.Module):
    """``(batch, n_mels, frames)`` log-mel (dB) → logits ``(batch, 3)``, as described above."""

    def __init__(self, n_classes: int = 3, *, low_rows: int = 0, high_from_row: int = 0,
                 floor_db: float = -30.0) -> None:
        super().__init__()
        if n_classes != 3:
            raise ValueError("test-bands has exactly 3 classes")
        self.config: dict[str, Any] = {"low_rows": low_rows, "high_from_row": high_from_row,
                                       "floor_db": floor_db}
        self.floor_db = nn.Parameter(torch.tensor(float(floor_db)), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        low_rows, high_from = self.config["low_rows"], self.config["high_from_row"]
        low = (x[:, :low_rows, :].amax(dim=1) > self.floor_db).float().mean(dim=1) / 2
        high = (x[:, high_from:, :].amax(dim=1) > self.floor_db).float().mean(dim=1) / 2
        probs = torch.stack([1 - low - high, low, high], dim=1)
        return torch.log(probs + 1e-6)


def _factory(n_classes: int, **kwargs: Any) -> BandModel:
    """Test-only band-energy detector (deterministic; see tests/bands.py)."""
    return BandModel(n_classes, **kwargs)


@contextmanager
def registered() -> Iterator[None]:
    """``test-bands`` in the model registry for the duration (so load_model can build it),
    then gone again: registry-wide tests (tests/test_models.py) never see it."""
    from tympan.models import registry

    register_model("test-bands", default_features=tiny_features())(_factory)
    try:
        yield
    finally:
        registry._REGISTRY.pop("test-bands", None)


def band_model() -> nn.Module:
    """The band model for the tiny front end (low: bands centred < 1.5 kHz; high: > 2.5 kHz)."""
    from tympan import models

    config = tiny_features()
    centres = librosa.mel_frequencies(config.n_mels + 2, fmin=config.f_min_hz,
                                       fmax=config.f_max)[1:-1]
    return models.create("test-bands", 3, low_rows=int((centres < 1500).sum()),
                         high_from_row=int((centres <= 2500).sum())).eval()


def save_band_model(path: Path, thresholds: dict[str, float] | None = None) -> Path:
    """Save the band model (with ``extra["thresholds"]`` when given) to ``path``."""
    from tympan.models.modelfile import make_metadata, save_model

    model = band_model()
    extra = {"thresholds": thresholds} if thresholds is not None else None
    metadata = make_metadata(model, BAND_CLASSES, tiny_features(), train_config={"epochs": 1},
                             extra=extra)
    return save_model(path, model, metadata)


def scene(spans: list[tuple[str, float, float]], duration_seconds: float,
          sample_rate: int = 16000) -> np.ndarray:
    """Silence with tones: each ``(label, start s, end s)`` adds a low or high tone."""
    out = np.zeros(round(duration_seconds * sample_rate), dtype=np.float32)
    for label, start, end in spans:
        freq = LOW_HZ if label == "low" else HIGH_HZ
        a, b = round(start * sample_rate), round(end * sample_rate)
        out[a:b] += synth.tone(freq, (b - a) / sample_rate, sample_rate, amplitude=0.3)
    return out
