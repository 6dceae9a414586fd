"""ESC-50 augmentation ablation with the seed CNN: offline copies, then one CV per set.

    python bench/ablation.py --subset esc10 --sets none,TS+PS1,all --class-conditional \
        --epochs 10                                                  # short CPU run
    python bench/ablation.py --sets none,TS+PS1,all --class-conditional   # full (GPU)

The class-conditional policy picks, per class and inside each outer fold's
training folds, among ``--candidates`` (default the five single sets TS, PS1,
PS2, DRC, BG).

Both stages resume: finished copies are kept (``WORK/copies``) and finished
folds of every set are kept (``WORK/ablation``), so rerunning the same command
after an interruption only does what is missing. Writes
``bench/results/ablation-TAG.json``: mean and per-fold accuracy per set, the
per-class deltas against ``none``, the schedule, wall time, machine, commit and
command. The table and heat-map PNG stay in ``WORK/ablation``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from esc50 import default_data
from provenance import cpu_model, git_commit

from tympan.augment.offline import load_augmented_manifest, make_copies
from tympan.augment.plan import build_variants
from tympan.augment.presets import expand_sets
from tympan.config import TrainConfig
from tympan.data.sources import discover
from tympan.fileio import atomic_write_text
from tympan.workflows.ablate import ablate

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--subset", choices=["esc10"])
    parser.add_argument("--sets", default="none,TS+PS1,all",
                        help="comma-separated sets; join several with + (TS+PS1)")
    parser.add_argument("--model", default="cnn-s")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--max-train-batches", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-conditional", action="store_true")
    parser.add_argument("--candidates", default="TS,PS1,PS2,DRC,BG",
                        help="sets the class-conditional policy picks from")
    parser.add_argument("--background-classes",
                        help="classes mixed in for BG (same fold only); default "
                             "rain,wind,sea_waves,crickets (ESC-10: rain,sea_waves,crackling_fire)")
    parser.add_argument("--work-dir", type=Path, help="default runs/bench/ablation-TAG")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    commit = git_commit()  # the code that runs, not what HEAD is when it ends

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    tag = (args.subset or "esc50") + "-" + "_".join(s.replace("+", "") for s in sets) + (
        "_cc" if args.class_conditional else "")
    work = args.work_dir or ROOT / "runs" / "bench" / f"ablation-{tag}"
    started = time.perf_counter()
    manifest = discover(args.data, subset=args.subset)
    candidates = [s.strip() for s in args.candidates.split(",") if s.strip()]
    members = expand_sets(sets + (candidates if args.class_conditional else []))
    background = args.background_classes or (
        "rain,sea_waves,crackling_fire" if args.subset == "esc10"
        else "rain,wind,sea_waves,crickets")
    copies_dir = work / "copies"
    report = make_copies(
        manifest, copies_dir, build_variants(presets=members), workers=2, seed=args.seed,
        background_classes=background.split(",") if "BG" in members else None,
        progress=args.progress,
    )
    copy_seconds = time.perf_counter() - started
    config = TrainConfig(model=args.model, epochs=args.epochs, seed=args.seed,
                         max_train_batches=args.max_train_batches)
    result = ablate(manifest, load_augmented_manifest(copies_dir), config, sets,
                    work / "ablation", class_conditional=args.class_conditional,
                    candidates=candidates, progress=args.progress)
    wall = time.perf_counter() - started
    deltas = result.deltas() if "none" in result.results else None
    record = {
        "benchmark": "augmentation ablation, seed CNN",
        "dataset": {"name": manifest.name, "n_clips": len(manifest),
                    "fingerprint": manifest.fingerprint()},
        "sets": {name: {"accuracy_mean": cv.summary()["accuracy_mean"],
                        "accuracy_std": cv.summary()["accuracy_std"],
                        "folds": cv.fold_accuracies()}
                 for name, cv in result.results.items()},
        "per_class_delta_vs_none": deltas,
        "class_conditional": {
            "candidates": candidates,
            "fold_policies": result.fold_policies,
            "policy_all_folds": result.policy,
            "nested_per_class_delta_vs_none": result.nested.deltas() if result.nested else None,
        } if args.class_conditional else None,
        "schedule": {"full": args.epochs == 80 and args.max_train_batches is None
                     and args.subset is None, "train_config": config.to_dict()},
        "copies": {"written": report.written, "already_there": report.skipped,
                   "seconds": round(copy_seconds, 1)},
        "wall_seconds": round(wall, 1),
        "machine": {"cpu_model": cpu_model(), "platform": platform.platform()},
        "commit": commit,
        "command": "python bench/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = ROOT / "bench" / "results" / f"ablation-{tag}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    for name, body in record["sets"].items():
        print(f"{name:>24}: {100 * body['accuracy_mean']:.1f} %  folds "
              + " ".join(f"{100 * a:.1f}" for a in body["folds"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
