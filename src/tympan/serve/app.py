"""The HTTP app: ``/`` (web page), ``/health``, ``/v1/model``, ``/v1/predict``, ``/docs``.

Interface layer only: an upload is received (:mod:`tympan.serve.uploads`),
decoded (:mod:`tympan.serve.decode`), turned into the model's log-mel patches,
scored by the one inference thread (:mod:`tympan.serve.engine`) and answered
with the top classes and, for a long recording, a window timeline
(:mod:`tympan.serve.timeline`). Every refusal is a JSON body
``{"error": kind, "detail": message}`` with its status code.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tympan.errors import ModelOutputError
from tympan.features import LogMel
from tympan.models.modelfile import LoadedModel
from tympan.serve.decode import decode_upload
from tympan.serve.engine import BatchingEngine
from tympan.serve.errors import RequestError
from tympan.serve.schemas import HealthOut, ModelOut, PredictOut
from tympan.serve.timeline import window_timeline
from tympan.serve.uploads import Upload, UploadLimits, receive_upload
from tympan.windows import split_patches

#: Columns of the spectrogram preview a response carries at most.
SPECTROGRAM_COLUMNS = 400


@dataclass(frozen=True)
class ServeSettings:
    """Server limits and batching.

    ``max_upload_mb`` caps a request body (MB, counted while streaming);
    ``max_audio_seconds`` caps the decoded length; ``upload_timeout_seconds``
    bounds a slow upload; ``batch_wait_ms``/``max_batch_patches`` tune
    micro-batching; a timeline is returned from ``timeline_min_windows`` windows on.
    """

    max_upload_mb: float = 25.0
    max_audio_seconds: float = 600.0
    upload_timeout_seconds: float = 60.0
    batch_wait_ms: float = 5.0
    max_batch_patches: int = 64
    timeline_min_windows: int = 3

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_audio_seconds <= 0:
            raise ValueError("max_upload_mb and max_audio_seconds must be positive")
        if self.upload_timeout_seconds <= 0:
            raise ValueError("upload_timeout_seconds must be positive")
        if self.max_batch_patches < 1 or self.batch_wait_ms < 0:
            raise ValueError("max_batch_patches must be >= 1 and batch_wait_ms >= 0")
        if self.timeline_min_windows < 1:
            raise ValueError("timeline_min_windows must be at least 1")

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(int(self.max_upload_mb * 1_000_000), self.upload_timeout_seconds)


def _error(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def _spectrogram_preview(spec: torch.Tensor, seconds_per_frame: float) -> dict[str, Any]:
    """The log-mel ``(n_mels, frames)`` as base64 uint8, at most SPECTROGRAM_COLUMNS wide."""
    values = spec.detach().cpu().numpy()
    frames = values.shape[1]
    step = max(1, -(-frames // SPECTROGRAM_COLUMNS))
    if step > 1:
        padded = np.pad(values, ((0, 0), (0, (-frames) % step)), mode="edge")
        values = padded.reshape(values.shape[0], -1, step).max(axis=2)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / max(high - low, 1e-6) * 255.0
    return {"n_mels": int(values.shape[0]), "frames": int(values.shape[1]),
            "seconds_per_frame": seconds_per_frame * step, "low_db": low, "high_db": high,
            "uint8_base64": base64.b64encode(scaled.astype(np.uint8).tobytes()).decode()}


REQUEST_BODY = {
    "required": True,
    "description": "The recording: a raw audio body (wav, flac, ogg, mp3, webm, mp4/m4a, aac) "
                   "or multipart/form-data with a file field named 'file'.",
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}},
        "audio/*": {"schema": {"type": "string", "format": "binary"}},
    },
}
ERRORS = {code: {"description": text, "content": {"application/json": {"example": {
    "error": kind, "detail": "…"}}}} for code, kind, text in (
    (400, "malformed_request", "Malformed body (e.g. multipart without a file part)"),
    (408, "upload_timeout", "The body did not arrive in time"),
    (413, "too_large", "Body over --max-upload-mb, or audio over --max-audio-seconds"),
    (415, "unsupported_audio", "Not audio the server can decode"),
    (422, "audio_too_short", "Audio too short to classify"),
)}


def create_app(loaded: LoadedModel, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``loaded``; its inference thread stops when the app shuts down."""
    from contextlib import asynccontextmanager

    settings = settings or ServeSettings()
    config = loaded.feature_config
    classes = loaded.classes
    model_name = loaded.metadata.model_name
    frontend = LogMel(config).eval()
    engine = BatchingEngine(loaded.model, max_wait_ms=settings.batch_wait_ms,
                            max_batch_patches=settings.max_batch_patches)
    frame_seconds = config.hop_samples / config.sample_rate

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        engine.close()

    app = FastAPI(title="tympan", version=loaded.metadata.versions.get("tympan", ""),
                  description=f"Sound classifier `{model_name}` ({len(classes)} classes).",
                  lifespan=lifespan)
    app.state.engine = engine
    app.state.settings = settings
    static = resources.files("tympan.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status_code, exc.kind, str(exc))

    @app.exception_handler(ModelOutputError)
    async def _model_error(_: Request, exc: ModelOutputError) -> JSONResponse:
        return _error(500, "model_output", str(exc))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/health", response_model=HealthOut, summary="Liveness and inference counters")
    async def health() -> dict[str, Any]:
        stats = engine.stats
        return {"status": "ok", "model": model_name, "requests": stats.requests,
                "batches": stats.batches, "largest_batch_patches": stats.largest_batch_patches}

    @app.get("/v1/model", response_model=ModelOut, summary="Labels, front end and CV metrics")
    async def model_info() -> dict[str, Any]:
        meta = loaded.metadata
        return {"model": model_name, "labels": classes, "features": config.to_dict(),
                "sample_rate": config.sample_rate,
                "window_seconds": config.patch_frames * frame_seconds,
                "hop_seconds": config.patch_hop_frames * frame_seconds,
                "metrics": meta.metrics, "train_config": meta.train_config,
                "dataset": meta.dataset.to_dict() if meta.dataset else None,
                "created": meta.created, "versions": meta.versions,
                "limits": {"max_upload_mb": settings.max_upload_mb,
                           "max_audio_seconds": settings.max_audio_seconds,
                           "upload_timeout_seconds": settings.upload_timeout_seconds}}

    def _featurise(upload: Upload) -> tuple[Any, torch.Tensor, torch.Tensor]:
        decoded = decode_upload(upload.file, upload.name, config.sample_rate,
                                max_seconds=settings.max_audio_seconds)
        with torch.no_grad():
            spec = frontend(torch.from_numpy(decoded.wave))
        patches = split_patches(spec, config.patch_frames, config.patch_hop_frames)
        assert isinstance(patches, torch.Tensor)
        return decoded, spec, patches

    @app.post("/v1/predict", response_model=PredictOut, summary="Classify a recording",
              openapi_extra={"requestBody": REQUEST_BODY}, responses=ERRORS)  # type: ignore[arg-type]
    async def predict(
        request: Request,
        k: int = Query(5, ge=1, le=1000, description="How many top classes to return"),
        threshold: float = Query(0.5, gt=0.0, le=1.0,
                                 description="Window score at which a class is an event"),
        spectrogram: bool = Query(False, description="Include a small log-mel preview"),
    ) -> dict[str, Any]:
        """Top-k classes of the recording (mean of its windows' softmaxes); from
        `timeline_min_windows` windows on, also per-window scores and events."""
        upload = await receive_upload(request, settings.limits)
        try:
            decoded, spec, patches = await run_in_threadpool(_featurise, upload)
        finally:
            upload.close()
        probs = await asyncio.wrap_future(engine.submit(patches))
        clip = probs.mean(axis=0, dtype=np.float64).astype(np.float32)
        if not np.isfinite(clip).all():
            raise ModelOutputError(f"{upload.name}: non-finite model output (NaN or infinite "
                                   "probabilities); check the model's weights")
        order = np.argsort(-clip, kind="stable")[:k]
        top = [{"label": classes[i], "probability": round(float(clip[i]), 6)} for i in order]
        out: dict[str, Any] = {
            "name": upload.name, "label": top[0]["label"], "top": top,
            "duration_seconds": round(decoded.duration_seconds, 3),
            "source_sample_rate": decoded.source_rate, "container": decoded.container,
            "windows": None, "spectrogram": None,
        }
        if probs.shape[0] >= settings.timeline_min_windows:
            timeline = window_timeline(probs, spec.shape[-1], config, classes,
                                       duration_seconds=decoded.duration_seconds,
                                       threshold=threshold)
            out["windows"] = timeline.to_dict(classes)
        if spectrogram:
            out["spectrogram"] = _spectrogram_preview(spec, frame_seconds)
        return out

    return app
