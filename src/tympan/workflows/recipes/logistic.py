"""A multinomial logistic-regression head on embeddings: fit, score, fold into a network.

The frozen recipe's learner. Rows are every (patch, shift) embedding of a
clip with the clip's label; a clip's probabilities are its mean softmax over
them. :func:`install_head` folds the standardisation into the registry
model's Linear head, so a frozen model file predicts like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tympan.errors import TympanError


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


def head_probabilities(head: LogisticHead, embeddings: Sequence[np.ndarray],
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


__all__ = ["LogisticHead", "fit_head", "fit_logistic", "head_probabilities", "install_head"]
