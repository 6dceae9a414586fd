"""EfficientAT's MobileNetV3 for log-mel input (Schmid, Koutini, Widmer, ICASSP 2023).

torchvision's MobileNetV3-Large layout with a 1-channel stem, channel-only
squeeze-excitation computed over the mean of (freq, time), BatchNorm eps 1e-3,
and an MLP head (384 → 512 → 527 AudioSet classes at width 0.4). Module names
match the upstream checkpoints, so after :func:`convert_upstream_state_dict`
the released weights load with ``strict=True``.

Input is the EfficientAT log-mel (:data:`tympan.config.EFFICIENTAT_FEATURES`)
shaped ``(batch, 1, n_mels, frames)``; any number of frames works.

For training, :class:`EfficientATClassifier` (registered as ``mn04_as``) is
the pretrained trunk as ``backbone`` plus a new ``head`` on log-mel patches
``(batch, n_mels, frames)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tympan.config import EFFICIENTAT_FEATURES
from tympan.models.registry import register_model

#: Substring the upstream checkpoints carry inside every SE block: upstream
#: wraps each SE in a "concurrent SE" container that holds one layer here.
UPSTREAM_SE_PREFIX = ".conc_se_layers.0."

BN_EPS = 1e-3
# Upstream trains with momentum 0.01; kept so fine-tuning moves the running
# statistics as slowly as the released model expects.
BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet's rule).

    Rounds to the nearest multiple, never below ``min_value`` (default
    ``divisor``) and never more than 10 % below ``value``.
    """
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block at width 1.0 (MobileNetV3 paper, Table 1).

    ``activation`` is ``"relu"`` or ``"hardswish"``; ``use_se`` adds
    squeeze-excitation after the depthwise convolution.
    """

    in_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    activation: str
    stride: int

    def scaled(self, width: float) -> BlockSpec:
        """The same block with channel counts scaled by ``width`` and rounded to /8."""
        return BlockSpec(
            make_divisible(self.in_channels * width),
            self.kernel,
            make_divisible(self.expanded_channels * width),
            make_divisible(self.out_channels * width),
            self.use_se,
            self.activation,
            self.stride,
        )


#: MobileNetV3-Large's 15 bottlenecks (torchvision order), width 1.0.
MOBILENET_V3_LARGE: tuple[BlockSpec, ...] = (
    BlockSpec(16, 3, 16, 16, False, "relu", 1),
    BlockSpec(16, 3, 64, 24, False, "relu", 2),
    BlockSpec(24, 3, 72, 24, False, "relu", 1),
    BlockSpec(24, 5, 72, 40, True, "relu", 2),
    BlockSpec(40, 5, 120, 40, True, "relu", 1),
    BlockSpec(40, 5, 120, 40, True, "relu", 1),
    BlockSpec(40, 3, 240, 80, False, "hardswish", 2),
    BlockSpec(80, 3, 200, 80, False, "hardswish", 1),
    BlockSpec(80, 3, 184, 80, False, "hardswish", 1),
    BlockSpec(80, 3, 184, 80, False, "hardswish", 1),
    BlockSpec(80, 3, 480, 112, True, "hardswish", 1),
    BlockSpec(112, 3, 672, 112, True, "hardswish", 1),
    BlockSpec(112, 5, 672, 160, True, "hardswish", 2),
    BlockSpec(160, 5, 960, 160, True, "hardswish", 1),
    BlockSpec(160, 5, 960, 160, True, "hardswish", 1),
)

#: Width 1.0 size of the first head layer (MobileNetV3-Large's "last channel").
LAST_CHANNEL = 1280


def _activation(name: str | None) -> nn.Module | None:
    if name is None:
        return None
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hardswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r} (expected 'relu' or 'hardswish')")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, 'same' padding) → BatchNorm2d → optional activation.

    Children are named ``0``, ``1``, ``2`` like torchvision's ConvNormActivation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        act = _activation(activation)
        if act is not None:
            layers.append(act)
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: mean over (freq, time) → Linear → ReLU → Linear → sigmoid.

    ``(batch, channels, freq, time)`` in and out; the squeeze width is
    ``make_divisible(channels // 4)``. Unlike torchvision (1×1 convs,
    hard-sigmoid) this uses Linear layers and a plain sigmoid, as EfficientAT.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeeze = make_divisible(channels // reduction)
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: Tensor) -> Tensor:
        scale = x.mean(dim=(2, 3))
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale[:, :, None, None]


class InvertedResidual(nn.Module):
    """Expand 1×1 → depthwise k×k (stride) → [SE] → project 1×1, plus identity skip.

    The expansion is omitted when it would not change the channel count; the
    skip is used when stride is 1 and input and output widths agree.
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        if spec.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {spec.stride}")
        self.use_residual = spec.stride == 1 and spec.in_channels == spec.out_channels
        layers: list[nn.Module] = []
        if spec.expanded_channels != spec.in_channels:
            layers.append(ConvBNAct(spec.in_channels, spec.expanded_channels,
                                    activation=spec.activation))
        layers.append(ConvBNAct(spec.expanded_channels, spec.expanded_channels, spec.kernel,
                                spec.stride, groups=spec.expanded_channels,
                                activation=spec.activation))
        if spec.use_se:
            layers.append(SqueezeExcitation(spec.expanded_channels))
        layers.append(ConvBNAct(spec.expanded_channels, spec.out_channels))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class EfficientATNet(nn.Module):
    """EfficientAT "mn" network: ``(batch, 1, n_mels, frames)`` → logits ``(batch, n_classes)``.

    ``features`` is the convolutional trunk (stem, 15 bottlenecks, 1×1 to
    ``embedding_dim`` channels); ``classifier`` is ``[AdaptiveAvgPool2d,
    Flatten, Linear(embedding_dim, head_dim), Hardswish, Dropout,
    Linear(head_dim, n_classes)]``. Logits are multi-label: apply a sigmoid for
    AudioSet tag probabilities.

    Args:
        width: channel multiplier (0.4 for mn04). (Default: ``0.4``)
        n_classes: outputs of the last layer. (Default: ``527``)
        dropout: dropout probability before the last layer. (Default: ``0.2``)
        in_channels: input planes. (Default: ``1``)
    """

    def __init__(
        self, width: float = 0.4, n_classes: int = 527, dropout: float = 0.2, in_channels: int = 1
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        specs = [spec.scaled(width) for spec in MOBILENET_V3_LARGE]
        self.width = width
        self.n_classes = n_classes
        self.embedding_dim = 6 * specs[-1].out_channels
        self.head_dim = make_divisible(LAST_CHANNEL * width)
        layers: list[nn.Module] = [
            ConvBNAct(in_channels, specs[0].in_channels, 3, 2, activation="hardswish")
        ]
        layers += [InvertedResidual(spec) for spec in specs]
        layers.append(ConvBNAct(specs[-1].out_channels, self.embedding_dim,
                                activation="hardswish"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(self.embedding_dim, self.head_dim),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(self.head_dim, n_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: Tensor) -> Tensor:
        """Trunk output ``(batch, embedding_dim, freq', time')`` (freq' = n_mels / 32)."""
        return self.features(x)

    def pooled(self, feature_map: Tensor) -> Tensor:
        """Mean over (freq, time) of a :meth:`feature_map`: ``(batch, embedding_dim)``."""
        return feature_map.mean(dim=(2, 3))

    def hidden(self, pooled: Tensor) -> Tensor:
        """First head layer + Hardswish: ``(batch, embedding_dim)`` → ``(batch, head_dim)``."""
        return self.classifier[3](self.classifier[2](pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def build_mn(width: float = 0.4, n_classes: int = 527, dropout: float = 0.2) -> EfficientATNet:
    """An EfficientAT "mn" network with random weights (``mn04`` at ``width=0.4``)."""
    return EfficientATNet(width=width, n_classes=n_classes, dropout=dropout)


def convert_upstream_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an EfficientAT release checkpoint onto :class:`EfficientATNet` names.

    Upstream SE layers live under ``.conc_se_layers.0.``; here the SE module is
    the block itself, so that infix becomes ``.``. Other keys are unchanged.
    """
    return {key.replace(UPSTREAM_SE_PREFIX, "."): value for key, value in state.items()}


EMBEDDINGS = ("pooled", "hidden", "freq")


def trunk_bins(size: int) -> int:
    """Length of an input axis after the trunk's five stride-2 stages (ceil halving)."""
    for _ in range(5):
        size = (size + 1) // 2
    return size


class EfficientATBackbone(nn.Module):
    """The pretrained part of a transfer model: ``(batch, 1, n_mels, frames)`` → ``(batch, dim)``.

    ``embedding`` says how the trunk's ``(channels, freq', time')`` output is
    summarised: ``"pooled"`` averages over (freq, time) (``embedding_dim`` =
    384 at width 0.4); ``"hidden"`` adds the AudioSet head's first layer and
    its Hardswish (``head_dim`` = 512); ``"freq"`` averages over time only and
    keeps the frequency bins (384 × 4 = 1536 for 128 mels), so where in the
    spectrum a pattern sits is not averaged away.
    """

    def __init__(self, width: float = 0.4, embedding: str = "pooled", n_mels: int = 128) -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        reference = EfficientATNet(width=width)
        self.embedding = embedding
        self.features = reference.features
        self.hidden: nn.Sequential | None = None
        self.out_dim = reference.embedding_dim
        if embedding == "hidden":
            self.hidden = nn.Sequential(reference.classifier[2], nn.Hardswish())
            self.out_dim = reference.head_dim
        elif embedding == "freq":
            self.out_dim = reference.embedding_dim * trunk_bins(n_mels)

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.features(x)
        if self.embedding == "freq":
            return fmap.mean(dim=3).flatten(1)
        pooled = fmap.mean(dim=(2, 3))
        return self.hidden(pooled) if self.hidden is not None else pooled

    def load_upstream(self, state: Mapping[str, Tensor]) -> None:
        """Load the trunk (and first head layer) from a full :class:`EfficientATNet` state dict.

        Every tensor this module holds must be present (strict for the part
        kept); the AudioSet output layer is dropped.

        Raises:
            RuntimeError: keys are missing or shapes disagree.
        """
        wanted: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("features."):
                wanted[key] = value
            elif key.startswith("classifier.2.") and self.hidden is not None:
                wanted["hidden.0." + key.removeprefix("classifier.2.")] = value
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

    def embed(self, x: Tensor) -> Tensor:
        """Backbone embedding ``(batch, embedding_dim)`` of ``(batch, n_mels, frames)`` patches."""
        if x.ndim != 3:
            raise ValueError(f"expected log-mel patches (batch, n_mels, frames), got "
                             f"{tuple(x.shape)}")
        return self.backbone(x.unsqueeze(1))

    def embed_shifted(self, x: Tensor, time_shifts: int | None = None) -> Tensor:
        """Embeddings of each patch rolled in time: ``(batch, time_shifts, embedding_dim)``.

        Shift ``k`` rolls the frames circularly by ``k * frames // time_shifts``
        (shift 0 is the patch itself). Default ``time_shifts``: the model's.
        """
        n = self.time_shifts if time_shifts is None else time_shifts
        frames = x.shape[-1]
        rolled = [torch.roll(x, k * frames // n, dims=-1) if k else x for k in range(n)]
        out = self.embed(torch.cat(rolled))
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
        from tympan.models import pretrained as registry

        cfg = registry.get_pretrained(backbone_name)
        path = registry.resolve_weights(cfg, weights)
        model.backbone.load_upstream(registry.load_state_dict(path, cfg))
    model.config = {"pretrained": False, "embedding": embedding, "head_hidden": head_hidden,
                    "dropout": dropout, "time_shifts": time_shifts}
    model.backbone_name = backbone_name
    return model


@register_model("mn04_as", default_features=EFFICIENTAT_FEATURES, pretrained=True)
def mn04_as(
    n_classes: int,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    embedding: str = "pooled",
    head_hidden: int = 0,
    dropout: float = 0.2,
    time_shifts: int = 1,
) -> EfficientATClassifier:
    """EfficientAT mn04: AudioSet-pretrained MobileNetV3 (1 M parameters) plus a new head.

    ``embedding`` is ``"pooled"`` (384-d), ``"hidden"`` (512-d, the AudioSet
    head's first layer) or ``"freq"`` (1536-d, time-averaged per frequency bin);
    ``head_hidden`` > 0 makes the head an MLP;
    ``time_shifts`` > 1 averages over circular time shifts at inference. See
    :func:`build_transfer_model` for ``pretrained`` and ``weights``.
    """
    return build_transfer_model("mn04_as", 0.4, n_classes, pretrained=pretrained,
                                weights=weights, embedding=embedding, head_hidden=head_hidden,
                                dropout=dropout, time_shifts=time_shifts)


__all__ = [
    "BlockSpec",
    "EfficientATBackbone",
    "EfficientATClassifier",
    "ConvBNAct",
    "EfficientATNet",
    "InvertedResidual",
    "MOBILENET_V3_LARGE",
    "SqueezeExcitation",
    "build_mn",
    "build_transfer_model",
    "mn04_as",
    "convert_upstream_state_dict",
    "make_divisible",
]
