"""``tympan augment`` (offline augmented copies) and ``tympan ablate`` (per-set ablation)."""

from __future__ import annotations

from pathlib import Path

import typer

from tympan.cli._app import app
from tympan.cli.common import build_recipe, console, err_console, fail


@app.command()
def augment(
    data: Path = typer.Argument(..., help="Dataset: ESC-50 folder, CSV, or folder per class."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder for copies + manifest.csv."),
    stretch: str = typer.Option(None, "--stretch",
                                help="Speed factors, e.g. 0.81,0.93,1.07,1.23 (1.07 = 7% faster)."),
    pitch: str = typer.Option(None, "--pitch", help="Pitch shifts in semitones, e.g. -2,-1,1,2."),
    preset: str = typer.Option(None, "--preset",
                               help="Salamon & Bello sets: TS,PS1,PS2,DRC,BG or all."),
    background: Path = typer.Option(None, "--background",
                                    help="Folder of background recordings for BG "
                                         "(none of them in the dataset)."),
    background_classes: str = typer.Option(
        None, "--background-classes",
        help="For BG without --background: mix clips of these classes, same predefined "
             "fold only (the dataset needs folds)."),
    subset: str = typer.Option(None, "--subset", help="ESC-50 subset (esc10)."),
    workers: int = typer.Option(2, "--workers", "-j", min=1,
                                help="Processes (one clip each at a time)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random parts (BG choice and SNR)."),
    audio_format: str = typer.Option("auto", "--format",
                                     help="auto (WAV for WAV sources, else FLAC), flac, wav."),
    sample_rate: int = typer.Option(None, "--sample-rate",
                                    help="Resample copies to this rate (Hz); default: source's."),
    limit: int = typer.Option(None, "--limit", help="Only the first N clips (for a trial)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Remake copies that exist."),
) -> None:
    """Write augmented copies of every clip beside a manifest of their sources.

    The seed's `rubberband -t 1/r -p n in.wav out.wav`, in-process and in
    parallel. Resumable: rerun the same command after an interruption and
    finished copies are kept. Copies keep their source's fold and group.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tympan.augment.offline import make_copies
    from tympan.augment.plan import build_variants, parse_values
    from tympan.data.sources import discover
    from tympan.errors import TympanError

    try:
        variants = build_variants(
            parse_values(stretch, "--stretch"), parse_values(pitch, "--pitch"),
            [p for p in (preset or "").split(",") if p.strip()],
        )
    except ValueError as exc:
        fail(str(exc))
    if not variants:
        fail("nothing to do: give --stretch, --pitch and/or --preset")
    manifest = discover(data, subset=subset)
    for bad in manifest.bad_files:
        err_console.print(f"[yellow]skipped[/] {bad}", highlight=False)
    classes = [c.strip() for c in (background_classes or "").split(",") if c.strip()] or None
    n_clips = min(limit, len(manifest)) if limit else len(manifest)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
                  transient=False) as bar:
        task = bar.add_task("augmenting", total=n_clips * len(variants))
        try:
            report = make_copies(
                manifest, out, variants, workers=workers, seed=seed, audio_format=audio_format,
                sample_rate=sample_rate, background=background, background_classes=classes,
                overwrite=overwrite, limit=limit,
                progress=lambda n: bar.advance(task, n),
            )
        except KeyboardInterrupt:
            err_console.print("interrupted: finished copies are kept; rerun the same command "
                              "to make the rest")
            raise typer.Exit(130) from None
        except (TympanError, ValueError) as exc:
            fail(str(exc), getattr(exc, "exit_code", 2))
    for bad in report.failed:
        err_console.print(f"[yellow]failed[/] {bad}", highlight=False)
    console.print(
        f"{report.written} copies written, {report.skipped} already there, "
        f"{len(report.failed)} source(s) failed, in {report.seconds:.1f} s "
        f"({report.copies_per_second:.1f} copies/s) → {out / 'manifest.csv'}"
    )


@app.command()
def ablate(
    data: Path = typer.Argument(..., help="Dataset: ESC-50 folder, CSV, or folder per class."),
    augmented: Path = typer.Option(..., "--augmented",
                                   help="Folder of copies from `tympan augment` (all sets)."),
    sets: str = typer.Option("none,TS,PS1,PS2,DRC,BG,all", "--sets",
                             help="Sets to compare, each trained with its copies only."),
    out: Path = typer.Option(Path("runs/ablation"), "-o", "--out",
                             help="Folder for the table, heat-map, policy and fold runs."),
    config: Path = typer.Option(None, "--config", help="TrainConfig JSON: the recipe."),
    model: str = typer.Option(None, "--model", help="Model name (overrides --config)."),
    mode: str = typer.Option(None, "--mode", help="auto, finetune or frozen (as for train)."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs per fit."),
    batch_size: int = typer.Option(None, "--batch-size", help="Patches per batch."),
    max_train_batches: int = typer.Option(None, "--max-train-batches",
                                          help="Cap on batches per epoch (short schedules)."),
    folds: int = typer.Option(None, "--folds", help="CV folds (default: the dataset's own)."),
    seed: int = typer.Option(None, "--seed", help="Seed shared by every set's run."),
    class_conditional: bool = typer.Option(
        False, "--class-conditional",
        help="Also evaluate a per-class policy chosen inside each fold's training folds."),
    candidates: str = typer.Option(
        None, "--candidates",
        help="Sets the class-conditional policy picks from, e.g. TS,PS1,PS2,DRC,BG "
             "(default: the single sets among --sets)."),
    min_delta: float = typer.Option(0.0, "--min-delta",
                                    help="A set helps a class if its accuracy gain exceeds "
                                         "this (0.02 = 2 points)."),
    subset: str = typer.Option(None, "--subset", help="ESC-50 subset (esc10)."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Train the same recipe under each augmentation set (same folds and seeds) and
    write a table, per-class accuracy deltas against `none` (heat-map) and policy.json."""
    from tympan.augment.offline import load_augmented_manifest
    from tympan.data.sources import discover
    from tympan.workflows.ablate import ablate as run_ablation
    from tympan.workflows.ablate import markdown_table

    changes = {"model": model, "epochs": epochs, "batch_size": batch_size,
               "max_train_batches": max_train_batches, "folds": folds, "seed": seed}
    recipe = build_recipe(config, mode, {k: v for k, v in changes.items() if v is not None})
    try:
        names = [s for s in sets.split(",") if s.strip()]
        manifest = discover(data, subset=subset)
        copies = load_augmented_manifest(augmented)
        result = run_ablation(manifest, copies, recipe, names, out,
                              class_conditional=class_conditional, min_delta=min_delta,
                              candidates=[s for s in candidates.split(",") if s.strip()]
                              if candidates else None,
                              progress=progress)
    except ValueError as exc:
        fail(str(exc))
    console.print(markdown_table(result))
    console.print(f"table: {out / 'ablation.md'}  heat-map: {out / 'delta_heatmap.png'}"
                  + (f"  policy: {out / 'policy.json'}" if result.policy is not None else ""))
