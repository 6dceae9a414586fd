"""The run-folder workflow, one for every recipe: featurise → cross-validate → final fit → report.

``tympan train``, ``tympan demo``, :class:`tympan.Classifier` and the
benchmarks all come through :func:`run` (or, without a run folder, through
:func:`fit_all`). A run is built in ``runs/.NAME.partial`` and renamed when
complete; ``resume`` continues an interrupted one at any point: finished folds
are kept, an unfinished fold or final fit restarts from its last checkpoint,
a saved final model is kept, and ``state.json`` refuses to continue with
another recipe or other data.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback

from tympan.config import TrainConfig
from tympan.data.manifest import Manifest
from tympan.data.splits import describe_straddling, make_splits
from tympan.errors import ConfigError, DatasetError, DivergedError, SkippedFilesWarning
from tympan.workflows.crossval import check_state, cross_validate, run_state
from tympan.workflows.prepared import PreparedData, with_copies
from tympan.workflows.ranks import is_global_zero
from tympan.workflows.recipes import Fitted, Recipe, create_recipe
from tympan.workflows.results import CVResult
from tympan.workflows.thresholds import thresholds_metadata

MODEL_FILE = "model.safetensors"


@dataclass
class RunOutcome:
    """What :func:`run` produced: the run folder, the CV result and the model file (if any)."""

    run_dir: Path
    cv: CVResult | None
    model_path: Path | None


def refuse_bad_files(manifest: Manifest, strict: bool) -> None:
    """With ``strict``, raise DatasetError listing ``manifest``'s bad files (if any)."""
    if strict and manifest.bad_files:
        bad = manifest.bad_files
        listed = "; ".join(str(b) for b in bad[:5]) + (f" (+{len(bad) - 5} more)"
                                                      if len(bad) > 5 else "")
        raise DatasetError(f"{len(bad)} bad file(s) and --strict: {listed}")


def check_policy(policy: Mapping[str, Sequence[str]] | None, manifest: Manifest,
                 augmented: Manifest | None) -> None:
    """An augmentation policy must name the data's classes and come with copies.

    Raises:
        ConfigError: a policy without copies, naming classes the data lacks, or asking
            for sets the copies folder does not hold (the policy would do nothing there).
    """
    if policy is None:
        return
    if augmented is None:
        raise ConfigError("--augment-policy chooses among offline copies: give the copies "
                          "folder with --augmented (made by `tympan augment`)")
    unknown = sorted(set(policy) - set(manifest.classes))
    if unknown:
        raise ConfigError(f"the augmentation policy names class(es) {', '.join(unknown)} that "
                          f"{manifest.name} does not have (classes: {', '.join(manifest.classes)})")
    from tympan.augment.presets import expand_sets, tag_set

    held = {tag_set(clip.transform) for clip in augmented.clips}
    lacking: dict[str, list[str]] = {}
    for label, sets in policy.items():
        for name in expand_sets(sets):
            if name != "none" and name not in held:
                lacking.setdefault(name, []).append(label)
    if lacking:
        asked = "; ".join(f"{name} (for {', '.join(sorted(labels))})"
                          for name, labels in sorted(lacking.items()))
        raise ConfigError(
            f"the augmentation policy asks for set(s) {asked} but {augmented.root or 'the copies'} "
            f"holds copies of {', '.join(sorted(held)) or 'no set'} only; make them with "
            f"`tympan augment --preset {','.join(sorted(lacking))}` or drop them from the policy")


def prepare_data(recipe: Recipe, manifest: Manifest, *, augmented: Manifest | None = None,
                 cache: Any = None, progress: bool = False) -> PreparedData:
    """``recipe.featurise`` of ``manifest``, with the copies in ``augmented`` that the
    config's policy allows attached to their clips.

    Raises:
        DatasetError: ``augmented`` holds no copy of any clip of ``manifest``
            (copies of another dataset).
    """
    check_policy(recipe.config.augment_policy, manifest, augmented)
    data = recipe.featurise(manifest, cache=cache, progress=progress)
    if augmented is None:
        return data
    copies = recipe.featurise(augmented, cache=cache, progress=progress)
    data = with_copies(data, copies, recipe.config.augment_policy)
    if copies.manifest.clips and data.n_copies == 0:
        where = augmented.root or augmented.name
        raise DatasetError(f"{where}: none of its copies was made from a clip of "
                           f"{manifest.root or manifest.name}; make copies of this dataset "
                           "with `tympan augment`")
    return data


def _warn_undecodable(before: Manifest, after: Manifest) -> None:
    """Say which files the full decode dropped (the header check passed them): one warning."""
    known = {b.path for b in before.bad_files}
    dropped = [b for b in after.bad_files if b.path not in known]
    if dropped:
        listed = "; ".join(str(b) for b in dropped[:5]) + (
            f" (+{len(dropped) - 5} more)" if len(dropped) > 5 else "")
        warnings.warn(f"skipping {len(dropped)} file(s) that failed to decode: {listed}; the "
                      "run folder lists them (skipped.csv)", SkippedFilesWarning, stacklevel=3)


def fit_all(recipe: Recipe, data: PreparedData, *, cv: CVResult | None = None,
            work_dir: Path | None = None, progress: bool = False,
            callbacks: Sequence[Callback] = ()) -> Fitted:
    """The recipe fitted on every clip of ``data`` (informed by ``cv`` when given)."""
    everything = np.arange(len(data.manifest))
    return recipe.fit(data, everything, split_seed=recipe.config.seed, work_dir=work_dir,
                      cv=cv, progress=progress, callbacks=callbacks)


def _save_final(recipe: Recipe, fitted: Fitted, data: PreparedData, cv: CVResult | None,
                path: Path) -> Path:
    import torch

    from tympan.models.modelfile import make_metadata, save_model

    model = recipe.export(fitted, len(data.classes))
    if not all(torch.isfinite(t).all() for t in model.state_dict().values()
               if t.is_floating_point()):
        raise DivergedError("final model: training diverged (non-finite weights); lower the "
                            "learning rate")
    metadata = make_metadata(model, data.classes, data.feature_config,
                             train_config=recipe.train_config(),
                             metrics=cv.summary() if cv is not None else None,
                             manifest=data.manifest,
                             extra={**fitted.info, **thresholds_metadata(cv)})
    return save_model(path, model, metadata, overwrite=True)


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
    only_folds: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunOutcome:
    """Cross-validate ``config``'s recipe (unless ``config.folds == 0``), optionally train the
    final model on all data, and write the run folder ``runs_dir/name``.

    ``augmented`` (offline copies, filtered by ``config.augment_policy``) join
    the training clips of every fit. Without CV the model is always trained.
    ``strict`` refuses bad files and groups that straddle predefined folds.
    ``only_folds`` runs only the named folds. Under DDP every rank calls this;
    ranks other than 0 train alongside rank 0 and write nothing (no lock, no
    run folder), so the run folder must be on a file system every rank sees.

    Raises:
        ConfigError: an option the recipe does not use; a policy without copies.
        RunFolderError: the name is taken (without ``overwrite``) or an
            unfinished run exists (without ``resume`` or ``overwrite``).
        LockedError: another live process works on run ``name``.
        DatasetError: see :func:`tympan.data.splits.make_splits`; with ``strict``,
            bad files or straddling groups.
        TympanError: ``resume`` with another recipe or other data.
    """
    from tympan.workflows.runfolder import lock_run

    recipe = create_recipe(config)
    check_policy(config.augment_policy, manifest, augmented)
    if not is_global_zero():
        return _run_follower(recipe, config, manifest, runs_dir=runs_dir, name=name, final=final,
                             augmented=augmented, cache=cache, progress=progress,
                             only_folds=only_folds, callbacks=callbacks)
    with lock_run(runs_dir, name):
        return _run_locked(recipe, config, manifest, runs_dir=runs_dir, name=name, final=final,
                           overwrite=overwrite, resume=resume, augmented=augmented, cache=cache,
                           strict=strict, progress=progress, only_folds=only_folds,
                           callbacks=callbacks)


def _run_follower(recipe: Recipe, config: TrainConfig, manifest: Manifest, *,
                  runs_dir: str | Path, name: str, final: bool, augmented: Manifest | None,
                  cache: Any, progress: bool, only_folds: Sequence[str] | None,
                  callbacks: Sequence[Callback]) -> RunOutcome:
    """:func:`run` on a DDP rank other than 0: the same fits as rank 0 (which they join),
    from the same run folder paths, writing nothing."""
    from tympan.workflows.runfolder import final_dir_for, work_dir_for

    work = work_dir_for(runs_dir, name)
    data = prepare_data(recipe, manifest, augmented=augmented, cache=cache, progress=False)
    cv = None
    if config.folds != 0:
        cv = cross_validate(recipe, data, work, progress=False, only_folds=only_folds,
                            callbacks=callbacks)
    model_path = None
    if final or cv is None:
        model_path = final_dir_for(work) / MODEL_FILE
        if not (work / MODEL_FILE).is_file():  # rank 0 trains it unless a resumed run has it
            fit_all(recipe, data, cv=cv, work_dir=work / "final", progress=False,
                    callbacks=callbacks)
    return RunOutcome(final_dir_for(work), cv, model_path)


def _run_locked(recipe: Recipe, config: TrainConfig, manifest: Manifest, *,
                runs_dir: str | Path, name: str, final: bool, overwrite: bool, resume: bool,
                augmented: Manifest | None, cache: Any, strict: bool, progress: bool,
                only_folds: Sequence[str] | None, callbacks: Sequence[Callback]) -> RunOutcome:
    """:func:`run`'s work, while this process holds the run's lock."""
    from tympan.workflows import report
    from tympan.workflows.runfolder import finalize_run_dir, prepare_run_dir

    work = prepare_run_dir(runs_dir, name, overwrite, resume=resume)
    try:
        data = prepare_data(recipe, manifest, augmented=augmented, cache=cache,
                            progress=progress)
        _warn_undecodable(manifest, data.manifest)
        check_state(work, run_state(recipe, data))
        refuse_bad_files(data.manifest, strict)
        if config.folds != 0:
            make_splits(data.manifest, config.folds, config.seed)  # too few clips: fail now
        straddle = describe_straddling(data.manifest)
        if strict and straddle:
            raise DatasetError(f"{straddle}; --strict refuses this leakage (drop --strict to "
                               "train anyway: the report will say so)")
    except BaseException:
        if not resume:  # nothing was trained yet: leave no unfinished run blocking the name
            shutil.rmtree(work, ignore_errors=True)
        raise
    cv = None
    if config.folds != 0:
        cv = cross_validate(recipe, data, work, progress=progress, only_folds=only_folds,
                            callbacks=callbacks)
    model_path = None
    extra: dict[str, Any] = {"featurise_seconds": round(data.seconds, 2),
                             "augmented_copies": data.n_copies}
    if final or cv is None:
        model_path = work / MODEL_FILE
        if not model_path.is_file():  # a resumed run keeps a final model already saved
            fitted = fit_all(recipe, data, cv=cv, work_dir=work / "final", progress=progress,
                             callbacks=callbacks)
            _save_final(recipe, fitted, data, cv, model_path)
            extra["final"] = fitted.info
        shutil.rmtree(work / "final" / "checkpoints", ignore_errors=True)
    run_config = {"train": recipe.train_config(), "features": data.feature_config.to_dict(),
                  "data": str(manifest.root or manifest.name),
                  "augmented": None if augmented is None else str(augmented.root)}
    if cv is not None and any(f.info for f in cv.folds):
        extra["folds"] = {f.fold: f.info for f in cv.folds}
    report.write_run(work, cv, config=run_config, manifest=data.manifest, model_path=model_path,
                     extra=extra)
    final_dir = finalize_run_dir(work, overwrite=overwrite)
    return RunOutcome(final_dir, cv, None if model_path is None else final_dir / MODEL_FILE)


__all__ = ["MODEL_FILE", "RunOutcome", "check_policy", "fit_all", "prepare_data",
           "refuse_bad_files", "run"]
