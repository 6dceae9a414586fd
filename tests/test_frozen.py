"""The frozen recipe: embeddings cached once, a logistic head per fit, leak-free copies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tympan.config import EFFICIENTAT_FEATURES, TrainConfig
from tympan.data.sources import discover
from tympan.errors import ConfigError, TympanError
from tympan.inference.predict import Predictor
from tympan.models.modelfile import load_model
from tympan.windows import split_patches
from tympan.workflows.crossval import cross_validate
from tympan.workflows.prepared import PreparedData
from tympan.workflows.recipes import create_recipe
from tympan.workflows.recipes.embeddings import EmbeddingExtractor
from tympan.workflows.recipes.frozen import FrozenRecipe, build_transfer_model
from tympan.workflows.run import prepare_data, run


def _frozen(weights: Path, **changes: Any) -> TrainConfig:
    return TrainConfig(mode="frozen", model_kwargs={"weights": str(weights)}, **changes)


def test_frozen_config_validates_and_round_trips() -> None:
    config = TrainConfig(mode="frozen", c_grid=(0.1, 1.0), time_shifts=1)
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="time_shifts"):
        TrainConfig(time_shifts=0)
    with pytest.raises(ValueError, match="c_grid"):
        TrainConfig(c_grid=(0.0,))


def test_frozen_mode_refuses_a_model_without_a_pretrained_backbone() -> None:
    with pytest.raises(TympanError, match="pretrained.*--mode finetune"):
        build_transfer_model(TrainConfig(model="cnn-s", mode="frozen"), 3)


def test_frozen_recipe_refuses_options_it_does_not_use() -> None:
    with pytest.raises(ConfigError, match="frozen recipe does not use epochs, mixup_alpha"):
        create_recipe(TrainConfig(mode="frozen", epochs=5, mixup_alpha=0.2))
    with pytest.raises(ConfigError, match="finetune recipe does not use c_grid"):
        create_recipe(TrainConfig(model="cnn-s", c_grid=(1.0,)))
    assert isinstance(create_recipe(TrainConfig()), FrozenRecipe)  # the default


def _noise_data(n_per_fold: int, n_folds: int, dim: int, copies_of_self: bool):  # type: ignore[no-untyped-def]
    from tympan.data.manifest import Clip, Manifest

    rng = np.random.default_rng(0)
    clips = [Clip(Path(f"/d/{f}-{i}.wav"), "ab"[i % 2], fold=f)
             for f in range(1, n_folds + 1) for i in range(n_per_fold)]
    embeddings = [rng.standard_normal((1, 1, dim)).astype(np.float32) for _ in clips]
    # a "copy" identical to its clip: if a test clip's copy ever trained the head,
    # the head would recall that clip's label from pure noise
    variants = [[e.copy()] for e in embeddings] if copies_of_self else None
    return PreparedData(Manifest(clips), embeddings, EFFICIENTAT_FEATURES, variants=variants)


def test_frozen_head_trains_on_the_copies_of_training_clips_only() -> None:
    from tympan.workflows.recipes.logistic import _rows, fit_head, head_probabilities

    data = _noise_data(n_per_fold=20, n_folds=4, dim=64, copies_of_self=True)
    x, y = _rows(data.items, np.array([0, 1]), data.labels, data.variants)
    assert x.shape == (4, 64) and y.tolist() == [data.labels[0]] * 2 + [data.labels[1]] * 2
    config = TrainConfig(mode="frozen", c_grid=(100.0,))
    cv = cross_validate(create_recipe(config), data)
    # labels are noise: held-out accuracy stays near chance (a leak would give ~100 %)
    assert cv.summary()["accuracy_mean"] < 0.75
    # while the same noise is recalled perfectly when the head did see it
    everything = np.arange(len(data.manifest))
    head = fit_head(data.items, data.labels, everything, 2, 100.0, config.max_iter,
                    data.variants)
    recalled = head_probabilities(head, data.items, everything).argmax(axis=1)
    assert (recalled == data.labels).mean() > 0.95


# -- end to end on a synthetic dataset (needs the weights) -------------------------------------


def test_copies_are_embedded_and_filtered_by_the_policy(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path,
) -> None:
    from tympan.augment.offline import load_augmented_manifest, make_copies
    from tympan.augment.plan import build_variants

    manifest = discover(sound_classes_dir)
    make_copies(manifest, tmp_path / "aug", build_variants([1.1]), workers=1)
    copies = load_augmented_manifest(tmp_path / "aug")
    recipe = create_recipe(_frozen(mn04_weights))
    data = prepare_data(recipe, manifest, augmented=copies)
    assert data.variants is not None and [len(v) for v in data.variants] == [1] * len(manifest)
    assert data.variants[0][0].shape[1:] == (2, 1536)
    assert not np.array_equal(data.variants[0][0], data.items[0])
    only_tone = {c: (["TS"] if c == "tone" else []) for c in manifest.classes}
    recipe = create_recipe(_frozen(mn04_weights, augment_policy=only_tone))
    data = prepare_data(recipe, manifest, augmented=copies)
    assert data.variants is not None
    assert [len(v) for v in data.variants] == [int(c.label == "tone") for c in manifest.clips]


def test_extractor_id_names_weights_embedding_shifts_and_front_end(mn04_weights: Path) -> None:
    model = build_transfer_model(_frozen(mn04_weights), 2)
    ids = {EmbeddingExtractor(model, EFFICIENTAT_FEATURES, shifts).extractor_id
           for shifts in (1, 2)}
    assert len(ids) == 2
    other_front = EFFICIENTAT_FEATURES.replace(patch_frames=300)
    assert EmbeddingExtractor(model, other_front, 2).extractor_id not in ids
    assert all("899a8c6217063f69" in i and "freq" in i for i in ids)


def test_embeddings_are_cached(sound_classes_dir: Path, mn04_weights: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = discover(sound_classes_dir)
    first = create_recipe(_frozen(mn04_weights)).featurise(manifest, workers=1)
    assert len(first.items) == len(manifest)
    assert first.items[0].shape == (1, 2, 1536)  # one patch, two shifts

    def refuse(self: EmbeddingExtractor, waves: list[np.ndarray]) -> list[np.ndarray]:
        raise AssertionError("embeddings were recomputed")

    monkeypatch.setattr(EmbeddingExtractor, "__call__", refuse)
    second = create_recipe(_frozen(mn04_weights)).featurise(manifest, workers=1)
    np.testing.assert_array_equal(second.items[3], first.items[3])


def test_frozen_run_end_to_end_and_its_model_file_predicts(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = discover(sound_classes_dir)
    config = _frozen(mn04_weights, folds=3)
    outcome = run(manifest, config, runs_dir=tmp_path / "runs", name="frozen", final=True)
    assert outcome.cv is not None and len(outcome.cv.folds) == 3
    assert outcome.cv.summary()["accuracy_mean"] >= 0.9  # tone/chirp/noise/click are easy
    metrics = json.loads((outcome.run_dir / "metrics.json").read_text())
    assert [f["C"] for f in metrics["extra"]["folds"].values()] == [
        f.info["C"] for f in outcome.cv.folds]
    assert all(f["info"]["C"] in config.c_grid for f in metrics["folds"])
    assert (outcome.run_dir / "report.md").is_file()
    assert outcome.model_path is not None

    # the model file carries the backbone: no pretrained weights are needed to use it
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path / "nothing-here"))
    loaded = load_model(outcome.model_path)
    assert loaded.metadata.train_config["mode"] == "frozen"
    assert loaded.feature_config == EFFICIENTAT_FEATURES
    paths = [c.path for c in manifest.clips]
    predicted = Predictor(loaded).predict(paths)
    truth = [c.label for c in manifest.clips]
    assert np.mean([p == t for p, t in zip(predicted, truth, strict=True)]) >= 0.9


def test_cli_trains_a_frozen_model(sound_classes_dir: Path, mn04_weights: Path,
                                   tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tympan.augment.offline import make_copies
    from tympan.augment.plan import build_variants
    from tympan.cli import app

    make_copies(discover(sound_classes_dir), tmp_path / "aug", build_variants([0.9]),
                workers=1)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": {"tone": ["TS"]}}))
    result = CliRunner().invoke(app, [
        "train", str(sound_classes_dir), "--model", "mn04_as", "--mode", "frozen",
        "--folds", "2", "--weights", str(mn04_weights), "--final", "--name", "f",
        "--runs-dir", str(tmp_path), "--no-progress",
        "--augmented", str(tmp_path / "aug"), "--augment-policy", str(policy),
    ])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f" / "model.safetensors").is_file()
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["extra"]["augmented_copies"] == 12  # the tone clips' copies only


def test_short_clips_embed_at_1_s_not_5_s_and_predict_as_in_cv(
    sound_classes_dir: Path, mn04_weights: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tympan import models

    short_front = EFFICIENTAT_FEATURES.replace(min_patch_frames=100)
    monkeypatch.setattr(models, "default_features", lambda name: short_front)
    manifest = discover(sound_classes_dir)  # 0.75 s clips: padded to 1 s, not to a 5 s patch
    recipe = create_recipe(_frozen(mn04_weights, embedding="freq+logits"))
    data = recipe.featurise(manifest, workers=1)
    extractor = recipe.extractor()
    wave = Predictor.from_model(extractor.model, ["x"], short_front).load(
        manifest.clips[0].path)
    spec = extractor.frontend(torch.from_numpy(wave))
    min_frames = short_front.min_patch_frames
    assert min_frames is not None and spec.shape[-1] < min_frames  # 76 frames
    patch = split_patches(spec, 500, 250, min_frames)
    assert isinstance(patch, torch.Tensor) and patch.shape == (1, 128, min_frames)  # not 500
    with torch.no_grad():
        own = extractor.model.embed_shifted(patch, 2).numpy()
    np.testing.assert_allclose(data.items[0], own, rtol=1e-4, atol=1e-4)

    everything = np.arange(len(manifest))
    fitted = recipe.fit(data, everything, split_seed=0)
    expected = recipe.predict_proba(fitted, data, everything)
    model = recipe.export(fitted, len(data.classes))
    predicted = Predictor.from_model(model, data.classes, short_front).predict_proba(
        [c.path for c in manifest.clips])
    np.testing.assert_allclose(predicted, expected, atol=2e-4)


_KILL_WHILE_EMBEDDING = '''
import functools, sys
import torch
torch.set_num_threads(1)
from tympan.config import TrainConfig
from tympan.data.cache import FeatureCache
from tympan.data.sources import discover
from tympan.workflows.run import run

data, runs, cache, config_json = sys.argv[1:5]
# persist every 8 clips (256 by default) so that the kill finds some embeddings saved
FeatureCache.get_with = functools.partialmethod(FeatureCache.get_with, flush_every=8)
# and give every batch of 8 a quarter second, so the kill lands mid-way on any machine
# (48 short clips embed in well under a second in batches)
import time
from tympan.workflows.recipes.embeddings import EmbeddingExtractor
_embed = EmbeddingExtractor.__call__
def _slow(self, waves):
    time.sleep(0.25)
    return _embed(self, waves)
EmbeddingExtractor.__call__ = _slow
run(discover(data), TrainConfig.from_json(config_json), runs_dir=runs, name="r", final=True,
    cache=FeatureCache(cache))
'''


@pytest.mark.slow
def test_a_frozen_run_killed_while_embedding_resumes_to_the_uninterrupted_result(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path
) -> None:
    """SIGKILL at a seeded random moment after the first embeddings are saved: the resumed
    run reuses them, embeds the rest and ends with the uninterrupted run's folds and head."""
    import sys

    from killing import kill_midway
    from safetensors.numpy import load_file

    from tympan.data.cache import FeatureCache
    from tympan.workflows.run import run

    config = TrainConfig(mode="frozen", folds=3, model_kwargs={"weights": str(mn04_weights)})
    cache = tmp_path / "cache"
    kill_midway([sys.executable, "-c", _KILL_WHILE_EMBEDDING, str(sound_classes_dir),
                 str(tmp_path / "killed"), str(cache), config.to_json()],
                lambda: any(cache.glob("*/index.json")), seed=5, max_delay_seconds=1.0,
                timeout=300)
    saved = json.loads(next(cache.glob("*/index.json")).read_text())["entries"]
    assert 0 < len(saved) < 48  # killed while embedding, some clips already saved
    assert not (tmp_path / "killed" / "r").exists()
    manifest = discover(sound_classes_dir)
    resumed = run(manifest, config, runs_dir=tmp_path / "killed", name="r", final=True,
                  resume=True, cache=FeatureCache(cache))
    straight = run(manifest, config, runs_dir=tmp_path / "straight", name="r", final=True,
                   cache=FeatureCache(tmp_path / "cache2"))
    assert resumed.cv is not None and straight.cv is not None
    for a, b in zip(resumed.cv.folds, straight.cv.folds, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert resumed.model_path is not None and straight.model_path is not None
    got, want = load_file(str(resumed.model_path)), load_file(str(straight.model_path))
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
