"""Heads tried on the frozen recipe's cached embeddings, for bench/accuracy_cpu.py.

Not part of the package: each is measured against the recipe's own logistic head
on the same embeddings and folds, and only one that wins would move into
:mod:`tympan.workflows.recipes`.

- ``power-l2``: each (patch, shift) row signed-square-rooted and L2-normalised
  before the recipe's logistic head (the usual linear-probe normalisation);
- ``mlp-mixup``: a one-hidden-layer MLP (dropout, AdamW, one-cycle schedule)
  trained with mixup of the standardised embeddings, fixed hyperparameters;
- ensembles: the mean of several variants' held-out probabilities, fold by fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tympan.workflows.prepared import PreparedData
from tympan.workflows.recipes.base import Fitted
from tympan.workflows.recipes.frozen import FrozenRecipe
from tympan.workflows.recipes.logistic import _rows
from tympan.workflows.results import CVResult


def power_l2(items: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each row ``(..., dim)`` → ``sign(x)·sqrt(|x|)``, then divided by its L2 norm."""
    out = []
    for e in items:
        e = np.sign(e) * np.sqrt(np.abs(e))
        out.append((e / (np.linalg.norm(e, axis=-1, keepdims=True) + 1e-9)).astype(np.float32))
    return out


class MlpMixupRecipe(FrozenRecipe):
    """The frozen recipe with an MLP head trained with mixup (``hidden`` units, fixed
    ``epochs``/``dropout``/``mixup_alpha``) instead of the logistic head."""

    def __init__(self, config: Any, hidden: int = 512, dropout: float = 0.5, epochs: int = 30,
                 mixup_alpha: float = 0.4, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 128) -> None:
        super().__init__(config)
        self.hidden, self.dropout, self.epochs = hidden, dropout, epochs
        self.mixup_alpha, self.lr, self.weight_decay = mixup_alpha, lr, weight_decay
        self.head_batch = batch_size

    def fit(self, data: PreparedData, train_idx: np.ndarray, *, split_seed: int,
            work_dir: Path | None = None, cv: CVResult | None = None, progress: bool = False,
            callbacks: Sequence[Any] = ()) -> Fitted:
        x, y = _rows(data.items, np.asarray(train_idx), data.labels)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        xt = torch.as_tensor((x - mean) / scale, dtype=torch.float32)
        n_classes = len(data.classes)
        targets = nn.functional.one_hot(torch.as_tensor(y), n_classes).float()
        torch.manual_seed(split_seed)
        rng = np.random.default_rng(split_seed)
        net = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(xt.shape[1], self.hidden),
                            nn.GELU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, n_classes))
        optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr,
                                      weight_decay=self.weight_decay)
        per_epoch = -(-len(xt) // self.head_batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.lr,
                                                       total_steps=self.epochs * per_epoch)
        net.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                order = torch.randperm(len(xt))
                for start in range(0, len(xt), self.head_batch):
                    batch = order[start:start + self.head_batch]
                    xb, yb = xt[batch], targets[batch]
                    if self.mixup_alpha > 0:
                        lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
                        other = torch.randperm(len(batch))
                        xb, yb = lam * xb + (1 - lam) * xb[other], lam * yb + (1 - lam) * yb[other]
                    loss = nn.functional.cross_entropy(net(xb), yb)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
        return Fitted((net.eval(), mean, scale), info={"C": None})

    def predict_proba(self, fitted: Fitted, data: PreparedData,
                      indices: np.ndarray) -> np.ndarray:
        net, mean, scale = fitted.state
        out = []
        with torch.inference_mode():
            for i in np.asarray(indices):
                e = np.asarray(data.items[int(i)])
                x = torch.as_tensor((e.reshape(-1, e.shape[-1]) - mean) / scale,
                                    dtype=torch.float32)
                out.append(torch.softmax(net(x), dim=-1).mean(dim=0).numpy())
        return np.asarray(out, dtype=np.float32)


def ensemble_folds(members: Sequence[dict[str, np.ndarray]],
                   truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Per fold, the accuracy of the mean of the members' held-out probabilities.

    ``members[k][fold]`` is ``(n_clips, n_classes)``; ``truth[fold]`` the labels.
    """
    return {fold: float((np.mean([m[fold] for m in members], axis=0).argmax(axis=1)
                         == labels).mean()) for fold, labels in truth.items()}


__all__ = ["MlpMixupRecipe", "ensemble_folds", "power_l2"]
