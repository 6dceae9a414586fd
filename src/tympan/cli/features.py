"""``tympan features DATA``: fill the feature cache (log-mels) for a dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from tympan.cli._app import app
from tympan.cli.common import console, err_console, fail


@app.command("features")
def features(
    data: Annotated[Path, typer.Argument(help="Dataset: ESC-50 folder, CSV, or folder per class.")],
    subset: Annotated[str | None, typer.Option(help="ESC-50 subset (esc10).")] = None,
    config: Annotated[Path | None, typer.Option(
        help="FeatureConfig JSON (default: the seed's 44.1 kHz log-mel).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Cache root (default: $TYMPAN_CACHE, else the user cache).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Decoding processes.")] = 2,
    min_duration_seconds: Annotated[float, typer.Option(
        "--min-duration-seconds", help="Shorter clips are reported as bad.")] = 0.1,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any file is unreadable.")] = False,
) -> None:
    """Compute and cache log-mel features for every clip (only what is not cached yet)."""
    from tympan.config import SEED_FEATURES, FeatureConfig
    from tympan.data.cache import FeatureCache
    from tympan.data.sources import discover
    from tympan.errors import TympanError

    try:
        feature_config = FeatureConfig.load(config) if config else SEED_FEATURES
    except (OSError, ValueError) as exc:
        fail(f"{config}: not a usable feature config ({exc})")
    try:
        manifest = discover(data, subset=subset, min_duration_seconds=min_duration_seconds)
    except TympanError as exc:
        fail(str(exc))
    cache = FeatureCache(cache_dir)
    start = time.perf_counter()
    cached = cache.get(manifest, feature_config, workers=workers,
                       progress=err_console.is_terminal,
                       min_duration_seconds=min_duration_seconds)
    seconds = time.perf_counter() - start
    bad = cached.manifest.bad_files
    for item in bad:
        console.print(f"  skipped {item.path}: {item.reason}", highlight=False, soft_wrap=True)
    frames = sum(s[-1] for s in cached.shapes)
    console.print(f"{manifest.name}: {len(cached)} clips cached ({frames} frames, "
                  f"config {feature_config.name!r}) in {seconds:.1f} s, "
                  f"{len(bad)} unreadable file(s) skipped; cache {cache.root}", highlight=False)
    if strict and bad:
        raise typer.Exit(1)
