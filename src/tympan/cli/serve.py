"""``tympan serve``: an HTTP API and a web page for a model file (needs ``tympan[serve]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tympan.cli._app import app
from tympan.cli.common import console, fail
from tympan.cli.predict import Verify, _load_model


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="Model file (.safetensors) to serve.")],
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for all).")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(
        help="Largest request body in MB (counted while it streams in; larger → 413).")] = 25.0,
    max_audio_seconds: Annotated[float, typer.Option(
        help="Longest decoded recording in seconds (longer → 413).")] = 600.0,
    upload_timeout_s: Annotated[float, typer.Option(
        "--upload-timeout-s", help="Seconds a client has to send the whole body (→ 408).")] =
    60.0,
    batch_wait_ms: Annotated[float, typer.Option(
        help="How long a request waits for others to share a forward pass (ms).")] = 5.0,
    max_batch_patches: Annotated[int, typer.Option(
        help="Most patches in one forward pass: larger is faster under load, uses more "
             "memory.")] = 64,
    threads: Annotated[int | None, typer.Option(
        help="Torch intra-op threads (default: torch's choice).")] = None,
    verify: Verify = True,
) -> None:
    """Serve MODEL over HTTP: web page at /, API at /v1/predict, OpenAPI docs at /docs."""
    try:
        import uvicorn

        from tympan.serve.app import ServeSettings, create_app
    except ImportError as exc:
        fail(f"tympan serve needs the serve extra ({exc.name} is missing): "
             "pip install 'tympan[serve]'")
        return
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        settings = ServeSettings(max_upload_mb=max_upload_mb, max_audio_seconds=max_audio_seconds,
                                 upload_timeout_seconds=upload_timeout_s,
                                 batch_wait_ms=batch_wait_ms,
                                 max_batch_patches=max_batch_patches)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    loaded = _load_model(model, verify)
    web_app = create_app(loaded, settings)
    console.print(f"serving {model} ({loaded.metadata.model_name}, {len(loaded.classes)} "
                  f"classes) on http://{host}:{port}/  (API docs: /docs)", highlight=False)
    uvicorn.run(web_app, host=host, port=port, log_level="warning")
