"""UnitScorer: a unit's windows scored as Detector scores them; failures become error rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import tiny_features

from tympan.corpus.scoring import UnitScorer
from tympan.corpus.units import WindowGeometry, plan_file
from tympan.errors import ConfigError

GEOMETRY = WindowGeometry.from_features(tiny_features())


def test_units_give_the_detectors_scores(tiny_model_file: Path, tmp_path: Path) -> None:
    from tympan.inference.detect import Detector
    from tympan.models.modelfile import load_model

    path = synth.write(tmp_path / "a.wav", synth.chirp(300, 5000, 2.2, 44100), 44100)
    scorer = UnitScorer(tiny_model_file, "predict", GEOMETRY, batch_size=3)
    results = [scorer.run(unit) for unit in plan_file(path, 0, GEOMETRY, unit_windows=4)]
    expected = Detector(load_model(tiny_model_file)).score_file(path)
    assert all(not r.errors for r in results)
    np.testing.assert_array_equal(np.concatenate([r.starts for r in results]),
                                  expected.starts)
    np.testing.assert_allclose(np.concatenate([r.values for r in results]),
                               expected.scores[:, 0], atol=1e-5)


def test_an_unexpected_decoder_failure_is_an_error_row(
        tiny_model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tympan.corpus.scoring as scoring

    path = synth.write(tmp_path / "a.wav", synth.tone(440, 1.0, 16000), 16000)
    (unit,) = plan_file(path, 0, GEOMETRY, unit_windows=100)

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr(scoring, "decode_span", explode)
    result = UnitScorer(tiny_model_file, "predict", GEOMETRY).run(unit)
    assert result.values.shape == (0, 3)
    assert result.errors == [(str(path), None, "decoding failed (RuntimeError: decoder "
                                               "crashed)")]


def test_embed_needs_a_backbone(tiny_model_file: Path) -> None:
    with pytest.raises(ConfigError, match="no backbone embedding"):
        UnitScorer(tiny_model_file, "embed", GEOMETRY)
