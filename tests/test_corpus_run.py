"""Corpus runs on the local engine: rows as Detector scores them, bad files, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synth
from conftest import TINY_CLASSES

from tympan.corpus.run import CorpusSettings, run_corpus
from tympan.errors import ConfigError, DatasetError


def _corpus(root: Path) -> tuple[list[Path], dict[Path, str]]:
    good = [synth.write(root / f"g{i}.wav", synth.chirp(300, 3000, 0.3 + 0.6 * i, 22050)
                        + synth.noise_burst(0.3 + 0.6 * i, 22050, amplitude=0.05, seed=i),
                        22050) for i in range(5)]
    good.append(synth.write(root / "stereo.flac", synth.tone(880, 1.1, 16000), 16000,
                            channels=2))
    (root / "empty.wav").write_bytes(b"")
    (root / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    synth.write_nan_wav(root / "nan.wav", 16000, 1.0)
    synth.write(root / "short.wav", synth.tone(440, 0.05, 16000), 16000)
    bad = {root / "empty.wav": "empty", root / "corrupt.flac": "corrupt",
           root / "nan.wav": "NaN", root / "short.wav": "shorter than"}
    return good, bad


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[list[Path], dict[Path, str]]:
    return _corpus(tmp_path / "corpus")


SETTINGS = CorpusSettings(engine="local", workers=1, shard_files=3, unit_windows=3,
                          batch_size=4)


def test_rows_are_the_detectors_and_bad_files_are_logged(
        tiny_model_file: Path, corpus: tuple[list[Path], dict[Path, str]],
        tmp_path: Path) -> None:
    from tympan.inference.detect import Detector
    from tympan.models.modelfile import load_model

    good, bad = corpus
    out = tmp_path / "out"
    outcome = run_corpus(tiny_model_file, good[0].parent, out, "predict", SETTINGS)
    assert (outcome.files, outcome.failed_files, outcome.shards_written) == (10, 4, 4)
    windows = pd.read_parquet(out / "windows")
    errors = pd.read_parquet(out / "errors")
    assert outcome.windows == len(windows)
    detector = Detector(load_model(tiny_model_file))
    for path in good:
        scores = detector.score_file(path)
        rows = windows[windows.path == str(path)]
        np.testing.assert_allclose(rows.start_seconds, scores.starts / 16000)
        np.testing.assert_allclose(rows.end_seconds, scores.ends() / 16000)
        np.testing.assert_allclose(rows[TINY_CLASSES].to_numpy(), scores.scores[:, 0],
                                   atol=1e-5)
        assert (rows.label == [TINY_CLASSES[i] for i in scores.scores[:, 0].argmax(1)]).all()
    assert set(errors.path) == {str(p) for p in bad}
    for path, fragment in bad.items():
        assert fragment in errors[errors.path == str(path)].reason.iloc[0]
    assert (out / "_SUCCESS").is_file()


def test_rerun_skips_finished_shards_and_rewrites_a_missing_one(
        tiny_model_file: Path, corpus: tuple[list[Path], dict[Path, str]],
        tmp_path: Path) -> None:
    root, out = corpus[0][0].parent, tmp_path / "out"
    run_corpus(tiny_model_file, root, out, "predict", SETTINGS)
    before = pd.read_parquet(out / "windows")
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "windows").iterdir()}
    again = run_corpus(tiny_model_file, root, out, "predict", SETTINGS)
    assert (again.shards_written, again.shards_skipped, again.files) == (0, 4, 10)
    (out / "windows" / "shard-00001.parquet").unlink()
    third = run_corpus(tiny_model_file, root, out, "predict", SETTINGS)
    assert (third.shards_written, third.shards_skipped) == (1, 3)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "windows").iterdir()}
    assert {k for k in after if after[k] != stamps[k]} == {"shard-00001.parquet"}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "windows"), before)


def test_a_changed_model_is_refused(tiny_model_file: Path, tmp_path: Path,
                                    corpus: tuple[list[Path], dict[Path, str]]) -> None:
    from conftest import tiny_features, tiny_model

    from tympan.models.modelfile import make_metadata, save_model

    root, out = corpus[0][0].parent, tmp_path / "out"
    settings = CorpusSettings(engine="local", workers=1, shard_files=100)
    run_corpus(tiny_model_file, root, out, "predict", settings)
    other = tiny_model(len(TINY_CLASSES), seed=1)
    other_file = save_model(tmp_path / "other.safetensors", other,
                            make_metadata(other, TINY_CLASSES, tiny_features()))
    with pytest.raises(ConfigError, match="model_sha256"):
        run_corpus(other_file, root, out, "predict", settings)


def test_csv_manifest_with_a_missing_file(tiny_model_file: Path, tmp_path: Path,
                                          corpus: tuple[list[Path], dict[Path, str]]) -> None:
    good, _ = corpus
    manifest = tmp_path / "corpus" / "list.csv"
    manifest.write_text("path,label\ng1.wav,a\ngone.wav,b\ng2.wav,a\n")
    out = tmp_path / "out"
    outcome = run_corpus(tiny_model_file, manifest, out, "predict",
                         CorpusSettings(engine="local", workers=1))
    assert (outcome.files, outcome.failed_files) == (3, 1)
    errors = pd.read_parquet(out / "errors")
    assert errors.path.tolist() == [str(manifest.parent / "gone.wav")]
    assert "no such file" in errors.reason.iloc[0]
    assert pd.read_parquet(out / "windows").path.unique().tolist() == [
        str(manifest.parent / "g1.wav"), str(manifest.parent / "g2.wav")]
    with pytest.raises(DatasetError):
        run_corpus(tiny_model_file, tmp_path / "nope.txt", out, "predict")


def test_embed_gives_the_frozen_recipes_backbone_embedding(tmp_path: Path) -> None:
    import torch

    from tympan import models
    from tympan.features import LogMel
    from tympan.models.modelfile import make_metadata, save_model

    torch.manual_seed(0)
    model = models.create("mn04_as", 2).eval()
    features = models.default_features("mn04_as")
    model_file = save_model(tmp_path / "mn04.safetensors", model,
                            make_metadata(model, ["a", "b"], features))
    audio = synth.write(tmp_path / "corpus" / "x.wav", synth.chirp(200, 4000, 6.0, 32000),
                        32000)
    out = tmp_path / "out"
    run_corpus(model_file, audio.parent, out, "embed",
               CorpusSettings(engine="local", workers=1))
    rows = pd.read_parquet(out / "windows")
    assert rows.start_seconds.tolist() == [0.0, 1.0]  # the last window is end-aligned
    embedding = np.stack(rows.embedding.to_numpy())
    assert embedding.shape == (2, model.embedding_dim)
    wave = torch.from_numpy(synth.chirp(200, 4000, 6.0, 32000)[:160000].astype(np.float32))
    with torch.inference_mode():
        spec = LogMel(features)(wave)[:, :features.patch_frames][None]
        expected = model.embed_shifted(spec).mean(dim=1)[0].numpy()
    np.testing.assert_allclose(embedding[0], expected, atol=1e-4)


def test_the_onnx_scorer_gives_the_torch_rows(
        tiny_onnx: tuple[Path, Path], corpus: tuple[list[Path], dict[Path, str]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import shutil

    from tympan.fileio import sha256_file

    model_file, export = tiny_onnx
    root = corpus[0][0].parent
    run_corpus(model_file, root, tmp_path / "torch", "predict", SETTINGS)
    torch_rows = pd.read_parquet(tmp_path / "torch" / "windows")
    # an .onnx export is scored on onnxruntime
    outcome = run_corpus(export, root, tmp_path / "onnx", "predict", SETTINGS)
    assert (outcome.files, outcome.failed_files) == (10, 4)
    # a model file with scorer="onnx" is scored on its cached export (found by its sha256)
    cache = tmp_path / "onnx-cache"
    cache.mkdir()
    shutil.copy(export, cache / f"{sha256_file(model_file)}.onnx")
    monkeypatch.setenv("TYMPAN_ONNX_CACHE", str(cache))
    run_corpus(model_file, root, tmp_path / "cached", "predict",
               CorpusSettings(engine="local", workers=1, shard_files=3, unit_windows=3,
                              batch_size=4, scorer="onnx"))
    for out in ("onnx", "cached"):
        rows = pd.read_parquet(tmp_path / out / "windows")
        pd.testing.assert_frame_equal(rows, torch_rows, check_exact=False, atol=1e-5)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / out / "errors"),
                                      pd.read_parquet(tmp_path / "torch" / "errors"))
    key = json.loads((tmp_path / "cached" / "corpus.json").read_text())["key"]
    assert key["scorer"] == "onnx" and key["model_sha256"] == sha256_file(model_file)
    # the torch run's folder is not mixed with ONNX rows
    with pytest.raises(ConfigError, match="scorer"):
        run_corpus(model_file, root, tmp_path / "torch", "predict",
                   CorpusSettings(engine="local", workers=1, shard_files=3, unit_windows=3,
                                  batch_size=4, scorer="onnx"))


def test_embed_refuses_the_onnx_scorer(tiny_onnx: tuple[Path, Path], tmp_path: Path,
                                       corpus: tuple[list[Path], dict[Path, str]]) -> None:
    model_file, export = tiny_onnx
    root = corpus[0][0].parent
    with pytest.raises(ConfigError, match="torch"):
        run_corpus(export, root, tmp_path / "a", "embed", SETTINGS)
    with pytest.raises(ConfigError, match="drop --scorer onnx"):
        run_corpus(model_file, root, tmp_path / "b", "embed",
                   CorpusSettings(engine="local", scorer="onnx"))
