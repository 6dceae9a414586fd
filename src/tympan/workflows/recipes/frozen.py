"""The ``frozen`` recipe: pretrained embeddings computed once, a logistic head per fit.

Every clip's patches (and their ``time_shifts`` circular time shifts) go
through the frozen backbone once; the embeddings are cached
(:meth:`FeatureCache.get_with`, keyed by backbone, weights sha256, embedding,
shifts and front end). Each fit trains a multinomial logistic regression on
standardised embeddings, its L2 strength ``C`` chosen from ``c_grid`` on a
grouped inner split of the fit's own clips. A clip's probabilities are the
mean softmax over its patches and shifts, which is what the exported model
computes: the head, standardisation folded in, becomes the Linear head of the
registry model, so a frozen model file loads and predicts like a fine-tuned one.
"""

from __future__ import annotations

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
from tympan.workflows.recipes.embeddings import EmbeddingExtractor
from tympan.workflows.recipes.logistic import (
    LogisticHead,
    fit_head,
    head_probabilities,
    install_head,
)
from tympan.workflows.results import CVResult


def pretrained_models() -> list[str]:
    """Registry names of the models built on a pretrained backbone."""
    from tympan import models

    return [n for n in models.list_models() if models.model_info(n).pretrained]


def build_transfer_model(config: TrainConfig, n_classes: int) -> nn.Module:
    """The registry model ``config.model`` with its pretrained backbone, in eval mode,
    built with the frozen recipe's ``embedding`` and ``time_shifts``.

    Raises:
        ConfigError: the model has no pretrained backbone or cannot embed.
        ChecksumError / TympanError: its weights are unavailable or fail their checksum.
    """
    from tympan import models

    if not models.model_info(config.model).pretrained:
        raise ConfigError(f"--mode frozen needs a pretrained model; {config.model!r} is not "
                          f"(pretrained: {', '.join(pretrained_models())}); use --mode finetune "
                          "to train it")
    kwargs: dict[str, Any] = {**config.model_kwargs, "embedding": config.embedding,
                              "time_shifts": config.time_shifts, "pretrained": True}
    model = models.create(config.model, n_classes, **kwargs)
    if not hasattr(model, "embed_shifted"):
        raise ConfigError(f"model {config.model!r} cannot produce embeddings for --mode frozen")
    return model.eval()


def choose_c(data: PreparedData, train_idx: np.ndarray, config: TrainConfig,
             val_fraction: float, seed: int) -> float:
    """The ``config.c_grid`` value with the best clip accuracy (then log-loss) on a grouped
    inner split of ``train_idx``; the only value when the grid has one or no split is possible."""
    if len(config.c_grid) == 1:
        return config.c_grid[0]
    fit_idx, val_idx = validation_split(data.manifest, train_idx, val_fraction, seed)
    if len(val_idx) == 0 or len(set(data.labels[fit_idx].tolist())) < 2:
        return config.c_grid[len(config.c_grid) // 2]
    n_classes = len(data.classes)
    best: tuple[float, float, float] | None = None
    for C in config.c_grid:
        head = fit_head(data.items, data.labels, fit_idx, n_classes, C, config.max_iter,
                        data.variants)
        probs = head_probabilities(head, data.items, val_idx)
        truth = data.labels[val_idx]
        accuracy = float((probs.argmax(axis=1) == truth).mean())
        loss = float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-12)).mean())
        if best is None or (accuracy, -loss) > (best[1], -best[2]):
            best = (C, accuracy, loss)
    assert best is not None
    return best[0]


@register_recipe
class FrozenRecipe(Recipe):
    """Frozen backbone + logistic-regression head (``mode="frozen"``); see the module."""

    name = "frozen"
    uses = frozenset({"embedding", "time_shifts", "c_grid", "max_iter"})
    default_val_fraction = 0.2

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self._extractor: EmbeddingExtractor | None = None

    def feature_config(self) -> FeatureConfig:
        from tympan import models

        return models.default_features(self.config.model)

    def extractor(self) -> EmbeddingExtractor:
        """The embedding extractor (the backbone loads once per recipe)."""
        if self._extractor is None:
            model = build_transfer_model(self.config, 1)
            self._extractor = EmbeddingExtractor(model, self.feature_config(),
                                                 self.config.time_shifts, self.config.batch_size)
        return self._extractor

    def featurise(self, manifest: Manifest, *, cache: Any = None, workers: int = 2,
                  progress: bool = False) -> PreparedData:
        from tympan.data.cache import FeatureCache

        started = time.perf_counter()
        extractor = self.extractor()
        cache = cache if cache is not None else FeatureCache()
        # torch's own thread count: on the idle 2-core machine 2 threads beside the decode
        # workers embed ESC-50 in 107 s (158 s with one) and short words at 171 clips/s (161)
        cached = cache.get_with(
            manifest, extractor.extractor_id, lambda w: extractor([w])[0],
            extractor.feature_config.sample_rate, batch=extractor, workers=workers,
            progress=progress, batch_size=max(1, self.config.batch_size // 2),
        )
        return PreparedData(cached.manifest, cached, extractor.feature_config,
                            seconds=time.perf_counter() - started)

    def featurise_waveforms(self, manifest: Manifest,
                            waveforms: Sequence[np.ndarray]) -> PreparedData:
        started = time.perf_counter()
        extractor = self.extractor()
        items = extractor(list(waveforms)) if len(waveforms) else []
        return PreparedData(manifest, items, extractor.feature_config,
                            seconds=time.perf_counter() - started)

    def fit(self, data: PreparedData, train_idx: np.ndarray, *, split_seed: int,
            work_dir: Path | None = None, cv: CVResult | None = None, progress: bool = False,
            callbacks: Sequence[Callback] = ()) -> Fitted:
        # a fit takes seconds: nothing to checkpoint in work_dir, a resumed run refits
        started = time.perf_counter()
        train_idx = np.asarray(train_idx, dtype=np.int64)
        C = choose_c(data, train_idx, self.config, self.val_fraction, split_seed)
        head = fit_head(data.items, data.labels, train_idx, len(data.classes), C,
                        self.config.max_iter, data.variants)
        return Fitted(head, seconds=time.perf_counter() - started, info={"C": C})

    def predict_proba(self, fitted: Fitted, data: PreparedData,
                      indices: np.ndarray) -> np.ndarray:
        head: LogisticHead = fitted.state
        return head_probabilities(head, data.items, np.asarray(indices, dtype=np.int64))

    def export(self, fitted: Fitted, n_classes: int) -> nn.Module:
        model = build_transfer_model(self.config, n_classes)
        install_head(model, fitted.state)
        return model


__all__ = ["FrozenRecipe", "build_transfer_model", "choose_c", "pretrained_models"]
