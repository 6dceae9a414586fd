"""``tympan export``: a model file as one ONNX graph (waveform → class probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tympan.cli._app import app
from tympan.cli.common import console, fail
from tympan.cli.predict import Verify, _load_model


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Model file (.safetensors) written by tympan.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The .onnx file to write (default: MODEL with .onnx).")] = None,
    time_shifts: Annotated[int | None, typer.Option(
        min=1, help="Time shifts a transfer model averages per patch (default: the model's; "
        "1 is about twice as fast).")] = None,
    stft: Annotated[str, typer.Option(
        help="matmul (a split DFT in two matmuls, fast) or onnx (ONNX's STFT op).")] = "matmul",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    verify: Verify = True,
) -> None:
    """Export MODEL to ONNX: raw mono waveform at the model's rate in, probabilities out.

    The log-mel front end, patching, network and mean of patch softmaxes are all
    in the graph; classes, rate and patch settings are in its metadata, so
    `tympan predict model.onnx files/` (or onnxruntime alone) runs it.
    """
    if model.suffix.lower() == ".onnx":
        fail(f"{model}: is already an ONNX file; give the .safetensors model file")
    target = output if output is not None else model.with_suffix(".onnx")
    if target.suffix.lower() != ".onnx":
        fail(f"{target}: an ONNX file name ends in .onnx")
    if target.exists() and not overwrite:
        fail(f"{target}: already exists; pass --overwrite to replace it")
    require_exporter("export")

    from tympan.inference.onnx_export import ExportOptions, export_onnx

    try:
        options = ExportOptions(time_shifts=time_shifts, stft=stft)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    loaded = _load_model(model, verify)
    export_onnx(loaded, target, options, overwrite=overwrite)
    size_mb = target.stat().st_size / 1e6
    console.print(f"wrote {target} ({size_mb:.1f} MB): {len(loaded.classes)} classes, "
                  f"{loaded.feature_config.sample_rate} Hz mono waveform in", highlight=False)


def require_exporter(what: str) -> None:
    """Exit with a usage error naming ``what`` unless the ONNX exporter's packages (torch,
    onnx, onnxscript: the ``tympan[export]`` extra) are installed."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        fail(f"{what} needs torch, onnx and onnxscript ({exc.name} is missing): "
             "pip install 'tympan[export]'")
