"""The seed's deep CNN on log-mel patches (sizes ``cnn-s`` and ``cnn-m``).

Conv blocks of (3×3 conv → batch norm → ReLU) × ``convs_per_block``, then 2×2
max pooling and dropout, as the seed's network; the input is standardised by
a batch norm first, so a clip's absolute level (dB offset) matters less. The
feature map is averaged over frequency and pooled over time (max + mean), so
the same network takes any patch size, the seed's 128×128 included.

A batch of patches of unequal widths (short clips at their own length, zero
padded to the widest) goes through with ``lengths``: every layer then sees
only each item's own frames (:meth:`ConvStack.masked`), so an item's output is
the one it has alone. The smallest width the stack needs is
:func:`stack_min_frames`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tympan.config import CNN_FEATURES
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

    def masked(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The stack on ``(batch, 1, n_mels, width)`` items of ``lengths`` ``(batch,)`` real
        frames (the rest pads a batch of unequal widths), each as if alone at its own length.

        Time bins past an item's end are zero before every convolution (what its zero
        padding reads at a lone item's end), ``-inf`` before every max pool (a lone item's
        ceil-mode window ends at its last frame) and left out of batch-norm statistics
        in training. Returns the map ``(batch, channels, f, t)`` (bins past an item's end
        hold garbage) and each item's real output bins ``(batch,)``.
        """
        lengths = lengths.to(device=x.device, dtype=torch.int64)
        for layer in self.layers:
            keep = time_keep(lengths, x.shape[-1])
            if isinstance(layer, nn.Conv2d):
                x = layer(torch.where(keep, x, 0.0))
            elif isinstance(layer, nn.MaxPool2d):
                x = layer(torch.where(keep, x, float("-inf")))
                lengths = (lengths + 1) // 2
            elif isinstance(layer, nn.BatchNorm2d) and layer.training:
                x = masked_batch_norm(layer, x, keep)
            else:  # eval batch norm, ReLU, dropout: one value at a time
                x = layer(x)
        return x, lengths


def time_keep(lengths: Tensor, frames: int) -> Tensor:
    """``(batch, 1, 1, frames)`` bool: True on each item's first ``lengths[i]`` time bins."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None])[:, None, None]


def masked_batch_norm(layer: nn.BatchNorm2d, x: Tensor, keep: Tensor) -> Tensor:
    """Training-mode ``layer`` on ``(batch, channels, f, t)`` whose statistics (and running
    averages) count only the bins where ``keep`` ``(batch, 1, 1, t)`` is True."""
    count = keep.sum() * x.shape[2]
    mean = torch.where(keep, x, 0.0).sum(dim=(0, 2, 3)) / count
    centred = x - mean[None, :, None, None]
    var = torch.where(keep, centred.square(), 0.0).sum(dim=(0, 2, 3)) / count
    if layer.track_running_stats and layer.running_mean is not None:
        assert layer.running_var is not None and layer.num_batches_tracked is not None
        with torch.no_grad():
            layer.num_batches_tracked.add_(1)
            momentum = (layer.momentum if layer.momentum is not None
                        else 1.0 / float(layer.num_batches_tracked))
            unbiased = var * count / max(int(count) - 1, 1)
            layer.running_mean.lerp_(mean.detach(), momentum)
            layer.running_var.lerp_(unbiased.detach(), momentum)
    out = centred * torch.rsqrt(var + layer.eps)[None, :, None, None]
    if layer.affine:
        out = out * layer.weight[None, :, None, None] + layer.bias[None, :, None, None]
    return out


def stack_min_frames(channels: Sequence[int]) -> int:
    """Narrowest patch (frames) a :class:`ConvStack` of ``len(channels)`` blocks is run on:
    ``2 ** blocks``, its total time stride. Narrower, the last blocks' 2×2 pools would
    pool a single time bin with nothing (a no-op the network never trained on) and its
    3×3 convolutions would read more zero padding than signal; at ``2 ** blocks`` every
    pool halves real frames and the stack gives one output bin."""
    return int(2 ** len(channels))


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

    #: :meth:`forward` takes ``lengths`` (batches of patches of unequal widths).
    takes_lengths = True

    @property
    def min_frames(self) -> int:
        """Narrowest patch the network is run on (:func:`stack_min_frames`)."""
        return stack_min_frames(self.config["channels"])

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits ``(batch, n_classes)`` of patches ``(batch, n_mels, width)``; ``lengths``
        ``(batch,)``: real frames of each (zero padding after them): each item's logits
        are then the ones it has alone at its own length."""
        if lengths is None:
            maps = self.features(_check_input(x)).mean(dim=2)  # (batch, channels, time)
            pooled = maps.amax(dim=2) + maps.mean(dim=2)
        else:
            fmap, bins = self.features.masked(_check_input(x), lengths)
            maps = fmap.mean(dim=2)
            keep = time_keep(bins, maps.shape[-1])[:, 0]  # (batch, 1, time)
            mean = torch.where(keep, maps, 0.0).sum(dim=2) / bins[:, None].to(maps.dtype)
            pooled = torch.where(keep, maps, float("-inf")).amax(dim=2) + mean
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


@register_model("cnn-s", default_features=CNN_FEATURES)
def cnn_s(n_classes: int, **kwargs: Any) -> CNN:
    """Seed CNN, small: 4 blocks of one conv (16–128 channels), ~0.1 M parameters."""
    return CNN(n_classes, **{**_SIZES["cnn-s"], **kwargs})


@register_model("cnn-m")
def cnn_m(n_classes: int, **kwargs: Any) -> CNN:
    """Seed CNN, medium: 4 blocks of two convs (32–256 channels), ~1.2 M parameters."""
    return CNN(n_classes, **{**_SIZES["cnn-m"], **kwargs})
