"""tympan.Classifier: scikit-learn manners, fit on paths/arrays/folders, save → load → predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tympan
from tympan.classifier import NotFittedError
from tympan.workflows.demo import DEMO_FEATURES, synth_arrays

PARAMS = {"epochs": 10, "batch_size": 8, "features": DEMO_FEATURES, "early_stopping_patience": 0}


@pytest.fixture(scope="module")
def fitted() -> tympan.Classifier:
    waves, labels = synth_arrays(10, seed=11, duration_seconds=0.75)
    return tympan.Classifier("cnn-s", **PARAMS).fit(waves, labels)


def test_classifier_is_exported_lazily() -> None:
    import subprocess
    import sys

    code = "import sys, tympan; assert 'torch' not in sys.modules; tympan.Classifier"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_on_waveforms_learns_the_classes(fitted: tympan.Classifier) -> None:
    assert list(fitted.classes_) == ["chirp", "click", "noise", "tone"]
    waves, labels = synth_arrays(4, seed=12, duration_seconds=0.75)
    probabilities = fitted.predict_proba(waves)
    assert probabilities.shape == (16, 4)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert fitted.score(waves, labels) >= 0.75
    assert fitted.predict(waves[0]).shape == (1,)  # one waveform is one clip
    assert fitted.feature_config_ == DEMO_FEATURES


def test_save_load_predict_gives_identical_probabilities(
    fitted: tympan.Classifier, tmp_path: Path, sound_classes_dir: Path
) -> None:
    path = fitted.save(tmp_path / "m.safetensors")
    loaded = tympan.Classifier.load(path)
    files = sorted(sound_classes_dir.rglob("*.wav"))[:5]
    assert np.array_equal(loaded.predict_proba(files), fitted.predict_proba(files))
    assert list(loaded.classes_) == list(fitted.classes_)
    assert loaded.feature_config_ == DEMO_FEATURES
    assert loaded.get_params()["epochs"] == 10
    with pytest.raises(tympan.errors.ModelFileError, match="already exists"):
        fitted.save(path)


def test_fit_on_a_folder_and_on_paths(sound_classes_dir: Path) -> None:
    clf = tympan.Classifier("cnn-s", **{**PARAMS, "epochs": 1}).fit(sound_classes_dir)
    assert list(clf.classes_) == ["chirp", "click", "noise", "tone"]
    assert clf.dataset_.name == "sounds"
    files = sorted(sound_classes_dir.rglob("*.wav"))
    clf2 = tympan.Classifier("cnn-s", **{**PARAMS, "epochs": 1}).fit(
        files, [f.parent.name for f in files])
    assert clf2.predict(str(files[0])).shape == (1,)


def test_scikit_learn_protocol() -> None:
    from sklearn.base import clone

    clf = tympan.Classifier("crnn-s", epochs=3, lr=0.01, mixup_alpha=0.2)
    params = clf.get_params()
    assert params["model"] == "crnn-s" and params["epochs"] == 3 and params["mixup_alpha"] == 0.2
    assert params["batch_size"] == 32  # defaults are reported too
    twin = clone(clf)
    assert twin.get_params() == params and twin is not clf
    assert clf.set_params(epochs=5) is clf and clf.epochs == 5
    assert clf.train_config().epochs == 5
    assert "crnn-s" in repr(clf) and "epochs=5" in repr(clf)
    with pytest.raises(TypeError, match="unknown parameter.*epoch_count"):
        tympan.Classifier(epoch_count=3)
    with pytest.raises(TypeError, match="unknown"):
        clf.set_params(speed=2)
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict_proba([np.zeros(1600, np.float32)])


def test_fit_checks_labels() -> None:
    waves, labels = synth_arrays(2, seed=0)
    with pytest.raises(ValueError, match="as many labels"):
        tympan.Classifier("cnn-s", **PARAMS).fit(waves, labels[:-1])
    with pytest.raises(tympan.errors.DatasetError, match="at least 2"):
        tympan.Classifier("cnn-s", **PARAMS).fit(waves[:2], ["tone", "tone"])


def test_frozen_classifier_fits_clones_and_round_trips(sound_classes_dir: Path,
                                                       mn04_weights: Path,
                                                       tmp_path: Path) -> None:
    from sklearn.base import clone

    clf = tympan.Classifier("mn04_as", mode="frozen", c_grid=(1.0,),
                            model_kwargs={"weights": str(mn04_weights)})
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin.get_params()["mode"] == "frozen"
    clf.fit(sound_classes_dir)
    assert clf.fit_info_ == {"C": 1.0}
    paths = sorted(sound_classes_dir.rglob("*.wav"))[::6]
    labels = [p.parent.name for p in paths]
    assert clf.score(paths, labels) >= 0.9
    clf.save(tmp_path / "f.safetensors")
    loaded = tympan.Classifier.load(tmp_path / "f.safetensors")
    assert loaded.get_params()["mode"] == "frozen" and loaded.recipe_["c_grid"] == [1.0]
    np.testing.assert_allclose(loaded.predict_proba(paths), clf.predict_proba(paths),
                               atol=1e-5)
    from tympan.errors import ConfigError

    with pytest.raises(ConfigError, match="frozen recipe does not use epochs"):
        tympan.Classifier("mn04_as", mode="frozen", epochs=3).fit(sound_classes_dir)


def test_a_recipe_this_version_cannot_read_is_kept_not_dropped(fitted: tympan.Classifier,
                                                               tmp_path: Path) -> None:
    from tympan.errors import ConfigError
    from tympan.models.modelfile import make_metadata, read_metadata, save_model

    # a model file from a newer tympan: its recipe has a field this version lacks
    metadata = make_metadata(fitted.model_, list(fitted.classes_), fitted.feature_config_,
                             train_config={**fitted.recipe_, "future_knob": 7})
    path = save_model(tmp_path / "m.safetensors", fitted.model_, metadata)
    with pytest.warns(UserWarning, match="recipe cannot be read.*future_knob"):
        loaded = tympan.Classifier.load(path)
    waves, _ = synth_arrays(1, seed=5, duration_seconds=0.75)
    np.testing.assert_allclose(loaded.predict_proba(waves), fitted.predict_proba(waves),
                               atol=1e-6)
    again = loaded.save(tmp_path / "again.safetensors")
    assert read_metadata(again).train_config["future_knob"] == 7  # provenance kept
    with pytest.raises(ConfigError, match="cannot read"):
        loaded.fit(*synth_arrays(2, seed=1, duration_seconds=0.75))
