"""The recipe protocol: how one training mode featurises, fits, scores and exports.

A recipe is the unit of training. It featurises a manifest (through the
feature cache), fits on a set of clips, gives clip probabilities for others,
and exports the registry model a model file stores. Cross-validation, resume,
augmentation copies, the ablation and the run folder are written once
(:mod:`tympan.workflows.crossval`, :mod:`tympan.workflows.run`) for every
recipe. Recipes register by name (``finetune``, ``frozen``), the name being
a :class:`~tympan.config.TrainConfig` ``mode``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from lightning.pytorch.callbacks import Callback
from torch import nn

from tympan.config import FeatureConfig, TrainConfig
from tympan.data.manifest import Manifest
from tympan.errors import ConfigError
from tympan.workflows.prepared import PreparedData
from tympan.workflows.results import CVResult, EpochLog

#: TrainConfig fields every recipe reads.
COMMON_FIELDS = frozenset({"model", "mode", "model_kwargs", "seed", "folds", "val_fraction",
                           "batch_size", "augment_policy"})


@dataclass
class Fitted:
    """A recipe fitted on some clips: its learned ``state`` and how it got there.

    ``state`` is recipe-specific (a network, a logistic head); ``history`` has
    one :class:`EpochLog` per epoch for recipes that train in epochs; ``info``
    holds JSON-ready choices (a chosen ``C``, the final epoch count).
    """

    state: Any
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Recipe(ABC):
    """A training mode. Subclasses set ``name``, ``uses`` and ``default_val_fraction``.

    Construction checks the config: a field this recipe does not use must
    keep its default (:class:`ConfigError` names it otherwise).
    """

    name: ClassVar[str]
    #: TrainConfig fields this recipe reads (besides :data:`COMMON_FIELDS`)
    uses: ClassVar[frozenset[str]]
    default_val_fraction: ClassVar[float]

    def __init__(self, config: TrainConfig) -> None:
        unused = unused_fields(config, self.name)
        if unused:
            raise ConfigError(
                f"the {self.name} recipe does not use {', '.join(unused)}; leave "
                f"{'it' if len(unused) == 1 else 'them'} at the default or choose another mode"
            )
        self.config = config.replace(mode=self.name)

    @property
    def val_fraction(self) -> float:
        """Share of each fit's clips held out (grouped) for the recipe's own choices."""
        value = self.config.val_fraction
        return self.default_val_fraction if value is None else value

    @abstractmethod
    def feature_config(self) -> FeatureConfig:
        """The front end the recipe featurises with (and the model file records)."""

    @abstractmethod
    def featurise(self, manifest: Manifest, *, cache: Any = None, workers: int = 2,
                  progress: bool = False) -> PreparedData:
        """Features of every clip through the feature cache; bad files move to
        the returned manifest's ``bad_files``."""

    @abstractmethod
    def featurise_waveforms(self, manifest: Manifest,
                            waveforms: Sequence[np.ndarray]) -> PreparedData:
        """Features of in-memory mono waveforms (at the front end's rate), one per clip."""

    @abstractmethod
    def fit(self, data: PreparedData, train_idx: np.ndarray, *, split_seed: int,
            work_dir: Path | None = None, cv: CVResult | None = None, progress: bool = False,
            callbacks: Sequence[Callback] = ()) -> Fitted:
        """Fit on the clips at ``train_idx`` (and their copies).

        Without ``cv`` a grouped ``val_fraction`` of them, drawn with
        ``split_seed``, is held out for the recipe's own choices (early stopping,
        the head's ``C``). With ``cv`` (a final fit after cross-validation) the
        recipe may use it instead (the network trains the folds' median best
        epoch count on every clip). ``work_dir`` holds checkpoints to resume from.
        """

    @abstractmethod
    def predict_proba(self, fitted: Fitted, data: PreparedData,
                      indices: np.ndarray) -> np.ndarray:
        """Clip probabilities ``(len(indices), n_classes)`` float32 of the clips at ``indices``."""

    @abstractmethod
    def export(self, fitted: Fitted, n_classes: int) -> nn.Module:
        """The registry model (eval mode, CPU) that predicts what ``fitted`` predicts
        from log-mel patches; the model file stores it."""

    def train_config(self) -> dict[str, Any]:
        """The recipe as the model file and run folder record it (``mode`` resolved)."""
        return self.config.to_dict()


_RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make ``cls`` the recipe of ``mode=cls.name``."""
    _RECIPES[cls.name] = cls
    return cls


def list_recipes() -> list[str]:
    """Registered recipe (mode) names, sorted."""
    return sorted(_RECIPES)


def resolve_mode(config: TrainConfig) -> str:
    """``config.mode``, with ``"auto"`` made ``"frozen"`` for a pretrained model and
    ``"finetune"`` otherwise.

    Raises:
        UnknownModelError: ``config.model`` is not registered.
    """
    if config.mode != "auto":
        return config.mode
    from tympan import models

    return "frozen" if models.model_info(config.model).pretrained else "finetune"


def recipe_class(config: TrainConfig) -> type[Recipe]:
    """The recipe class ``config`` selects."""
    mode = resolve_mode(config)
    if mode not in _RECIPES:
        raise ConfigError(f"unknown mode {mode!r} (modes: {', '.join(list_recipes())})")
    return _RECIPES[mode]


def create_recipe(config: TrainConfig) -> Recipe:
    """The recipe ``config`` selects, checked (see :class:`Recipe`).

    Raises:
        ConfigError: an option the recipe does not use, or one it cannot honour.
        UnknownModelError: ``config.model`` is not registered.
    """
    return recipe_class(config)(config)


def unused_fields(config: TrainConfig, mode: str | None = None) -> list[str]:
    """Fields of ``config`` set away from their default that recipe ``mode`` ignores."""
    cls = _RECIPES[mode or resolve_mode(config)]
    defaults = TrainConfig()
    return [f.name for f in dataclasses.fields(TrainConfig)
            if f.name not in COMMON_FIELDS | cls.uses
            and getattr(config, f.name) != getattr(defaults, f.name)]


def recipe_fields(mode: str) -> frozenset[str]:
    """Every TrainConfig field recipe ``mode`` reads."""
    return COMMON_FIELDS | _RECIPES[mode].uses


Factory = Callable[[TrainConfig], Recipe]

__all__ = ["COMMON_FIELDS", "Fitted", "Recipe", "create_recipe", "list_recipes",
           "recipe_class", "recipe_fields", "register_recipe", "resolve_mode", "unused_fields"]
