"""Fitting one network with Lightning: validation, history, seeds, resume, backbones, augmenters."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from tympan import models
from tympan.config import TrainConfig
from tympan.errors import DivergedError
from tympan.models import registry
from tympan.workflows.demo import DEMO_CLASSES, DEMO_FEATURES, synth_arrays
from tympan.workflows.recipes.lightning_fit import fit, waveforms_to_specs
from tympan.workflows.recipes.lightning_module import PatchClassifier
from tympan.workflows.recipes.patches import ClipSet, PatchDataset

SMALL = {"channels": [8, 16, 32], "hidden": 32}
CONFIG = TrainConfig(model="cnn-s", model_kwargs=SMALL, features=DEMO_FEATURES, epochs=3,
                     batch_size=16, lr=3e-3, early_stopping_patience=0)


def _clips(n_per_class: int, seed: int) -> ClipSet:
    waves, labels = synth_arrays(n_per_class, seed=seed, duration_seconds=0.75)
    return ClipSet(waveforms_to_specs(waves, DEMO_FEATURES),
                   np.array([DEMO_CLASSES.index(label) for label in labels]))


@pytest.fixture(scope="module")
def clips() -> tuple[ClipSet, ClipSet]:
    return _clips(6, seed=1), _clips(2, seed=2)


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fit_returns_best_model_and_history(clips: tuple[ClipSet, ClipSet]) -> None:
    train, val = clips
    result = fit(train, val, n_classes=4, config=CONFIG, feature_config=DEMO_FEATURES)
    assert [h.epoch for h in result.history] == [0, 1, 2]
    for h in result.history:
        assert np.isfinite(h.train_loss) and 0 <= h.train_accuracy <= 1
        assert h.val_loss is not None and h.val_accuracy is not None
    losses = [h.val_loss for h in result.history]
    assert result.best_epoch == int(np.argmin(losses))
    assert not result.model.training
    assert result.model.model_name == "cnn-s"


def test_same_seed_same_model_other_seed_other_model(clips: tuple[ClipSet, ClipSet]) -> None:
    train, val = clips
    config = CONFIG.replace(epochs=2)
    a = fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES)
    b = fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES)
    c = fit(train, val, n_classes=4, config=config.replace(seed=1), feature_config=DEMO_FEATURES)
    assert torch.equal(_weights(a.model), _weights(b.model))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert not torch.equal(_weights(a.model), _weights(c.model))


def test_without_validation_the_last_epoch_is_kept(clips: tuple[ClipSet, ClipSet]) -> None:
    train, _ = clips
    result = fit(train, None, n_classes=4, config=CONFIG.replace(epochs=2),
                 feature_config=DEMO_FEATURES)
    assert result.best_epoch == 1
    assert all(h.val_loss is None for h in result.history)


class _Crash(L.Callback):
    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.at_epoch:
            raise RuntimeError("simulated interruption")


def test_interrupted_fit_resumes_from_last_checkpoint(
    clips: tuple[ClipSet, ClipSet], tmp_path: Path
) -> None:
    train, val = clips
    config = CONFIG.replace(epochs=4)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        # the crash callback runs after the checkpoint writer: epoch 1 is saved
        fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES,
            work_dir=tmp_path, callbacks=[_Crash(1)])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert not list(last.parent.glob(".*.tmp"))  # written atomically
    saved = torch.load(last, weights_only=False)
    epochs_done = [h["epoch"] for h in saved["tympan_history"]]
    assert epochs_done == [0, 1]
    resumed = fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES,
                  work_dir=tmp_path)
    assert [h.epoch for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[0].train_loss == saved["tympan_history"][0]["train_loss"]
    # the same weights as a fit that was never interrupted: every epoch's randomness
    # (order, dropout, masks) depends on the seed and the epoch alone
    straight = fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES)
    assert torch.equal(_weights(resumed.model), _weights(straight.model))
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in straight.history]
    csv_logs = sorted((tmp_path / "logs" / "csv").glob("version_*/metrics.csv"))
    assert len(csv_logs) == 2  # the interrupted session's log is kept beside the resumed one
    assert list((tmp_path / "logs" / "tensorboard").glob("version_*/events.*"))


def test_patch_dataset_counts_patches_and_samples_variants() -> None:
    spec = np.zeros((64, 63), np.float32)  # 63 frames, 32-frame patches, hop 16 → 3 patches
    copy = np.ones((64, 40), np.float32)  # a shorter (stretched) copy → 2 patches
    clips = ClipSet([spec, spec[:, :20]], np.array([0, 1]), variants=[[copy], []])
    sampled = PatchDataset(clips, DEMO_FEATURES, "sample")
    assert len(sampled) == 3 + 1  # the 20-frame clip is padded to one patch
    torch.manual_seed(0)
    seen = {float(sampled[2][0].mean()) for _ in range(40)}
    assert seen == {0.0, 1.0}  # original and copy are both drawn
    x, y = sampled[3]
    assert x.shape == (64, 32) and int(y) == 1
    every = PatchDataset(clips, DEMO_FEATURES, "all")
    assert len(every) == 3 + 2 + 1
    assert [int(every[i][1]) for i in range(len(every))] == [0, 0, 0, 0, 0, 1]


class _WithBackbone(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.config: dict[str, object] = {}
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64 * 32, 16), nn.BatchNorm1d(16))
        self.head = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.backbone(x)))


@pytest.fixture
def backbone_model() -> object:
    registry.register_model("test-backbone", default_features=DEMO_FEATURES)(
        lambda n_classes, **kw: _WithBackbone(n_classes))
    yield
    registry._REGISTRY.pop("test-backbone")


def test_backbone_gets_scaled_lr_and_is_frozen_first(
    clips: tuple[ClipSet, ClipSet], backbone_model: object
) -> None:
    train, val = clips
    config = TrainConfig(model="test-backbone", epochs=1, lr=1e-2, backbone_lr_scale=0.1,
                         freeze_backbone_epochs=1, early_stopping_patience=0,
                         lr_schedule="constant")
    torch.manual_seed(0)
    module = PatchClassifier(models.create("test-backbone", 4), 4, config)
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-2, 1e-3]
    frozen = fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES)
    L.seed_everything(0, verbose=False)
    initial = models.create("test-backbone", 4)
    assert torch.equal(_weights(frozen.model.backbone), _weights(initial.backbone))
    assert not torch.equal(_weights(frozen.model.head), _weights(initial.head))
    thawed = fit(train, val, n_classes=4, config=config.replace(epochs=2),
                 feature_config=DEMO_FEATURES)
    assert not torch.equal(_weights(thawed.model.backbone), _weights(initial.backbone))


def test_l1_penalty_sums_absolute_weights() -> None:
    model = models.create("cnn-s", 2, **SMALL)
    module = PatchClassifier(model, 2, CONFIG.replace(l1=0.5))
    expected = 0.5 * sum(p.abs().sum() for p in model.parameters() if p.ndim > 1)
    assert torch.isclose(module._l1_penalty(), expected)


class _Spy(nn.Module):
    """Records what the network is fed."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("changes", [{"mixup_alpha": 0.4},
                                     {"spec_time_mask_frames": 8, "spec_freq_mask_bins": 16},
                                     {}])
def test_mixup_and_specaugment_change_what_the_network_sees(changes: dict[str, float]) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64, 32)
    y = torch.arange(8) % 4
    spy = _Spy(models.create("cnn-s", 4, **SMALL))
    module = PatchClassifier(spy, 4, CONFIG.replace(**changes))
    module.on_train_epoch_start()
    loss = module.training_step((x, y), 0)
    assert torch.isfinite(loss)
    fed = spy.seen[-1]
    if changes:  # a configured augmenter that were silently skipped would feed x itself
        assert not torch.equal(fed, x)
    else:
        assert torch.equal(fed, x)
    if "mixup_alpha" in changes:  # every mixed patch is a convex blend: inside x's range
        assert fed.min() >= x.min() - 1e-5 and fed.max() <= x.max() + 1e-5
    if "spec_time_mask_frames" in changes:  # masked cells are set to a constant: some equal
        assert (fed == x).float().mean() < 1.0 and (fed != x).any()


def test_mixup_changes_the_trained_weights(clips: tuple[ClipSet, ClipSet]) -> None:
    train, val = clips
    config = CONFIG.replace(epochs=1)
    plain = fit(train, val, n_classes=4, config=config, feature_config=DEMO_FEATURES)
    mixed = fit(train, val, n_classes=4, config=config.replace(mixup_alpha=0.4),
                feature_config=DEMO_FEATURES)
    masked = fit(train, val, n_classes=4, config=config.replace(spec_time_mask_frames=8),
                 feature_config=DEMO_FEATURES)
    assert not torch.equal(_weights(plain.model), _weights(mixed.model))
    assert not torch.equal(_weights(plain.model), _weights(masked.model))


def test_a_diverged_fit_stops_with_a_clear_error(clips: tuple[ClipSet, ClipSet]) -> None:
    train, val = clips
    with pytest.raises(DivergedError, match=r"non-finite loss at epoch \d+.*lower the learning"):
        fit(train, val, n_classes=4, config=CONFIG.replace(lr=1e12, epochs=2),
            feature_config=DEMO_FEATURES)


def test_train_config_round_trips_and_validates(tmp_path: Path) -> None:
    config = TrainConfig(model="crnn-s", model_kwargs={"channels": [8, 16]},
                         features=DEMO_FEATURES, augment_policy={"dog": ["TS", "PS1"]},
                         mixup_alpha=0.3, folds=0)
    config.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == config
    assert TrainConfig.from_json(TrainConfig().to_json()) == TrainConfig()
    assert TrainConfig().model == "mn04_as" and TrainConfig().mode == "auto"
    assert not TrainConfig().spec_augment
    assert TrainConfig(spec_time_mask_frames=8).spec_augment
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"val_fraction": 1.0}, {"mixup_alpha": -1.0},
                {"max_train_batches": 0}, {"l1": -1e-3}):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            TrainConfig(**bad)
