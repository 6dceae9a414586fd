"""Transfer learning: the mn04_as registry model, the frozen workflow and its model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan import models
from tympan.config import EFFICIENTAT_FEATURES
from tympan.data.sources import discover
from tympan.errors import TympanError
from tympan.modelfile import load_model, make_metadata, save_model
from tympan.predict import Predictor
from tympan.transfer import (
    EmbeddingExtractor,
    FrozenConfig,
    LogisticHead,
    build_transfer_model,
    embed_manifest,
    fit_logistic,
    install_head,
    run_frozen,
)

# -- the registry model (random backbone: no weights needed) -----------------------------------


def test_mn04_registry_entry_uses_the_efficientat_front_end() -> None:
    info = models.model_info("mn04_as")
    assert info.pretrained and info.family == "efficientat"
    assert models.default_features("mn04_as") == EFFICIENTAT_FEATURES


@pytest.mark.parametrize(("embedding", "dim"), [("pooled", 384), ("hidden", 512),
                                                ("freq", 1536)])
def test_embeddings_have_their_documented_size(embedding: str, dim: int) -> None:
    model = models.create("mn04_as", 4, pretrained=False, embedding=embedding).eval()
    x = torch.randn(2, 128, 200)
    assert model.embed(x).shape == (2, dim)
    assert model(x).shape == (2, 4)


def test_config_never_asks_for_pretrained_weights_again() -> None:
    model = models.create("mn04_as", 3, pretrained=False, time_shifts=2)
    assert model.config["pretrained"] is False
    rebuilt = models.create("mn04_as", 3, **model.config)
    assert rebuilt.config == model.config


def test_time_shift_averaging_is_the_mean_softmax_over_rolled_patches() -> None:
    torch.manual_seed(0)
    model = models.create("mn04_as", 5, pretrained=False, time_shifts=2).eval()
    x = torch.randn(3, 128, 100)
    with torch.no_grad():
        plain = torch.softmax(model.head(model.embed(x)), -1)
        rolled = torch.softmax(model.head(model.embed(torch.roll(x, 50, -1))), -1)
        averaged = torch.softmax(model(x), -1)
    torch.testing.assert_close(averaged, (plain + rolled) / 2, atol=1e-6, rtol=1e-5)
    model.train()
    with torch.no_grad():  # training mode sees the patch as is (dropout aside)
        assert model(x).shape == (3, 5)


def test_pretrained_backbone_holds_the_checkpoint(mn04_weights: Path) -> None:
    model = models.create("mn04_as", 3, weights=mn04_weights)
    state = torch.load(mn04_weights, weights_only=True)
    torch.testing.assert_close(model.backbone.features[16][0].weight,
                               state["features.16.0.weight"])
    hidden = models.create("mn04_as", 3, weights=mn04_weights, embedding="hidden")
    torch.testing.assert_close(hidden.backbone.hidden[0].weight, state["classifier.2.weight"])


# -- the head ---------------------------------------------------------------------------------


def test_fit_logistic_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    weight, bias = fit_logistic(x, y, 3, C=0.5, max_iter=500)
    reference = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(weight, reference.coef_, atol=2e-3)
    np.testing.assert_allclose(bias, reference.intercept_, atol=2e-3)


def test_folded_head_gives_the_same_logits_in_the_model() -> None:
    rng = np.random.default_rng(1)
    head = LogisticHead(weight=rng.normal(size=(3, 384)), bias=rng.normal(size=3),
                        mean=rng.normal(size=384), scale=rng.uniform(0.5, 2, 384), C=1.0)
    model = models.create("mn04_as", 3, pretrained=False).eval()
    install_head(model, head)
    x = torch.randn(2, 128, 64)
    with torch.no_grad():
        embedding = model.embed(x).double().numpy()
        np.testing.assert_allclose(model(x).double().numpy(), head.logits(embedding),
                                   rtol=1e-4, atol=1e-4)


def test_an_mlp_head_cannot_take_a_logistic_regression() -> None:
    model = models.create("mn04_as", 3, pretrained=False, head_hidden=16)
    head = LogisticHead(np.zeros((3, 384)), np.zeros(3), np.zeros(384), np.ones(384), 1.0)
    with pytest.raises(TympanError, match="one Linear layer"):
        install_head(model, head)


def test_frozen_config_validates_and_round_trips() -> None:
    config = FrozenConfig(c_grid=(0.1, 1.0), time_shifts=1)
    assert FrozenConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="time_shifts"):
        FrozenConfig(time_shifts=0)
    with pytest.raises(ValueError, match="c_grid"):
        FrozenConfig(c_grid=(0.0,))


def test_frozen_mode_refuses_a_model_without_a_pretrained_backbone() -> None:
    with pytest.raises(TympanError, match="pretrained"):
        build_transfer_model(FrozenConfig(model="cnn-s"), 3)


def _noise_data(n_per_fold: int, n_folds: int, dim: int, copies_of_self: bool):  # type: ignore[no-untyped-def]
    from tympan.data.manifest import Clip, Manifest
    from tympan.transfer import EmbeddedData

    rng = np.random.default_rng(0)
    clips = [Clip(Path(f"/d/{f}-{i}.wav"), "ab"[i % 2], fold=f)
             for f in range(1, n_folds + 1) for i in range(n_per_fold)]
    embeddings = [rng.standard_normal((1, 1, dim)).astype(np.float32) for _ in clips]
    # a "copy" identical to its clip: if a test clip's copy ever trained the head,
    # the head would recall that clip's label from pure noise
    variants = [[e.copy()] for e in embeddings] if copies_of_self else None
    return EmbeddedData(Manifest(clips), embeddings, EFFICIENTAT_FEATURES, variants=variants)


def test_frozen_head_trains_on_the_copies_of_training_clips_only() -> None:
    from tympan.transfer import _rows, cross_validate_frozen

    data = _noise_data(n_per_fold=20, n_folds=4, dim=64, copies_of_self=True)
    x, y = _rows(data.embeddings, np.array([0, 1]), data.labels, data.variants)
    assert x.shape == (4, 64) and y.tolist() == [data.labels[0]] * 2 + [data.labels[1]] * 2
    config = FrozenConfig(c_grid=(100.0,))
    cv, _ = cross_validate_frozen(data, config)
    # labels are noise: held-out accuracy stays near chance (a leak would give ~100 %)
    assert cv.summary()["accuracy_mean"] < 0.75
    # while the same noise is recalled perfectly when the head did see it
    from tympan.transfer import clip_probabilities, fit_head

    everything = np.arange(len(data.manifest))
    head = fit_head(data.embeddings, data.labels, everything, 2, 100.0, config.max_iter,
                    data.variants)
    recalled = clip_probabilities(head, data.embeddings, everything).argmax(axis=1)
    assert (recalled == data.labels).mean() > 0.95


# -- end to end on a synthetic dataset (needs the weights) -------------------------------------


def test_copies_are_embedded_and_filtered_by_the_policy(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path,
) -> None:
    from tympan.augment.offline import build_variants, load_augmented_manifest, make_copies

    manifest = discover(sound_classes_dir)
    make_copies(manifest, tmp_path / "aug", build_variants([1.1]), workers=1)
    copies = load_augmented_manifest(tmp_path / "aug")
    config = FrozenConfig(weights=str(mn04_weights))
    data = embed_manifest(manifest, config, augmented=copies, workers=1)
    assert data.variants is not None and [len(v) for v in data.variants] == [1] * len(manifest)
    assert data.variants[0][0].shape[1:] == (2, 1536)
    assert not np.array_equal(data.variants[0][0], data.embeddings[0])
    only_tone = {c: (["TS"] if c == "tone" else []) for c in manifest.classes}
    data = embed_manifest(manifest, config, augmented=copies, policy=only_tone, workers=1)
    assert data.variants is not None
    assert [len(v) for v in data.variants] == [int(c.label == "tone") for c in manifest.clips]


def test_extractor_id_names_weights_embedding_shifts_and_front_end(mn04_weights: Path) -> None:
    model = build_transfer_model(FrozenConfig(weights=str(mn04_weights)), 2)
    ids = {EmbeddingExtractor(model, EFFICIENTAT_FEATURES, shifts).extractor_id
           for shifts in (1, 2)}
    assert len(ids) == 2
    other_front = EFFICIENTAT_FEATURES.replace(patch_frames=300)
    assert EmbeddingExtractor(model, other_front, 2).extractor_id not in ids
    assert all("899a8c6217063f69" in i and "freq" in i for i in ids)


def test_embeddings_are_cached(sound_classes_dir: Path, mn04_weights: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = discover(sound_classes_dir)
    config = FrozenConfig(weights=str(mn04_weights))
    first = embed_manifest(manifest, config, workers=1)
    assert len(first.embeddings) == len(manifest)
    assert first.embeddings[0].shape == (1, 2, 1536)  # one patch, two shifts

    def refuse(self: EmbeddingExtractor, waves: list[np.ndarray]) -> list[np.ndarray]:
        raise AssertionError("embeddings were recomputed")

    monkeypatch.setattr(EmbeddingExtractor, "__call__", refuse)
    second = embed_manifest(manifest, config, workers=1)
    np.testing.assert_array_equal(second.embeddings[3], first.embeddings[3])


def test_frozen_run_end_to_end_and_its_model_file_predicts(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = discover(sound_classes_dir)
    config = FrozenConfig(folds=3, weights=str(mn04_weights))
    outcome = run_frozen(manifest, config, runs_dir=tmp_path / "runs", name="frozen",
                         final=True)
    assert outcome.cv is not None and len(outcome.cv.folds) == 3
    assert outcome.cv.summary()["accuracy_mean"] >= 0.9  # tone/chirp/noise/click are easy
    metrics = json.loads((outcome.run_dir / "metrics.json").read_text())
    assert len(metrics["extra"]["C_per_fold"]) == 3
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


def test_a_finetune_model_file_loads_and_predicts_through_the_same_api(
    sound_classes_dir: Path, mn04_weights: Path, tmp_path: Path,
) -> None:
    from tympan.config import TrainConfig
    from tympan.evaluate import prepare
    from tympan.train import fit

    manifest = discover(sound_classes_dir)
    config = TrainConfig(model="mn04_as", model_kwargs={"weights": str(mn04_weights)},
                         epochs=1, batch_size=16, val_fraction=0.0, freeze_backbone_epochs=1,
                         max_train_batches=2)
    data = prepare(manifest, EFFICIENTAT_FEATURES, workers=1)
    fitted = fit(data.clip_set(np.arange(len(manifest))), None, n_classes=len(data.classes),
                 config=config, feature_config=EFFICIENTAT_FEATURES)
    metadata = make_metadata(fitted.model, data.classes, EFFICIENTAT_FEATURES,
                             train_config=config.to_dict())
    path = save_model(tmp_path / "ft.safetensors", fitted.model, metadata)
    loaded = load_model(path)
    probs = Predictor(loaded).predict_proba([manifest.clips[0].path])
    assert probs.shape == (1, len(data.classes))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)


def test_cli_trains_a_frozen_model(sound_classes_dir: Path, mn04_weights: Path,
                                   tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tympan.augment.offline import build_variants, make_copies
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
