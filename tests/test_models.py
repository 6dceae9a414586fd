"""Every registered model passes the same checks (timm-style), plus the registry itself."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tympan import models
from tympan.config import FeatureConfig
from tympan.errors import TympanError


def _build(name: str, n_classes: int = 3, **kwargs: object) -> nn.Module:
    try:
        return models.create(name, n_classes, **kwargs)
    except (TympanError, OSError) as exc:
        if models.model_info(name).pretrained:
            pytest.skip(f"{name}: pretrained weights unavailable ({exc})")
        raise


def _input(name: str, batch: int = 2) -> torch.Tensor:
    features = models.default_features(name)
    return torch.randn(batch, features.n_mels, features.patch_frames) * 10


@pytest.mark.parametrize("name", models.list_models())
def test_forward_gives_logits_per_class(name: str) -> None:
    torch.manual_seed(0)
    model = _build(name, 5).eval()
    with torch.no_grad():
        out = model(_input(name))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", models.list_models())
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = _build(name, 3).train()
    model(_input(name, batch=3)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", models.list_models())
def test_config_is_json_and_rebuilds_the_same_network(name: str) -> None:
    model = _build(name, 4)
    config = json.loads(json.dumps(model.config))  # JSON-able, and what a model file stores
    rebuilt = _build(name, 4, **config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.model_name == name


@pytest.mark.parametrize("name", models.list_models())
def test_registry_describes_every_model(name: str) -> None:
    info = models.model_info(name)
    assert info.name == name
    assert info.description, f"{name}: factory needs a docstring"
    assert isinstance(models.default_features(name), FeatureConfig)
    assert json.dumps(info.to_dict())


def test_seed_families_are_registered() -> None:
    assert {"cnn-s", "cnn-m", "crnn-s", "crnn-m"} <= set(models.list_models())
    assert models.list_models("crnn-*") == ["crnn-m", "crnn-s"]
    assert models.default_features("cnn-s").n_mels == 128


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(models.UnknownModelError, match="unknown model 'resnet-9000'.*cnn-s"):
        models.create("resnet-9000", 3)


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("cnn-s")(lambda n_classes: nn.Linear(1, n_classes))


@pytest.mark.parametrize("name", ["cnn-s", "crnn-s"])
def test_any_patch_size_works(name: str) -> None:
    model = models.create(name, 2).eval()
    for shape in [(1, 32, 16), (1, 64, 7), (1, 128, 128)]:
        assert model(torch.randn(*shape)).shape == (1, 2)


def test_wrong_input_rank_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"\(batch, n_mels, frames\)"):
        models.create("cnn-s", 2)(torch.randn(2, 1, 64, 64))


def test_kwargs_change_the_network() -> None:
    model = models.create("cnn-m", 3, dropout=0.1, channels=[8, 16])
    assert model.config["dropout"] == 0.1
    assert model.config["channels"] == [8, 16]
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert 0.1 in dropouts
    assert sum(p.numel() for p in model.parameters()) < \
        sum(p.numel() for p in models.create("cnn-m", 3).parameters())
    with pytest.raises(ValueError, match="dropout"):
        models.create("cnn-s", 3, dropout=1.5)
