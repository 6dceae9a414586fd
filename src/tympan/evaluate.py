"""Cross-validation: honest splits, one fit per fold, held-out clip probabilities.

Splits never leak: a dataset with predefined folds (ESC-50, a CSV ``fold``
column) uses them; otherwise clips are split by stratified k-fold grouped by
``manifest.groups`` (recordings cut from one source stay on one side). Each
fold's validation clips are carved, grouped too, from its training clips
only, and offline augmented copies join the training clips only, never
validation or test. With a run folder every finished fold is stored
(``cv/fold-<name>/result.{json,npz}``) and an unfinished one resumes from its
last checkpoint, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from tympan.config import FeatureConfig, TrainConfig
from tympan.data.manifest import Manifest
from tympan.errors import DatasetError, TympanError
from tympan.fileio import atomic_write_bytes, atomic_write_text
from tympan.results import CVResult, EpochLog, FoldResult
from tympan.train import ClipSet, FitResult, default_device, fit

DEFAULT_FOLDS = 5
CV_DIR = "cv"


# -- splits -----------------------------------------------------------------------------------


def _class_groups(manifest: Manifest) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for clip, group in zip(manifest.clips, manifest.groups, strict=True):
        groups.setdefault(clip.label, set()).add(group)
    return groups


def make_splits(
    manifest: Manifest, n_folds: int | None = None, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_idx, test_idx)`` per fold; indices into ``manifest.clips``, sorted.

    A manifest whose clips all carry a ``fold`` uses those folds (in fold
    order); ``n_folds`` must then be None or their number. Otherwise
    ``n_folds`` (default 5) stratified folds grouped by ``manifest.groups``,
    shuffled with ``seed``.

    Raises:
        DatasetError: ``n_folds`` < 2; it disagrees with the predefined folds;
            a class has fewer clips (groups) than folds, or with predefined
            folds appears in only one fold — the message names the classes.
    """
    if manifest.has_folds:
        folds = sorted({int(c.fold) for c in manifest.clips})  # type: ignore[arg-type]
        if n_folds is not None and n_folds != len(folds):
            raise DatasetError(
                f"{manifest.name}: the dataset defines {len(folds)} folds "
                f"({', '.join(map(str, folds))}); use --folds {len(folds)} (or leave it out)"
            )
        if len(folds) < 2:
            raise DatasetError(f"{manifest.name}: every clip is in fold {folds[0]}; "
                               "cross-validation needs at least 2 folds")
        per_class: dict[str, set[int]] = {}
        for clip in manifest.clips:
            per_class.setdefault(clip.label, set()).add(int(clip.fold))  # type: ignore[arg-type]
        lonely = sorted(label for label, f in per_class.items() if len(f) < 2)
        if lonely:
            raise DatasetError(
                f"{manifest.name}: class(es) {', '.join(lonely)} appear in only one predefined "
                "fold, so no model would train on them when that fold is tested"
            )
        fold_of = np.array([int(c.fold) for c in manifest.clips])  # type: ignore[arg-type]
        return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in folds]
    n_folds = DEFAULT_FOLDS if n_folds is None else n_folds
    if n_folds < 2:
        raise DatasetError(f"cross-validation needs at least 2 folds, got {n_folds}")
    short = {label: len(g) for label, g in _class_groups(manifest).items() if len(g) < n_folds}
    if short:
        names = ", ".join(f"{label!r} ({n})" for label, n in sorted(short.items()))
        raise DatasetError(
            f"{manifest.name}: {n_folds}-fold cross-validation needs at least {n_folds} clips "
            f"(independent groups) per class; too few in: {names}. Add clips or use fewer "
            "--folds"
        )
    labels = manifest.label_ids()
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    dummy = np.zeros(len(manifest))
    with warnings.catch_warnings():
        # counted in clips, not groups; enough groups per class was checked above
        warnings.filterwarnings("ignore", message="The least populated class")
        return [(np.sort(tr), np.sort(te))
                for tr, te in splitter.split(dummy, labels, groups=manifest.groups)]


def fold_names(manifest: Manifest, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Display names of the folds: the predefined fold numbers, else ``"1"`` … ``"k"``."""
    if manifest.has_folds:
        return [str(manifest.clips[int(test[0])].fold) for _, test in splits]
    return [str(k + 1) for k in range(len(splits))]


def validation_split(
    manifest: Manifest, train_idx: np.ndarray, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``train_idx`` into ``(fit_idx, val_idx)`` with ``val_fraction`` of its groups
    held out (stratified by class where the groups allow it).

    ``val_fraction == 0`` or fewer than 2 groups gives an empty validation set.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    groups = np.array(manifest.groups, dtype=object)[train_idx]
    n_groups = len(set(groups))
    if val_fraction <= 0 or n_groups < 2:
        return train_idx, np.zeros(0, dtype=np.int64)
    labels = manifest.label_ids()[train_idx]
    n_splits = max(2, round(1 / val_fraction))
    if n_groups >= n_splits and np.bincount(labels).max() >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # stratification is best effort here: a rare class may miss the validation set
            warnings.filterwarnings("ignore", message="The least populated class")
            fit_pos, val_pos = next(splitter.split(np.zeros(len(train_idx)), labels, groups))
    else:
        shuffle = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        fit_pos, val_pos = next(shuffle.split(np.zeros(len(train_idx)), labels, groups))
    return np.sort(train_idx[fit_pos]), np.sort(train_idx[val_pos])


# -- data -------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """A dataset ready to train on: the clips that decoded, their log-mels and labels.

    ``variants[i]`` holds the offline augmented copies clip ``i`` may train
    with (after the policy), or is None without an augmented manifest.
    """

    manifest: Manifest
    specs: Sequence[np.ndarray]
    feature_config: FeatureConfig
    variants: list[list[np.ndarray]] | None = None
    augmented_fingerprint: str | None = None

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def labels(self) -> np.ndarray:
        return self.manifest.label_ids()

    def clip_set(self, indices: np.ndarray, *, with_variants: bool = False) -> ClipSet:
        """The clips at ``indices`` (with their augmented copies if ``with_variants``)."""
        variants = None
        if with_variants and self.variants is not None:
            variants = [self.variants[int(i)] for i in indices]
        return ClipSet([self.specs[int(i)] for i in indices], self.labels[indices], variants)


def load_features(
    manifest: Manifest,
    feature_config: FeatureConfig,
    *,
    cache: Any = None,
    workers: int = 2,
    progress: bool = False,
) -> tuple[Manifest, Sequence[np.ndarray]]:
    """Log-mels of every clip through the feature cache: ``(good manifest, specs)``.

    Clips that fail to decode move to the returned manifest's ``bad_files``.
    """
    from tympan.data.cache import FeatureCache

    cache = cache if cache is not None else FeatureCache()
    cached = cache.get(manifest, feature_config, workers=workers, progress=progress)
    return cached.manifest, cached


def augmented_variants(
    manifest: Manifest,
    augmented: Manifest,
    specs: Sequence[np.ndarray],
    policy: Mapping[str, Sequence[str]] | None = None,
) -> list[list[np.ndarray]]:
    """For each clip of ``manifest``, the specs of its copies in ``augmented``.

    A copy belongs to the clip its ``source`` names; it is kept if ``policy``
    is None or lists the copy's set (``"TS"`` of ``"TS:1.07"``; unions like
    ``"TS+PS1"`` and ``"all"`` count for their members) for the clip's class.
    ``specs[j]`` is the log-mel of ``augmented.clips[j]``.
    """
    from tympan.augment.presets import expand_sets, tag_set

    allowed = None if policy is None else {c: set(expand_sets(s)) for c, s in policy.items()}
    by_path = {Path(c.path).resolve(): i for i, c in enumerate(manifest.clips)}
    variants: list[list[np.ndarray]] = [[] for _ in manifest.clips]
    for copy, spec in zip(augmented.clips, specs, strict=True):
        if copy.source is None:
            continue
        owner = by_path.get(Path(copy.source).resolve())
        if owner is None:
            continue
        label = manifest.clips[owner].label
        if allowed is not None and tag_set(copy.transform) not in allowed.get(label, ()):
            continue
        variants[owner].append(spec)
    return variants


def prepare(
    manifest: Manifest,
    feature_config: FeatureConfig,
    *,
    augmented: Manifest | None = None,
    policy: Mapping[str, Sequence[str]] | None = None,
    cache: Any = None,
    workers: int = 2,
    progress: bool = False,
) -> PreparedData:
    """Decode and featurise ``manifest`` (and the augmented copies) through the cache."""
    good, specs = load_features(manifest, feature_config, cache=cache, workers=workers,
                                progress=progress)
    variants = None
    fingerprint = None
    if augmented is not None:
        aug_good, aug_specs = load_features(augmented, feature_config, cache=cache,
                                            workers=workers, progress=progress)
        variants = augmented_variants(good, aug_good, aug_specs, policy)
        fingerprint = aug_good.fingerprint()
    return PreparedData(good, specs, feature_config, variants, fingerprint)


def resolve_features(config: TrainConfig) -> FeatureConfig:
    """The config's front end, or its model's registered default."""
    if config.features is not None:
        return config.features
    from tympan import models

    return models.default_features(config.model)


# -- fold results on disk ---------------------------------------------------------------------


def save_fold_result(folder: Path, result: FoldResult) -> None:
    """Write ``result.npz`` (arrays) and then ``result.json`` (the rest), atomically."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, clip_indices=result.clip_indices, y_true=result.y_true,
             probabilities=result.probabilities)
    atomic_write_bytes(folder / "result.npz", buffer.getvalue())
    info = {"fold": result.fold, "best_epoch": result.best_epoch, "seconds": result.seconds,
            "history": [asdict(h) for h in result.history]}
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
                          best_epoch=info["best_epoch"], seconds=float(info["seconds"]))


def _run_state(data: PreparedData, config: TrainConfig,
               splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for train, test in splits:
        digest.update(np.asarray(train, np.int64).tobytes() + b"|")
        digest.update(np.asarray(test, np.int64).tobytes() + b"#")
    return {"train_config": config.to_dict(), "feature_config": data.feature_config.to_dict(),
            "manifest": data.manifest.fingerprint(), "augmented": data.augmented_fingerprint,
            "splits": digest.hexdigest()}


def _check_state(cv_dir: Path, state: dict[str, Any]) -> None:
    path = cv_dir / "state.json"
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in state if old.get(k) != state[k])
        if changed:
            raise TympanError(
                f"{cv_dir}: holds a cross-validation of a different {', '.join(changed)}; "
                "resume it with the same data and settings, or start a new run "
                "(another --name, or --overwrite)"
            )
    else:
        atomic_write_text(path, json.dumps(state, indent=1, sort_keys=True) + "\n")


# -- cross-validation -------------------------------------------------------------------------


def score(model: Any, specs: Sequence[np.ndarray], feature_config: FeatureConfig,
          batch_size: int = 64) -> np.ndarray:
    """Clip probabilities ``(n_clips, n_classes)`` of ``specs`` on the default device."""
    from tympan.predict import clip_probabilities

    if len(specs) == 0:
        return np.zeros((0, int(getattr(model, "n_classes", 0))), dtype=np.float32)
    model = model.to(default_device()).eval()
    try:
        return clip_probabilities(model, list(specs), feature_config, batch_size=batch_size)
    finally:
        model.to("cpu")


def cross_validate(
    data: Manifest | PreparedData,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    augmented: Manifest | None = None,
    cache: Any = None,
    progress: bool = False,
    only_folds: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    split_names: Sequence[str] | None = None,
) -> CVResult:
    """k-fold cross-validation of ``config`` on ``data``: held-out clip probabilities per fold.

    ``data`` is a manifest (featurised here through the feature cache, bad
    files skipped) or :func:`prepare`'s result. ``augmented`` (with
    ``config.augment_policy``) adds offline copies to each fold's training
    clips. ``only_folds`` runs just the named folds (e.g. ``["1"]`` for a short
    schedule). With ``run_dir``, fold work goes to ``run_dir/cv/fold-<name>/``
    and a repeated call resumes: finished folds are loaded, not re-run.
    ``splits`` (``(train_idx, test_idx)`` pairs) with ``split_names`` replaces
    :func:`make_splits`' folds, e.g. for a nested evaluation.

    Raises:
        DatasetError: see :func:`make_splits`.
        TympanError: ``run_dir`` holds a run of other data or settings.
    """
    if isinstance(data, Manifest):
        data = prepare(data, resolve_features(config), augmented=augmented,
                       policy=config.augment_policy, cache=cache, progress=progress)
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
    if cv_dir is not None:
        cv_dir.mkdir(parents=True, exist_ok=True)
        _check_state(cv_dir, _run_state(data, config, splits))
    classes = data.classes
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
        fit_idx, val_idx = validation_split(manifest, train_idx, config.val_fraction,
                                            config.seed + k)
        fitted = fit(data.clip_set(fit_idx, with_variants=True),
                     data.clip_set(val_idx) if len(val_idx) else None,
                     n_classes=len(classes), config=config, feature_config=data.feature_config,
                     work_dir=fold_dir, progress=progress, callbacks=callbacks)
        probabilities = score(fitted.model, [data.specs[int(i)] for i in test_idx],
                              data.feature_config, batch_size=max(config.batch_size, 64))
        result = FoldResult(fold=name, clip_indices=test_idx, y_true=data.labels[test_idx],
                            probabilities=probabilities, history=fitted.history,
                            best_epoch=fitted.best_epoch, seconds=fitted.seconds)
        if fold_dir is not None:
            save_fold_result(fold_dir, result)
            # the fold is final; its checkpoint only served resuming it
            shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)
        results.append(result)
    return CVResult(classes=classes, folds=results, seconds=sum(r.seconds for r in results))


def final_epochs(cv: CVResult | None, config: TrainConfig) -> int:
    """Epochs for the final all-data fit: the folds' median best epoch count, else the config's."""
    best = [f.best_epoch + 1 for f in cv.folds if f.best_epoch is not None] if cv else []
    has_val = config.val_fraction > 0
    if not best or not has_val:
        return config.epochs
    return max(1, int(round(statistics.median(best))))


def train_final(
    data: Manifest | PreparedData,
    config: TrainConfig,
    work_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    augmented: Manifest | None = None,
    cache: Any = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> tuple[FitResult, PreparedData]:
    """Train on every clip (and its allowed augmented copies) for ``epochs`` epochs.

    With ``epochs=None`` the validation fraction is held out for early stopping
    (as :func:`cross_validate` does per fold); with ``epochs`` given nothing is
    held out (use :func:`final_epochs` after a cross-validation).
    """
    if isinstance(data, Manifest):
        data = prepare(data, resolve_features(config), augmented=augmented,
                       policy=config.augment_policy, cache=cache, progress=progress)
    everything = np.arange(len(data.manifest))
    if epochs is None:
        fit_idx, val_idx = validation_split(data.manifest, everything, config.val_fraction,
                                            config.seed)
    else:
        fit_idx, val_idx = everything, np.zeros(0, dtype=np.int64)
    fitted = fit(data.clip_set(fit_idx, with_variants=True),
                 data.clip_set(val_idx) if len(val_idx) else None,
                 n_classes=len(data.classes), config=config, feature_config=data.feature_config,
                 work_dir=work_dir, epochs=epochs, progress=progress, callbacks=callbacks)
    return fitted, data


__all__ = [
    "PreparedData",
    "augmented_variants",
    "cross_validate",
    "final_epochs",
    "fold_names",
    "load_features",
    "load_fold_result",
    "make_splits",
    "prepare",
    "run",
    "RunOutcome",
    "resolve_features",
    "save_fold_result",
    "score",
    "train_final",
    "validation_split",
]


# -- a whole run: CV, final model, run folder -------------------------------------------------


@dataclass
class RunOutcome:
    """What :func:`run` produced: the run folder, the CV result and the model file (if any)."""

    run_dir: Path
    cv: CVResult | None
    model_path: Path | None


def complete_run(work: Path, cv: CVResult | None, *, config: dict[str, Any],
                 manifest: Manifest, model_path: Path | None, extra: dict[str, Any],
                 overwrite: bool) -> RunOutcome:
    """Write the report into the work folder ``work``, rename it to its run name and say
    where everything ended up (see :func:`tympan.report.write_run`)."""
    from tympan import report

    report.write_run(work, cv, config=config, manifest=manifest, model_path=model_path,
                     extra=extra)
    final_dir = report.finalize_run_dir(work, overwrite=overwrite)
    return RunOutcome(final_dir, cv, None if model_path is None else final_dir / model_path.name)


def refuse_bad_files(manifest: Manifest, strict: bool) -> None:
    """With ``strict``, raise DatasetError listing ``manifest``'s bad files (if any)."""
    if strict and manifest.bad_files:
        bad = manifest.bad_files
        listed = "; ".join(str(b) for b in bad[:5]) + (f" (+{len(bad) - 5} more)"
                                                      if len(bad) > 5 else "")
        raise DatasetError(f"{len(bad)} bad file(s) and --strict: {listed}")


def run(
    manifest: Manifest,
    config: TrainConfig,
    *,
    runs_dir: str | Path = "runs",
    name: str,
    final: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    augmented: Manifest | None = None,
    cache: Any = None,
    strict: bool = False,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunOutcome:
    """Cross-validate (unless ``config.folds == 0``), optionally train the final model on
    all data, and write the run folder ``runs_dir/name`` (report, metrics, plots, model).

    The run is built in ``runs_dir/.<name>.partial`` and renamed when complete;
    ``resume`` continues an interrupted one (finished folds are kept). Without
    CV the model is always trained (early stopping on a held-out fraction).
    ``strict`` refuses a dataset with any bad file instead of skipping them.

    Raises:
        RunFolderError: the name is taken (without ``overwrite``) or an
            unfinished run exists (without ``resume`` or ``overwrite``).
        DatasetError: see :func:`make_splits`; with ``strict``, bad files.
    """
    from tympan import report
    from tympan.modelfile import make_metadata, save_model

    work = report.prepare_run_dir(runs_dir, name, overwrite, resume=resume)
    data = prepare(manifest, resolve_features(config), augmented=augmented,
                   policy=config.augment_policy, cache=cache, progress=progress)
    refuse_bad_files(data.manifest, strict)
    cv = None
    if config.folds != 0:
        cv = cross_validate(data, config, work, progress=progress, callbacks=callbacks)
    model_path = None
    if final or cv is None:
        epochs = final_epochs(cv, config) if cv is not None else None
        fitted, _ = train_final(data, config, work / "final", epochs=epochs, progress=progress,
                                callbacks=callbacks)
        metadata = make_metadata(
            fitted.model, data.classes, data.feature_config, train_config=config.to_dict(),
            metrics=cv.summary() if cv is not None else None, manifest=data.manifest,
            extra={"final_epochs": len(fitted.history), "best_epoch": fitted.best_epoch},
        )
        model_path = save_model(work / "model.safetensors", fitted.model, metadata,
                                overwrite=True)
        shutil.rmtree(work / "final" / "checkpoints", ignore_errors=True)
    run_config = {"train": config.to_dict(), "features": data.feature_config.to_dict(),
                  "data": str(manifest.root or manifest.name),
                  "augmented": None if augmented is None else str(augmented.root)}
    extra = {"augmented_copies": sum(len(v) for v in data.variants) if data.variants else 0}
    return complete_run(work, cv, config=run_config, manifest=data.manifest,
                        model_path=model_path, extra=extra, overwrite=overwrite)
