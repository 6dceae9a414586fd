"""The model registry: look networks up by name, timm-style.

A model family registers factories with :func:`register_model`; callers build
them with :func:`create` and list them with :func:`list_models`. Each entry
records the front end it was designed for (:func:`default_features`), so a
training run picks the right log-mel settings from the model name alone.

Factories take ``(n_classes, **kwargs)`` and return an ``nn.Module`` mapping
log-mel patches ``(batch, n_mels, frames)`` to logits ``(batch, n_classes)``
and exposing ``model.config``: the JSON-able constructor kwargs, so
``create(name, n_classes, **model.config)`` rebuilds the same network.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from tympan.config import SEED_FEATURES, FeatureConfig
from tympan.errors import TympanError

ModelFactory = Callable[..., nn.Module]


class UnknownModelError(TympanError, KeyError):
    """No model is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model name.

    ``family`` is the module that registered it (``"cnn"``, ``"crnn"`` …);
    ``pretrained`` says the factory loads weights (it may then fail when they
    are unavailable); ``description`` is the factory's first docstring line.
    """

    name: str
    family: str
    description: str
    default_features: FeatureConfig
    pretrained: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "description": self.description,
                "default_features": self.default_features.name, "pretrained": self.pretrained}


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    info: ModelInfo


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    default_features: FeatureConfig = SEED_FEATURES,
    pretrained: bool = False,
    family: str | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register ``factory(n_classes, **kw) -> nn.Module`` under ``name``.

    ``default_features`` is the front end the model expects; ``pretrained``
    marks factories built on a pretrained backbone (they load its weights only
    when called with ``pretrained=True``); ``family`` defaults to the factory's
    module name. Registering a name twice is a
    ``ValueError`` (two modules disagreeing about a name is a bug).
    """

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"model {name!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        info = ModelInfo(name, family or factory.__module__.rsplit(".", 1)[-1],
                         doc[0] if doc else "", default_features, pretrained)
        _REGISTRY[name] = _Entry(factory, info)
        return factory

    return decorate


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownModelError(f"unknown model {name!r} (registered: {known})") from None


def create(name: str, n_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model ``name`` with ``n_classes`` outputs; ``kwargs`` go to its factory.

    The result carries ``model.model_name = name`` beside its ``config``.

    Raises:
        UnknownModelError: ``name`` is not registered.
        ValueError: ``n_classes`` < 1.
    """
    entry = _entry(name)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    model = entry.factory(n_classes, **kwargs)
    if not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"model {name!r} does not expose a dict `config`")
    object.__setattr__(model, "model_name", name)  # a plain attribute, not a submodule
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching the fnmatch ``pattern`` (``"cnn-*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def default_features(name: str) -> FeatureConfig:
    """The front end the model ``name`` was designed for (raises UnknownModelError)."""
    return _entry(name).info.default_features


def model_info(name: str) -> ModelInfo:
    """The registry's :class:`ModelInfo` for ``name`` (raises UnknownModelError)."""
    return _entry(name).info


def is_model(name: str) -> bool:
    return name in _REGISTRY
