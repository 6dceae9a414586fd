"""Frozen transfer learning: pretrained embeddings computed once, a linear head per CV fold.

``--mode frozen`` of ``tympan train``. Each clip's log-mel is cut into
patches exactly as prediction cuts it; each patch (and, with
``time_shifts`` > 1, its circular time shifts) goes through the frozen
backbone once, and the embeddings are cached (:meth:`FeatureCache.get_with`,
keyed by backbone, weights sha256, embedding, shifts and front end). A
multinomial logistic regression on standardised embeddings is then fitted
per fold of the same splits the CNN uses (:func:`tympan.evaluate.make_splits`);
its L2 strength ``C`` is chosen on a grouped inner split of that fold's
training clips only. A clip's probabilities are the mean softmax over its
patches and shifts, which is what the saved model computes: the head, with
the standardisation folded in, becomes the Linear head of the registry model,
so a frozen model file loads and predicts like a fine-tuned one.

Offline augmented copies (``tympan augment``, ``--augmented``) are embedded
through the same cache and add training rows to every head their source clip
trains (never to its validation or test fold).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tympan.config import FeatureConfig, JsonConfig
from tympan.data.manifest import Manifest
from tympan.errors import TympanError
from tympan.features import LogMel, split_patches
from tympan.results import CVResult, FoldResult

MODES = ("finetune", "frozen")


@dataclass(frozen=True)
class FrozenConfig(JsonConfig):
    """A frozen-backbone recipe.

    ``model`` is a registry transfer model (``mn04_as``) and ``embedding`` its
    backbone summary (``"pooled"``, ``"hidden"`` or ``"freq"``).
    ``time_shifts`` circular time shifts of every patch are embedded: all of
    them train the head, and prediction averages over them. ``c_grid`` holds
    the candidate inverse L2 strengths (scikit-learn's ``C``); the best on a
    ``val_fraction`` grouped inner split of each fold's training clips wins
    (a single value skips the search). ``folds=None`` uses the dataset's own
    folds, else 5; 0 skips CV. ``batch_size`` is patches per backbone pass.
    """

    model: str = "mn04_as"
    embedding: Literal["pooled", "hidden", "freq"] = "freq"
    time_shifts: int = 2
    c_grid: tuple[float, ...] = (0.1, 0.3, 1.0)
    val_fraction: float = 0.2
    max_iter: int = 50
    folds: int | None = None
    seed: int = 0
    batch_size: int = 32
    weights: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.time_shifts < 1:
            raise ValueError(f"time_shifts must be >= 1, got {self.time_shifts}")
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ValueError(f"c_grid must hold positive values, got {self.c_grid}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_iter < 1 or self.batch_size < 1:
            raise ValueError("max_iter and batch_size must be positive")

    def model_config(self) -> dict[str, Any]:
        """Registry kwargs of the model this recipe produces (weights load separately)."""
        return {**self.model_kwargs, "embedding": self.embedding, "time_shifts": self.time_shifts}


# -- embeddings -------------------------------------------------------------------------------


def build_transfer_model(config: FrozenConfig, n_classes: int, *,
                         pretrained: bool = True) -> nn.Module:
    """The registry model ``config.model`` with its pretrained backbone, in eval mode.

    Raises:
        TympanError: the model is not a transfer model (no ``embed_shifted``),
            or its weights are unavailable / fail their checksum.
    """
    from tympan import models

    kwargs: dict[str, Any] = {**config.model_config(), "pretrained": pretrained}
    if config.weights is not None:
        kwargs["weights"] = config.weights
    if not models.model_info(config.model).pretrained:
        raise TympanError(f"--mode frozen needs a pretrained model; {config.model!r} is not "
                          f"(pretrained: {', '.join(pretrained_models())})")
    model = models.create(config.model, n_classes, **kwargs)
    if not hasattr(model, "embed_shifted"):
        raise TympanError(f"model {config.model!r} cannot produce embeddings for --mode frozen")
    return model.eval()


def pretrained_models() -> list[str]:
    """Registry names of the models built on a pretrained backbone."""
    from tympan import models

    return [n for n in models.list_models() if models.model_info(n).pretrained]


class EmbeddingExtractor:
    """Waveforms → frozen-backbone embeddings ``(n_patches, time_shifts, dim)`` float32.

    Patches follow ``feature_config`` (``patch_frames``/``patch_hop_frames``,
    as :class:`tympan.predict.Predictor`); ``extractor_id`` names everything
    that changes the output, for the feature cache.
    """

    def __init__(self, model: nn.Module, feature_config: FeatureConfig, time_shifts: int,
                 batch_size: int = 32) -> None:
        self.model = model.eval()
        self.feature_config = feature_config
        self.time_shifts = time_shifts
        self.batch_size = batch_size
        self.frontend = LogMel(feature_config)

    @property
    def extractor_id(self) -> str:
        from tympan.models.pretrained import get_pretrained

        backbone = str(getattr(self.model, "backbone_name", ""))
        sha = get_pretrained(backbone).sha256 if backbone else "random"
        front = hashlib.sha256(self.feature_config.to_json(indent=None).encode()).hexdigest()
        embedding = getattr(getattr(self.model, "backbone", None), "embedding", "?")
        return (f"tympan.embedding/v1:{getattr(self.model, 'model_name', '?')}:{backbone}:"
                f"{sha}:{embedding}:shifts={self.time_shifts}:front={front[:16]}")

    @torch.inference_mode()
    def __call__(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        c = self.feature_config
        patches, owners = [], []
        for i, wave in enumerate(waves):
            spec = self.frontend(torch.as_tensor(np.asarray(wave, dtype=np.float32)))
            cut = split_patches(spec, c.patch_frames, c.patch_hop_frames)
            assert isinstance(cut, torch.Tensor)
            patches.append(cut)
            owners += [i] * cut.shape[0]
        stacked = torch.cat(patches)
        embed_shifted = self.model.embed_shifted
        assert callable(embed_shifted)
        out = torch.cat([
            embed_shifted(stacked[s:s + self.batch_size], self.time_shifts)
            for s in range(0, stacked.shape[0], self.batch_size)
        ]).numpy()
        index = np.asarray(owners)
        return [np.ascontiguousarray(out[index == i], dtype=np.float32) for i in range(len(waves))]


@dataclass
class EmbeddedData:
    """Clips that decoded, with their embeddings ``(n_patches, time_shifts, dim)`` each.

    ``variants[i]`` holds the embeddings of clip i's augmented copies (those its
    class's policy allows): they join the head's training rows whenever clip i
    trains, never when it is validated or tested. None without copies.
    """

    manifest: Manifest
    embeddings: Sequence[np.ndarray]
    feature_config: FeatureConfig
    seconds: float = 0.0
    variants: list[list[np.ndarray]] | None = None

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def labels(self) -> np.ndarray:
        return self.manifest.label_ids()


def embed_manifest(
    manifest: Manifest,
    config: FrozenConfig,
    *,
    augmented: Manifest | None = None,
    policy: Mapping[str, Sequence[str]] | None = None,
    cache: Any = None,
    workers: int = 2,
    progress: bool = False,
) -> EmbeddedData:
    """Embeddings of every clip of ``manifest`` through the feature cache (bad files skipped).

    With ``augmented`` (offline copies from ``tympan augment``) each clip's copies
    are embedded too, filtered by ``policy`` (class → sets) as
    :func:`tympan.evaluate.augmented_variants` does.

    Raises:
        ChecksumError / TympanError: the backbone's weights (see :func:`build_transfer_model`).
    """
    from tympan import models
    from tympan.data.cache import FeatureCache

    started = time.perf_counter()
    feature_config = models.default_features(config.model)
    model = build_transfer_model(config, 1)
    extractor = EmbeddingExtractor(model, feature_config, config.time_shifts, config.batch_size)
    cache = cache if cache is not None else FeatureCache()

    def embed(clips: Manifest) -> Any:
        return cache.get_with(
            clips, extractor.extractor_id, lambda w: extractor([w])[0],
            feature_config.sample_rate, batch=extractor, workers=workers, progress=progress,
            batch_size=max(1, config.batch_size // 2),
        )

    cached = embed(manifest)
    variants = None
    if augmented is not None:
        from tympan.evaluate import augmented_variants

        copies = embed(augmented)
        variants = augmented_variants(cached.manifest, copies.manifest, copies, policy)
    return EmbeddedData(cached.manifest, cached, feature_config, time.perf_counter() - started,
                        variants)


# -- the head ---------------------------------------------------------------------------------


@dataclass
class LogisticHead:
    """Multinomial logistic regression on standardised embeddings.

    ``logits = ((x - mean) / scale) @ weight.T + bias``; ``weight`` is
    ``(n_classes, dim)``. ``C`` is the inverse L2 strength it was fitted with.
    """

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    C: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(..., dim)`` embeddings → ``(..., n_classes)`` logits."""
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(weight, bias)`` acting on raw embeddings: the standardisation folded in."""
        weight = self.weight / self.scale
        return weight, self.bias - weight @ self.mean


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, C: float,
                 max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """L2 multinomial logistic regression by full-batch L-BFGS (``max_iter`` iterations).

    Minimises ``C · Σ cross-entropy + ½‖W‖²`` (scikit-learn's objective; the
    bias is not penalised) over ``x`` ``(n, dim)`` and int labels ``y``;
    returns ``(weight (n_classes, dim), bias (n_classes,))``. Runs in float32:
    half the time of float64, and the same accuracy on standardised inputs.
    """
    dtype = torch.float32
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    n, dim = xt.shape
    weight = torch.zeros(n_classes, dim, dtype=dtype, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # divided by n so the line search sees O(1) values; the minimiser is unchanged
        loss = (nn.functional.cross_entropy(xt @ weight.T + bias, yt, reduction="sum")
                + 0.5 * weight.square().sum() / C) / n
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach().double().numpy(), bias.detach().double().numpy()


def _rows(embeddings: Sequence[np.ndarray], indices: np.ndarray, labels: np.ndarray,
          variants: Sequence[Sequence[np.ndarray]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every (patch, shift) embedding of the clips at ``indices`` and of their copies in
    ``variants``, each with its clip's label."""
    blocks, y = [], []
    for i in indices:
        own = [embeddings[int(i)], *(variants[int(i)] if variants is not None else [])]
        for e in own:
            e = np.asarray(e)
            blocks.append(e.reshape(-1, e.shape[-1]))
            y.append(np.full(len(blocks[-1]), labels[int(i)]))
    return np.concatenate(blocks), np.concatenate(y)


def fit_head(embeddings: Sequence[np.ndarray], labels: np.ndarray, indices: np.ndarray,
             n_classes: int, C: float, max_iter: int = 50,
             variants: Sequence[Sequence[np.ndarray]] | None = None) -> LogisticHead:
    """Fit a :class:`LogisticHead` on the clips at ``indices`` (all their patches and shifts,
    and the embeddings of their augmented copies in ``variants``, if given)."""
    x, y = _rows(embeddings, indices, labels, variants)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    weight, bias = fit_logistic((x - mean) / scale, y, n_classes, C, max_iter)
    return LogisticHead(weight, bias, mean, scale, C)


def clip_probabilities(head: LogisticHead, embeddings: Sequence[np.ndarray],
                       indices: np.ndarray) -> np.ndarray:
    """``(len(indices), n_classes)``: each clip's mean softmax over its patches and shifts."""
    out = []
    for i in indices:
        logits = head.logits(np.asarray(embeddings[int(i)], dtype=np.float64))
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=-1, keepdims=True)
        out.append(probs.reshape(-1, probs.shape[-1]).mean(axis=0))
    return np.asarray(out, dtype=np.float32)


def choose_c(data: EmbeddedData, train_idx: np.ndarray, config: FrozenConfig,
             seed: int) -> float:
    """The ``config.c_grid`` value with the best clip accuracy (then log-loss) on a grouped
    inner split of ``train_idx``; the only value when the grid has one or no split is possible."""
    from tympan.evaluate import validation_split

    if len(config.c_grid) == 1:
        return config.c_grid[0]
    fit_idx, val_idx = validation_split(data.manifest, train_idx, config.val_fraction, seed)
    if len(val_idx) == 0 or len(set(data.labels[fit_idx].tolist())) < 2:
        return config.c_grid[len(config.c_grid) // 2]
    n_classes = len(data.classes)
    best: tuple[float, float, float] | None = None
    for C in config.c_grid:
        head = fit_head(data.embeddings, data.labels, fit_idx, n_classes, C, config.max_iter,
                        data.variants)
        probs = clip_probabilities(head, data.embeddings, val_idx)
        truth = data.labels[val_idx]
        accuracy = float((probs.argmax(axis=1) == truth).mean())
        loss = float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-12)).mean())
        if best is None or (accuracy, -loss) > (best[1], -best[2]):
            best = (C, accuracy, loss)
    assert best is not None
    return best[0]


# -- cross-validation, final model, run folder ------------------------------------------------


def cross_validate_frozen(data: EmbeddedData, config: FrozenConfig) -> tuple[CVResult, list[float]]:
    """Per fold (the CNN's splits): choose C, fit the head, score the held-out clips.

    Returns the :class:`CVResult` (``seconds`` counts embedding and heads) and
    the C chosen per fold.

    Raises:
        DatasetError: see :func:`tympan.evaluate.make_splits`.
    """
    from tympan.evaluate import fold_names, make_splits

    splits = make_splits(data.manifest, config.folds, config.seed)
    names = fold_names(data.manifest, splits)
    n_classes = len(data.classes)
    folds, chosen = [], []
    for k, ((train_idx, test_idx), name) in enumerate(zip(splits, names, strict=True)):
        started = time.perf_counter()
        C = choose_c(data, train_idx, config, config.seed + k)
        head = fit_head(data.embeddings, data.labels, train_idx, n_classes, C, config.max_iter,
                        data.variants)
        probs = clip_probabilities(head, data.embeddings, test_idx)
        chosen.append(C)
        folds.append(FoldResult(fold=name, clip_indices=test_idx, y_true=data.labels[test_idx],
                                probabilities=probs, seconds=time.perf_counter() - started))
    heads_seconds = sum(f.seconds for f in folds)
    return CVResult(classes=data.classes, folds=folds,
                    seconds=data.seconds + heads_seconds), chosen


def fit_final(data: EmbeddedData, config: FrozenConfig) -> tuple[nn.Module, LogisticHead]:
    """Head on every clip (C chosen on an inner split), folded into the registry model.

    The returned model maps log-mel patches to logits (log mean softmax over
    shifts in eval mode), so :class:`tympan.predict.Predictor` reproduces the
    CV's clip probabilities.
    """
    everything = np.arange(len(data.manifest))
    C = choose_c(data, everything, config, config.seed)
    head = fit_head(data.embeddings, data.labels, everything, len(data.classes), C,
                    config.max_iter, data.variants)
    model = build_transfer_model(config, len(data.classes))
    install_head(model, head)
    return model, head


def install_head(model: nn.Module, head: LogisticHead) -> None:
    """Copy a fitted :class:`LogisticHead` into ``model.head``'s last Linear layer.

    Raises:
        TympanError: the model's head is not a single Linear layer of the right size.
    """
    module = getattr(model, "head", None)
    linears = ([m for m in module.modules() if isinstance(m, nn.Linear)]
               if isinstance(module, nn.Module) else [])
    weight, bias = head.folded()
    if len(linears) != 1 or tuple(linears[0].weight.shape) != weight.shape:
        raise TympanError("the frozen head needs a model whose head is one Linear layer "
                          f"of shape {weight.shape} (got {module})")
    with torch.no_grad():
        linears[0].weight.copy_(torch.from_numpy(weight))
        linears[0].bias.copy_(torch.from_numpy(bias))


def run_frozen(
    manifest: Manifest,
    config: FrozenConfig,
    *,
    runs_dir: str | Path = "runs",
    name: str,
    final: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    augmented: Manifest | None = None,
    policy: Mapping[str, Sequence[str]] | None = None,
    cache: Any = None,
    strict: bool = False,
    progress: bool = False,
) -> Any:
    """Frozen-backbone run: embed, cross-validate the head, optionally save the final model,
    and write the run folder ``runs_dir/name`` like :func:`tympan.evaluate.run`.

    ``augmented`` copies (filtered by ``policy``) add training rows to the head
    of every fold their source clip trains in (see :class:`EmbeddedData`).

    ``resume`` reopens an unfinished run folder; the cached embeddings make a
    rerun cheap, so the folds are simply recomputed. Returns a
    :class:`tympan.evaluate.RunOutcome`.

    Raises:
        RunFolderError: the name is taken (without ``overwrite``) or unfinished.
        DatasetError: see :func:`tympan.evaluate.make_splits`; with ``strict``, bad files.
    """
    from tympan import report
    from tympan.evaluate import complete_run, refuse_bad_files
    from tympan.modelfile import make_metadata, save_model

    work = report.prepare_run_dir(runs_dir, name, overwrite, resume=resume)
    data = embed_manifest(manifest, config, augmented=augmented, policy=policy, cache=cache,
                          progress=progress)
    refuse_bad_files(data.manifest, strict)
    cv, chosen = (None, []) if config.folds == 0 else cross_validate_frozen(data, config)
    model_path = None
    final_C = None
    if final or cv is None:
        model, head = fit_final(data, config)
        final_C = head.C
        train_config = {"mode": "frozen", **config.to_dict()}
        metadata = make_metadata(model, data.classes, data.feature_config,
                                 train_config=train_config,
                                 metrics=cv.summary() if cv is not None else None,
                                 manifest=data.manifest, extra={"C": head.C})
        model_path = save_model(work / "model.safetensors", model, metadata, overwrite=True)
    run_config = {"mode": "frozen", "frozen": config.to_dict(),
                  "features": data.feature_config.to_dict(),
                  "data": str(manifest.root or manifest.name),
                  "augmented": None if augmented is None else str(augmented.root),
                  "augment_policy": policy}
    extra = {"embedding_seconds": round(data.seconds, 2), "C_per_fold": chosen,
             "C_final": final_C,
             "augmented_copies": sum(len(v) for v in data.variants) if data.variants else 0}
    return complete_run(work, cv, config=run_config, manifest=data.manifest,
                        model_path=model_path, extra=extra, overwrite=overwrite)


__all__ = [
    "EmbeddedData",
    "EmbeddingExtractor",
    "FrozenConfig",
    "LogisticHead",
    "MODES",
    "build_transfer_model",
    "choose_c",
    "clip_probabilities",
    "cross_validate_frozen",
    "embed_manifest",
    "fit_final",
    "fit_head",
    "fit_logistic",
    "install_head",
    "pretrained_models",
    "run_frozen",
]
