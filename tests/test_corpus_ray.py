"""The Ray Data engine on a local instance (``num_cpus=2``): 200 generated files, counts,
skipped files, resume, and the same rows as the local engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import synth
from conftest import TINY_CLASSES, tiny_features, tiny_model

from tympan.corpus.run import CorpusSettings, run_corpus
from tympan.corpus.units import WindowGeometry, resampled_length, window_starts

ray = pytest.importorskip("ray")

N_FILES = 200


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance for this module, shut down after it."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 1024 * 1024,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    """200 files (0.2-1.4 s, 16/22.05 kHz) of which 5 are bad, and a tiny model file; maps
    each good file to its window count."""
    from tympan.models.modelfile import make_metadata, save_model

    root = tmp_path_factory.mktemp("ray-corpus")
    model = tiny_model(len(TINY_CLASSES))
    model_file = save_model(root / "tiny.safetensors", model,
                            make_metadata(model, TINY_CLASSES, tiny_features()))
    geometry = WindowGeometry.from_features(tiny_features())
    rng = np.random.default_rng(0)
    windows: dict[str, int] = {}
    for i in range(N_FILES - 5):
        rate = (16000, 22050)[i % 2]
        seconds = float(rng.uniform(0.2, 1.4))
        path = synth.write(root / "audio" / f"f{i:03d}.wav",
                           synth.chirp(200 + i, 4000, seconds, rate), rate)
        total = resampled_length(sf.info(str(path)).frames, rate, 16000)
        windows[str(path)] = len(window_starts(total, geometry.window_samples,
                                               geometry.hop_samples))
    (root / "audio" / "f900_empty.wav").write_bytes(b"")
    (root / "audio" / "f901_text.wav").write_text("not audio")
    synth.write_nan_wav(root / "audio" / "f902_nan.wav", 16000, 0.5)
    synth.write(root / "audio" / "f903_short.wav", synth.tone(440, 0.02, 16000), 16000)
    (root / "audio" / "f904_corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    return root / "audio", model_file, windows


def test_ray_counts_skips_and_resume(local_ray: None, corpus: tuple[Path, Path, dict[str, int]],
                                     tmp_path: Path) -> None:
    audio, model_file, windows = corpus
    settings = CorpusSettings(engine="ray", workers=2, shard_files=25, unit_windows=2)
    out = tmp_path / "ray"
    outcome = run_corpus(model_file, audio, out, "predict", settings)
    assert (outcome.files, outcome.failed_files, outcome.shards_written) == (N_FILES, 5, 8)
    rows = pd.read_parquet(out / "windows")
    errors = pd.read_parquet(out / "errors")
    assert len(rows) == outcome.windows
    counts = rows.groupby("path").size().to_dict()
    assert counts == windows
    assert sorted(Path(p).name for p in errors.path) == [
        "f900_empty.wav", "f901_text.wav", "f902_nan.wav", "f903_short.wav",
        "f904_corrupt.flac"]
    # resume: two shards lost, only they are redone, the table is unchanged
    for shard in (2, 7):
        (out / "windows" / f"shard-{shard:05d}.parquet").unlink()
    again = run_corpus(model_file, audio, out, "predict", settings)
    assert (again.shards_written, again.shards_skipped, again.files) == (2, 6, N_FILES)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "windows"), rows)
    # the local engine writes the same rows
    local = tmp_path / "local"
    run_corpus(model_file, audio, local, "predict",
               CorpusSettings(engine="local", workers=2, shard_files=25, unit_windows=2))
    pd.testing.assert_frame_equal(pd.read_parquet(local / "windows"), rows, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_parquet(local / "errors"), errors)


def test_ray_runs_the_onnx_export(local_ray: None, corpus: tuple[Path, Path, dict[str, int]],
                                  tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    audio, _, windows = corpus
    model_file, export = tiny_onnx
    manifest = tmp_path / "some.txt"
    picked = sorted(windows)[:30] + [str(audio / "f901_text.wav")]
    manifest.write_text("\n".join(picked) + "\n")
    settings = CorpusSettings(engine="ray", workers=2, shard_files=10, unit_windows=2)
    outcome = run_corpus(export, manifest, tmp_path / "ray", "predict", settings)
    assert (outcome.files, outcome.failed_files) == (31, 1)
    rows = pd.read_parquet(tmp_path / "ray" / "windows")
    assert rows.groupby("path").size().to_dict() == {p: windows[p] for p in picked[:30]}
    run_corpus(model_file, manifest, tmp_path / "torch", "predict",
               CorpusSettings(engine="local", workers=1, shard_files=10, unit_windows=2))
    pd.testing.assert_frame_equal(rows, pd.read_parquet(tmp_path / "torch" / "windows"),
                                  check_exact=False, atol=1e-5)


def test_decoding_is_its_own_stage_that_ray_fuses_into_the_actors(
        local_ray: None, corpus: tuple[Path, Path, dict[str, int]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """plan → decode → score: decode asks for the actors' resources, so Ray runs it inside
    them (no audio through the object store); kept apart, it gives the same rows."""
    from tympan.corpus import ray_engine
    from tympan.corpus.local import ScoreSettings
    from tympan.corpus.plan import PlanSettings

    audio, model_file, windows = corpus
    score = ScoreSettings(model_file, "predict")
    plan = PlanSettings(WindowGeometry.from_features(tiny_features()))
    items = [{"shard": 0, "first": 0, "paths": sorted(windows)[:4]}]
    ray_engine._dataset(items, score, plan, 2, True).explain()
    fused = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "ActorPoolMapOperator[MapBatches(_decode_batch)->MapBatches(_Scorer)]" in fused
    ray_engine._dataset(items, score, plan, 2, False).explain()
    apart = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "TaskPoolMapOperator[MapBatches(_decode_batch)]" in apart

    manifest = tmp_path / "some.txt"
    manifest.write_text("\n".join(sorted(windows)[:30]) + "\n")
    settings = CorpusSettings(engine="ray", workers=2, shard_files=10, unit_windows=2)
    run_corpus(model_file, manifest, tmp_path / "fused", "predict", settings)
    built = ray_engine._dataset
    monkeypatch.setattr(ray_engine, "_dataset",
                        lambda *args: built(*args[:-1], False))  # fuse_decode=False
    run_corpus(model_file, manifest, tmp_path / "apart", "predict", settings)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "apart" / "windows"),
                                  pd.read_parquet(tmp_path / "fused" / "windows"))


def test_ray_run_killed_mid_way_resumes_to_the_uninterrupted_rows(tmp_path: Path) -> None:
    """SIGKILL ``predict-corpus --engine ray`` (its own local Ray instance) at a seeded moment
    after its first shard; what the killed driver's Ray left running must not stop the rerun,
    which ends with the uninterrupted run's rows."""
    import psutil
    import pyarrow.parquet as pq
    from conftest import TINY_CLASSES
    from killing import kill_midway, temporaries, tympan, tympan_command

    from tympan.models.modelfile import make_metadata, save_model

    model = tiny_model(len(TINY_CLASSES))
    model_file = save_model(tmp_path / "tiny.safetensors", model,
                            make_metadata(model, TINY_CLASSES, tiny_features()))
    audio = tmp_path / "audio"
    for i in range(60):
        synth.write(audio / f"r{i:02d}.wav", synth.chirp(300 + 50 * i, 5000, 0.4 + 0.05 * i,
                                                         22050), 22050)
    (audio / "r99_empty.wav").write_bytes(b"")
    reference = tmp_path / "reference"
    run_corpus(model_file, audio, reference, "predict",
               CorpusSettings(engine="local", workers=2, shard_files=2, unit_windows=1))
    out = tmp_path / "killed"
    argv = ["predict-corpus", str(model_file), str(audio), "-o", str(out), "--engine", "ray",
            "--workers", "2", "--shard-files", "2", "--unit-windows", "1"]
    started: list[psutil.Process] = []
    try:
        kill_midway(tympan_command(argv),
                    lambda: any((out / "windows").glob("shard-*.parquet")), seed=13,
                    max_delay_seconds=0.5, timeout=180,
                    before_kill=lambda pid: started.extend(
                        psutil.Process(pid).children(recursive=True)))
        assert any(p.name() == "raylet" for p in started)  # it ran on its own Ray instance
        assert not (out / "_SUCCESS").exists()
        written = list(out.glob("*/shard-*.parquet"))
        assert 0 < len(list((out / "windows").glob("shard-*"))) < 31
        for shard in written:  # no final name holds a half-written file
            pq.read_table(shard)
        rerun = tympan(argv, timeout=300)  # a fresh process: ray.init must start a new Ray
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "shards: " in rerun.stderr and "already done" in rerun.stderr
        for folder in ("windows", "errors"):
            pd.testing.assert_frame_equal(pd.read_parquet(out / folder),
                                          pd.read_parquet(reference / folder), atol=1e-6)
        assert (out / "_SUCCESS").is_file() and not temporaries(out)
    finally:  # Ray's node agents outlive a killed driver: end the ones this test started
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(started, timeout=10)
