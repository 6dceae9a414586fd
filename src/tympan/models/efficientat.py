"""EfficientAT's MobileNetV3 for log-mel input (Schmid, Koutini, Widmer, ICASSP 2023).

torchvision's MobileNetV3-Large layout with a 1-channel stem, channel-only
squeeze-excitation computed over the mean of (freq, time), BatchNorm eps 1e-3,
and an MLP head (384 → 512 → 527 AudioSet classes at width 0.4). Module names
match the upstream checkpoints, so after :func:`convert_upstream_state_dict`
the released weights load with ``strict=True``.

Input is the EfficientAT log-mel (:data:`tympan.config.EFFICIENTAT_FEATURES`)
shaped ``(batch, 1, n_mels, frames)``; any number of frames works.

For training, :mod:`tympan.models.efficientat_transfer` wraps the trunk as a
``backbone`` with a new ``head`` (registered as ``mn04_as``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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


def time_mask(lengths: Tensor, frames: int, dtype: torch.dtype) -> Tensor:
    """``(batch, 1, 1, frames)`` of ones on each item's first ``lengths[i]`` time bins, else 0."""
    keep = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
    return keep.to(dtype)[:, None, None, :]


def _masked_conv(layer: ConvBNAct, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    conv = layer[0]
    assert isinstance(conv, nn.Conv2d)
    if conv.kernel_size[1] > 1:  # the time bins past an item's end read as the conv's zero padding
        x = x * time_mask(lengths, x.shape[-1], x.dtype)
    out = layer(x)
    stride = conv.stride[1]
    return out, (lengths + stride - 1) // stride


def _masked_se(se: SqueezeExcitation, x: Tensor, lengths: Tensor) -> Tensor:
    mask = time_mask(lengths, x.shape[-1], x.dtype)
    scale = (x * mask).sum(dim=(2, 3)) / (lengths[:, None].to(x.dtype) * x.shape[2])
    scale = torch.sigmoid(se.fc2(torch.relu(se.fc1(scale))))
    return x * scale[:, :, None, None]


def masked_feature_map(features: nn.Sequential, x: Tensor,
                       lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The trunk ``features`` on ``(batch, 1, n_mels, width)`` items of ``lengths`` real frames.

    Each item is computed as if it were alone at its own length: time bins past
    its end are zeroed before every convolution wider than one bin (what the
    convolution's zero padding reads there) and left out of squeeze-excitation
    means. Returns the feature map ``(batch, channels, freq', time')`` (bins past
    an item's end hold garbage) and each item's number of real output bins ``(batch,)``.
    """
    lengths = lengths.to(torch.int64)
    for layer in features:
        if isinstance(layer, ConvBNAct):
            x, lengths = _masked_conv(layer, x, lengths)
            continue
        assert isinstance(layer, InvertedResidual)
        out, out_lengths = x, lengths
        for part in layer.block:
            if isinstance(part, ConvBNAct):
                out, out_lengths = _masked_conv(part, out, out_lengths)
            else:
                assert isinstance(part, SqueezeExcitation)
                out = _masked_se(part, out, out_lengths)
        x, lengths = (out + x if layer.use_residual else out), out_lengths
    return x, lengths


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


__all__ = [
    "BlockSpec",
    "ConvBNAct",
    "EfficientATNet",
    "InvertedResidual",
    "EMBEDDINGS",
    "MOBILENET_V3_LARGE",
    "SqueezeExcitation",
    "build_mn",
    "convert_upstream_state_dict",
    "make_divisible",
]
