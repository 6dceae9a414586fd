"""Response bodies of the HTTP API, as pydantic models (they make the OpenAPI at ``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class HealthOut(BaseModel):
    status: str
    model: str
    requests: int
    batches: int
    largest_batch_patches: int


class ModelOut(BaseModel):
    model: str
    labels: list[str]
    features: dict[str, Any]
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    metrics: dict[str, Any] | None
    train_config: dict[str, Any]
    dataset: dict[str, Any] | None
    created: str
    versions: dict[str, str]
    limits: dict[str, float]


class Score(BaseModel):
    label: str
    probability: float


class EventOut(BaseModel):
    label: str
    start_seconds: float
    end_seconds: float
    score: float


class WindowsOut(BaseModel):
    window_seconds: float
    hop_seconds: float
    labels: list[str]
    starts_seconds: list[float]
    scores: list[list[float]]
    events: list[EventOut]


class SpectrogramOut(BaseModel):
    n_mels: int
    frames: int
    seconds_per_frame: float
    low_db: float
    high_db: float
    uint8_base64: str


class PredictOut(BaseModel):
    name: str
    label: str
    top: list[Score]
    duration_seconds: float
    source_sample_rate: int
    container: str
    windows: WindowsOut | None
    spectrogram: SpectrogramOut | None
