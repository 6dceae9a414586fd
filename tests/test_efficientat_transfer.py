"""EfficientAT as a transfer model: the mn04_as registry entry, embeddings, time shifts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tympan import models
from tympan.config import EFFICIENTAT_FEATURES


def test_mn04_registry_entry_uses_the_efficientat_front_end() -> None:
    info = models.model_info("mn04_as")
    assert info.pretrained and info.family == "efficientat"
    assert models.default_features("mn04_as") == EFFICIENTAT_FEATURES


@pytest.mark.parametrize(("embedding", "dim"), [("pooled", 384), ("hidden", 512),
                                                ("freq", 1536)])
def test_embeddings_have_their_documented_size(embedding: str, dim: int) -> None:
    model = models.create("mn04_as", 4, pretrained=False, embedding=embedding).eval()
    x = torch.randn(2, 128, 200)
    assert model.embed(x).shape == (2, dim)
    assert model(x).shape == (2, 4)


def test_config_never_asks_for_pretrained_weights_again() -> None:
    model = models.create("mn04_as", 3, pretrained=False, time_shifts=2)
    assert model.config["pretrained"] is False
    rebuilt = models.create("mn04_as", 3, **model.config)
    assert rebuilt.config == model.config


def test_time_shift_averaging_is_the_mean_softmax_over_rolled_patches() -> None:
    torch.manual_seed(0)
    model = models.create("mn04_as", 5, pretrained=False, time_shifts=2).eval()
    x = torch.randn(3, 128, 100)
    with torch.no_grad():
        plain = torch.softmax(model.head(model.embed(x)), -1)
        rolled = torch.softmax(model.head(model.embed(torch.roll(x, 50, -1))), -1)
        averaged = torch.softmax(model(x), -1)
    torch.testing.assert_close(averaged, (plain + rolled) / 2, atol=1e-6, rtol=1e-5)
    model.train()
    with torch.no_grad():  # training mode sees the patch as is (dropout aside)
        assert model(x).shape == (3, 5)


def test_pretrained_backbone_holds_the_checkpoint(mn04_weights: Path) -> None:
    model = models.create("mn04_as", 3, pretrained=True, weights=mn04_weights)
    state = torch.load(mn04_weights, weights_only=True)
    torch.testing.assert_close(model.backbone.features[16][0].weight,
                               state["features.16.0.weight"])
    hidden = models.create("mn04_as", 3, pretrained=True, weights=mn04_weights,
                           embedding="hidden")
    torch.testing.assert_close(hidden.backbone.hidden[0].weight, state["classifier.2.weight"])




def test_building_a_model_never_loads_weights_unless_asked(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TYMPAN_WEIGHTS_CACHE", str(tmp_path))
    monkeypatch.setenv("TYMPAN_OFFLINE", "1")
    model = models.create("mn04_as", 3)  # no weights anywhere, no download: still builds
    assert model.config["pretrained"] is False
    from tympan.errors import TympanError

    with pytest.raises(TympanError, match=r"TYMPAN_WEIGHTS.*mn04_as_mAP_432\.pt"):
        models.create("mn04_as", 3, pretrained=True)


def test_joined_embedding_is_its_parts_from_one_trunk_pass(mn04_weights: Path) -> None:
    from tympan.models.efficientat import build_mn, convert_upstream_state_dict

    joined = models.create("mn04_as", 3, pretrained=True, weights=mn04_weights,
                           embedding="freq+freqstd+logits").eval()
    assert joined.embedding_dim == 1536 + 1536 + 527
    audioset = build_mn().eval()  # the whole upstream network, AudioSet head included
    audioset.load_state_dict(convert_upstream_state_dict(
        torch.load(mn04_weights, weights_only=True)))
    freq = models.create("mn04_as", 3, pretrained=True, weights=mn04_weights,
                         embedding="freq").eval()
    x = torch.randn(2, 128, 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = joined.embed(x)
        fmap = audioset.feature_map(x.unsqueeze(1))
        torch.testing.assert_close(out[:, :1536], freq.embed(x))
        torch.testing.assert_close(out[:, 1536:3072], fmap.std(dim=3, correction=0).flatten(1))
        torch.testing.assert_close(out[:, 3072:], audioset(x.unsqueeze(1)))  # AudioSet logits


@pytest.mark.parametrize("embedding", ["freq+freq", "freq+nope", "", "logit"])
def test_unknown_or_repeated_embedding_parts_are_refused(embedding: str) -> None:
    with pytest.raises(ValueError, match="embedding must be one of"):
        models.create("mn04_as", 3, embedding=embedding)


def test_short_patches_embed_at_their_own_length() -> None:
    model = models.create("mn04_as", 3, pretrained=False, embedding="freq+freqmax").eval()
    with torch.no_grad():
        assert model.embed(torch.randn(2, 128, 32)).shape == (2, 3072)
        assert model(torch.randn(2, 128, 41)).shape == (2, 3)


def _random_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so that padding leaking into a patch shows."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


@pytest.mark.parametrize("embedding", ["freq", "pooled+freqmax+freqstd+logits"])
def test_a_padded_patch_in_a_masked_batch_embeds_as_it_does_alone(embedding: str) -> None:
    model = _random_statistics(models.create("mn04_as", 3, embedding=embedding, time_shifts=2))
    lengths = [23, 32, 47, 90, 128]
    generator = torch.Generator().manual_seed(0)
    patches = [torch.randn(128, n, generator=generator) for n in lengths]
    batch = torch.full((len(lengths), 128, 128), 7.0)  # loud padding: a leak would be large
    for i, patch in enumerate(patches):
        batch[i, :, :patch.shape[1]] = patch
    with torch.no_grad():
        alone = torch.cat([model.embed_shifted(p[None], 2) for p in patches])
        together = model.embed_shifted(batch, 2, torch.tensor(lengths))
        unmasked = model.embed_shifted(batch, 2)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    assert (unmasked[:-1] - alone[:-1]).abs().amax() > 1e-2  # without the mask, padding counts
    torch.testing.assert_close(unmasked[-1], alone[-1], rtol=0, atol=1e-5)
