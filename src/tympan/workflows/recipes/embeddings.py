"""Frozen-backbone embeddings of log-mel patches, for the frozen recipe and the cache.

Each clip's log-mel is cut into patches exactly as prediction cuts it
(:mod:`tympan.windows`: a short clip keeps its own length when the front end
has ``min_patch_frames``); each patch and its ``time_shifts`` circular time
shifts go through the frozen backbone once; patches of unequal widths share a
forward in buckets :data:`BUCKET_FRAMES` wide, masked so that each patch's
embedding is the one it has alone. :attr:`EmbeddingExtractor.extractor_id`
names everything that changes the output, so the feature cache keys on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tympan.config import FeatureConfig
from tympan.features import LogMel
from tympan.windows import bucket_patches, clip_patch_groups

#: Patches of unequal widths are batched in buckets this many frames wide (one time bin
#: of the mn04 trunk's output), masked so that each gives its embedding alone.
BUCKET_FRAMES = 32


class EmbeddingExtractor:
    """Waveforms → frozen-backbone embeddings ``(n_patches, time_shifts, dim)`` float32.

    Patches follow ``feature_config`` (``patch_frames``/``patch_hop_frames``,
    as :class:`tympan.inference.predict.Predictor`); ``extractor_id`` names everything
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
        specs = [self.frontend(torch.as_tensor(np.asarray(w, dtype=np.float32))) for w in waves]
        embed_shifted = self.model.embed_shifted
        assert callable(embed_shifted)
        outs, owners = [], []
        groups = clip_patch_groups(specs, self.feature_config)
        for stacked, lengths, index in bucket_patches(groups, self.feature_config.patch_frames,
                                                      BUCKET_FRAMES):
            for s in range(0, stacked.shape[0], self.batch_size):
                part = slice(s, s + self.batch_size)
                # a bucket of unequal widths goes through masked: each patch as if alone
                mixed = bool((lengths[part] < stacked.shape[-1]).any())
                outs.append(embed_shifted(stacked[part], self.time_shifts,
                                          lengths[part] if mixed else None).numpy())
            owners.append(index)
        out, index = np.concatenate(outs), np.concatenate(owners)
        # patches of one clip share a width, so their order within the clip is kept
        return [np.ascontiguousarray(out[index == i], dtype=np.float32) for i in range(len(waves))]


__all__ = ["BUCKET_FRAMES", "EmbeddingExtractor", "bucket_patches"]
