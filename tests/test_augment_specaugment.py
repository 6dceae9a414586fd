"""SpecAugment masks only what it says: bands within the limits, the rest untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tympan.augment.specaugment import SpecAugment


def runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[::2])


@pytest.mark.parametrize("shape", [(16, 40, 100), (16, 1, 40, 100)])
def test_masks_only_bands_within_limits(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape) + 5.0
    aug = SpecAugment(time_mask_frames=12, freq_mask_bins=7, n_time_masks=2, n_freq_masks=3,
                      seed=0)
    y = aug(x)
    assert y.shape == x.shape
    x3, y3 = x.reshape(16, 40, 100).numpy(), y.reshape(16, 40, 100).numpy()
    masked_any = False
    for example_x, example_y in zip(x3, y3, strict=True):
        changed = example_x != example_y
        full_cols = changed.all(axis=0)
        full_rows = changed.all(axis=1)
        # Every change lies in a fully masked time band or mel band.
        assert not (changed & ~full_cols[None, :] & ~full_rows[:, None]).any()
        # Bands: at most n masks of at most the width each (overlaps merge, so a
        # run is at most n * width and there are at most n runs).
        if not full_rows.all():
            assert len(runs(full_cols)) <= 2 and all(r <= 24 for r in runs(full_cols))
        if not full_cols.all():
            assert len(runs(full_rows)) <= 3 and all(r <= 21 for r in runs(full_rows))
        # Masked cells hold the example's mean.
        if changed.any():
            masked_any = True
            np.testing.assert_allclose(example_y[changed], example_x.mean(), rtol=1e-5)
    assert masked_any


def test_single_masks_respect_the_exact_width() -> None:
    x = torch.randn(64, 32, 50)
    y = SpecAugment(time_mask_frames=5, freq_mask_bins=0, n_time_masks=1, n_freq_masks=0,
                    fill_value=-100.0, seed=1)(x)
    widths = []
    for example in (y == -100.0).numpy():
        cols = example.all(axis=0)
        assert (example == cols[None, :]).all()  # whole columns only
        widths += runs(cols) or [0]
    assert max(widths) <= 5 and len(set(widths)) > 2  # widths vary in 0..5


def test_p_zero_and_eval_mode_are_identity() -> None:
    x = torch.randn(4, 20, 30)
    assert torch.equal(SpecAugment(p=0.0, seed=0)(x), x)
    aug = SpecAugment(seed=0).eval()
    assert torch.equal(aug(x), x)


def test_seeded_masks_are_reproducible() -> None:
    x = torch.randn(8, 20, 30)
    assert torch.equal(SpecAugment(seed=3)(x), SpecAugment(seed=3)(x))
    assert not torch.equal(SpecAugment(seed=3)(x), SpecAugment(seed=4)(x))


def test_runs_on_the_input_device_and_dtype() -> None:
    x = torch.randn(2, 20, 30, dtype=torch.float64)
    y = SpecAugment(seed=0)(x)
    assert y.device == x.device and y.dtype == x.dtype


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="time_mask_frames"):
        SpecAugment(time_mask_frames=-1)
    with pytest.raises(ValueError, match="probability"):
        SpecAugment(p=1.5)
    with pytest.raises(ValueError, match="n_mels, frames"):
        SpecAugment()(torch.zeros(20, 30))
