"""Ablation of augmentation sets, and an honestly evaluated class-conditional policy.

:func:`ablate` cross-validates one recipe once per augmentation set (``none``,
``TS``, ``PS1``, ``PS2``, ``DRC``, ``BG``, ``all``): same folds, same seeds,
the only difference being which offline copies join each fold's training
clips. It writes the table (mean and per-fold accuracy per set, CSV and
Markdown), per-class accuracy per set, and a heat-map of every set's
per-class accuracy delta against ``none`` (Salamon & Bello's observation).

With ``class_conditional=True`` it also evaluates the seed's proposal: for
each outer fold k, a nested ablation on the *training folds of k only*
(an inner CV over the other folds) gives per-class deltas, :func:`choose_policy`
picks the sets that helped each class, and fold k is then trained with that
policy and tested. The test fold never informs its own policy. The inner fits
are shared: a model trained without folds j and k is both outer k's inner
fold j and outer j's inner fold k, so the nested ablation costs one fit per
set and pair of folds (10 for 5 folds) instead of 20. ``policy.json`` (for
``tympan train --augment-policy``) is chosen from the full ablation: a model
trained on all the data has no test fold to protect.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tympan.augment.policy import Policy, choose_policy, save_policy, uniform_policy
from tympan.augment.presets import SB_SETS, check_set_names, expand_sets, tag_set
from tympan.config import TrainConfig
from tympan.data.manifest import Manifest
from tympan.data.splits import fold_names, make_splits
from tympan.errors import DatasetError
from tympan.fileio import atomic_path, atomic_write_text
from tympan.workflows.crossval import cross_validate
from tympan.workflows.prepared import PreparedData, with_copies
from tympan.workflows.recipes import create_recipe
from tympan.workflows.results import CVResult

CLASS_CONDITIONAL = "class-conditional"


@dataclass
class AblationResult:
    """Cross-validation results per set (``"class-conditional"`` included when run),
    the policy chosen from the whole ablation, and the per-fold nested policies."""

    classes: list[str]
    results: dict[str, CVResult]
    policy: Policy | None = None
    fold_policies: dict[str, Policy] = field(default_factory=dict)
    #: the class-conditional evaluation's fold-pair fits (``none`` and each candidate):
    #: every clip scored by each model that did not train on it
    nested: AblationResult | None = None

    def per_class_accuracy(self) -> dict[str, np.ndarray]:
        """Per set, ``(n_classes,)`` accuracy (recall) pooled over the folds' test clips."""
        return {name: np.array([row["recall"] for row in cv.per_class()])
                for name, cv in self.results.items()}

    def deltas(self, baseline: str = "none") -> dict[str, dict[str, float]]:
        """``deltas[class][set]``: per-class accuracy of each set minus ``baseline``'s."""
        if baseline not in self.results:
            raise DatasetError(f"the ablation has no {baseline!r} run to compare against")
        acc = self.per_class_accuracy()
        return {c: {s: float(acc[s][i] - acc[baseline][i]) for s in acc if s != baseline}
                for i, c in enumerate(self.classes)}

    def table_rows(self) -> list[dict[str, Any]]:
        rows = []
        for name, cv in self.results.items():
            summary = cv.summary()
            row: dict[str, Any] = {"set": name, "accuracy_mean": summary["accuracy_mean"],
                                   "accuracy_std": summary["accuracy_std"]}
            for f in summary["folds"]:
                row[f"fold_{f['fold']}"] = f["accuracy"]
            rows.append(row)
        return rows


def _with_set(data: PreparedData, copies: PreparedData, policy: Policy) -> PreparedData:
    """``data`` whose clips train with their copies of the sets ``policy`` gives their class.

    Its fingerprint (which a resumed run checks) names the policy and the copies
    it can use, so adding copies of other sets to ``copies`` keeps a run resumable.
    """
    wanted = set(expand_sets([s for sets in policy.values() for s in sets]))
    used = sorted(f"{c.path.name}\t{c.transform}" for c in copies.manifest.clips
                  if tag_set(c.transform) in wanted)
    body = json.dumps({"policy": {c: sorted(expand_sets(s)) for c, s in sorted(policy.items())},
                       "copies": used})
    return with_copies(data, copies, policy, hashlib.sha256(body.encode()).hexdigest())


def _candidates(sets: Sequence[str], candidates: Sequence[str] | None) -> list[str]:
    if candidates is not None:
        chosen = check_set_names(candidates)
        if {"none", "all"} & set(chosen):
            raise ValueError("candidate sets are what a class may train with: not none or all")
        return chosen
    singles = [s for s in sets if s in SB_SETS]
    return singles or [s for s in sets if s not in ("none", "all")]


def _fold_pairs(
    splits: Sequence[tuple[np.ndarray, np.ndarray]], names: Sequence[str]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Splits that hold out two folds at once: train on the rest, test on both."""
    if len(splits) < 3:
        raise DatasetError(
            f"a nested class-conditional evaluation needs at least 3 folds, got {len(splits)} "
            "(each outer fold's policy comes from a cross-validation of the others)"
        )
    everything = np.sort(np.concatenate([test for _, test in splits]))
    pair_splits, pair_names = [], []
    for a, b in itertools.combinations(range(len(splits)), 2):
        held_out = np.sort(np.concatenate([splits[a][1], splits[b][1]]))
        pair_splits.append((np.setdiff1d(everything, held_out), held_out))
        pair_names.append(f"{names[a]}+{names[b]}")
    return pair_splits, pair_names


def _inner_cv(pairs: CVResult, outer: str, splits: Sequence[tuple[np.ndarray, np.ndarray]],
              names: Sequence[str]) -> CVResult:
    """Outer fold ``outer``'s inner cross-validation, read off the fold-pair fits: inner
    fold j is the pair {j, outer}'s model (trained on neither) scored on fold j's clips."""
    by_pair = {frozenset(f.fold.split("+")): f for f in pairs.folds}
    folds = []
    for (_, test_idx), name in zip(splits, names, strict=True):
        if name == outer:
            continue
        pair = by_pair[frozenset((name, outer))]
        keep = np.isin(pair.clip_indices, test_idx)
        folds.append(replace(pair, fold=name, clip_indices=pair.clip_indices[keep],
                             y_true=pair.y_true[keep], probabilities=pair.probabilities[keep],
                             seconds=pair.seconds / 2))
    return CVResult(pairs.classes, folds, sum(f.seconds for f in folds))


def _check_copies(augmented: Manifest, sets: Sequence[str]) -> None:
    present = {tag_set(c.transform) for c in augmented.clips}
    missing = [s for s in expand_sets(sets) if s not in present]
    if missing:
        where = augmented.root or augmented.name
        raise DatasetError(
            f"{where} holds no copies of set(s) {', '.join(missing)}; make them with "
            f"`tympan augment DATA -o {where} --preset {','.join(missing)}` "
            "(sets present: " + (", ".join(sorted(present - {'none'})) or "none") + ")"
        )


def ablate(
    manifest: Manifest,
    augmented: Manifest,
    config: TrainConfig,
    sets: Sequence[str] = ("none", "TS", "PS1", "PS2", "DRC", "BG", "all"),
    run_dir: str | Path | None = None,
    *,
    class_conditional: bool = False,
    candidates: Sequence[str] | None = None,
    min_delta: float = 0.0,
    cache: Any = None,
    progress: bool = False,
) -> AblationResult:
    """Cross-validate ``config`` once per set in ``sets`` on the same folds and seeds.

    ``augmented`` is the manifest of offline copies (:func:`load_augmented_manifest`);
    a set trains each clip with its copies of that set (``none``: none). With
    ``run_dir`` each set's CV lives in ``run_dir/sets/<set>/`` and resumes; the
    nested runs of the class-conditional evaluation in ``run_dir/nested/``.

    ``candidates`` are the sets a class-conditional policy picks from (default:
    the single sets among ``sets``, else its other non-``none``/``all`` sets);
    the nested ablation runs ``none`` and each candidate. With
    ``class_conditional`` the saved policy comes from that nested ablation
    pooled over all folds, else from ``sets``.

    Raises:
        DatasetError: ``augmented`` lacks copies of a set; ``none`` missing
            when a class-conditional evaluation or a policy is asked for;
            fewer than 3 folds for a class-conditional evaluation.
        ValueError: an unknown set name.
    """
    sets = check_set_names(sets)
    candidates = _candidates(sets, candidates)
    _check_copies(augmented, [*sets, *(candidates if class_conditional else [])])
    if class_conditional and "none" not in sets:
        raise DatasetError("a class-conditional policy needs the 'none' set as baseline")
    if class_conditional and not candidates:
        raise DatasetError("a class-conditional policy needs sets to choose from "
                           "(--candidates TS,PS1,...)")
    recipe = create_recipe(config.replace(augment_policy=None))
    base = recipe.featurise(manifest, cache=cache, progress=progress)
    copies = recipe.featurise(augmented, cache=cache, progress=progress)
    classes = base.classes
    root = Path(run_dir) if run_dir is not None else None
    if class_conditional:  # checked before any training
        splits = make_splits(base.manifest, recipe.config.folds, recipe.config.seed)
        names = fold_names(base.manifest, splits)
        pair_splits, pair_names = _fold_pairs(splits, names)

    def run_set(data: PreparedData, name: str, where: Path | None,
                only: Sequence[str] | None = None, **splits: Any) -> CVResult:
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"[bold]set {name}[/]")
        return cross_validate(recipe, data, where, only_folds=only, progress=progress, **splits)

    results: dict[str, CVResult] = {}
    for name in sets:
        data = _with_set(base, copies, uniform_policy(classes, [name]))
        results[name] = run_set(data, name, root / "sets" / name if root else None)
    result = AblationResult(classes, results)
    if "none" in results:
        result.policy = choose_policy(result.deltas(), min_delta=min_delta)

    if class_conditional:
        # One fit per set and pair of held-out folds {j, k}, trained on the other folds,
        # is outer fold k's inner fold j *and* outer fold j's inner fold k.
        nested: dict[str, CVResult] = {}
        for name in ["none", *candidates]:
            data = _with_set(base, copies, uniform_policy(classes, [name]))
            nested[name] = run_set(data, f"{name} (nested, fold pairs)",
                                   root / "nested" / name if root else None,
                                   splits=pair_splits, split_names=pair_names)
        folds = []
        for fold in names:
            inner_results = {name: _inner_cv(cv, fold, splits, names)
                             for name, cv in nested.items()}
            inner_ablation = AblationResult(classes, inner_results)
            policy: Policy = choose_policy(inner_ablation.deltas(), min_delta=min_delta)
            result.fold_policies[fold] = policy
            data = _with_set(base, copies, policy)
            where = root / "sets" / f"{CLASS_CONDITIONAL}-{fold}" if root else None
            folds.extend(run_set(data, f"{CLASS_CONDITIONAL} (fold {fold})", where,
                                 only=[fold]).folds)
        results[CLASS_CONDITIONAL] = CVResult(classes, folds, sum(f.seconds for f in folds))
        result.nested = AblationResult(classes, nested)
        result.policy = choose_policy(result.nested.deltas(), min_delta=min_delta)
    if root is not None:
        write_ablation(root, result, config=config, min_delta=min_delta)
    return result


def _csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def markdown_table(result: AblationResult) -> str:
    """Mean ± std and per-fold accuracy per set, in percent, as a Markdown table."""
    rows = result.table_rows()
    fold_columns = sorted({k for r in rows for k in r if k.startswith("fold_")},
                          key=lambda k: (len(k), k))
    header = ["set", "mean ± std", *[c.replace("fold_", "fold ") for c in fold_columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["set"], f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}"]
        cells += [f"{100 * r[c]:.1f}" if c in r else "" for c in fold_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_deltas(path: Path, result: AblationResult, baseline: str = "none",
                title: str | None = None) -> Path:
    """Heat-map PNG: classes (rows) × sets (columns), per-class accuracy delta in points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas = result.deltas(baseline)
    sets = [s for s in result.results if s != baseline]
    matrix = np.array([[100 * deltas[c][s] for s in sets] for c in result.classes])
    limit = max(1.0, float(np.abs(matrix).max())) if matrix.size else 1.0
    height = max(3.0, 0.22 * len(result.classes) + 1.5)
    fig, ax = plt.subplots(figsize=(1.1 * len(sets) + 3.0, height))
    image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(sets)), sets, rotation=30, ha="right")
    ax.set_yticks(range(len(result.classes)), result.classes,
                  fontsize=7 if len(result.classes) > 20 else 9)
    ax.set_title(title or f"per-class accuracy delta vs {baseline} (points)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_ablation(root: Path, result: AblationResult, *, config: TrainConfig | None = None,
                   min_delta: float = 0.0) -> dict[str, Path]:
    """Write ``ablation.csv``, ``ablation.md``, ``per_class.csv``, ``delta_heatmap.png``,
    ``ablation.json`` and (with a ``none`` run) ``policy.json`` into ``root``; with a
    nested evaluation also ``nested_delta_heatmap.png`` (each candidate set's per-class
    delta, pooled over the fold-pair fits)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {"csv": root / "ablation.csv", "markdown": root / "ablation.md",
             "per_class": root / "per_class.csv", "json": root / "ablation.json"}
    atomic_write_text(paths["csv"], _csv(result.table_rows()))
    atomic_write_text(paths["markdown"], markdown_table(result))
    accuracy = result.per_class_accuracy()
    per_class = [{"class": c, **{s: float(accuracy[s][i]) for s in accuracy}}
                 for i, c in enumerate(result.classes)]
    atomic_write_text(paths["per_class"], _csv(per_class))
    body = {"sets": {name: cv.summary() for name, cv in result.results.items()},
            "per_class_accuracy": {s: dict(zip(result.classes, map(float, a), strict=True))
                                   for s, a in accuracy.items()},
            "fold_policies": result.fold_policies, "min_delta": min_delta,
            "nested_per_class_delta": result.nested.deltas() if result.nested else None,
            "train_config": config.to_dict() if config is not None else None}
    atomic_write_text(paths["json"], json.dumps(body, indent=1) + "\n")
    if "none" in result.results and len(result.results) > 1:
        paths["heatmap"] = plot_deltas(root / "delta_heatmap.png", result)
    if result.nested is not None and len(result.nested.results) > 1:
        paths["nested_heatmap"] = plot_deltas(
            root / "nested_delta_heatmap.png", result.nested,
            title="per-class accuracy delta vs none (points), nested fold-pair fits")
    if result.policy is not None:
        source = (("nested ablation over all folds: each clip scored by every fold-pair model "
                   "that did not train on it") if result.nested is not None
                  else "the ablation's sets over all folds")
        paths["policy"] = save_policy(
            root / "policy.json", result.policy, min_delta=min_delta,
            deltas=(result.nested or result).deltas(),
            source=f"chosen from the {source}; for a final model")
    return paths


__all__ = ["AblationResult", "ablate", "markdown_table", "plot_deltas", "write_ablation"]
