"""The seed's deep CNN on log-mel patches (sizes ``cnn-s`` and ``cnn-m``).

Conv blocks of (3×3 conv → batch norm → ReLU) × ``convs_per_block``, then 2×2
max pooling and dropout, as the seed's network; the input is standardised by
a batch norm first, so a clip's absolute level (dB offset) matters less. The
feature map is averaged over frequency and pooled over time (max + mean), so
the same network takes any patch size, the seed's 128×128 included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from tympan.models.registry import register_model


class ConvStack(nn.Module):
    """Conv blocks: ``(batch, 1, n_mels, frames)`` → ``(batch, channels[-1], f, t)``.

    Each block halves both axes (ceil, so a size-1 axis stays 1); ``block_dropout``
    is the dropout probability after each block.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128),
        convs_per_block: int = 1,
        block_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one block")
        if convs_per_block < 1:
            raise ValueError(f"convs_per_block must be at least 1, got {convs_per_block}")
        if not 0.0 <= block_dropout < 1.0:
            raise ValueError(f"block_dropout must be in [0, 1), got {block_dropout}")
        layers: list[nn.Module] = [nn.BatchNorm2d(1)]
        previous = 1
        for width in channels:
            for _ in range(convs_per_block):
                layers += [
                    nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                previous = width
            layers += [nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(block_dropout)]
        self.layers = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _check_input(x: Tensor) -> Tensor:
    if x.ndim != 3:
        raise ValueError(f"expected log-mel patches (batch, n_mels, frames), got {tuple(x.shape)}")
    return x.unsqueeze(1)


class CNN(nn.Module):
    """Patch classifier: ``(batch, n_mels, frames)`` log-mel → ``(batch, n_classes)`` logits.

    ``channels`` sets the blocks' widths, ``hidden`` the dense layer before the
    output, ``dropout`` the probability before both dense layers.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        channels: Sequence[int] = (16, 32, 64, 128),
        convs_per_block: int = 1,
        block_dropout: float = 0.1,
        hidden: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config: dict[str, Any] = {
            "channels": [int(c) for c in channels], "convs_per_block": int(convs_per_block),
            "block_dropout": float(block_dropout), "hidden": int(hidden), "dropout": float(dropout),
        }
        self.n_classes = n_classes
        self.features = ConvStack(channels, convs_per_block, block_dropout)
        width = self.features.out_channels
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(width, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        maps = self.features(_check_input(x)).mean(dim=2)  # (batch, channels, time)
        pooled = maps.amax(dim=2) + maps.mean(dim=2)
        return self.classifier(pooled)  # type: ignore[no-any-return]


#: Conv-stack sizes shared by the families built on :class:`ConvStack` (cnn, crnn).
STACK_SIZES: dict[str, dict[str, Any]] = {
    "s": {"channels": (16, 32, 64, 128), "convs_per_block": 1, "block_dropout": 0.1,
          "dropout": 0.3},
    "m": {"channels": (32, 64, 128, 256), "convs_per_block": 2, "block_dropout": 0.1,
          "dropout": 0.5},
}

_SIZES: dict[str, dict[str, Any]] = {
    "cnn-s": {**STACK_SIZES["s"], "hidden": 128},
    "cnn-m": {**STACK_SIZES["m"], "hidden": 256},
}


@register_model("cnn-s")
def cnn_s(n_classes: int, **kwargs: Any) -> CNN:
    """Seed CNN, small: 4 blocks of one conv (16–128 channels), ~0.1 M parameters."""
    return CNN(n_classes, **{**_SIZES["cnn-s"], **kwargs})


@register_model("cnn-m")
def cnn_m(n_classes: int, **kwargs: Any) -> CNN:
    """Seed CNN, medium: 4 blocks of two convs (32–256 channels), ~1.2 M parameters."""
    return CNN(n_classes, **{**_SIZES["cnn-m"], **kwargs})
