"""ESC-50 benchmark: 5-fold cross-validation of a named recipe, on the dataset's own folds.

    python bench/esc50.py mn04-frozen                # the default recipe (minutes on a CPU)
    python bench/esc50.py cnn-s                      # the seed CNN's full recipe (meant for a GPU)
    python bench/esc50.py cnn-s --epochs 3 --limit-train-batches 50 --threads 1   # short CPU run

Writes ``bench/results/esc50-RECIPE.json``: per-fold and mean accuracy, the
schedule that actually ran (epochs, folds, batch cap: ``"full": false`` when
shortened), wall time, device, CPU model, commit and command. The work goes
through tympan's one orchestrator (:func:`tympan.workflows.run.run`) into the
run folder ``runs/bench/esc50-RECIPE/``, so an interrupted benchmark resumes
(finished folds are kept), and calls with ``--only-folds`` add folds to one run
folder (a last call without it records them all); ``--fresh`` starts it again.

A recipe is one :class:`Recipe` in :data:`RECIPES`: a name, a description and
the :class:`TrainConfig` (its ``mode`` picks finetune or frozen training).
Add one with :func:`add_recipe`; nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from provenance import cpu_model, git_commit

from tympan.config import TrainConfig
from tympan.data.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Recipe:
    """A named ESC-50 recipe.

    ``config`` is the full schedule (command-line options shorten it);
    ``augmented`` names a folder of offline copies (``tympan augment`` output,
    relative to the dataset folder or absolute) joined to the training folds.
    """

    name: str
    description: str
    config: TrainConfig
    augmented: str | None = None


RECIPES: dict[str, Recipe] = {}


def add_recipe(recipe: Recipe) -> Recipe:
    """Register ``recipe`` under its name (a second one with the same name is an error)."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already defined")
    RECIPES[recipe.name] = recipe
    return recipe


# The seed's CNN from scratch, no augmentation: 128x128 log-mel patches at 44.1 kHz,
# Adam with L2, cosine schedule, early stopping on validation clips from the training folds.
_SEED = TrainConfig(model="cnn-s", mode="finetune", epochs=80, batch_size=32, lr=1e-3,
                    weight_decay=1e-4, early_stopping_patience=15, val_fraction=0.15, seed=0,
                    num_workers=4)
add_recipe(Recipe("cnn-s", "seed CNN, small (4 conv blocks, 16-128 channels), from scratch",
                  _SEED))
add_recipe(Recipe("cnn-m", "seed CNN, medium (4 double-conv blocks, 32-256 channels)",
                  _SEED.replace(model="cnn-m")))
add_recipe(Recipe("crnn-s", "cnn-s conv stack + bidirectional GRU over time",
                  _SEED.replace(model="crnn-s")))
add_recipe(Recipe("mn04-frozen",
                  "EfficientAT mn04_as frozen: time-averaged per-frequency embeddings (1536-d) "
                  "of each patch and its half-length circular time shift, logistic regression "
                  "with C tuned on an inner split (tympan's default recipe)",
                  TrainConfig(model="mn04_as", mode="frozen")))
add_recipe(Recipe("mn04-finetune",
                  "EfficientAT mn04_as fine-tuned: Linear head at lr 1e-3, backbone at 1e-4 "
                  "(frozen for the first epoch), mixup 0.3, SpecAugment",
                  TrainConfig(model="mn04_as", mode="finetune", epochs=40, batch_size=32,
                              lr=1e-3, optimizer="adamw", weight_decay=1e-3,
                              backbone_lr_scale=0.1, freeze_backbone_epochs=1, mixup_alpha=0.3,
                              spec_time_mask_frames=48, spec_freq_mask_bins=16,
                              early_stopping_patience=10, val_fraction=0.15, seed=0,
                              num_workers=4)))


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu ({torch.get_num_threads()} torch threads)"


def default_data() -> Path:
    base = os.environ.get("TYMPAN_DATA")
    return Path(base) / "esc50" if base else Path("/work/shared/datasets/esc50")


def augmented_copies(recipe: Recipe, args: argparse.Namespace) -> Manifest | None:
    """The offline copies joined to the training folds: ``--augmented``, else the recipe's."""
    where = args.augmented or recipe.augmented
    if where is None:
        return None
    from tympan.augment.offline import load_augmented_manifest

    folder = Path(where)
    return load_augmented_manifest(folder if folder.is_absolute() else args.data / folder)


def schedule(recipe: Recipe, args: argparse.Namespace) -> TrainConfig:
    """The recipe's config with the command line's schedule options applied."""
    changes: dict[str, Any] = {
        "epochs": args.epochs, "batch_size": args.batch_size,
        "max_train_batches": args.limit_train_batches, "num_workers": args.workers,
        "early_stopping_patience": args.patience,
    }
    import torch

    if (args.workers is None and not torch.cuda.is_available()
            and recipe.config.mode == "finetune"):
        changes["num_workers"] = 0  # on a CPU, loader processes only compete with training
    return recipe.config.replace(**{k: v for k, v in changes.items() if v is not None})


def _missing_folds(run_dir: Path, manifest: Manifest) -> bool:
    """True when ``run_dir`` is a finished run of only some of ``manifest``'s folds."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    done = json.loads(metrics.read_text()).get("folds", [])
    return 0 < len(done) < len({c.fold for c in manifest.clips})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--data", type=Path, default=default_data(),
                        help="ESC-50 folder (default: $TYMPAN_DATA/esc50)")
    parser.add_argument("--subset", choices=["esc10"], help="ESC-10 only (quick checks)")
    parser.add_argument("--epochs", type=int, help="maximum epochs per fold")
    parser.add_argument("--folds", type=int, help="run only the first N folds")
    parser.add_argument("--only-folds", type=lambda s: s.split(","),
                        help="comma-separated fold names to run, e.g. 1,3")
    parser.add_argument("--limit-train-batches", type=int, help="cap on batches per epoch")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--patience", type=int, help="early-stopping patience (epochs)")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--augmented", type=Path,
                        help="folder of `tympan augment` copies joined to the training folds "
                             "(overrides the recipe's)")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/...)")
    parser.add_argument("--work-dir", type=Path, help="folder of run folders (default runs/bench)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier fold work")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    commit = git_commit()  # the code that runs, not what HEAD is when it ends

    import torch

    from tympan.data.sources import discover

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    tag = (f"esc50-{recipe.name}" + (f"-{args.subset}" if args.subset else "")
           + (f"-aug-{args.augmented.name}" if args.augmented else ""))
    out = args.out or RESULTS / f"{tag}.json"
    runs_dir = args.work_dir or ROOT / "runs" / "bench"
    started = time.perf_counter()
    manifest = discover(args.data, subset=args.subset)
    if args.folds is not None:
        names = sorted({str(c.fold) for c in manifest.clips}, key=int)
        args.only_folds = names[:args.folds]
    from tympan.workflows.run import run
    from tympan.workflows.runfolder import work_dir_for

    work, finished = work_dir_for(runs_dir, tag), runs_dir / tag
    if not args.fresh and not work.is_dir() and _missing_folds(finished, manifest):
        finished.rename(work)  # an --only-folds run: reopened, its finished folds are kept
    resume = work.is_dir() and not args.fresh
    outcome = run(manifest, schedule(recipe, args), runs_dir=runs_dir, name=tag, resume=resume,
                  overwrite=True, augmented=augmented_copies(recipe, args),
                  progress=args.progress, only_folds=args.only_folds)
    cv = outcome.cv
    assert cv is not None
    wall = time.perf_counter() - started
    config = schedule(recipe, args)
    summary = cv.summary()
    n_folds_total = len({c.fold for c in manifest.clips})
    full = (len(cv.folds) == n_folds_total and args.epochs is None
            and args.limit_train_batches is None)
    result = {
        "recipe": recipe.name,
        "description": recipe.description,
        "dataset": {"name": manifest.name, "path": str(args.data), "n_clips": len(manifest),
                    "n_skipped": len(manifest.bad_files), "fingerprint": manifest.fingerprint()},
        "schedule": {"full": full, "epochs": config.epochs, "folds_run": [f.fold for f in cv.folds],
                     "folds_total": n_folds_total, "max_train_batches": config.max_train_batches,
                     "batch_size": config.batch_size},
        "accuracy_mean": summary["accuracy_mean"],
        "accuracy_std": summary["accuracy_std"],
        "macro_f1_mean": summary["macro_f1_mean"],
        "folds": summary["folds"],
        "best_epochs": [f.best_epoch for f in cv.folds],
        "fold_info": {f.fold: f.info for f in cv.folds},
        "run_dir": str(outcome.run_dir),
        "wall_seconds": round(wall, 1),
        "train_seconds": summary["seconds"],
        "device": _device(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None
        else " ".join(["bench/esc50.py", *argv]),
        "train_config": config.to_dict(),
        "augmented": args.augmented.as_posix() if args.augmented else recipe.augmented,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    from tympan.fileio import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"{recipe.name}: {summary['accuracy_mean']:.1%} ± {summary['accuracy_std']:.1%} "
          f"over folds {', '.join(f.fold for f in cv.folds)} "
          f"({'full' if full else 'SHORT'} schedule, {wall:.0f} s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
