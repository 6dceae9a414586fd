"""``tympan train`` (cross-validate, report, save a model) and ``tympan demo`` (the main job)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tympan.cli._app import app
from tympan.cli.common import build_recipe, console, err_console

if TYPE_CHECKING:
    from tympan.workflows.run import RunOutcome


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _print_outcome(outcome: RunOutcome) -> None:
    from rich.table import Table

    if outcome.cv is not None:
        summary = outcome.cv.summary()
        table = Table(title="cross-validation (held-out clips)")
        for column in ("fold", "clips", "accuracy", "macro-F1", "best epoch", "seconds"):
            table.add_column(column, justify="right")
        for f in summary["folds"]:
            best = "" if f["best_epoch"] is None else str(f["best_epoch"])
            table.add_row(str(f["fold"]), str(f["n_clips"]), f"{f['accuracy']:.1%}",
                          f"{f['macro_f1']:.3f}", best, f"{f['seconds']:.0f}")
        table.add_row("mean ± std", str(summary["n_clips"]),
                      f"{summary['accuracy_mean']:.1%} ± {summary['accuracy_std']:.1%}",
                      f"{summary['macro_f1_mean']:.3f} ± {summary['macro_f1_std']:.3f}", "",
                      f"{summary['seconds']:.0f}")
        console.print(table)
    if outcome.model_path is not None:
        console.print(f"model:  {outcome.model_path}")
    console.print(f"report: {outcome.run_dir / 'report.md'}")


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Dataset: folder per class, CSV, or ESC-50 folder.")],
    model: Annotated[str | None, typer.Option(
        help="Model name (default mn04_as, the AudioSet backbone); cnn-s, cnn-m, crnn-s, crnn-m "
             "train from scratch. `tympan models list` shows them all.")] = None,
    mode: Annotated[str | None, typer.Option(
        help="frozen (pretrained embeddings + logistic head: minutes on a CPU), finetune "
             "(train the network; from scratch for a model without pretrained weights), or "
             "auto (frozen for a pretrained model). Default: auto.")] = None,
    folds: Annotated[int | None, typer.Option(
        help="CV folds (default: the dataset's own folds, else 5); 0 = no CV.")] = None,
    no_cv: Annotated[bool, typer.Option("--no-cv", help="Skip CV: just train a model.")] = False,
    only_folds: Annotated[str | None, typer.Option(
        help="Run only these folds (comma-separated names, e.g. 1,3).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per fit.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (repeatable runs).")] = None,
    val_fraction: Annotated[float | None, typer.Option(
        help="Share of each fit's clips held out (early stopping; the frozen head's C).")
    ] = None,
    patience: Annotated[int | None, typer.Option(
        help="Early-stopping patience in epochs (0 = off).")] = None,
    name: Annotated[str | None, typer.Option(
        help="Run name (default: <data>-<model>-<time>).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder holding run folders.")] = Path("runs"),
    overwrite: Annotated[bool, typer.Option(help="Replace a run of the same name.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of this name.")] = False,
    final: Annotated[bool, typer.Option(
        help="After CV, train on all data and save the model in the run folder.")] = False,
    subset: Annotated[str | None, typer.Option(help="ESC-50 subset: esc10.")] = None,
    strict: Annotated[bool, typer.Option(
        help="Fail on bad files or groups straddling folds instead of reporting them.")] = False,
    config: Annotated[Path | None, typer.Option(
        help="A TrainConfig JSON file as the base recipe (options override it).")] = None,
    augmented: Annotated[Path | None, typer.Option(
        help="Folder of offline copies made by `tympan augment` (training folds only).")] = None,
    augment_policy: Annotated[Path | None, typer.Option(
        help="JSON mapping each class to the sets (TS, PS1 …) its copies may come from.")] = None,
    mixup: Annotated[float | None, typer.Option(help="Mixup alpha (0 = off).")] = None,
    spec_time_mask: Annotated[int | None, typer.Option(
        help="SpecAugment: max frames per time mask (0 = off).")] = None,
    spec_freq_mask: Annotated[int | None, typer.Option(
        help="SpecAugment: max mel bins per frequency mask (0 = off).")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
    precision: Annotated[str | None, typer.Option(
        help="auto | 32-true | bf16-mixed | 16-mixed.")] = None,
    devices: Annotated[int | None, typer.Option(
        help="Training processes per node (GPUs, else CPU processes); --batch-size is per "
             "process. Finetune only.")] = None,
    nodes: Annotated[int | None, typer.Option(help="Nodes (SLURM, torchrun). Finetune only.")
    ] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Lightning strategy: auto (ddp when --devices > 1) | ddp.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    weights: Annotated[Path | None, typer.Option(
        help="Pretrained weight file (else $TYMPAN_WEIGHTS, the cache, a download).")] = None,
) -> None:
    """Cross-validate a model on DATA and write runs/<name>/ (report, metrics, plots, model).

    With no --model, the AudioSet backbone (mn04_as) is frozen and a logistic
    head is trained on its embeddings: the best model two CPU cores train in minutes."""
    from tympan.data.sources import discover
    from tympan.workflows.run import run

    if resume and name is None:
        raise typer.BadParameter("--resume continues a named run: give its --name")
    changes: dict[str, Any] = {
        "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "val_fraction": val_fraction, "early_stopping_patience": patience,
        "mixup_alpha": mixup, "spec_time_mask_frames": spec_time_mask,
        "spec_freq_mask_bins": spec_freq_mask, "num_workers": workers, "precision": precision,
        "devices": devices, "nodes": nodes, "strategy": strategy,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if mode is not None and mode not in ("auto", "finetune", "frozen"):
        raise typer.BadParameter(f"--mode must be auto, finetune or frozen, got {mode!r}")
    if weights is not None:
        changes["model_kwargs"] = {"weights": str(weights)}
    if no_cv:
        changes["folds"] = 0
    elif folds is not None:
        changes["folds"] = folds
    if augment_policy is not None:
        from tympan.augment.policy import load_policy

        changes["augment_policy"] = load_policy(augment_policy)
    recipe = build_recipe(config, mode, changes)
    if weights is not None:
        recipe = recipe.replace(model_kwargs={**recipe.model_kwargs, "weights": str(weights)})
    manifest = discover(data, subset=subset)
    aug_manifest = None
    if augmented is not None:
        from tympan.augment.offline import load_augmented_manifest

        aug_manifest = load_augmented_manifest(augmented)
    if manifest.bad_files:
        err_console.print(f"[yellow]skipping {len(manifest.bad_files)} bad file(s)[/]; "
                          "the run folder lists them (skipped.csv)")
    from tympan.data.splits import describe_straddling

    straddle = describe_straddling(manifest)
    if straddle and not strict:
        err_console.print(f"[yellow]leakage warning[/]: {straddle}")
    run_name = name or f"{manifest.name}-{recipe.model}-{_stamp()}"
    outcome = run(manifest, recipe, runs_dir=runs_dir, name=run_name, final=final,
                  overwrite=overwrite, resume=resume, augmented=aug_manifest, strict=strict,
                  progress=progress,
                  only_folds=only_folds.split(",") if only_folds is not None else None)
    from tympan.workflows.ranks import is_global_zero

    if is_global_zero():  # under DDP the other ranks wrote nothing to show
        _print_outcome(outcome)


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(
        help="Where to write the synthetic dataset (default: a temporary folder).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder holding run folders.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Run name (default: demo-<time>).")] = None,
    clips_per_class: Annotated[int, typer.Option(help="Clips per class.")] = 24,
    epochs: Annotated[int | None, typer.Option(
        help="Train the seed CNN for this many epochs (instead of the default recipe).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run of the same name.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Generate a small synthetic 4-class dataset (tones, chirps, noise bursts, clicks) and
    cross-validate a classifier on it: the default recipe (frozen AudioSet backbone) when its
    weights are at hand, else the small seed CNN (no download either way); about a minute on
    two CPU cores."""
    import tempfile

    from tympan.data.cache import FeatureCache
    from tympan.data.sources import discover
    from tympan.workflows.demo import DEMO_CLASSES, demo_recipe, make_dataset
    from tympan.workflows.run import run

    recipe, why = demo_recipe(epochs)
    console.print(f"recipe: {why}")
    with tempfile.TemporaryDirectory(prefix="tympan-demo-") as tmp:
        root = make_dataset(data_dir or Path(tmp) / "sounds", n_per_class=clips_per_class)
        console.print(f"dataset: {root} ({len(DEMO_CLASSES)} classes × {clips_per_class} "
                      f"clips: {', '.join(DEMO_CLASSES)})")
        manifest = discover(root)
        # a temporary dataset gets a temporary feature cache: nothing stale is left behind
        cache = FeatureCache(Path(tmp) / "cache") if data_dir is None else None
        outcome = run(manifest, recipe, runs_dir=runs_dir, name=name or f"demo-{_stamp()}",
                      final=True, overwrite=overwrite, cache=cache, progress=progress)
    _print_outcome(outcome)
