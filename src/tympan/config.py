"""Typed configuration dataclasses; every one round-trips to JSON.

A config is saved with every model file and run folder, so training and
prediction can never disagree about the front end or the recipe.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin: ``to_dict``/``from_dict``/``to_json``/``from_json`` for dataclasses.

    ``from_dict`` rejects unknown keys with a ``ValueError`` naming them, and
    rebuilds nested config dataclasses and tuples.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            try:
                kwargs[name] = _coerce(hints[name], value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{cls.__name__}.{name}: {exc}") from None
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (atomically: temp file then rename)."""
        from tympan.fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Read a config JSON file.

        Raises:
            ConfigError: the file is missing, unreadable, not JSON, or holds
                unknown keys or values of the wrong type (the message names them).
        """
        from tympan.errors import ConfigError

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") \
                from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; a config is JSON") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg})") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _coerce(hint: Any, value: Any) -> Any:
    """Turn JSON values back into the annotated type (nested configs, tuples)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return value
    if isinstance(hint, type) and issubclass(hint, JsonConfig):
        if not isinstance(value, dict):
            raise ValueError(f"{hint.__name__}: expected a JSON object, got {value!r}")
        return hint.from_dict(value)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v) for v in value)
    if origin is list and isinstance(value, list):
        args = typing.get_args(hint)
        return [_coerce(args[0], v) if args else v for v in value]
    if hint is float and isinstance(value, int):
        return float(value)
    return value


#: Training precisions (Lightning's names); ``auto`` is mixed on a GPU, 32-bit on a CPU.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
              "32", "16", "bf16", "64")


@dataclass(frozen=True)
class FeatureConfig(JsonConfig):
    """The log-mel front end: decode rate, STFT, mel filterbank, log and patching.

    Defaults are the seed's, bit-compatible with ``librosa.feature.melspectrogram``
    followed by ``librosa.power_to_db(ref=1.0, amin=1e-10, top_db=80)``:
    44.1 kHz mono, n_fft 1024 (23 ms), hop 1024, 128 Slaney mel bands 0–22050 Hz.

    ``log="db"`` is ``10·log10(max(mel, amin))`` with ``top_db`` clipping per
    clip; ``log="ln"`` is ``ln(mel + log_offset)``. After the log, features are
    ``(x + norm_shift) / norm_scale``. ``mel_scale="kaldi"`` builds Kaldi's
    triangles in the mel domain (mel = 1127·ln(1 + f/700)), as EfficientAT does.
    ``stft_dtype="float64"`` runs the FFT in double precision: torch's float32
    FFT alone drifts up to ~1.3e-3 dB from librosa on a pure tone's -80 dB
    side lobes; the rest of the pipeline stays float32.

    A clip shorter than ``patch_frames`` is one patch: padded to
    ``patch_frames`` with its floor when ``min_patch_frames`` is None, else
    kept at its own length and padded only up to ``min_patch_frames`` (for a
    network that pools over any number of frames: less compute, no silence).
    """

    name: str = "seed"
    sample_rate: int = 44100
    n_fft: int = 1024
    win_samples: int | None = None
    hop_samples: int = 1024
    window: Literal["hann", "hann_symmetric"] = "hann"
    center: bool = True
    pad_mode: Literal["constant", "reflect"] = "constant"
    stft_dtype: Literal["float32", "float64"] = "float64"
    preemphasis: float = 0.0
    n_mels: int = 128
    f_min_hz: float = 0.0
    f_max_hz: float | None = None
    mel_scale: Literal["slaney", "htk", "kaldi"] = "slaney"
    mel_norm: Literal["slaney", "none"] = "slaney"
    power: float = 2.0
    log: Literal["db", "ln"] = "db"
    amin: float = 1e-10
    ref: float = 1.0
    top_db: float | None = 80.0
    log_offset: float = 1e-5
    norm_shift: float = 0.0
    norm_scale: float = 1.0
    patch_frames: int = 128
    patch_hop_frames: int = 64
    min_patch_frames: int | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.n_fft <= 0 or self.hop_samples <= 0:
            raise ValueError("n_fft and hop_samples must be positive")
        if self.win_samples is not None and not 0 < self.win_samples <= self.n_fft:
            raise ValueError(
                f"win_samples must be in (0, n_fft={self.n_fft}], got {self.win_samples}"
            )
        if self.n_mels <= 0:
            raise ValueError(f"n_mels must be positive, got {self.n_mels}")
        if self.f_max_hz is not None and self.f_max_hz > self.sample_rate / 2:
            raise ValueError(
                f"f_max_hz={self.f_max_hz} is above Nyquist ({self.sample_rate / 2} Hz)"
            )
        if self.patch_frames <= 0 or self.patch_hop_frames <= 0:
            raise ValueError("patch_frames and patch_hop_frames must be positive")
        if self.min_patch_frames is not None and not 0 < self.min_patch_frames <= self.patch_frames:
            raise ValueError(f"min_patch_frames must be in (0, patch_frames={self.patch_frames}], "
                             f"got {self.min_patch_frames}")
        if self.norm_scale == 0:
            raise ValueError("norm_scale must not be zero")

    @property
    def f_max(self) -> float:
        """Upper mel edge in Hz (Nyquist when ``f_max_hz`` is None)."""
        return float(self.f_max_hz) if self.f_max_hz is not None else self.sample_rate / 2

    @property
    def win_length(self) -> int:
        return self.win_samples if self.win_samples is not None else self.n_fft

    @property
    def patch_seconds(self) -> float:
        return self.patch_frames * self.hop_samples / self.sample_rate

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_samples


SEED_FEATURES = FeatureConfig()

# The seed front end as new cnn-s models use it: a clip shorter than the ~3 s patch is kept
# at its own length, at least 16 frames (0.37 s, the time stride of the CNN's four 2x2 pools).
# On 640 spoken words (20 minimal pairs, 16 voices, 0.26-0.6 s), cnn-s trained 15 epochs:
# 44.8 % (random 5-fold CV) / 43.2 % (unseen voices) against 22.5 % / 27.0 % padded to the
# patch, better in every fold, on a quarter of the CPU time
# (bench/results/short-sounds-cnn-s.json). Clips of 3 s or more give the same patches.
CNN_FEATURES = SEED_FEATURES.replace(min_patch_frames=16)

# EfficientAT (Schmid et al. 2023) front end for the mn* AudioSet models.
EFFICIENTAT_FEATURES = FeatureConfig(
    name="efficientat",
    sample_rate=32000,
    n_fft=1024,
    win_samples=800,
    hop_samples=320,
    window="hann_symmetric",
    center=True,
    pad_mode="reflect",
    stft_dtype="float32",
    preemphasis=0.97,
    n_mels=128,
    f_min_hz=0.0,
    f_max_hz=15000.0,
    mel_scale="kaldi",
    mel_norm="none",
    power=2.0,
    log="ln",
    top_db=None,
    log_offset=1e-5,
    norm_shift=4.5,
    norm_scale=5.0,
    patch_frames=500,
    patch_hop_frames=250,
    # a clip shorter than 5 s is embedded at its own length, at least 1 s (no 5 s of silence):
    # on 2048 noisy spoken words of 32 confusable classes 82.9 % (random CV) / 83.8 % (unseen
    # voices) against 78.5 % / 79.8 % padded to 5 s, better in every fold, and 4x faster;
    # a 0.32 s minimum is faster still but less accurate (bench/results/short-sounds.json).
    # Clips of 5 s or more are cut into the same patches either way.
    min_patch_frames=100,
)


@dataclass(frozen=True)
class AudioConfig(JsonConfig):
    """Decoding policy: minimum duration and what counts as silent."""

    min_duration_seconds: float = 0.1
    silence_threshold_db: float = -90.0


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """A training recipe: the model, how it is trained, its schedule, CV.

    ``mode`` picks the recipe (:mod:`tympan.workflows.recipes`): ``"finetune"``
    trains the whole network with Lightning (from scratch for a model without
    pretrained weights), ``"frozen"`` embeds every clip once with a pretrained
    backbone and fits a logistic-regression head; ``"auto"`` is ``frozen``
    for a pretrained model and ``finetune`` otherwise. A field the chosen
    recipe does not use must keep its default (the recipe says which).
    Frozen only: ``embedding`` (the backbone summary, e.g. ``"freq"``; parts join
    with ``"+"``: ``"freq+logits"``), ``time_shifts``
    (circular time shifts embedded per patch, averaged at prediction),
    ``c_grid`` (inverse L2 strengths tried on an inner split) and ``max_iter``
    (L-BFGS iterations). ``val_fraction=None`` is the recipe's own default
    (0.15 for finetune, 0.2 for frozen).

    ``features=None`` means the model's registered front end
    (:func:`tympan.models.default_features`). ``weight_decay`` is the L2
    coefficient (coupled L2 with ``optimizer="adam"``, decoupled with
    ``"adamw"``); ``l1`` adds ``l1 * sum(|w|)`` over weights to the loss.
    ``dropout`` (None = the model's own) is passed to the model factory.
    ``early_stopping_patience`` counts epochs without improvement of
    ``monitor`` on the validation clips (0 disables early stopping);
    ``val_fraction`` of each fold's training clips (grouped) is held out for
    it (0 = no validation: the last epoch is kept). ``folds=None`` uses the
    dataset's predefined folds, else 5. ``precision="auto"`` is bf16/16-mixed
    on a GPU and 32-bit on the CPU. ``backbone_lr_scale`` multiplies ``lr`` for
    a model's ``backbone``, frozen for the first ``freeze_backbone_epochs``.
    Augmentation (off by default): mixup with Beta(``mixup_alpha``) weights;
    SpecAugment with ``spec_n_masks`` time masks up to ``spec_time_mask_frames``
    and as many frequency masks up to ``spec_freq_mask_bins`` (a width of 0
    disables that axis); ``augment_policy`` maps a class to the augmentation
    sets (``"TS"``, ``"PS1"`` …) whose offline copies its clips may train
    with (None = every copy), ``augment_variants`` says whether each epoch
    draws one variant per clip (``"sample"``) or trains on every copy (``"all"``).
    ``max_train_batches`` caps the batches per epoch (short benchmark schedules).
    Distributed training (finetune only): ``devices`` processes per node on
    ``nodes`` nodes with Lightning's ``strategy`` (``"auto"``, ``"ddp"`` …; not
    ``ddp_spawn``/``ddp_fork``, whose workers keep the best weights);
    ``batch_size`` is per process, so a step averages the gradients of
    ``devices * nodes * batch_size`` patches (BatchNorm statistics stay per
    process), and each process trains on its own shard of every epoch's order.
    """

    model: str = "mn04_as"
    mode: Literal["auto", "finetune", "frozen"] = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    features: FeatureConfig | None = None
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = 1e-4
    l1: float = 0.0
    dropout: float | None = None
    label_smoothing: float = 0.0
    early_stopping_patience: int = 8
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    val_fraction: float | None = None
    seed: int = 0
    folds: int | None = None
    num_workers: int = 0
    precision: str = "auto"
    backbone_lr_scale: float = 0.1
    freeze_backbone_epochs: int = 0
    mixup_alpha: float = 0.0
    spec_time_mask_frames: int = 0
    spec_freq_mask_bins: int = 0
    spec_n_masks: int = 2
    augment_policy: dict[str, list[str]] | None = None
    augment_variants: Literal["sample", "all"] = "sample"
    max_train_batches: int | None = None
    devices: int = 1
    nodes: int = 1
    strategy: str = "auto"
    embedding: str = "freq"
    time_shifts: int = 2
    c_grid: tuple[float, ...] = (0.1, 0.3, 1.0)
    max_iter: int = 50

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.l1 < 0:
            raise ValueError("weight_decay and l1 must be >= 0")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.mode not in ("auto", "finetune", "frozen"):
            raise ValueError(f"mode must be auto, finetune or frozen, got {self.mode!r}")
        if self.time_shifts < 1:
            raise ValueError(f"time_shifts must be >= 1, got {self.time_shifts}")
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ValueError(f"c_grid must hold positive values, got {self.c_grid}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.folds is not None and self.folds < 0:
            raise ValueError(f"folds must be >= 0, got {self.folds}")
        if self.early_stopping_patience < 0 or self.freeze_backbone_epochs < 0:
            raise ValueError("early_stopping_patience and freeze_backbone_epochs must be >= 0")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}")
        if min(self.spec_time_mask_frames, self.spec_freq_mask_bins, self.spec_n_masks) < 0:
            raise ValueError("SpecAugment widths and spec_n_masks must be >= 0")
        if self.max_train_batches is not None and self.max_train_batches < 1:
            raise ValueError(f"max_train_batches must be >= 1, got {self.max_train_batches}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers (--workers) must be >= 0 (0 = load in this "
                             f"process), got {self.num_workers}")
        if self.devices < 1 or self.nodes < 1:
            raise ValueError(f"devices (--devices) and nodes (--nodes) must be >= 1, got "
                             f"{self.devices} and {self.nodes}")
        if not self.strategy or any(w in self.strategy for w in ("spawn", "fork", "notebook")):
            raise ValueError(f"strategy (--strategy) must be auto, ddp or another Lightning "
                             f"strategy that runs in this process, got {self.strategy!r}: a "
                             f"spawned worker's best weights and history would not come back")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS[:4])} (or "
                             f"another Lightning precision), got {self.precision!r}")

    @property
    def spec_augment(self) -> bool:
        """True when SpecAugment masks anything."""
        return self.spec_n_masks > 0 and (self.spec_time_mask_frames > 0
                                          or self.spec_freq_mask_bins > 0)


__all__ = [
    "AudioConfig",
    "CNN_FEATURES",
    "EFFICIENTAT_FEATURES",
    "FeatureConfig",
    "JsonConfig",
    "PRECISIONS",
    "SEED_FEATURES",
    "TrainConfig",
    "field",
]
