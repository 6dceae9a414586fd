"""``tympan detect``: timed events in long recordings (Raven, Audacity, CSV, JSON, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tympan.cli._app import app
from tympan.cli.common import console, err_console, fail
from tympan.cli.predict import (
    NetworkThreads,
    TorchDevice,
    Verify,
    WindowBatch,
    _display,
    _load_model,
    _report_skipped,
)

if TYPE_CHECKING:
    from tympan.inference.stream import ChannelChoice


def _channel(value: str) -> ChannelChoice:
    """``--channel``: ``mix``, ``each`` or a 1-based channel number → the stream's choice."""
    lowered = value.strip().lower()
    if lowered == "mix":
        return "mix"
    if lowered == "each":
        return "each"
    if lowered.isdigit() and int(lowered) >= 1:
        return int(lowered) - 1
    raise typer.BadParameter(f"{value!r}: use a channel number (1 = first), 'mix' or 'each'")


@app.command()
def detect(
    model: Annotated[Path, typer.Argument(
        help="Model file (.safetensors) written by tympan, or its `tympan export` (.onnx, run "
        "on onnxruntime without torch).")],
    paths: Annotated[list[Path], typer.Argument(help="Audio files and/or folders (recursive).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder for selections.txt (Raven), events.csv, events.json and "
        "files/ (per-file Audacity labels, timelines); a rerun reuses finished files.")
    ] = Path("detections"),
    hop_seconds: Annotated[float | None, typer.Option(
        help="Step between windows in seconds (default: half the model's window).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="On-threshold for every class (default: the model file's per-class thresholds, "
        "else 0.5).")] = None,
    hysteresis: Annotated[float, typer.Option(
        help="An event ends when its score falls below threshold × (1 − this).")] = 0.2,
    smooth: Annotated[int, typer.Option(
        help="Moving average over this many windows before thresholding (1 = none).")] = 1,
    min_duration: Annotated[float, typer.Option(
        help="Drop events shorter than this many seconds.")] = 0.0,
    merge_gap: Annotated[float, typer.Option(
        help="Merge events of a class separated by at most this many seconds.")] = 0.0,
    channel: Annotated[str, typer.Option(
        help="Which channel to score: 'mix' (average, as in training), a number (1 = first) "
        "or 'each' (every channel separately).")] = "mix",
    start_time: Annotated[str | None, typer.Option(
        help="Wall-clock start of the recording(s), ISO 8601 (e.g. 2024-01-01T06:30:00); "
        "default: a YYYYMMDD_HHMMSS stamp in the file name.")] = None,
    plot: Annotated[bool, typer.Option(
        help="Also write a timeline PNG per file (spectrogram, scores, events).")] = False,
    batch_size: WindowBatch = 8,
    device: TorchDevice = None,
    threads: NetworkThreads = None,
    engine: Annotated[str, typer.Option(
        help="torch (the model file's network) or onnx (a .safetensors model is exported once "
        "into the cache, then scored on onnxruntime: the same events, about 2x faster on a "
        "CPU). An .onnx model always runs on onnxruntime.")] = "torch",
    workers: Annotated[int, typer.Option(
        min=1, help="With an .onnx model: score in this many single-thread worker processes "
        "while the main one decodes (2 on a 2-core machine).")] = 1,
    strict: Annotated[bool, typer.Option(
        help="Exit 1 if any file was skipped or failed mid-way.")] = False,
    verify: Verify = True,
) -> None:
    """Find timed events in long recordings with a saved model.

    Each file is decoded in blocks and scored in windows of the model's
    training length; per class, scores become events (smoothing, hysteresis,
    minimum duration, gap merging). Files that cannot be decoded are listed
    and skipped; a file that breaks mid-way keeps the events found before.
    """
    from tympan.inference.prediction import collect_audio_files
    from tympan.workflows.detect import DetectSettings, detect_files

    choice = _channel(channel)
    if threshold is not None and not 0 < threshold <= 1:
        raise typer.BadParameter(f"--threshold must be in (0, 1], got {threshold}")
    from tympan.inference.onnx_predict import OnnxPredictor, is_onnx_model

    if engine not in ("torch", "onnx"):
        raise typer.BadParameter(f"--engine must be torch or onnx, got {engine!r}")
    if engine == "onnx" and not is_onnx_model(model):
        model = _exported(model, verify)
    if workers > 1 and not is_onnx_model(model):
        fail("--workers runs an ONNX export in each worker: export the model first "
             "(tympan export MODEL) and pass the .onnx file, or use --threads")
    if is_onnx_model(model):
        if device not in (None, "cpu"):
            fail(f"--device {device}: an .onnx model runs on the CPU (onnxruntime)")
        loaded: Any = OnnxPredictor(model, threads=threads, batch_size=batch_size)
    else:
        loaded = _load_model(model, verify)
    files, skipped = collect_audio_files(paths)
    settings = DetectSettings(hop_seconds=hop_seconds, threshold=threshold,
                              hysteresis=hysteresis, smooth_windows=smooth,
                              min_duration_seconds=min_duration, min_gap_seconds=merge_gap,
                              channel=choice, start_time=start_time)
    from tympan.cli.predict import _progress

    with _progress(len(files), "detecting") as advance:
        try:
            outcome = detect_files(loaded, model, files, output, settings, plot=plot,
                                   batch_size=batch_size, device=device, threads=threads,
                                   workers=workers, progress=lambda _path, _reused: advance(1))
        except ValueError as exc:  # ConfigError is a ValueError too
            fail(str(exc))
            return
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("file", "hours", "events", "labels", "note"):
        table.add_column(column, overflow="fold")
    for summary in outcome.files:
        labels = summary.labels
        note = "" if summary.failure is None else str(summary.failure)
        table.add_row(_display(summary.path), f"{summary.duration_seconds / 3600:.2f}",
                      str(summary.n_events), ", ".join(labels[:6])
                      + (" …" if len(labels) > 6 else ""), note)
    console.print(table)
    from tympan.data.manifest import BadFile

    skipped += [BadFile(p, reason) for p, reason in outcome.skipped]
    _report_skipped(skipped)
    failed = [d for d in outcome.files if d.failure is not None]
    for detections in failed:
        err_console.print(f"[yellow]warning:[/] {_display(detections.path)}: "
                          f"{detections.failure}; events before it are kept", highlight=False,
                          markup=False, soft_wrap=True)
    reused = f" ({outcome.reused} reused from a previous run)" if outcome.reused else ""
    err_console.print(f"{sum(d.n_events for d in outcome.files)} event(s) in "
                      f"{len(outcome.files)} file(s){reused}; wrote "
                      + ", ".join(_display(p) for p in outcome.outputs), highlight=False,
                      soft_wrap=True)
    if not outcome.files:
        fail("no file could be scored", code=1)
    if strict and (skipped or failed):
        raise typer.Exit(1)


def _exported(model: Path, verify: bool) -> Path:
    """``model``'s cached exact ONNX export (made now if missing), for ``--engine onnx``."""
    from tympan.cli.export import require_exporter

    require_exporter("--engine onnx (it exports the model first)")
    from tympan.errors import ModelFileError
    from tympan.inference.onnx_export import cached_export

    try:
        return cached_export(model, verify=verify)
    except ModelFileError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits
