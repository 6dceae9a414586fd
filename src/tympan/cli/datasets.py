"""``tympan datasets fetch NAME`` and ``tympan datasets info PATH``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tympan.cli._app import app
from tympan.cli.common import console, err_console, fail

datasets_app = typer.Typer(help="Fetch datasets and summarise them.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="Dataset to fetch (known: esc50).")],
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where datasets live (default: $TYMPAN_DATA, else the user cache).",
    )] = None,
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the archive.")] = None,
) -> None:
    """Download a dataset into the data directory (a copy already there is used as is)."""
    from tympan.data.fetch import ESC50_URL, FETCHERS
    from tympan.errors import TympanError

    if name not in FETCHERS:
        fail(f"unknown dataset {name!r} (known: {', '.join(sorted(FETCHERS))})")
    try:
        path = FETCHERS[name](data_dir, url=url or ESC50_URL, sha256=sha256,
                              progress=err_console.is_terminal)
    except TympanError as exc:
        fail(str(exc))
    console.print(f"{name}: {path}", highlight=False)


@datasets_app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="Dataset: ESC-50 folder, CSV, or folder per class.")],
    subset: Annotated[str | None, typer.Option(help="ESC-50 subset (esc10).")] = None,
    strict: Annotated[bool, typer.Option(
        help="Exit 1 if any file is unreadable or any group straddles predefined folds.",
    )] = False,
    workers: Annotated[int, typer.Option(min=1, help="Decoding processes.")] = 2,
    min_duration_seconds: Annotated[float, typer.Option(
        "--min-duration-seconds", help="Shorter clips are reported as bad.")] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Classes, counts per class and fold, durations, sample rates, channels, bad files.

    Every file is fully decoded; unreadable files are listed with their reason, and
    groups (e.g. ESC-50's src_file) found in more than one predefined fold are
    named; the command still exits 0 (1 with --strict). A missing path, a folder
    without audio or a single class exits 2 before any work.
    """
    from tympan.data.info import summarize
    from tympan.data.sources import discover
    from tympan.errors import TympanError

    try:
        manifest = discover(path, subset=subset, min_duration_seconds=min_duration_seconds)
    except TympanError as exc:
        fail(str(exc))
    from tympan.progress import clips_progress

    with clips_progress(len(manifest), "decoding", enabled=err_console.is_terminal,
                        transient=True) as advance:
        summary = summarize(manifest, min_duration_seconds=min_duration_seconds,
                            workers=workers, progress=advance)
    if as_json:
        console.print_json(json.dumps(summary.to_dict()))
    else:
        _print_summary(summary)
    if strict and (summary.bad_files or summary.straddling):
        if summary.bad_files:
            err_console.print(f"--strict: {len(summary.bad_files)} unreadable file(s)")
        if summary.straddling:
            err_console.print(f"--strict: {summary.straddling_line(limit=20)}; put each "
                              "group's clips in one fold", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _print_summary(summary: object) -> None:
    from rich.table import Table

    from tympan.data.info import DatasetSummary

    assert isinstance(summary, DatasetSummary)
    folds = list(summary.fold_counts)
    table = Table(title=f"{summary.name} ({summary.root})", title_justify="left")
    table.add_column("class")
    table.add_column("clips", justify="right")
    for fold in folds:
        table.add_column(f"fold {fold}", justify="right")
    for label, count in summary.class_counts.items():
        per_fold = summary.class_fold_counts.get(label, {})
        table.add_row(label, str(count), *(str(per_fold.get(f, 0)) for f in folds))
    if folds:
        table.add_row("[bold]all", str(summary.n_clips),
                      *(str(summary.fold_counts[f]) for f in folds))
    console.print(table)
    lo, mean, hi = summary.duration_stats()
    console.print(f"durations: min {lo:.3f} s, mean {mean:.3f} s, max {hi:.3f} s")
    console.print("sample rates: " + ", ".join(
        f"{rate} Hz × {n}" for rate, n in summary.sample_rates.items()))
    console.print("channels: " + ", ".join(f"{ch} × {n}" for ch, n in summary.channels.items()))
    if summary.silent:
        console.print(f"[yellow]{len(summary.silent)} all-silent clip(s)[/] (kept): "
                      + ", ".join(str(p) for p in summary.silent[:5]), highlight=False)
    if summary.bad_files:
        console.print(f"[yellow]{len(summary.bad_files)} unreadable file(s), skipped:[/]")
        for bad in summary.bad_files:
            console.print(f"  {bad.path}: {bad.reason}", highlight=False, soft_wrap=True)
    straddle = summary.straddling_line()
    if straddle:
        console.print(f"[yellow]leakage:[/] {straddle}", highlight=False, soft_wrap=True)
    console.print(summary.summary_line(), highlight=False)
