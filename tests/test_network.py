"""The finetune recipe: a network trained end to end, its final fit, its model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tympan.config import EFFICIENTAT_FEATURES, TrainConfig
from tympan.data.sources import discover
from tympan.inference.predict import Predictor
from tympan.models.modelfile import load_model, make_metadata, save_model
from tympan.workflows.recipes import create_recipe
from tympan.workflows.recipes.network import NetworkRecipe, final_epochs
from tympan.workflows.results import CVResult, FoldResult


def _cv(best_epochs: list[int | None]) -> CVResult:
    folds = [FoldResult(str(k), np.zeros(1, int), np.zeros(1, int), np.ones((1, 2)) / 2,
                        best_epoch=b) for k, b in enumerate(best_epochs)]
    return CVResult(["a", "b"], folds)


def test_final_fit_trains_the_folds_median_best_epoch_count() -> None:
    config = TrainConfig(model="cnn-s", epochs=30)
    assert final_epochs(_cv([3, 5, 9]), config) == 6  # epochs are 0-based: median of 4, 6, 10
    assert final_epochs(None, config) == 30
    assert final_epochs(_cv([None, None]), config) == 30
    assert final_epochs(_cv([3]), config.replace(val_fraction=0.0)) == 30  # nothing selected


def test_auto_mode_trains_a_scratch_model_end_to_end() -> None:
    recipe = create_recipe(TrainConfig(model="cnn-s"))
    assert isinstance(recipe, NetworkRecipe) and recipe.config.mode == "finetune"
    assert recipe.val_fraction == 0.15
    assert recipe.train_config()["mode"] == "finetune"


def test_a_finetune_model_file_loads_and_predicts_through_the_same_api(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path,
) -> None:
    manifest = discover(sound_classes_dir)
    config = TrainConfig(model="mn04_as", mode="finetune",
                         model_kwargs={"weights": str(mn04_weights)}, epochs=1, batch_size=16,
                         val_fraction=0.0, freeze_backbone_epochs=1, max_train_batches=2)
    recipe = create_recipe(config)
    data = recipe.featurise(manifest, workers=1)
    # batches of whole patches: short clips (0.75 s here) are padded for the network recipe
    assert EFFICIENTAT_FEATURES.min_patch_frames is not None  # the frozen default keeps them
    assert data.feature_config == EFFICIENTAT_FEATURES.replace(min_patch_frames=None)
    fitted = recipe.fit(data, np.arange(len(manifest)), split_seed=0)
    model = recipe.export(fitted, len(data.classes))
    metadata = make_metadata(model, data.classes, data.feature_config,
                             train_config=recipe.train_config())
    path = save_model(tmp_path / "ft.safetensors", model, metadata)
    loaded = load_model(path)
    probs = Predictor(loaded).predict_proba([manifest.clips[0].path])
    assert probs.shape == (1, len(data.classes))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, recipe.predict_proba(fitted, data, np.array([0])),
                               atol=1e-5)


def test_a_cnn_keeps_its_own_length_minimum_and_refuses_one_below_its_stack() -> None:
    import pytest
    from conftest import tiny_features

    from tympan.errors import ConfigError

    own = tiny_features().replace(min_patch_frames=16)
    recipe = NetworkRecipe(TrainConfig(model="cnn-s", features=own))
    assert recipe.feature_config().min_patch_frames == 16
    with pytest.raises(ConfigError, match="min_patch_frames=16: cnn-s needs at least 32"):
        NetworkRecipe(TrainConfig(model="cnn-s", features=own,
                                  model_kwargs={"channels": [4, 8, 8, 8, 8]})).feature_config()
    # networks whose batches hold whole patches pad short clips, as before
    crnn = NetworkRecipe(TrainConfig(model="crnn-s", features=own))
    assert crnn.feature_config().min_patch_frames is None


def test_a_cnn_trains_and_predicts_short_clips_at_their_own_length(tmp_path: Path) -> None:
    # clips of 0.1-0.45 s (6-28 frames) under a 32-frame patch, trained with mixup and
    # SpecAugment on padded masked batches; the model file predicts what the fit scored
    from conftest import tiny_features

    import tympan
    from tympan.workflows.demo import synth_arrays

    waves, labels = synth_arrays(6, seed=4, duration_seconds=0.5)
    rng = np.random.default_rng(0)
    waves = [w[: int(rng.uniform(0.1, 0.45) * 16000)] for w in waves]
    own = tiny_features().replace(min_patch_frames=4)
    clf = tympan.Classifier("cnn-s", epochs=2, batch_size=8, features=own,
                            model_kwargs={"channels": [4, 8], "hidden": 8}, mixup_alpha=0.3,
                            spec_time_mask_frames=2, early_stopping_patience=0).fit(waves, labels)
    assert clf.feature_config_.min_patch_frames == 4
    probs = clf.predict_proba(waves)
    assert np.isfinite(probs).all() and probs.shape == (24, 4)
    path = clf.save(tmp_path / "short.safetensors")
    loaded = load_model(path)
    assert loaded.feature_config.min_patch_frames == 4
    np.testing.assert_allclose(Predictor(loaded, batch_size=5).predict_proba(waves), probs,
                               atol=1e-5)


def test_new_cnn_s_models_keep_short_clips_at_their_own_length_by_default() -> None:
    from tympan import models
    from tympan.config import CNN_FEATURES, SEED_FEATURES

    assert models.default_features("cnn-s") == CNN_FEATURES == SEED_FEATURES.replace(
        min_patch_frames=16)
    assert NetworkRecipe(TrainConfig(model="cnn-s")).feature_config() == CNN_FEATURES
    # a deeper stack raises the registered minimum to its own (2 ** 5 blocks = 32 frames)
    deeper = NetworkRecipe(TrainConfig(model="cnn-s",
                                       model_kwargs={"channels": [4, 8, 8, 8, 8]}))
    assert deeper.feature_config().min_patch_frames == 32
    # cnn-m (not measured) and the CRNN pad to whole patches, as before
    assert NetworkRecipe(TrainConfig(model="cnn-m")).feature_config().min_patch_frames is None
    assert NetworkRecipe(TrainConfig(model="crnn-s")).feature_config() == SEED_FEATURES
