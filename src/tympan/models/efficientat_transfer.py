"""EfficientAT as a transfer model: the pretrained trunk as ``backbone``, a new ``head``.

:class:`EfficientATClassifier` (registered as ``mn04_as``) maps log-mel
patches ``(batch, n_mels, frames)`` of the EfficientAT front end
(:data:`tympan.config.EFFICIENTAT_FEATURES`) to class logits; its backbone
gives the embeddings the frozen recipe trains a head on. This module also
registers the mn04 AudioSet weights with :mod:`tympan.models.pretrained`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tympan.config import EFFICIENTAT_FEATURES
from tympan.models import pretrained as pretrained_registry
from tympan.models.efficientat import (
    EfficientATNet,
    build_mn,
    convert_upstream_state_dict,
    masked_feature_map,
    time_mask,
)
from tympan.models.registry import register_model


def trunk_bins(size: int) -> int:
    """Length of an input axis after the trunk's five stride-2 stages (ceil halving)."""
    for _ in range(5):
        size = (size + 1) // 2
    return size


EMBEDDING_PARTS = ("pooled", "hidden", "logits", "freq", "freqmax", "freqstd")


def embedding_parts(embedding: str) -> list[str]:
    """The parts of an embedding name: ``"freq+logits"`` → ``["freq", "logits"]``.

    Raises:
        ValueError: a part is unknown or repeated.
    """
    parts = embedding.split("+")
    unknown = [p for p in parts if p not in EMBEDDING_PARTS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"embedding must be one of {EMBEDDING_PARTS} or several joined by '+' "
                         f"without repeats (e.g. 'freq+logits'), got {embedding!r}")
    return parts


class EfficientATBackbone(nn.Module):
    """The pretrained part of a transfer model: ``(batch, 1, n_mels, frames)`` → ``(batch, dim)``.

    ``embedding`` says how the trunk's ``(channels, freq', time')`` output is
    summarised: ``"pooled"`` averages over (freq, time) (``embedding_dim`` =
    384 at width 0.4); ``"hidden"`` adds the AudioSet head's first layer and
    its Hardswish (``head_dim`` = 512); ``"logits"`` is the AudioSet head's
    output (527 tag logits); ``"freq"`` averages over time only and keeps the
    frequency bins (384 × 4 = 1536 for 128 mels), so where in the spectrum a
    pattern sits is not averaged away; ``"freqmax"`` / ``"freqstd"`` take the
    maximum / standard deviation over time instead. Parts joined by ``"+"``
    (``"freq+logits"``) are concatenated in that order, from one trunk pass.
    Any number of frames works; every time bin of the output is pooled.
    """

    def __init__(self, width: float = 0.4, embedding: str = "pooled", n_mels: int = 128) -> None:
        super().__init__()
        self.parts = embedding_parts(embedding)
        reference = EfficientATNet(width=width)
        self.embedding = embedding
        self.features = reference.features
        self.hidden: nn.Sequential | None = None
        self.logits: nn.Linear | None = None
        if "hidden" in self.parts or "logits" in self.parts:
            self.hidden = nn.Sequential(reference.classifier[2], nn.Hardswish())
        if "logits" in self.parts:
            layer = reference.classifier[5]
            assert isinstance(layer, nn.Linear)
            self.logits = layer
        sizes = {"pooled": reference.embedding_dim, "hidden": reference.head_dim,
                 "logits": reference.n_classes}
        per_freq = reference.embedding_dim * trunk_bins(n_mels)
        self.part_dims = [sizes.get(p, per_freq) for p in self.parts]
        self.out_dim = sum(self.part_dims)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` ``(batch,)``: real frames per item (the rest pads a batch of unequal
        clips); each item's embedding is then the one it has alone at its own length."""
        if lengths is None:
            fmap = self.features(x)
            return self._summarise(fmap.mean(dim=(2, 3)), lambda: fmap.mean(dim=3),
                                   lambda: fmap.amax(dim=3),
                                   lambda: fmap.std(dim=3, correction=0))
        fmap, bins = masked_feature_map(self.features, x, lengths)
        mask = time_mask(bins, fmap.shape[-1], fmap.dtype)
        count = bins.to(fmap.dtype)[:, None, None]
        mean_t = (fmap * mask).sum(dim=3) / count

        def spread() -> Tensor:
            return (((fmap - mean_t[..., None]) * mask).square().sum(dim=3) / count).sqrt()

        return self._summarise(mean_t.mean(dim=2), lambda: mean_t,
                               lambda: fmap.masked_fill(mask == 0, float("-inf")).amax(dim=3),
                               spread)

    def _summarise(self, pooled: Tensor, mean_t: Callable[[], Tensor],
                   max_t: Callable[[], Tensor], std_t: Callable[[], Tensor]) -> Tensor:
        """The embedding parts from the pooled trunk output ``(b, c)`` and its per-bin
        time mean, max and std ``(b, c, freq')`` (computed when a part needs them)."""
        hidden = self.hidden(pooled) if self.hidden is not None else None
        out: list[Tensor] = []
        for part in self.parts:
            if part == "pooled":
                out.append(pooled)
            elif part == "hidden":
                assert hidden is not None
                out.append(hidden)
            elif part == "logits":
                assert self.logits is not None and hidden is not None
                out.append(self.logits(hidden))
            elif part == "freq":
                out.append(mean_t().flatten(1))
            elif part == "freqmax":
                out.append(max_t().flatten(1))
            else:  # freqstd; one time bin has no spread
                out.append(std_t().flatten(1))
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def load_upstream(self, state: Mapping[str, Tensor]) -> None:
        """Load the trunk (and first head layer) from a full :class:`EfficientATNet` state dict.

        Every tensor this module holds must be present (strict for the part
        kept); the AudioSet output layer is dropped unless ``"logits"`` is embedded.

        Raises:
            RuntimeError: keys are missing or shapes disagree.
        """
        wanted: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("features."):
                wanted[key] = value
            elif key.startswith("classifier.2.") and self.hidden is not None:
                wanted["hidden.0." + key.removeprefix("classifier.2.")] = value
            elif key.startswith("classifier.5.") and self.logits is not None:
                wanted["logits." + key.removeprefix("classifier.5.")] = value
        self.load_state_dict(wanted, strict=True)


class EfficientATClassifier(nn.Module):
    """A pretrained EfficientAT backbone plus a new head, for the model registry.

    ``(batch, n_mels, frames)`` log-mel patches (EfficientAT front end) →
    ``(batch, n_classes)`` logits. ``backbone`` is the pretrained part (the
    trainer gives it a lower learning rate and can freeze it); ``head`` is a
    Linear layer, or with ``head_hidden`` > 0 a one-hidden-layer ReLU MLP.

    ``time_shifts`` > 1 is test-time averaging in eval mode: each patch is also
    scored circularly rolled in time by ``k / time_shifts`` of its length, and
    the output is the log of the mean softmax over the shifts (so a softmax of
    it gives the averaged probabilities). Training mode scores the patch as is.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        width: float = 0.4,
        embedding: str = "pooled",
        head_hidden: int = 0,
        dropout: float = 0.2,
        time_shifts: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0, got {head_hidden}")
        if time_shifts < 1:
            raise ValueError(f"time_shifts must be >= 1, got {time_shifts}")
        self.n_classes = n_classes
        self.time_shifts = time_shifts
        # set by build_transfer_model: registry kwargs, and whose weights the backbone holds
        self.config: dict[str, Any] = {}
        self.backbone_name: str | None = None
        self.backbone = EfficientATBackbone(width, embedding)
        dim = self.backbone.out_dim
        if head_hidden:
            self.head: nn.Module = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(dim, head_hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(head_hidden, n_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))

    @property
    def embedding_dim(self) -> int:
        return self.backbone.out_dim

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Backbone embedding ``(batch, embedding_dim)`` of ``(batch, n_mels, frames)`` patches;
        ``lengths`` ``(batch,)``: real frames of each (see :meth:`EfficientATBackbone.forward`)."""
        if x.ndim != 3:
            raise ValueError(f"expected log-mel patches (batch, n_mels, frames), got "
                             f"{tuple(x.shape)}")
        return self.backbone(x.unsqueeze(1), lengths)

    def embed_shifted(self, x: Tensor, time_shifts: int | None = None,
                      lengths: Tensor | None = None) -> Tensor:
        """Embeddings of each patch rolled in time: ``(batch, time_shifts, embedding_dim)``.

        Shift ``k`` rolls the frames circularly by ``k * frames // time_shifts``
        (shift 0 is the patch itself). Default ``time_shifts``: the model's.
        With ``lengths`` ``(batch,)`` an item's ``frames`` is its real length: its
        first ``lengths[i]`` frames are rolled, as they would be alone.
        """
        n = self.time_shifts if time_shifts is None else time_shifts
        frames = x.shape[-1]
        if lengths is None:
            # torch.roll as two slices: the same values, and ONNX-exportable when the
            # shift depends on a dynamic length (a short clip at its own length)
            cuts = [frames - k * frames // n for k in range(n)]
            rolled = [torch.cat([x[..., c:], x[..., :c]], dim=-1) if k else x
                      for k, c in enumerate(cuts)]
            out = self.embed(torch.cat(rolled))
        else:
            lengths = lengths.to(torch.int64)
            t = torch.arange(frames)[None, :]
            real = t < lengths[:, None]
            rolled = [x]
            for k in range(1, n):
                source = torch.where(real, (t - k * lengths[:, None] // n) % lengths[:, None], t)
                rolled.append(torch.gather(x, 2, source[:, None, :].expand_as(x)))
            out = self.embed(torch.cat(rolled), lengths.repeat(n))
        return out.reshape(n, x.shape[0], -1).transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.time_shifts == 1:
            return self.head(self.embed(x))
        logits = self.head(self.embed_shifted(x))
        return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=1) - math.log(
            self.time_shifts)


def build_transfer_model(
    backbone_name: str,
    width: float,
    n_classes: int,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    embedding: str = "pooled",
    head_hidden: int = 0,
    dropout: float = 0.2,
    time_shifts: int = 1,
) -> EfficientATClassifier:
    """An :class:`EfficientATClassifier` whose backbone holds ``backbone_name``'s weights.

    With ``pretrained`` the weights are resolved (``weights`` first, see
    :func:`tympan.models.pretrained.resolve_weights`) and checked by sha256;
    without, the backbone is random (a model file then supplies the weights).
    ``model.config`` always says ``pretrained=False``: it rebuilds the
    architecture, and the weights that matter are the ones saved with it.

    Raises:
        ChecksumError: the weight file is not the registered one.
        TympanError: no weights are available and none can be downloaded.
    """
    model = EfficientATClassifier(n_classes, width=width, embedding=embedding,
                                  head_hidden=head_hidden, dropout=dropout,
                                  time_shifts=time_shifts)
    if pretrained:
        cfg = pretrained_registry.get_pretrained(backbone_name)
        path = pretrained_registry.resolve_weights(cfg, weights)
        model.backbone.load_upstream(pretrained_registry.load_state_dict(path, cfg))
    model.config = {"pretrained": False, "embedding": embedding, "head_hidden": head_hidden,
                    "dropout": dropout, "time_shifts": time_shifts}
    model.backbone_name = backbone_name
    return model


@register_model("mn04_as", default_features=EFFICIENTAT_FEATURES, pretrained=True,
                family="efficientat")
def mn04_as(
    n_classes: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    embedding: str = "pooled",
    head_hidden: int = 0,
    dropout: float = 0.2,
    time_shifts: int = 1,
) -> EfficientATClassifier:
    """EfficientAT mn04: AudioSet-pretrained MobileNetV3 (1 M parameters) plus a new head.

    ``embedding`` is ``"pooled"`` (384-d), ``"hidden"`` (512-d, the AudioSet
    head's first layer), ``"logits"`` (527 AudioSet tag logits), ``"freq"`` (1536-d,
    time-averaged per frequency bin), ``"freqmax"``/``"freqstd"`` (1536-d, max / std
    over time per bin) or several joined by ``"+"`` (see :class:`EfficientATBackbone`);
    ``head_hidden`` > 0 makes the head an MLP;
    ``time_shifts`` > 1 averages over circular time shifts at inference. See
    :func:`build_transfer_model` for ``pretrained`` (off by default: building a
    model never downloads) and ``weights``.
    """
    return build_transfer_model("mn04_as", 0.4, n_classes, pretrained=pretrained,
                                weights=weights, embedding=embedding, head_hidden=head_hidden,
                                dropout=dropout, time_shifts=time_shifts)


pretrained_registry.register_architecture(
    "efficientat_mn",
    pretrained_registry.Architecture(build=build_mn,
                 convert_state_dict=convert_upstream_state_dict),
)

MN04_AS = pretrained_registry.register_pretrained(
    pretrained_registry.PretrainedCfg(
        name="mn04_as",
        url="https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/mn04_as_mAP_432.pt",
        sha256="899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c",
        file_name="mn04_as_mAP_432.pt",
        n_bytes=4_066_513,
        architecture="efficientat_mn",
        architecture_kwargs={"width": 0.4, "n_classes": 527},
        licence="MIT (EfficientAT)",
        paper="Schmid, Koutini, Widmer: Efficient Large-Scale Audio Tagging via "
              "Transformer-to-CNN Knowledge Distillation, ICASSP 2023",
        features=EFFICIENTAT_FEATURES,
        embedding_dim=384,
        head_dim=512,
        description="MobileNetV3 width 0.4, 0.98 M parameters, AudioSet mAP 0.432",
    )
)


__all__ = [
    "EfficientATBackbone",
    "EfficientATClassifier",
    "EMBEDDING_PARTS",
    "MN04_AS",
    "build_transfer_model",
    "embedding_parts",
    "mn04_as",
    "trunk_bins",
]
