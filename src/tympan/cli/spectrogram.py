"""``tympan spectrogram FILE``: a spectrogram PNG, or the raw patch images the CNN sees."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tympan.cli._app import app
from tympan.cli.common import console, fail


@app.command("spectrogram")
def spectrogram(
    file: Annotated[Path, typer.Argument(help="Audio file (any format libsndfile reads).")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="PNG to write (default: <file stem>.png here).")] = None,
    raw: Annotated[bool, typer.Option(
        help="Write the bare patch images (out-000.png, …) instead of a figure.")] = False,
    config: Annotated[Path | None, typer.Option(
        help="FeatureConfig JSON (default: the seed's 44.1 kHz log-mel).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
) -> None:
    """Draw FILE's log-mel spectrogram: time (s), frequency (Hz, mel axis), dB colour bar."""
    from tympan.config import SEED_FEATURES, FeatureConfig
    from tympan.errors import TympanError
    from tympan.spectrogram import save_patches, save_spectrogram

    out = output if output is not None else Path(f"{file.stem}.png")
    try:
        feature_config = FeatureConfig.load(config) if config else SEED_FEATURES
        if raw:
            written = save_patches(file, out, feature_config, overwrite=overwrite)
            console.print(f"{len(written)} patch image(s): {written[0]} … {written[-1]}",
                          highlight=False)
        else:
            console.print(str(save_spectrogram(file, out, feature_config, overwrite=overwrite)),
                          highlight=False)
    except (TympanError, ValueError, OSError) as exc:
        fail(str(exc))
