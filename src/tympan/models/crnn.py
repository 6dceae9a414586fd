"""Convolutional-recurrent network: the seed CNN's conv stack, then a bidirectional GRU.

The seed's "future work": the conv blocks summarise each time step's
spectrum, a bidirectional GRU reads the sequence of steps, and the GRU's
outputs are pooled over time (max + mean) before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from tympan.models.cnn import STACK_SIZES, ConvStack, _check_input
from tympan.models.registry import register_model


class CRNN(nn.Module):
    """``(batch, n_mels, frames)`` log-mel → ``(batch, n_classes)`` logits.

    ``gru_hidden`` is the GRU's state size per direction; ``gru_layers`` its depth.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        channels: Sequence[int] = (16, 32, 64, 128),
        convs_per_block: int = 1,
        block_dropout: float = 0.1,
        gru_hidden: int = 64,
        gru_layers: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config: dict[str, Any] = {
            "channels": [int(c) for c in channels], "convs_per_block": int(convs_per_block),
            "block_dropout": float(block_dropout), "gru_hidden": int(gru_hidden),
            "gru_layers": int(gru_layers), "dropout": float(dropout),
        }
        self.n_classes = n_classes
        self.features = ConvStack(channels, convs_per_block, block_dropout)
        self.gru = nn.GRU(self.features.out_channels, gru_hidden, num_layers=gru_layers,
                          batch_first=True, bidirectional=True,
                          dropout=dropout if gru_layers > 1 else 0.0)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * gru_hidden, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        steps = self.features(_check_input(x)).mean(dim=2).transpose(1, 2)  # (batch, time, ch)
        outputs, _ = self.gru(steps)  # (batch, time, 2 * gru_hidden)
        pooled = outputs.amax(dim=1) + outputs.mean(dim=1)
        return self.classifier(pooled)  # type: ignore[no-any-return]


_SIZES: dict[str, dict[str, Any]] = {
    "crnn-s": {**STACK_SIZES["s"], "gru_hidden": 64},
    "crnn-m": {**STACK_SIZES["m"], "gru_hidden": 128},
}


@register_model("crnn-s")
def crnn_s(n_classes: int, **kwargs: Any) -> CRNN:
    """CRNN, small: cnn-s conv stack + bidirectional GRU (64 per direction)."""
    return CRNN(n_classes, **{**_SIZES["crnn-s"], **kwargs})


@register_model("crnn-m")
def crnn_m(n_classes: int, **kwargs: Any) -> CRNN:
    """CRNN, medium: cnn-m conv stack + bidirectional GRU (128 per direction)."""
    return CRNN(n_classes, **{**_SIZES["crnn-m"], **kwargs})
