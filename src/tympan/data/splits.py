"""Honest splits: predefined folds, grouped stratified k-fold, grouped validation carve-outs.

A dataset with predefined folds (ESC-50, a CSV ``fold`` column) uses them;
otherwise clips are split by stratified k-fold grouped by ``manifest.groups``
(recordings cut from one source stay on one side). Groups that straddle
predefined folds are leakage the dataset itself brings:
:func:`straddling_groups` finds them so reports can say so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from tympan.data.manifest import Manifest
from tympan.errors import DatasetError

DEFAULT_FOLDS = 5


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
        if len(folds) < 2:
            raise DatasetError(
                f"{manifest.name}: every clip is in fold {folds[0]}; cross-validation needs at "
                "least 2 folds: give the data at least 2 folds, drop the fold column (tympan "
                "then makes grouped stratified folds), or train without CV (--no-cv)")
        if n_folds is not None and n_folds != len(folds):
            raise DatasetError(
                f"{manifest.name}: the dataset defines {len(folds)} folds "
                f"({', '.join(map(str, folds))}); use --folds {len(folds)} (or leave it out)"
            )
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


def straddling_groups(manifest: Manifest) -> dict[str, list[int]]:
    """Groups (e.g. ESC-50's ``src_file``) whose clips sit in more than one predefined fold.

    Returns ``{group: sorted folds}``; empty without predefined folds or explicit
    groups (a clip that is its own group cannot straddle).
    """
    if not manifest.has_folds:
        return {}
    folds: dict[str, set[int]] = {}
    for clip in manifest.clips:
        if clip.group is not None:
            folds.setdefault(clip.group, set()).add(int(clip.fold))  # type: ignore[arg-type]
    return {g: sorted(f) for g, f in sorted(folds.items()) if len(f) > 1}


def describe_straddling(manifest: Manifest, limit: int = 5) -> str | None:
    """One line naming the groups that straddle predefined folds, or None if none do."""
    return straddling_message(manifest.name, straddling_groups(manifest), limit)


def straddling_message(name: str, straddle: dict[str, list[int]], limit: int = 5) -> str | None:
    """One line naming the groups in ``straddle`` (``{group: folds}``), or None if empty."""
    if not straddle:
        return None
    shown = "; ".join(f"{g} (folds {', '.join(map(str, f))})"
                      for g, f in list(straddle.items())[:limit])
    more = f" (+{len(straddle) - limit} more)" if len(straddle) > limit else ""
    return (f"{name}: {len(straddle)} group(s) sit in more than one predefined fold, "
            f"so clips cut from one recording are on both sides of a split: {shown}{more}")


__all__ = ["DEFAULT_FOLDS", "describe_straddling", "fold_names", "make_splits",
           "straddling_groups", "straddling_message", "validation_split"]
