"""The seed CNN at a clip's own length: masked batches of unequal widths, its minimum width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tympan import models
from tympan.models.cnn import CNN, masked_batch_norm, stack_min_frames, time_keep


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with batch-norm running statistics that are not the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def _padded(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    widest = max(x.shape[-1] for x in items)
    batch = torch.stack([nn.functional.pad(x, (0, widest - x.shape[-1]), value=0.0)
                         for x in items])
    return batch, torch.tensor([x.shape[-1] for x in items])


@pytest.mark.parametrize("name", ["cnn-s", "cnn-m"])
def test_a_short_patch_in_a_padded_batch_scores_as_it_does_alone(name: str) -> None:
    torch.manual_seed(0)
    model = _with_statistics(models.create(name, 5))
    # 16 (the minimum), 21 and 37 (odd: ceil-mode pools end mid-window) and a whole patch
    items = [torch.randn(128, width) for width in (21, 128, 16, 37)]
    batch, lengths = _padded(items)
    with torch.no_grad():
        together = torch.softmax(model(batch, lengths), dim=1)
        alone = torch.cat([torch.softmax(model(x[None]), dim=1) for x in items])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    # garbage, not zeros, past an item's end changes nothing either
    noisy = batch + (torch.arange(batch.shape[-1]) >= lengths[:, None, None]) * 50.0
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(model(noisy, lengths), dim=1), alone,
                                   atol=1e-5, rtol=0)


def test_whole_patches_take_the_unmasked_path_unchanged() -> None:
    torch.manual_seed(1)
    model = _with_statistics(models.create("cnn-s", 4))
    x = torch.randn(3, 128, 128)
    with torch.no_grad():
        maps = model.features(x[:, None]).mean(dim=2)
        before = model.classifier(maps.amax(dim=2) + maps.mean(dim=2))  # the seed's pooling
        assert torch.equal(model(x), before)
        torch.testing.assert_close(model(x, torch.full((3,), 128)), before, atol=1e-6, rtol=0)


def test_training_statistics_count_real_frames_only() -> None:
    # no dropout: the same items with and without padding give the same training forward,
    # gradients and running statistics
    torch.manual_seed(2)
    plain = models.create("cnn-s", 3, block_dropout=0.0, dropout=0.0).train()
    masked = models.create("cnn-s", 3, block_dropout=0.0, dropout=0.0).train()
    masked.load_state_dict(plain.state_dict())
    x = torch.randn(4, 128, 24)
    padded = nn.functional.pad(x, (0, 40), value=3.0)
    out_plain = plain(x)
    out_masked = masked(padded, torch.full((4,), 24))
    torch.testing.assert_close(out_masked, out_plain, atol=1e-5, rtol=1e-5)
    out_plain.square().sum().backward()
    out_masked.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), masked.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-4)
    for (name, a), b in zip(plain.named_buffers(), masked.buffers(), strict=True):
        torch.testing.assert_close(b.float(), a.float(), atol=1e-5, rtol=1e-5, msg=name)


def test_masked_batch_norm_equals_batch_norm_on_the_real_bins() -> None:
    torch.manual_seed(3)
    layer, reference = nn.BatchNorm2d(3).train(), nn.BatchNorm2d(3).train()
    x = torch.randn(2, 3, 4, 10)
    keep = time_keep(torch.tensor([10, 6]), 10)
    out = masked_batch_norm(layer, x, keep)
    # the same statistics as a batch norm over the real bins alone, laid side by side
    real = torch.cat([x[0], x[1, :, :, :6]], dim=-1)[None]
    expected = reference(real)[0]
    torch.testing.assert_close(torch.cat([out[0], out[1, :, :, :6]], dim=-1), expected)
    torch.testing.assert_close(layer.running_mean, reference.running_mean)
    torch.testing.assert_close(layer.running_var, reference.running_var)


def test_the_minimum_width_is_the_stacks_time_stride() -> None:
    assert stack_min_frames([16, 32, 64, 128]) == 16
    model = models.create("cnn-s", 2)
    assert isinstance(model, CNN) and model.min_frames == 16
    assert models.create("cnn-m", 2).min_frames == 16
    assert models.create("cnn-s", 2, channels=[4, 8]).min_frames == 4
    # at the minimum every pool halves real frames down to one output bin
    with torch.no_grad():
        assert model.features(torch.zeros(1, 1, 128, 16)).shape[-1] == 1
