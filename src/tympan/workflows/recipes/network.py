"""The ``finetune`` recipe: train a whole network on log-mel patches with Lightning.

A model without pretrained weights (the seed CNN/CRNN) trains from scratch;
a pretrained one (``mn04_as``) starts from its backbone's weights, which get
``backbone_lr_scale`` of the learning rate. Each fit holds out a grouped
``val_fraction`` of its clips for early stopping and best-weights selection;
the final fit after a cross-validation trains on every clip for the folds'
median best epoch count. Checkpoints make every fit resumable.

With ``min_patch_frames`` in the front end, a network whose forward takes
``lengths`` (the seed CNN) trains, validates and predicts a clip shorter than a
patch at its own length (zero-padded masked batches); for any other network
the minimum is dropped and short clips are padded to a whole patch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback
from torch import nn

from tympan.config import FeatureConfig, TrainConfig
from tympan.data.manifest import Manifest
from tympan.data.splits import validation_split
from tympan.errors import ConfigError
from tympan.workflows.prepared import PreparedData
from tympan.workflows.recipes.base import Fitted, Recipe, register_recipe
from tympan.workflows.recipes.lightning_fit import default_device, fit, waveforms_to_specs
from tympan.workflows.recipes.patches import ClipSet
from tympan.workflows.results import CVResult


def final_epochs(cv: CVResult | None, config: TrainConfig) -> int:
    """Epochs for the final all-data fit: the folds' median best epoch count, else the config's."""
    best = [f.best_epoch + 1 for f in cv.folds if f.best_epoch is not None] if cv else []
    if not best or config.val_fraction == 0:
        return config.epochs
    return max(1, int(round(statistics.median(best))))


def score(model: nn.Module, specs: Sequence[np.ndarray], feature_config: FeatureConfig,
          batch_size: int = 64) -> np.ndarray:
    """Clip probabilities ``(n_clips, n_classes)`` of log-mels ``specs`` on the default device."""
    from tympan.inference.predict import clip_probabilities

    if len(specs) == 0:
        return np.zeros((0, int(getattr(model, "n_classes", 0))), dtype=np.float32)
    model = model.to(default_device()).eval()
    try:
        return clip_probabilities(model, list(specs), feature_config, batch_size=batch_size)
    finally:
        model.to("cpu")


@register_recipe
class NetworkRecipe(Recipe):
    """Train the network end to end (``mode="finetune"``); see the module docstring."""

    name = "finetune"
    uses = frozenset({
        "features", "epochs", "lr", "optimizer", "lr_schedule", "weight_decay", "l1", "dropout",
        "label_smoothing", "early_stopping_patience", "monitor", "num_workers", "precision",
        "backbone_lr_scale", "freeze_backbone_epochs", "mixup_alpha", "spec_time_mask_frames",
        "spec_freq_mask_bins", "spec_n_masks", "augment_variants", "max_train_batches",
        "devices", "nodes", "strategy",
    })
    default_val_fraction = 0.15

    def feature_config(self) -> FeatureConfig:
        from tympan import models

        features = self.config.features or models.default_features(self.config.model)
        if features.min_patch_frames is None:
            return features
        from tympan.inference.predict import takes_lengths

        network = models.create(self.config.model, 2, **self.config.model_kwargs)
        if not takes_lengths(network):
            # training batches of this network hold whole patches, so a short clip is padded
            # to one for training, validation and the model file alike
            return features.replace(min_patch_frames=None)
        least = int(getattr(network, "min_frames", 1))
        if features.min_patch_frames < least and self.config.features is None:
            # the registered front end, a network of more blocks (model_kwargs): its minimum
            return features.replace(min_patch_frames=least if least < features.patch_frames
                                    else None)
        if features.min_patch_frames < least:
            raise ConfigError(f"min_patch_frames={features.min_patch_frames}: {self.config.model} "
                              f"needs at least {least} frames; raise it to {least} or more")
        # short clips train, validate and predict at their own length (masked batches)
        return features

    def featurise(self, manifest: Manifest, *, cache: Any = None, workers: int = 2,
                  progress: bool = False) -> PreparedData:
        from tympan.data.cache import FeatureCache

        started = time.perf_counter()
        cache = cache if cache is not None else FeatureCache()
        config = self.feature_config()
        cached = cache.get(manifest, config, workers=workers, progress=progress)
        return PreparedData(cached.manifest, cached, config,
                            seconds=time.perf_counter() - started)

    def featurise_waveforms(self, manifest: Manifest,
                            waveforms: Sequence[np.ndarray]) -> PreparedData:
        config = self.feature_config()
        return PreparedData(manifest, waveforms_to_specs(waveforms, config), config)

    def _clip_set(self, data: PreparedData, indices: np.ndarray, *, train: bool) -> ClipSet:
        variants = None
        if train and data.variants is not None:
            variants = [data.variants[int(i)] for i in indices]
        return ClipSet(data.select(indices), data.labels[indices], variants)

    def fit(self, data: PreparedData, train_idx: np.ndarray, *, split_seed: int,
            work_dir: Path | None = None, cv: CVResult | None = None, progress: bool = False,
            callbacks: Sequence[Callback] = ()) -> Fitted:
        config = self.config.replace(val_fraction=self.val_fraction)
        train_idx = np.asarray(train_idx, dtype=np.int64)
        if cv is None:
            fit_idx, val_idx = validation_split(data.manifest, train_idx, self.val_fraction,
                                                split_seed)
            epochs = None
        else:
            fit_idx, val_idx = train_idx, np.zeros(0, dtype=np.int64)
            epochs = final_epochs(cv, config)
        fitted = fit(self._clip_set(data, fit_idx, train=True),
                     self._clip_set(data, val_idx, train=False) if len(val_idx) else None,
                     n_classes=len(data.classes), config=config,
                     feature_config=data.feature_config, work_dir=work_dir, epochs=epochs,
                     progress=progress, callbacks=callbacks)
        info = {"epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch}
        return Fitted(fitted.model, fitted.history, fitted.best_epoch, fitted.seconds, info)

    def predict_proba(self, fitted: Fitted, data: PreparedData,
                      indices: np.ndarray) -> np.ndarray:
        return score(fitted.state, data.select(indices), data.feature_config,
                     batch_size=max(self.config.batch_size, 64))

    def export(self, fitted: Fitted, n_classes: int) -> nn.Module:
        model: nn.Module = fitted.state
        return model.to("cpu").eval()


__all__ = ["NetworkRecipe", "final_epochs", "score"]
