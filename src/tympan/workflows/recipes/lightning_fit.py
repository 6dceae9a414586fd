"""Fit one network on log-mel clips with Lightning: the engine of the ``finetune`` recipe.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from tympan.config import FeatureConfig, TrainConfig
from tympan.features import compute_log_mel
from tympan.workflows.recipes.lightning_module import (
    AtomicCheckpointIO,
    KeepBest,
    PatchClassifier,
    RecordEpoch,
    SaveLast,
)
from tympan.workflows.recipes.patches import ClipSet, PatchDataModule
from tympan.workflows.results import EpochLog

LAST_CHECKPOINT = "last.ckpt"


@dataclass
class FitResult:
    """A fitted network (best weights, eval mode, on the CPU) and how it got there.

    ``best_epoch`` is 0-based; ``history`` holds one :class:`EpochLog` per epoch run.
    """

    model: nn.Module
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0


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
    """The registry model the config names, with its kwargs (and ``dropout`` if set); a
    pretrained model starts from its pretrained weights (see :mod:`tympan.models.pretrained`)."""
    from tympan import models

    kwargs = dict(config.model_kwargs)
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    if models.model_info(config.model).pretrained:
        kwargs.setdefault("pretrained", True)
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
    ``config.devices``/``nodes``/``strategy`` run the fit distributed (DDP):
    ``batch_size`` patches per process and step, each process on its own shard
    of the epoch; every process returns the same weights.

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
        world = config.devices * config.nodes
        n_batches = math.ceil(len(data.train_set) / (config.batch_size * world))
        if config.max_train_batches is not None:
            n_batches = min(n_batches, config.max_train_batches)
        stack.enter_context(_quiet_lightning())
        trainer = L.Trainer(
            accelerator="auto", devices=config.devices, num_nodes=config.nodes,
            strategy=config.strategy, use_distributed_sampler=False,  # EpochShuffle shards
            precision=resolve_precision(config.precision),  # type: ignore[arg-type]
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


__all__ = ["FitResult", "LAST_CHECKPOINT", "build_model", "default_device", "fit",
           "resolve_precision", "waveforms_to_specs"]
