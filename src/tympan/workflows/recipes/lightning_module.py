"""The Lightning module that trains a patch classifier, and the callbacks around it.

Patch cross-entropy (with mixup, SpecAugment, label smoothing, L1), clip-level
validation (the mean of a clip's patch softmaxes, :func:`tympan.windows.clip_mean`),
per-epoch history, best-weights keeping and atomic checkpoints. Every source of
randomness is reseeded from ``(seed, epoch)`` at the start of each epoch, so a
fit resumed from its last checkpoint ends with the same weights as one that
was never interrupted.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

from tympan.config import TrainConfig
from tympan.errors import DivergedError, TympanError
from tympan.fileio import atomic_path
from tympan.windows import clip_mean
from tympan.workflows.recipes.patches import epoch_seed
from tympan.workflows.results import EpochLog


def _augmenters(config: TrainConfig) -> tuple[nn.Module | None, Any]:
    """SpecAugment module and mixup function the config asks for (None when off); the mixup
    function takes drawn :func:`~tympan.augment.mixup.mixup_parameters`."""
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
            from tympan.augment.mixup import mix as mixup
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

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits of patches ``x``; ``lengths`` ``(batch,)``: real frames of each patch of a
        zero-padded batch of unequal widths (passed on only when some are shorter)."""
        if lengths is not None and bool((lengths < x.shape[-1]).any()):
            return self.model(x, lengths)  # type: ignore[no-any-return]
        return self.model(x)  # type: ignore[no-any-return]

    @property
    def backbone(self) -> nn.Module | None:
        backbone = getattr(self.model, "backbone", None)
        return backbone if isinstance(backbone, nn.Module) else None

    def _backbone_frozen(self) -> bool:
        return self.backbone is not None and self.current_epoch < self.config.freeze_backbone_epochs

    def on_train_epoch_start(self) -> None:
        self._train_sums[:] = 0
        # Randomness from (seed, epoch) alone: dropout, variant draws, masks and mixes of
        # a resumed epoch are those of an uninterrupted fit.
        seed = epoch_seed(self.config.seed, int(self.current_epoch))
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        if self.spec_augment is not None:
            generator = self.spec_augment.generator
            assert isinstance(generator, torch.Generator)
            generator.manual_seed(seed + 1)
        if self._mixup is not None:
            self._mix_generator = torch.Generator()
            self._mix_generator.manual_seed(seed + 2)
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

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """``batch``: ``(patches, labels)``, plus real widths with short clips at their own
        length (:func:`~tympan.workflows.recipes.patches.pad_batch`)."""
        x, y = batch[0], batch[1]
        lengths = batch[2] if len(batch) > 2 else None
        # dropout draws from (seed, epoch, batch) alone: how much random state the loaders
        # used before this batch (they differ between a fresh and a resumed fit) cannot matter
        torch.manual_seed(epoch_seed(self.config.seed, int(self.current_epoch)) + 7 * batch_idx)
        if self.spec_augment is not None:
            x = self.spec_augment(x)
        if self._mixup is not None:
            assert self._mix_generator is not None  # CPU draws: the same mixes on any device
            from tympan.augment.mixup import mixup_parameters

            lam, perm = mixup_parameters(x.shape[0], self.config.mixup_alpha,
                                         self._mix_generator)
            x, target = self._mixup(x, F.one_hot(y, self.n_classes).to(x.dtype), lam, perm)
            if lengths is not None:  # a mix is as long as the longer of its two patches
                lengths = torch.maximum(lengths, lengths[torch.as_tensor(perm).to(lengths.device)])
            logits = self(x, lengths)
            loss = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
        else:
            logits = self(x, lengths)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"training diverged: non-finite loss at epoch {int(self.current_epoch) + 1}, "
                f"batch {batch_idx + 1}; lower the learning rate (lr={self.config.lr:g})"
            )
        total = loss + self._l1_penalty() if self.config.l1 > 0 else loss
        correct = (logits.argmax(dim=1) == y).sum()
        self._train_sums += [loss.item() * len(y), correct.item(), len(y)]
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("acc", correct.float() / len(y), prog_bar=True, on_step=True, on_epoch=False)
        return total

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y, clip = batch[:3]
        lengths = batch[3] if len(batch) > 3 else None
        self._val_probs.append(torch.softmax(self(x, lengths).float(), dim=1).cpu())
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
        # every rank scored every clip: the ranks' values agree, the mean keeps them
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)
        self.log("val_accuracy", accuracy, prog_bar=True, sync_dist=True)

    def record_epoch(self) -> None:
        """Append this epoch's :class:`EpochLog` (called by :class:`RecordEpoch`); under DDP
        the training loss and accuracy are those of every rank's patches together."""
        sums = torch.as_tensor(self._train_sums, dtype=torch.float64)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()
        loss_sum, correct, count = sums.tolist()
        val_loss, val_accuracy = self._val_metrics if self._val_metrics else (None, None)
        self._val_metrics = None
        entry = EpochLog(epoch=int(self.current_epoch), train_loss=float(loss_sum / max(count, 1)),
                         train_accuracy=float(correct / max(count, 1)),
                         val_loss=val_loss, val_accuracy=val_accuracy)
        self.history.append(entry)
        # already summed over ranks: the same on every rank
        self.log("train_loss", entry.train_loss, sync_dist=True)
        self.log("train_accuracy", entry.train_accuracy, sync_dist=True)

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


__all__ = ["AtomicCheckpointIO", "KeepBest", "PatchClassifier", "RecordEpoch", "SaveLast"]
