"""Evaluating a saved model on labelled data: metrics over the data's classes, bad files skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import TINY_CLASSES

from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.errors import DatasetError
from tympan.inference.predict import Predictor
from tympan.models.modelfile import load_model
from tympan.workflows.evaluation import Evaluation, evaluate_model

RATE = 16000


def test_evaluation_metrics_cover_the_classes_in_the_data() -> None:
    probs = np.eye(4)[[0, 1, 1, 1]]
    evaluation = Evaluation(["a", "b", "c", "d"], [Path(f"{i}.wav") for i in range(4)],
                            np.array([0, 0, 1, 1]), probs)
    assert evaluation.accuracy == 0.75
    # a: P=1, R=.5, F1=2/3; b: P=2/3, R=1, F1=.8; c and d (absent) do not count
    assert evaluation.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)
    assert evaluation.label_names == ["a", "b"]
    assert evaluation.confusion().tolist() == [[1, 1], [0, 2]]
    assert [r["support"] for r in evaluation.per_class()] == [2, 2]


def test_evaluate_model_scores_and_skips(tiny_model_file: Path, tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    tone = synth.write(tmp_path / "tone" / "a.wav", synth.tone(500, 0.5, RATE), RATE)
    noise = synth.write(tmp_path / "noise" / "a.wav", synth.noise_burst(0.5, RATE), RATE)
    junk = tmp_path / "noise" / "junk.wav"
    junk.write_text("x")
    manifest = Manifest([Clip(tone, "tone"), Clip(noise, "noise"), Clip(junk, "noise")],
                        name="mini", bad_files=[BadFile(tmp_path / "gone.wav", "no such file")])
    evaluation = evaluate_model(predictor, manifest)
    assert evaluation.paths == [tone, noise]
    assert [TINY_CLASSES[i] for i in evaluation.y_true] == ["tone", "noise"]
    expected = predictor.predict_proba([tone, noise])
    np.testing.assert_array_equal(evaluation.probabilities, expected)
    assert [b.path.name for b in evaluation.bad_files] == ["gone.wav", "junk.wav"]
    assert evaluation.summary()["n_skipped"] == 2


def test_evaluate_model_refuses_labels_the_model_lacks(tiny_model_file: Path,
                                                       tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    manifest = Manifest([Clip(tmp_path / "x.wav", "tone"), Clip(tmp_path / "y.wav", "dog")],
                        name="mini", root=tmp_path)
    with pytest.raises(DatasetError, match="label\\(s\\) not in the model: dog"):
        evaluate_model(predictor, manifest)
