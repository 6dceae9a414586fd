"""Fine-tuning mn04's last blocks on cached activations of its frozen early blocks.

For bench/accuracy_cpu.py (issue #14, item 1). Not part of the package until a
variant beats the frozen recipe within the CPU budget.

One trunk pass per clip (every patch, every circular time shift, as the frozen
recipe embeds) stores the activations entering the last 3, 2 and 1 inverted-
residual blocks (:data:`TAPS`) beside the frozen ``"freq"`` embedding. A
:class:`TailRecipe` then trains, per fit, a copy of the trunk's remaining
blocks + final 1x1 conv (AudioSet weights, BatchNorm statistics kept), the
recipe's ``"freq"`` pooling (mean over time per frequency bin) and a new Linear
head on standardised embeddings, initialised from the frozen recipe's logistic
head (its ``C`` chosen on the fit's own inner split). Training: AdamW, cosine
schedule, one random (patch, shift) row per clip per epoch, mixup of the cached
activations, label smoothing, dropout before the head, time masks on the
cached map. A clip's probabilities are the mean softmax over its patches and
shifts, as the frozen recipe's; :meth:`TailRecipe.export` writes the trained
tail and head into the ``mn04_as`` registry model (same architecture as the
frozen recipe's), so such a model file predicts, detects and exports unchanged.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tympan.config import TrainConfig
from tympan.data.manifest import Manifest
from tympan.workflows.prepared import PreparedData
from tympan.workflows.recipes.base import Fitted
from tympan.workflows.recipes.embeddings import EmbeddingExtractor
from tympan.workflows.recipes.frozen import FrozenRecipe, build_transfer_model, choose_c
from tympan.workflows.recipes.logistic import fit_head, head_probabilities
from tympan.workflows.results import CVResult

#: last blocks fine-tuned → index into ``backbone.features`` where the tail starts
#: (features = [stem, 15 inverted-residual blocks, final 1x1 conv])
#: (0 = only the final 1x1 conv)
TAIL_START = {0: 16, 1: 15, 2: 14, 3: 13}
#: the cached taps, in stored order: the input of each tail
TAPS = (13, 14, 15, 16)


class ActivationCapture(nn.Module):
    """A frozen ``mn04_as`` classifier whose ``embed_shifted`` returns, per (patch, shift),
    the flattened activations entering ``features[t]`` for ``t`` in :data:`TAPS`, then
    the ``"freq"`` embedding: ``(batch, time_shifts, sum of sizes)``."""

    def __init__(self, model: nn.Module, patch_frames: int) -> None:
        super().__init__()
        self.model = model
        self.patch_frames = patch_frames
        #: patches shorter than ``patch_frames`` (zero-padded to it, see embed_shifted)
        self.short_patches = 0
        self.backbone_name = getattr(model, "backbone_name", None)
        self.backbone = model.backbone
        self._store: list[Tensor] = []
        features = model.backbone.features
        for t in TAPS:
            features[t - 1].register_forward_hook(
                lambda _m, _i, out: self._store.append(out.detach()))

    def embed_shifted(self, x: Tensor, time_shifts: int, lengths: Tensor | None = None) -> Tensor:
        if lengths is not None or x.shape[-1] != self.patch_frames:
            # a clip shorter than a patch: cached zero-padded to the full width (the rows
            # need one shape); the exported model scores it at its own length, masked
            self.short_patches += int((lengths < self.patch_frames).sum()) if (
                lengths is not None) else x.shape[0]
            x = nn.functional.pad(x, (0, self.patch_frames - x.shape[-1]))
        self._store = []
        emb = self.model.embed_shifted(x, time_shifts)
        b = x.shape[0]
        acts = [a.reshape(time_shifts, b, -1).transpose(0, 1) for a in self._store]
        return torch.cat([*acts, emb], dim=-1)


class ActivationExtractor(EmbeddingExtractor):
    """The frozen recipe's extractor over :class:`ActivationCapture` (own cache key)."""

    @property
    def extractor_id(self) -> str:
        return super().extractor_id.replace("tympan.embedding/v1", "bench.tail-acts/v1:taps="
                                            + ",".join(map(str, TAPS)))


def tap_shapes(n_mels: int = 128, frames: int = 500) -> dict[int, tuple[int, int, int]]:
    """``(channels, freq, time)`` entering each tap, from a dummy forward."""
    model = build_transfer_model(TrainConfig(model="mn04_as", mode="frozen"), 1)
    out: dict[int, tuple[int, int, int]] = {}
    x = torch.zeros(1, 1, n_mels, frames)
    with torch.inference_mode():
        for i, layer in enumerate(model.backbone.features):
            if i in TAPS:
                out[i] = tuple(x.shape[1:])  # type: ignore[assignment]
            x = layer(x)
    return out


class Tail(nn.Module):
    """Remaining blocks → freq pooling → (fixed) standardisation → dropout → Linear."""

    def __init__(self, blocks: nn.Sequential, mean: Tensor, scale: Tensor, weight: Tensor,
                 bias: Tensor, dropout: float) -> None:
        super().__init__()
        self.blocks = blocks
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def embed(self, x: Tensor) -> Tensor:
        return self.blocks(x).mean(dim=3).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        z = (self.embed(x) - self.mean) / self.scale
        return self.head(self.dropout(z))

    def train(self, mode: bool = True) -> Tail:
        super().train(mode)
        for m in self.blocks.modules():  # BatchNorm keeps AudioSet's statistics
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


class TailRecipe(FrozenRecipe):
    """Frozen early blocks, fine-tuned last ``last_blocks`` blocks (see the module).

    ``blend`` > 0 averages the result with the logistic head's probabilities
    (weight ``blend`` on the logistic head). Hyperparameters are fixed a priori.
    """

    def __init__(self, config: TrainConfig, last_blocks: int = 1, epochs: int = 8,
                 lr: float = 1e-3, tail_lr_scale: float = 0.1, weight_decay: float = 1e-2,
                 batch_size: int = 64, mixup_alpha: float = 0.3,
                 label_smoothing: float = 0.1, dropout: float = 0.2,
                 time_mask_fraction: float = 0.2, head_init: str = "logistic",
                 blend: float = 0.0) -> None:
        super().__init__(config)
        self.last_blocks, self.epochs, self.lr = last_blocks, epochs, lr
        self.tail_lr_scale, self.weight_decay = tail_lr_scale, weight_decay
        self.tail_batch, self.mixup_alpha = batch_size, mixup_alpha
        self.label_smoothing, self.dropout = label_smoothing, dropout
        self.time_mask_fraction, self.head_init, self.blend = (time_mask_fraction, head_init,
                                                               blend)
        self._arrays: tuple[int, Tensor, np.ndarray, list[np.ndarray]] | None = None
        #: (indices, tail probabilities, logistic-head probabilities) per predict_proba call
        self.scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # -- featurising ----------------------------------------------------------------------
    def extractor(self) -> EmbeddingExtractor:
        if self._extractor is None:
            capture = ActivationCapture(build_transfer_model(self.config, 1),
                                        self.feature_config().patch_frames)
            self._extractor = ActivationExtractor(capture, self.feature_config(),
                                                  self.config.time_shifts,
                                                  self.config.batch_size)
        return self._extractor

    def featurise(self, manifest: Manifest, *, cache: Any = None, workers: int = 2,
                  progress: bool = False) -> PreparedData:
        return super().featurise(manifest, cache=cache, workers=workers, progress=progress)

    def _split(self, data: PreparedData) -> tuple[Tensor, np.ndarray, list[np.ndarray]]:
        """Activations entering the tail ``(rows, C, F, T)`` float16 for every clip's rows
        (patches x shifts) stacked, each clip's first row and row count ``(clips, 2)``,
        and each clip's freq embeddings ``(rows, 1536)`` float32."""
        key = id(data.items)
        if self._arrays is not None and self._arrays[0] == key:
            return self._arrays[1:]
        shapes = tap_shapes(data.feature_config.n_mels, data.feature_config.patch_frames)
        start = TAIL_START[self.last_blocks]
        begin = 0
        for t in TAPS:
            if t == start:
                break
            begin += int(np.prod(shapes[t]))
        size = int(np.prod(shapes[start]))
        total = sum(int(np.prod(s)) for s in shapes.values())
        acts, embs, spans, at = [], [], [], 0
        for e in data.items:
            e = np.asarray(e)
            rows = e.reshape(-1, e.shape[-1])
            acts.append(torch.from_numpy(rows[:, begin:begin + size].astype(np.float16)))
            embs.append(np.ascontiguousarray(rows[:, total:], dtype=np.float32).reshape(
                *e.shape[:-1], -1))
            spans.append((at, len(rows)))
            at += len(rows)
        x = torch.cat(acts).reshape(at, *shapes[start])
        self._arrays = (key, x, np.asarray(spans, dtype=np.int64), embs)
        return self._arrays[1:]

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, data: PreparedData, train_idx: np.ndarray, *, split_seed: int,
            work_dir: Path | None = None, cv: CVResult | None = None, progress: bool = False,
            callbacks: Sequence[Any] = ()) -> Fitted:
        started = time.perf_counter()
        train_idx = np.asarray(train_idx, dtype=np.int64)
        acts, spans, embs = self._split(data)
        emb_data = PreparedData(data.manifest, embs, data.feature_config)
        C = choose_c(emb_data, train_idx, self.config, self.val_fraction, split_seed)
        logistic = fit_head(emb_data.items, data.labels, train_idx, len(data.classes), C,
                            self.config.max_iter)
        mean = torch.as_tensor(logistic.mean, dtype=torch.float32)
        scale = torch.as_tensor(logistic.scale, dtype=torch.float32)
        n_classes = len(data.classes)
        if self.head_init == "logistic":
            weight = torch.as_tensor(logistic.weight, dtype=torch.float32)
            bias = torch.as_tensor(logistic.bias, dtype=torch.float32)
        else:
            weight, bias = torch.zeros(n_classes, len(mean)), torch.zeros(n_classes)
        trunk = build_transfer_model(self.config, 1).backbone.features
        blocks = copy.deepcopy(trunk[TAIL_START[self.last_blocks]:])
        tail = Tail(blocks, mean, scale, weight, bias, self.dropout)
        torch.manual_seed(split_seed)
        rng = np.random.default_rng(split_seed)
        optimizer = torch.optim.AdamW(
            [{"params": tail.blocks.parameters(), "lr": self.lr * self.tail_lr_scale},
             {"params": tail.head.parameters(), "lr": self.lr}],
            weight_decay=self.weight_decay)
        per_epoch = math.ceil(len(train_idx) / self.tail_batch)
        total = self.epochs * per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        labels = torch.as_tensor(data.labels, dtype=torch.int64)
        tail.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                order = train_idx[rng.permutation(len(train_idx))]
                for s in range(0, len(order), self.tail_batch):
                    clips = order[s:s + self.tail_batch]
                    first, count = spans[clips, 0], spans[clips, 1]
                    rows = first + (rng.random(len(clips)) * count).astype(np.int64)
                    xb = acts[torch.as_tensor(rows)].float()
                    clips = torch.as_tensor(clips)
                    xb = self._time_mask(xb, rng)
                    yb = nn.functional.one_hot(labels[clips], n_classes).float()
                    if self.label_smoothing:
                        yb = yb * (1 - self.label_smoothing) + self.label_smoothing / n_classes
                    if self.mixup_alpha > 0:
                        lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
                        perm = torch.randperm(len(clips))
                        xb = lam * xb + (1 - lam) * xb[perm]
                        yb = lam * yb + (1 - lam) * yb[perm]
                    loss = nn.functional.cross_entropy(tail(xb), yb)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
        tail.eval()
        return Fitted((tail, logistic), seconds=time.perf_counter() - started,
                      info={"C": C, "epochs": self.epochs})

    def _time_mask(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        """Zero one random span of up to ``time_mask_fraction`` of the time bins per item."""
        width = int(self.time_mask_fraction * x.shape[-1])
        if width < 1:
            return x
        t = x.shape[-1]
        lengths = rng.integers(0, width + 1, len(x))
        starts = rng.integers(0, t - lengths + 1)
        bins = np.arange(t)[None, :]
        keep = ~((bins >= starts[:, None]) & (bins < (starts + lengths)[:, None]))
        return x * torch.as_tensor(keep, dtype=x.dtype)[:, None, None, :]

    def predict_proba(self, fitted: Fitted, data: PreparedData,
                      indices: np.ndarray) -> np.ndarray:
        tail, logistic = fitted.state
        acts, spans, embs = self._split(data)
        indices = np.asarray(indices, dtype=np.int64)
        out = []
        with torch.inference_mode():
            for s in range(0, len(indices), 64):
                part = spans[indices[s:s + 64]]
                rows = np.concatenate([np.arange(a, a + n) for a, n in part])
                probs = torch.softmax(tail(acts[torch.as_tensor(rows)].float()), dim=-1).numpy()
                owner = np.repeat(np.arange(len(part)), part[:, 1])
                sums = np.zeros((len(part), probs.shape[1]))
                np.add.at(sums, owner, probs)
                out.append(sums / part[:, 1:2])
        probs = np.concatenate(out).astype(np.float32)
        frozen = head_probabilities(logistic, embs, indices)
        # both kept per scored set: blends and the in-recipe logistic baseline come free
        self.scored.append((indices, probs, frozen))
        if self.blend > 0:
            probs = (1 - self.blend) * probs + self.blend * frozen
        return probs

    def export(self, fitted: Fitted, n_classes: int) -> nn.Module:
        """The ``mn04_as`` registry model holding the trained tail and head (the standardisation
        folded into the Linear head); ``blend`` is not exportable into one network."""
        tail, _ = fitted.state
        model = build_transfer_model(self.config, n_classes)
        features = model.backbone.features
        start = TAIL_START[self.last_blocks]
        tail_state = tail.blocks.state_dict()  # a slice of a Sequential keeps its indices
        for i, layer in enumerate(features):
            if i >= start:
                prefix = f"{i}."
                layer.load_state_dict({k.removeprefix(prefix): v for k, v in tail_state.items()
                                       if k.startswith(prefix)})
        linear = model.head[-1]
        with torch.no_grad():
            weight = tail.head.weight / tail.scale
            linear.weight.copy_(weight)
            linear.bias.copy_(tail.head.bias - weight @ tail.mean)
        return model.eval()


def featurise_tail(manifest: Manifest, config: TrainConfig, cold_seconds: float | None = None,
                   cold_cpu_seconds: float | None = None
                   ) -> tuple[PreparedData, dict[str, Any]]:
    """The activation pass through the feature cache (``$TYMPAN_CACHE``), timed: wall and
    CPU seconds (this process and its decode workers), cache size; ``cold_seconds`` and
    ``cold_cpu_seconds`` (from the run that computed it) stand for this run's when it
    found the activations cached."""
    import os
    import resource

    torch.set_num_threads(2)
    recipe = TailRecipe(config)
    usage0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    data = recipe.featurise(manifest, progress=True)
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime
              for a, b in zip(usage0, usage1, strict=True))
    shapes = tap_shapes(data.feature_config.n_mels, data.feature_config.patch_frames)
    rows = sum(int(np.prod(np.asarray(e).shape[:-1])) for e in data.items)
    sizes = {f"last {k}": round(rows * int(np.prod(shapes[TAIL_START[k]])) * 2 / 1e6, 1)
             for k in sorted(TAIL_START)}
    capture = recipe.extractor().model
    cost = {"taps": list(TAPS), "short_patches_zero_padded": capture.short_patches,
            "time_shifts": config.time_shifts, "rows": rows,
            "wall_seconds_this_run": round(wall, 1), "cpu_seconds_this_run": round(cpu, 1),
            "wall_seconds_empty_cache": cold_seconds or round(wall, 1),
            "cpu_seconds_empty_cache": cold_cpu_seconds or round(cpu, 1),
            "float16_megabytes_per_split": sizes,
            "load_average_1min": round(os.getloadavg()[0], 2)}
    print(f"activation pass {wall:.0f} s wall, {cpu:.0f} s CPU, {rows} rows; fp16 MB {sizes}",
          flush=True)
    return data, cost


def evaluate_tail(name: str, config: TrainConfig, kwargs: dict[str, Any], data: PreparedData,
                  cost: dict[str, Any]) -> list[dict[str, Any]]:
    """Cross-validate one :class:`TailRecipe` on ESC-50's folds: its table row, plus the rows
    of its blend with the in-recipe logistic head (equal weights) and of that head alone
    (the paired baseline: same embeddings, folds and ``C`` choice)."""
    import os
    import resource

    from tympan.workflows.crossval import cross_validate

    torch.set_num_threads(2)
    recipe = TailRecipe(config, **kwargs)
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cv = cross_validate(recipe, data)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    labels = data.labels
    scored = {int(idx[0]): (tail, frozen) for idx, tail, frozen in recipe.scored}
    fold_probs = {f.fold: scored[int(f.clip_indices[0])] for f in cv.folds}
    truth = {f.fold: labels[f.clip_indices] for f in cv.folds}

    def accuracies(pick: Any) -> dict[str, float]:
        return {fold: float((pick(*fold_probs[fold]).argmax(axis=1) == truth[fold]).mean())
                for fold in fold_probs}

    base = {"head": "tail", "embedding": config.embedding, "time_shifts": config.time_shifts,
            "tail": {**kwargs, **{k: getattr(recipe, k) for k in (
                "epochs", "lr", "tail_lr_scale", "weight_decay", "tail_batch", "mixup_alpha",
                "label_smoothing", "dropout", "time_mask_fraction", "head_init")}},
            "C": {f.fold: f.info.get("C") for f in cv.folds},
            "cv_seconds": round(wall, 1), "cv_cpu_seconds": round(cpu, 1),
            "featurise_wall_seconds_empty_cache": cost["wall_seconds_empty_cache"],
            "estimated_wall_seconds_empty_cache": round(
                cost["wall_seconds_empty_cache"] + wall, 1),
            "cpu_seconds_empty_cache": round(cost["cpu_seconds_empty_cache"] + cpu, 1),
            "load_average_1min": round(os.getloadavg()[0], 2)}
    rows = []
    for suffix, pick in (("", lambda t, f: t), (" + logistic blend", lambda t, f: (t + f) / 2),
                         (" | in-recipe logistic", lambda t, f: f)):
        folds = accuracies(pick)
        acc = list(folds.values())
        rows.append({"name": name + suffix, **base, "accuracy_mean": float(np.mean(acc)),
                     "accuracy_std": float(np.std(acc)), "folds": folds})
        print(f"{name + suffix:40s} {np.mean(acc):.2%} ± {np.std(acc):.2%}  folds {acc}  "
              f"cv {wall:.0f} s, cpu {cpu:.0f} s", flush=True)
    return rows


__all__ = ["ActivationCapture", "ActivationExtractor", "TAIL_START", "TAPS", "Tail",
           "TailRecipe", "evaluate_tail", "featurise_tail", "tap_shapes"]
