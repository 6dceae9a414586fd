"""``tympan.Classifier``: a sound classifier with scikit-learn manners.

Hyper-parameters go in ``__init__`` (they are :class:`~tympan.config.TrainConfig`
fields), learning happens in :meth:`Classifier.fit`, learned state lives in
attributes ending in ``_`` (``classes_``, ``model_``, ``feature_config_``).
``get_params``/``set_params`` make it clonable (``sklearn.base.clone``).
A saved model carries its front end, so a loaded classifier always
featurises audio exactly as it was trained.

    clf = Classifier("cnn-s", epochs=20).fit("data/")
    clf.predict(["dog.wav", "rain.ogg"])
    clf.save("sounds.safetensors"); Classifier.load("sounds.safetensors")
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tympan.config import FeatureConfig, TrainConfig
from tympan.errors import ConfigError, TympanError

if TYPE_CHECKING:
    from tympan.inference.stream import ChannelChoice

_PARAMS = tuple(f.name for f in dataclasses.fields(TrainConfig))


class NotFittedError(TympanError, ValueError):
    """The classifier was used before ``fit`` or ``load``."""


def _is_path(item: Any) -> bool:
    return isinstance(item, str | Path)


class Classifier:
    """Train, apply, save and load a sound classifier.

    ``model`` is a registry name (``tympan.models.list_models()``) and ``mode``
    the recipe (``"auto"``: frozen backbone + logistic head for a pretrained
    model, network training otherwise; ``"finetune"``; ``"frozen"``). Every
    other keyword is a :class:`TrainConfig` field (``epochs``, ``batch_size``,
    ``lr``, ``seed``, ``c_grid`` …); one the recipe does not use is an error at
    :meth:`fit`. ``verbose`` shows progress bars.

    Raises:
        TypeError: an unknown keyword.
    """

    def __init__(
        self,
        model: str = "mn04_as",
        *,
        mode: str = "auto",
        epochs: int = 30,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        verbose: bool = False,
        **params: Any,
    ) -> None:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise TypeError(f"Classifier got unknown parameter(s) {', '.join(unknown)} "
                            f"(known: {', '.join(_PARAMS)}, verbose)")
        self.model = model
        self.mode = mode
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.verbose = verbose
        for name, value in params.items():
            setattr(self, name, value)

    # -- scikit-learn protocol ----------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every hyper-parameter (all TrainConfig fields and ``verbose``) by name."""
        defaults = TrainConfig()
        params = {name: getattr(self, name, getattr(defaults, name)) for name in _PARAMS}
        params["verbose"] = self.verbose
        return params

    def set_params(self, **params: Any) -> Classifier:
        """Set hyper-parameters by name; returns ``self``. Raises TypeError for unknown names."""
        unknown = sorted(set(params) - set(_PARAMS) - {"verbose"})
        if unknown:
            raise TypeError(f"unknown parameter(s) {', '.join(unknown)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def train_config(self) -> TrainConfig:
        """The hyper-parameters as a validated :class:`TrainConfig`."""
        params = self.get_params()
        params.pop("verbose")
        return TrainConfig(**params)

    def __repr__(self) -> str:
        defaults = TrainConfig()
        changed = {k: v for k, v in self.get_params().items()
                   if k not in ("model", "verbose") and v != getattr(defaults, k)}
        shown = {k: (f"<{v.name!r} front end>" if isinstance(v, FeatureConfig) else repr(v))
                 for k, v in changed.items()}
        args = ", ".join([repr(self.model)] + [f"{k}={v}" for k, v in shown.items()])
        return f"Classifier({args})"

    # -- learning -----------------------------------------------------------------------------

    def fit(self, data: Any, y: Sequence[Any] | None = None) -> Classifier:
        """Train on ``data``; returns ``self``.

        ``data`` is a :class:`~tympan.data.Manifest`, a dataset path (folder per
        class, CSV, ESC-50 folder), or a list of audio paths or mono float32
        waveforms (at the front end's sample rate) with their labels in ``y``.
        The recipe holds out a grouped ``val_fraction`` of the clips for its own
        choices (early stopping, the head's ``C``).

        Raises:
            ConfigError: a parameter the recipe does not use; a loaded
                classifier whose recipe could not be read.
            DatasetError: no usable clips or fewer than two classes.
            ValueError: ``y`` missing or of the wrong length for a list.
        """
        from tympan.data.manifest import Clip, Manifest
        from tympan.data.sources import discover, validate
        from tympan.workflows.recipes import create_recipe
        from tympan.workflows.run import fit_all

        if getattr(self, "unreadable_recipe_", None) is not None:
            raise ConfigError("this classifier was loaded from a model file whose recipe this "
                              "version cannot read; set its parameters (set_params) and build a "
                              "new Classifier to fit")
        recipe = create_recipe(self.train_config())
        if isinstance(data, Manifest | str | Path):
            if y is not None:
                raise ValueError("y is given only with a list of paths or waveforms")
            manifest = data if isinstance(data, Manifest) else discover(data)
            prepared = recipe.featurise(manifest, progress=self.verbose)
        else:
            items = list(data)
            if y is None or len(y) != len(items):
                raise ValueError(f"{len(items)} clips need as many labels in y, "
                                 f"got {None if y is None else len(y)}")
            if items and all(_is_path(item) for item in items):
                manifest = Manifest([Clip(Path(p), str(label)) for p, label in zip(items, y,
                                                                                 strict=True)],
                                    name="paths")
                prepared = recipe.featurise(manifest, progress=self.verbose)
            else:
                waves = [self._waveform(item) for item in items]
                manifest = Manifest([Clip(Path(f"array-{i}"), str(label))
                                     for i, label in enumerate(y)], name="arrays")
                prepared = recipe.featurise_waveforms(manifest, waves)
        validate(prepared.manifest)
        fitted = fit_all(recipe, prepared, progress=self.verbose)
        self.model_ = recipe.export(fitted, len(prepared.classes))
        self.classes_ = np.array(prepared.classes)
        self.feature_config_: FeatureConfig = prepared.feature_config
        self.recipe_: dict[str, Any] = recipe.train_config()
        self.history_ = fitted.history
        self.best_epoch_ = fitted.best_epoch
        self.fit_info_ = fitted.info
        self.dataset_ = prepared.manifest
        return self

    @staticmethod
    def _waveform(item: Any) -> np.ndarray:
        wave = np.asarray(item, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"expected mono waveforms (samples,), got shape {wave.shape}")
        return wave

    # -- prediction ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this Classifier is not fitted: call fit() or Classifier.load()")

    def _predictor(self) -> Any:
        from tympan.inference.predict import Predictor

        self._check_fitted()
        return Predictor.from_model(self.model_, list(self.classes_), self.feature_config_)

    @staticmethod
    def _items(X: Any) -> list[Any]:
        if _is_path(X) or (isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind == "f"):
            return [X]
        return list(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_clips, n_classes)`` (columns follow ``classes_``).

        ``X`` is a path, a mono waveform, or a list of them; waveforms are
        float32 at ``feature_config_.sample_rate`` Hz, files are resampled.

        Raises:
            AudioError: a file cannot be decoded.
            NotFittedError: before ``fit``/``load``.
        """
        return np.asarray(self._predictor().predict_proba(self._items(X)))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class name per clip, ``(n_clips,)``."""
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])

    def score(self, X: Any, y: Sequence[str]) -> float:
        """Clip accuracy on ``X`` against the labels ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def detect(self, X: Any, *, hop_seconds: float | None = None,
               threshold: float | None = None, hysteresis: float = 0.2,
               smooth_windows: int = 1, min_duration_seconds: float = 0.0,
               min_gap_seconds: float = 0.0, channel: ChannelChoice = "mix",
               start_time: str | None = None, batch_size: int = 8) -> list[Any]:
        """Timed events in long recordings: one :class:`~tympan.workflows.event_tables.
        FileDetections` per path in ``X`` (see ``tympan detect`` for the options; ``channel``
        is ``"mix"``, ``"each"`` or a 0-based index). Thresholds default to the ones the
        training run stored (``fit_info_["thresholds"]``), else 0.5.

        Raises:
            AudioError: a file cannot be decoded at all (one that fails mid-way keeps the
                events before the failure, with ``failure`` set).
            NotFittedError: before ``fit``/``load``.
        """
        from tympan.inference.detect import Detector
        from tympan.models.modelfile import LoadedModel, ModelMetadata
        from tympan.workflows.detect import DetectSettings, detect_file

        self._check_fitted()
        metadata = ModelMetadata(labels=[str(c) for c in self.classes_],
                                 model_name=str(getattr(self.model_, "model_name", self.model)),
                                 feature_config=self.feature_config_.to_dict(),
                                 extra=dict(getattr(self, "fit_info_", None) or {}))
        loaded = LoadedModel(self.model_, metadata)
        settings = DetectSettings(hop_seconds=hop_seconds, threshold=threshold,
                                  hysteresis=hysteresis, smooth_windows=smooth_windows,
                                  min_duration_seconds=min_duration_seconds,
                                  min_gap_seconds=min_gap_seconds,
                                  channel=channel, start_time=start_time)
        config = settings.event_config(loaded)
        detector = Detector(loaded, hop_seconds=hop_seconds, batch_size=batch_size)
        paths = [X] if _is_path(X) else list(X)
        return [detect_file(detector, Path(p), settings, config)[0] for p in paths]

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model file (weights + labels, front end, recipe, provenance).

        Raises:
            ModelFileError: ``path`` exists and ``overwrite`` is False.
            NotFittedError: before ``fit``/``load``.
        """
        from tympan.models.modelfile import make_metadata, save_model

        self._check_fitted()
        metadata = make_metadata(self.model_, list(self.classes_), self.feature_config_,
                                 train_config=self.recipe_,
                                 manifest=getattr(self, "dataset_", None),
                                 extra=getattr(self, "fit_info_", None))
        return save_model(path, self.model_, metadata, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """A fitted classifier from a model file; its front end comes from the file.

        Raises:
            ModelFileError: missing, truncated or foreign file.
        """
        from tympan.models.modelfile import load_model

        loaded = load_model(path)
        meta = loaded.metadata
        try:
            params = TrainConfig.from_dict(dict(meta.train_config)).to_dict()
            unreadable = None
        except (TypeError, ValueError) as exc:
            # prediction needs only the weights, labels and front end; the recipe is kept
            # verbatim so a later save() writes the provenance the file had
            warnings.warn(f"{path}: its training recipe cannot be read by this version ({exc}); "
                          "the model predicts, but fit() needs new parameters",
                          stacklevel=2)
            params, unreadable = {}, dict(meta.train_config)
        params["model"] = meta.model_name
        params["features"] = meta.features
        clf = cls(**params)
        clf.model_ = loaded.model
        clf.classes_ = np.array(meta.labels)
        clf.feature_config_ = meta.features
        clf.recipe_ = dict(meta.train_config)
        clf.unreadable_recipe_ = unreadable  # type: ignore[attr-defined]
        clf.history_ = []
        clf.best_epoch_ = None
        clf.fit_info_ = dict(meta.extra) if getattr(meta, "extra", None) else {}
        return clf


__all__ = ["Classifier", "NotFittedError"]
