"""Clip windowing: patches cover every frame, short clips are padded, patch scores pool per clip."""

from __future__ import annotations

import numpy as np
import pytest
import synth
import torch
from conftest import tiny_features

from tympan.config import SEED_FEATURES
from tympan.features import compute_log_mel
from tympan.windows import (
    bucket_patches,
    clip_mean,
    clip_patch_groups,
    clip_patches,
    pad_to_patch,
    patch_starts,
    patch_width,
    split_patches,
)


def test_patch_starts_end_align_the_last_patch():
    assert patch_starts(216, 128, 64) == [0, 64, 88]
    assert patch_starts(192, 128, 64) == [0, 64]
    assert patch_starts(128, 128, 64) == [0]
    assert patch_starts(50, 128, 64) == [0]


def test_split_patches_covers_every_frame_and_pads_short_clips():
    spec = np.arange(2 * 3 * 216, dtype=np.float32).reshape(2, 3, 216)
    patches = split_patches(spec, 128, 64)
    assert patches.shape == (2, 3, 3, 128)
    np.testing.assert_array_equal(patches[:, -1], spec[..., -128:])  # end-aligned
    short = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    padded = split_patches(short, 128, 64)
    assert padded.shape == (1, 3, 128)
    np.testing.assert_array_equal(padded[0, :, :50], short)
    assert (padded[0, :, 50:] == short.min()).all()  # filled with the clip's own floor
    torch_padded = split_patches(torch.from_numpy(short), 128, 64)
    np.testing.assert_array_equal(torch_padded.numpy(), padded)


def test_five_second_clip_gives_the_seeds_three_patches() -> None:
    rate = SEED_FEATURES.sample_rate
    spec = compute_log_mel(np.zeros(5 * rate, np.float32) + synth.tone(500, 5.0, rate))
    assert spec.shape == (128, 216)
    assert split_patches(spec).shape == (3, 128, 128)


def test_pad_to_patch_pads_like_split_patches() -> None:
    short = np.arange(64 * 20, dtype=np.float32).reshape(64, 20)
    padded = pad_to_patch(short, 32)
    assert padded.shape == (64, 32) and (padded[:, 20:] == short.min()).all()
    long = np.zeros((64, 40), np.float32)
    assert pad_to_patch(long, 32) is long


def test_clip_patches_cover_clips_of_any_length() -> None:
    config = tiny_features()
    specs = [np.zeros((32, 10)), np.zeros((32, 32)), np.zeros((32, 70))]
    patches, owner = clip_patches(specs, config)
    assert patches.shape[1:] == (32, 32)
    # short clip: padded to one patch; 70 frames: starts 0, 16, 32 and an end-aligned 38
    assert np.bincount(owner).tolist() == [1, 1, 4]


def test_clip_mean_averages_rows_per_clip() -> None:
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]])
    out = clip_mean(probs, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="one clip per patch"):
        clip_mean(probs, np.array([0, 1]), 2)




def test_min_frames_keeps_a_short_clip_at_its_own_length() -> None:
    short = np.random.default_rng(1).normal(size=(3, 50)).astype(np.float32)
    own = split_patches(short, 128, 64, min_frames=32)
    assert own.shape == (1, 3, 50)
    np.testing.assert_array_equal(own[0], short)
    tiny = split_patches(short[:, :20], 128, 64, min_frames=32)
    assert tiny.shape == (1, 3, 32) and (tiny[0, :, 20:] == short[:, :20].min()).all()
    long = np.zeros((3, 216), np.float32)
    assert split_patches(long, 128, 64, min_frames=32).shape == (3, 3, 128)  # unchanged


def test_clip_patch_groups_batch_patches_of_one_width() -> None:
    config = tiny_features().replace(min_patch_frames=8)
    rng = np.random.default_rng(2)
    specs = [rng.normal(size=(32, n)).astype(np.float32) for n in (40, 10, 20, 10, 5)]
    groups = clip_patch_groups(specs, config)
    assert [g[0].shape[-1] for g in groups] == [32, 20, 10, 8]
    assert [g[1].tolist() for g in groups] == [[0, 0], [2], [1, 3], [4]]
    np.testing.assert_array_equal(groups[2][0][1].numpy(), specs[3])
    with pytest.raises(ValueError, match="clip_patch_groups"):
        clip_patches(specs, config)
    assert len(clip_patch_groups(specs, tiny_features())) == 1  # padded to whole patches


def test_patch_width_is_the_width_split_patches_cuts() -> None:
    config = tiny_features().replace(min_patch_frames=8)
    for frames in (3, 8, 9, 20, 31, 32, 33, 100):
        spec = np.zeros((4, frames), np.float32)
        assert split_patches(spec, 32, 16, min_frames=8).shape[-1] == patch_width(frames, config)
    assert patch_width(5, tiny_features()) == 32  # no minimum: always a whole patch


def test_buckets_zero_pad_short_patches_and_keep_their_widths() -> None:
    config = tiny_features().replace(min_patch_frames=4)
    rng = np.random.default_rng(3)
    specs = [rng.normal(size=(32, n)).astype(np.float32) for n in (40, 5, 7, 9, 30)]
    buckets = bucket_patches(clip_patch_groups(specs, config), max_frames=32, bucket_frames=8)
    assert [b[0].shape[-1] for b in buckets] == [32, 16, 8]
    assert [b[1].tolist() for b in buckets] == [[32, 32, 30], [9], [7, 5]]
    assert [b[2].tolist() for b in buckets] == [[0, 0, 4], [3], [2, 1]]
    patches, lengths, _ = buckets[2]
    np.testing.assert_array_equal(patches[1, :, :5].numpy(), specs[1])
    assert (patches[1, :, 5:] == 0).all()
