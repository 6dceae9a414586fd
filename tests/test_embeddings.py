"""Frozen-backbone embeddings: clips of unequal length batched in masked buckets."""

from __future__ import annotations

import numpy as np
import synth
import torch

from tympan import models
from tympan.config import EFFICIENTAT_FEATURES
from tympan.windows import clip_patch_groups
from tympan.workflows.recipes.embeddings import BUCKET_FRAMES, EmbeddingExtractor, bucket_patches


def _extractor(min_patch_frames: int | None, batch_size: int = 32) -> EmbeddingExtractor:
    model = models.create("mn04_as", 2, embedding="freq", time_shifts=2).eval()
    front = EFFICIENTAT_FEATURES.replace(min_patch_frames=min_patch_frames)
    return EmbeddingExtractor(model, front, time_shifts=2, batch_size=batch_size)


def _clips(seconds: list[float]) -> list[np.ndarray]:
    rate = EFFICIENTAT_FEATURES.sample_rate
    return [synth.chirp(200.0 + 300 * i, 2000.0, s, rate).astype(np.float32) * (0.2 + 0.1 * i)
            for i, s in enumerate(seconds)]


def test_short_clips_batched_together_embed_as_each_alone() -> None:
    # 0.3 s (padded to the 0.32 s minimum), 0.45 s, 0.7 s, 1.1 s: widths 32-111, two buckets
    waves = _clips([0.3, 0.45, 0.7, 1.1, 0.33])
    extractor = _extractor(min_patch_frames=32)
    together = extractor(waves)
    alone = [extractor([w])[0] for w in waves]
    for got, want in zip(together, alone, strict=True):
        assert got.shape == want.shape == (1, 2, 1536)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_a_clip_longer_than_a_patch_keeps_its_unmasked_patches() -> None:
    waves = _clips([0.4, 6.0])
    extractor = _extractor(min_patch_frames=32)
    together = extractor(waves)
    spec = extractor.frontend(torch.from_numpy(waves[1]))
    ((patches, _),) = clip_patch_groups([spec], extractor.feature_config)
    with torch.no_grad():
        plain = extractor.model.embed_shifted(patches, 2).numpy()
    assert together[1].shape == (2, 2, 1536)  # two 5 s patches, the second end-aligned
    np.testing.assert_array_equal(together[1], plain)


def test_buckets_group_widths_and_never_pad_a_whole_patch() -> None:
    groups = [(torch.ones(2, 4, 500), np.array([0, 0])), (torch.ones(1, 4, 40), np.array([1])),
              (torch.ones(1, 4, 33), np.array([2])), (torch.ones(1, 4, 70), np.array([3]))]
    buckets = bucket_patches(groups, max_frames=500)
    assert BUCKET_FRAMES == 32
    assert [b[0].shape[-1] for b in buckets] == [500, 96, 64]
    assert torch.equal(buckets[0][0], groups[0][0])
    assert buckets[2][1].tolist() == [40, 33] and buckets[2][2].tolist() == [1, 2]
    assert float(buckets[2][0][1, :, 33:].abs().sum()) == 0.0  # zero padding, masked later


def test_clips_of_a_patch_or_longer_embed_the_same_with_or_without_a_minimum() -> None:
    # ESC-50's 5 s clips (one 500-frame patch) and a 7 s one: whole patches, bit for bit
    waves = _clips([5.0, 7.0])
    extractor = _extractor(min_patch_frames=None)
    padded = extractor(waves)
    extractor.feature_config = extractor.feature_config.replace(min_patch_frames=32)
    own = extractor(waves)
    assert [a.shape[0] for a in padded] == [1, 2]
    for a, b in zip(padded, own, strict=True):
        np.testing.assert_array_equal(a, b)
