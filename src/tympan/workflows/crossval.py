"""Cross-validation of any recipe: one fit per fold, held-out clip probabilities, resume.

Splits come from :func:`tympan.data.splits.make_splits` (predefined folds, or
stratified folds grouped by source); each fold's recipe fit sees only its
training clips (and their augmented copies), and the fold's own validation
carve-out comes from those too. With a run folder every finished fold is
stored (``cv/fold-<name>/result.{json,npz}``) and an unfinished one resumes
from its last checkpoint, so an interrupted cross-validation picks up where it
stopped; ``cv/state.json`` refuses to resume with other data or settings.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback

from tympan.data.splits import fold_names, make_splits
from tympan.errors import DatasetError, DivergedError, TympanError
from tympan.fileio import atomic_write_bytes, atomic_write_text
from tympan.workflows.prepared import PreparedData
from tympan.workflows.ranks import is_global_zero
from tympan.workflows.recipes.base import Recipe
from tympan.workflows.results import CVResult, EpochLog, FoldResult

CV_DIR = "cv"

Splits = Sequence[tuple[np.ndarray, np.ndarray]]


# -- fold results on disk ---------------------------------------------------------------------


def save_fold_result(folder: Path, result: FoldResult) -> None:
    """Write ``result.npz`` (arrays) and then ``result.json`` (the rest), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, clip_indices=result.clip_indices, y_true=result.y_true,
             probabilities=result.probabilities)
    atomic_write_bytes(folder / "result.npz", buffer.getvalue())
    info = {"fold": result.fold, "best_epoch": result.best_epoch, "seconds": result.seconds,
            "history": [asdict(h) for h in result.history], "info": result.info}
    atomic_write_text(folder / "result.json", json.dumps(info, indent=1) + "\n")


def load_fold_result(folder: Path) -> FoldResult | None:
    """The finished fold stored in ``folder``, or None if it has not finished."""
    if not (folder / "result.json").is_file() or not (folder / "result.npz").is_file():
        return None
    info = json.loads((folder / "result.json").read_text())
    with np.load(folder / "result.npz") as arrays:
        return FoldResult(fold=info["fold"], clip_indices=arrays["clip_indices"],
                          y_true=arrays["y_true"], probabilities=arrays["probabilities"],
                          history=[EpochLog(**h) for h in info["history"]],
                          best_epoch=info["best_epoch"], seconds=float(info["seconds"]),
                          info=info.get("info", {}))


def splits_digest(splits: Splits) -> str:
    """sha256 naming a list of ``(train_idx, test_idx)`` splits."""
    digest = hashlib.sha256()
    for train, test in splits:
        digest.update(np.asarray(train, np.int64).tobytes() + b"|")
        digest.update(np.asarray(test, np.int64).tobytes() + b"#")
    return digest.hexdigest()


def run_state(recipe: Recipe, data: PreparedData, **extra: Any) -> dict[str, Any]:
    """What a resumed run must share with the one it continues: recipe, front end, data."""
    return {"train_config": recipe.train_config(),
            "feature_config": data.feature_config.to_dict(),
            "manifest": data.manifest.fingerprint(), "augmented": data.augmented_fingerprint,
            **extra}


def check_state(folder: Path, state: dict[str, Any]) -> None:
    """Record ``state`` in ``folder/state.json``, or check it against the recorded one.

    Raises:
        TympanError: the folder holds work of other data or settings (the message
            names what differs).
    """
    path = folder / "state.json"
    state = json.loads(json.dumps(state))  # compare as stored: tuples become lists
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(state) | set(old) if old.get(k) != state.get(k))
        if changed:
            details = []
            for key in changed:
                if isinstance(old.get(key), dict) and isinstance(state.get(key), dict):
                    fields = sorted(f for f in set(old[key]) | set(state[key])
                                    if old[key].get(f) != state[key].get(f))
                    details.append(f"{key} ({', '.join(fields)})")
                else:
                    details.append(key)
            raise TympanError(
                f"{folder}: holds work of a different {', '.join(details)}; resume it with the "
                "same data and settings, or start a new run (another --name, or --overwrite)"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(state, indent=1, sort_keys=True) + "\n")


# -- cross-validation -------------------------------------------------------------------------


def cross_validate(
    recipe: Recipe,
    data: PreparedData,
    run_dir: str | Path | None = None,
    *,
    progress: bool = False,
    only_folds: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    splits: Splits | None = None,
    split_names: Sequence[str] | None = None,
) -> CVResult:
    """k-fold cross-validation of ``recipe`` on ``data``: held-out clip probabilities per fold.

    ``data`` comes from ``recipe.featurise`` (with copies from
    :func:`tympan.workflows.prepared.with_copies`). ``only_folds`` runs just the
    named folds. With ``run_dir``, fold work goes to ``run_dir/cv/fold-<name>/``
    and a repeated call resumes: finished folds are loaded, not re-run.
    ``splits`` (``(train_idx, test_idx)`` pairs) with ``split_names`` replaces
    :func:`make_splits`' folds, e.g. for a nested evaluation.

    Raises:
        DatasetError: see :func:`make_splits`; an unknown name in ``only_folds``.
        DivergedError: a fold's fit diverged (the message names the fold).
        TympanError: ``run_dir`` holds a run of other data or settings.
    """
    config = recipe.config
    manifest = data.manifest
    if splits is None:
        splits = make_splits(manifest, config.folds, config.seed)
        names = fold_names(manifest, splits)
    elif split_names is None or len(split_names) != len(splits):
        raise ValueError("explicit splits need one name each (split_names)")
    else:
        names = list(split_names)
    if only_folds is not None:
        unknown = sorted(set(only_folds) - set(names))
        if unknown:
            raise DatasetError(f"unknown fold(s) {', '.join(unknown)} (folds: {', '.join(names)})")
    cv_dir = Path(run_dir) / CV_DIR if run_dir is not None else None
    writer = is_global_zero()  # under DDP the other ranks fit alongside and write nothing
    if cv_dir is not None and writer:
        check_state(cv_dir, run_state(recipe, data, splits=splits_digest(splits)))
    results: list[FoldResult] = []
    for k, ((train_idx, test_idx), name) in enumerate(zip(splits, names, strict=True)):
        if only_folds is not None and name not in only_folds:
            continue
        fold_dir = cv_dir / f"fold-{name}" if cv_dir is not None else None
        done = load_fold_result(fold_dir) if fold_dir is not None else None
        if done is not None:
            results.append(done)
            continue
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"fold {name} ({k + 1}/{len(splits)}): "
                                       f"{len(train_idx)} training clips, {len(test_idx)} test")
        try:
            fitted = recipe.fit(data, train_idx, split_seed=config.seed + k, work_dir=fold_dir,
                                progress=progress, callbacks=callbacks)
            probabilities = recipe.predict_proba(fitted, data, test_idx)
            if not np.isfinite(probabilities).all():
                raise DivergedError("the fitted model gives non-finite probabilities; lower "
                                    "the learning rate")
        except DivergedError as exc:
            raise DivergedError(f"fold {name}: {exc}") from None
        result = FoldResult(fold=name, clip_indices=np.asarray(test_idx),
                            y_true=data.labels[test_idx], probabilities=probabilities,
                            history=fitted.history, best_epoch=fitted.best_epoch,
                            seconds=fitted.seconds, info=fitted.info)
        if fold_dir is not None and writer:
            save_fold_result(fold_dir, result)
            # the fold is final; its checkpoint only served resuming it
            shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)
        results.append(result)
    return CVResult(classes=data.classes, folds=results,
                    seconds=data.seconds + sum(r.seconds for r in results))


__all__ = ["CV_DIR", "check_state", "cross_validate", "load_fold_result", "run_state",
           "save_fold_result", "splits_digest"]
