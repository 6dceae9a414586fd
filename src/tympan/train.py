"""Fit one model on log-mel clips with Lightning; predict clip probabilities.

Clips are cut into patches (:func:`tympan.features.split_patches`); every
patch trains with its clip's label, and a clip's probabilities are the mean of
its patches' softmax outputs, both for validation and for prediction.
Validation is scored per clip; it drives early stopping and the choice of the
weights kept (best ``monitor`` epoch). With a ``work_dir`` the fit writes CSV
and TensorBoard logs and an atomic ``checkpoints/last.ckpt`` every epoch, and
resumes from it when called again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tympan.config import FeatureConfig, TrainConfig
from tympan.errors import TympanError
from tympan.features import compute_log_mel, patch_starts, split_patches
from tympan.fileio import atomic_path
from tympan.predict import clip_mean
from tympan.results import EpochLog

LAST_CHECKPOINT = "last.ckpt"


@dataclass
class ClipSet:
    """Log-mel clips with integer labels, ready to train on or score.

    ``specs[i]`` is float32 ``(n_mels, frames)``; ``labels`` is ``(n_clips,)``
    int64. ``variants[i]`` lists extra training copies of clip ``i`` (offline
    augmentation), same label; they are used only when the set is trained on.
    """

    specs: Sequence[np.ndarray]
    labels: np.ndarray
    variants: Sequence[Sequence[np.ndarray]] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.specs) != len(self.labels):
            raise ValueError(f"{len(self.specs)} spectrograms but {len(self.labels)} labels")
        if self.variants is not None and len(self.variants) != len(self.specs):
            raise ValueError("variants must hold one list per clip")

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def n_variants(self) -> int:
        return sum(len(v) for v in self.variants) if self.variants is not None else 0


@dataclass
class FitResult:
    """A fitted network (best weights, eval mode, on the CPU) and how it got there.

    ``best_epoch`` is 0-based; ``history`` holds one :class:`EpochLog` per epoch run.
    """

    model: nn.Module
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0


def _pad_to_patch(spec: np.ndarray, patch_frames: int) -> np.ndarray:
    if spec.shape[-1] >= patch_frames:
        return spec
    # split_patches pads a short clip with its own minimum: keep one definition
    return np.asarray(split_patches(spec, patch_frames, patch_frames)[0])


class PatchDataset(Dataset[tuple[Tensor, Tensor]]):
    """Training patches: item ``k`` is ``(patch (n_mels, patch_frames), label)``.

    ``variant_mode="sample"`` keeps one item per patch of each original clip and
    draws, each time an item is read, the original or one of its copies;
    ``"all"`` makes every copy a clip of its own (a longer epoch).
    """

    def __init__(self, clips: ClipSet, feature_config: FeatureConfig,
                 variant_mode: str = "sample") -> None:
        self.patch_frames = feature_config.patch_frames
        hop = feature_config.patch_hop_frames
        groups: list[list[np.ndarray]] = []
        for i, spec in enumerate(clips.specs):
            copies = list(clips.variants[i]) if clips.variants is not None else []
            if variant_mode == "all":
                groups.extend([[spec]] + [[c] for c in copies])
            else:
                groups.append([spec, *copies])
        labels = clips.labels
        if variant_mode == "all" and clips.variants is not None:
            labels = np.concatenate([np.repeat(y, 1 + len(v))
                                     for y, v in zip(clips.labels, clips.variants, strict=True)])
        self.groups = [[_pad_to_patch(np.asarray(s, dtype=np.float32), self.patch_frames)
                        for s in g] for g in groups]
        self.starts = [[patch_starts(s.shape[-1], self.patch_frames, hop) for s in g]
                       for g in self.groups]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.items = [(g, k) for g, starts in enumerate(self.starts) for k in range(len(starts[0]))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        group, k = self.items[index]
        variant = 0
        if len(self.groups[group]) > 1:
            variant = int(torch.randint(len(self.groups[group]), ()).item())
        starts = self.starts[group][variant]
        # a stretched copy has more or fewer patches than its original
        start = starts[min(k, len(starts) - 1)]
        patch = self.groups[group][variant][:, start:start + self.patch_frames]
        return torch.tensor(patch), self.labels[group]  # a copy: cached specs are read-only


class ClipPatchDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Every patch of every clip, for scoring: ``(patch, label, clip index)``."""

    def __init__(self, clips: ClipSet, feature_config: FeatureConfig) -> None:
        self.patch_frames = feature_config.patch_frames
        self.specs = [_pad_to_patch(np.asarray(s, dtype=np.float32), self.patch_frames)
                      for s in clips.specs]
        self.labels = torch.as_tensor(clips.labels, dtype=torch.long)
        self.items = [(i, s) for i, spec in enumerate(self.specs)
                      for s in patch_starts(spec.shape[-1], self.patch_frames,
                                            feature_config.patch_hop_frames)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        clip, start = self.items[index]
        patch = self.specs[clip][:, start:start + self.patch_frames]
        return (torch.tensor(patch), self.labels[clip],
                torch.tensor(clip))


class PatchDataModule(L.LightningDataModule):
    """Training patches (shuffled) and validation patches (in order, with clip index)."""

    def __init__(self, train: ClipSet, val: ClipSet | None, feature_config: FeatureConfig,
                 config: TrainConfig) -> None:
        super().__init__()
        self.train_set = PatchDataset(train, feature_config, config.augment_variants)
        self.val_set = ClipPatchDataset(val, feature_config) if val is not None else None
        self.n_val_clips = len(val) if val is not None else 0
        self.config = config

    def _loader(self, dataset: Dataset[Any], shuffle: bool) -> DataLoader[Any]:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        if self.val_set is None:
            return []  # type: ignore[return-value]
        return self._loader(self.val_set, shuffle=False)


def _augmenters(config: TrainConfig) -> tuple[nn.Module | None, Any]:
    """SpecAugment module and mixup function the config asks for (None when off)."""
    spec_augment = None
    mixup: Any = None
    if config.spec_augment:
        try:
            from tympan.augment.specaugment import SpecAugment
        except ImportError as exc:
            raise TympanError(f"SpecAugment is configured but unavailable ({exc})") from exc
        spec_augment = SpecAugment(time_mask_frames=config.spec_time_mask_frames,
                                   freq_mask_bins=config.spec_freq_mask_bins,
                                   n_time_masks=config.spec_n_masks,
                                   n_freq_masks=config.spec_n_masks, seed=config.seed)
    if config.mixup_alpha > 0:
        try:
            from tympan.augment.mixup import mixup
        except ImportError as exc:
            raise TympanError(f"mixup is configured but unavailable ({exc})") from exc
    return spec_augment, mixup


class PatchClassifier(L.LightningModule):
    """Lightning wrapper: patch cross-entropy (+ L1), clip-level validation, history.

    A model with a ``backbone`` attribute gets ``lr * backbone_lr_scale`` for it
    and has it frozen (eval mode, no gradients) for the first
    ``freeze_backbone_epochs`` epochs.
    """

    def __init__(self, model: nn.Module, n_classes: int, config: TrainConfig,
                 n_val_clips: int = 0) -> None:
        super().__init__()
        self.model = model
        self.n_classes = n_classes
        self.config = config
        self.n_val_clips = n_val_clips
        self.spec_augment, self._mixup = _augmenters(config)
        self._mix_generator: torch.Generator | None = None
        self.history: list[EpochLog] = []
        self._train_sums = np.zeros(3)  # loss sum, correct, count
        self._val_probs: list[Tensor] = []
        self._val_index: list[Tensor] = []
        self._val_labels: list[Tensor] = []
        self._val_metrics: tuple[float, float] | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    @property
    def backbone(self) -> nn.Module | None:
        backbone = getattr(self.model, "backbone", None)
        return backbone if isinstance(backbone, nn.Module) else None

    def _backbone_frozen(self) -> bool:
        return self.backbone is not None and self.current_epoch < self.config.freeze_backbone_epochs

    def on_train_epoch_start(self) -> None:
        self._train_sums[:] = 0
        backbone = self.backbone
        if backbone is not None and self.config.freeze_backbone_epochs > 0:
            frozen = self._backbone_frozen()
            for p in backbone.parameters():
                p.requires_grad_(not frozen)
            if frozen:  # keep the pretrained batch-norm statistics while frozen
                backbone.eval()

    def _l1_penalty(self) -> Tensor:
        weights = [p.abs().sum() for n, p in self.model.named_parameters()
                   if p.requires_grad and p.ndim > 1]
        return self.config.l1 * torch.stack(weights).sum()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.spec_augment is not None:
            x = self.spec_augment(x)
        if self._mixup is not None:
            if self._mix_generator is None:  # CPU draws: the same mixes on any device
                self._mix_generator = torch.Generator()
                self._mix_generator.manual_seed(self.config.seed)
            x, target = self._mixup(x, F.one_hot(y, self.n_classes).to(x.dtype),
                                    self.config.mixup_alpha, self._mix_generator)
            logits = self(x)
            loss = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
        else:
            logits = self(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        total = loss + self._l1_penalty() if self.config.l1 > 0 else loss
        correct = (logits.argmax(dim=1) == y).sum()
        self._train_sums += [loss.item() * len(y), correct.item(), len(y)]
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("acc", correct.float() / len(y), prog_bar=True, on_step=True, on_epoch=False)
        return total

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        x, y, clip = batch
        self._val_probs.append(torch.softmax(self(x).float(), dim=1).cpu())
        self._val_index.append(clip.cpu())
        self._val_labels.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs).numpy()
        index = torch.cat(self._val_index).numpy()
        labels = torch.cat(self._val_labels).numpy()
        self._val_probs, self._val_index, self._val_labels = [], [], []
        n = int(index.max()) + 1
        clip_probs = clip_mean(probs, index, n)
        clip_labels = np.zeros(n, dtype=np.int64)
        clip_labels[index] = labels
        loss = float(-np.log(np.clip(clip_probs[np.arange(n), clip_labels], 1e-7, 1.0)).mean())
        accuracy = float((clip_probs.argmax(axis=1) == clip_labels).mean())
        self._val_metrics = (loss, accuracy)
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_accuracy", accuracy, prog_bar=True)

    def record_epoch(self) -> None:
        """Append this epoch's :class:`EpochLog` (called by :class:`RecordEpoch`)."""
        loss_sum, correct, count = self._train_sums
        val_loss, val_accuracy = self._val_metrics if self._val_metrics else (None, None)
        self._val_metrics = None
        entry = EpochLog(epoch=int(self.current_epoch), train_loss=float(loss_sum / max(count, 1)),
                         train_accuracy=float(correct / max(count, 1)),
                         val_loss=val_loss, val_accuracy=val_accuracy)
        self.history.append(entry)
        self.log("train_loss", entry.train_loss)
        self.log("train_accuracy", entry.train_accuracy)

    def configure_optimizers(self) -> Any:
        config = self.config
        backbone = self.backbone
        backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        rest = [p for p in self.model.parameters() if id(p) not in backbone_ids]
        groups: list[dict[str, Any]] = [{"params": rest, "lr": config.lr}]
        if backbone is not None:
            groups.append({"params": list(backbone.parameters()),
                           "lr": config.lr * config.backbone_lr_scale})
        optimizer: torch.optim.Optimizer
        if config.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
        elif config.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        else:
            optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True,
                                        weight_decay=config.weight_decay)
        if config.lr_schedule == "constant":
            return optimizer
        epochs = self.trainer.max_epochs if self.trainer.max_epochs else config.epochs
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tympan_history"] = [asdict(h) for h in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = [EpochLog(**h) for h in checkpoint.get("tympan_history", [])]


class RecordEpoch(Callback):
    """Closes each epoch's history entry before any other callback (checkpoints included)
    sees it: Lightning runs callbacks' ``on_train_epoch_end`` before the module's."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, PatchClassifier):
            pl_module.record_epoch()


class KeepBest(Callback):
    """Keeps a CPU copy of the weights at the best validation ``monitor`` value.

    Without validation the last epoch's weights are kept. Its state (weights,
    best value and epoch) goes into checkpoints, so a resumed fit keeps it.
    """

    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor = monitor
        self.mode = "min" if monitor.endswith("loss") else "max"
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = trainer.callback_metrics.get(self.monitor)
        has_val = getattr(pl_module, "n_val_clips", 0) > 0
        if has_val and metric is None:
            return
        value = float(metric) if metric is not None and has_val else None
        if value is None or self._improved(value):
            self.best_value = value
            self.best_epoch = int(trainer.current_epoch)
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in pl_module.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_value = state_dict["best_value"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_state = state_dict["best_state"]


class SaveLast(Callback):
    """Writes ``checkpoints/last.ckpt`` (atomically) after every epoch, for resuming."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary name and renamed: an interrupted save
    never leaves a truncated ``last.ckpt`` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def default_device() -> torch.device:
    """The device training and prediction use: the first GPU if any, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str) -> str:
    """``"auto"`` → ``"bf16-mixed"`` (or ``"16-mixed"``) on a GPU, ``"32-true"`` on the CPU."""
    if precision != "auto":
        return precision
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def build_model(config: TrainConfig, n_classes: int) -> nn.Module:
    """The registry model the config names, with its kwargs (and ``dropout`` if set)."""
    from tympan import models

    kwargs = dict(config.model_kwargs)
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    return models.create(config.model, n_classes, **kwargs)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banner lines and advice that does not apply here."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*is an invalid version.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*TensorBoard.*tensorboardX.*")
        warnings.filterwarnings("ignore", message=".*`isinstance.*treespec.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def fit(
    train: ClipSet,
    val: ClipSet | None,
    *,
    n_classes: int,
    config: TrainConfig,
    feature_config: FeatureConfig,
    work_dir: str | Path | None = None,
    epochs: int | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``config.model`` on ``train`` patches, selecting weights on ``val`` clips.

    ``epochs`` overrides ``config.epochs``. With ``val`` (at least one clip),
    early stopping (``config.early_stopping_patience`` epochs on
    ``config.monitor``) applies and the best epoch's weights are returned;
    without, the last epoch's. With ``work_dir``, logs go to
    ``work_dir/logs/{csv,tensorboard}/version_<n>`` and ``work_dir/checkpoints/last.ckpt``
    is written every epoch; a call finding that checkpoint resumes from it.
    ``config.seed`` seeds everything, so a run is repeatable on one machine.

    Raises:
        ValueError: ``train`` is empty.
    """
    if len(train) == 0:
        raise ValueError("no training clips")
    if val is not None and len(val) == 0:
        val = None
    max_epochs = epochs if epochs is not None else config.epochs
    started = time.perf_counter()
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config, n_classes)
    data = PatchDataModule(train, val, feature_config, config)
    module = PatchClassifier(model, n_classes, config, n_val_clips=data.n_val_clips)
    keep_best = KeepBest(config.monitor)
    all_callbacks: list[Callback] = [RecordEpoch(), keep_best]
    if val is not None and config.early_stopping_patience > 0:
        mode = "min" if config.monitor.endswith("loss") else "max"
        all_callbacks.append(EarlyStopping(monitor=config.monitor, mode=mode,
                                           patience=config.early_stopping_patience,
                                           check_on_train_epoch_end=False))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        all_callbacks.append(RichProgressBar(leave=True))
    resume: Path | None = None
    loggers: list[Any] | bool = False
    with contextlib.ExitStack() as stack:
        if work_dir is not None:
            root = Path(work_dir)
            last = root / "checkpoints" / LAST_CHECKPOINT
            all_callbacks.append(SaveLast(last))
            resume = last if last.is_file() else None
            from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

            # a new version folder per session: a resumed fit keeps the earlier logs
            loggers = [CSVLogger(root / "logs", name="csv"),
                       TensorBoardLogger(root / "logs", name="tensorboard",
                                         default_hp_metric=False)]
        else:
            import tempfile

            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tympan-fit-")))
        all_callbacks.extend(callbacks)
        n_batches = math.ceil(len(data.train_set) / config.batch_size)
        if config.max_train_batches is not None:
            n_batches = min(n_batches, config.max_train_batches)
        stack.enter_context(_quiet_lightning())
        trainer = L.Trainer(
            accelerator="auto", devices=1, precision=resolve_precision(config.precision),  # type: ignore[arg-type]
            max_epochs=max_epochs, deterministic="warn", logger=loggers,
            callbacks=all_callbacks, enable_checkpointing=False,
            enable_progress_bar=progress, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=root,
            log_every_n_steps=max(1, min(50, n_batches)),
            limit_train_batches=config.max_train_batches or 1.0,
            limit_val_batches=1.0 if val is not None else 0,
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    if keep_best.best_state is not None:
        module.load_state_dict(keep_best.best_state)
    model = module.model.to("cpu").eval()
    return FitResult(model=model, history=list(module.history), best_epoch=keep_best.best_epoch,
                     seconds=time.perf_counter() - started)


def waveforms_to_specs(
    waveforms: Sequence[np.ndarray], feature_config: FeatureConfig
) -> list[np.ndarray]:
    """Log-mels ``(n_mels, frames)`` of mono float32 waveforms at the config's rate."""
    return [compute_log_mel(np.asarray(w, dtype=np.float32), feature_config) for w in waveforms]


__all__ = [
    "ClipSet",
    "FitResult",
    "KeepBest",
    "PatchClassifier",
    "PatchDataModule",
    "PatchDataset",
    "default_device",
    "fit",
    "resolve_precision",
    "waveforms_to_specs",
]
