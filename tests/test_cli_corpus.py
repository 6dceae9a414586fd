"""``tympan predict-corpus`` / ``tympan embed``: summary, exit codes, and kill -9 + rerun."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import synth
from typer.testing import CliRunner

from tympan.cli import app
from tympan.corpus.run import CorpusSettings, run_corpus

runner = CliRunner()


def _corpus(root: Path, n: int = 24) -> Path:
    for i in range(n):
        synth.write(root / f"r{i:02d}.wav", synth.chirp(300 + 50 * i, 5000, 0.4 + 0.1 * i,
                                                         22050), 22050)
    (root / "r99_empty.wav").write_bytes(b"")
    return root


def test_summary_and_a_rerun(tiny_model_file: Path, tmp_path: Path) -> None:
    audio = _corpus(tmp_path / "audio", 6)
    args = ["predict-corpus", str(tiny_model_file), str(audio), "-o", str(tmp_path / "out"),
            "--engine", "local", "--workers", "1", "--shard-files", "4"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "7 file(s)" in first.output and "1 skipped or failed" in first.output
    assert "2 written, 0 already done" in first.output
    assert "empty file" in first.output
    second = runner.invoke(app, args)
    assert "0 written, 2 already done" in second.output


def test_nothing_scored_exits_1(tiny_model_file: Path, tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "empty.wav").write_bytes(b"")
    result = runner.invoke(app, ["predict-corpus", str(tiny_model_file),
                                 str(tmp_path / "audio"), "-o", str(tmp_path / "out"),
                                 "--engine", "local", "--workers", "1"])
    assert result.exit_code == 1
    assert "no file could be scored" in result.output


def test_embed_refuses_a_model_without_a_backbone(tiny_model_file: Path,
                                                  tmp_path: Path) -> None:
    audio = _corpus(tmp_path / "audio", 1)
    result = runner.invoke(app, ["embed", str(tiny_model_file), str(audio), "-o",
                                 str(tmp_path / "out"), "--engine", "local"])
    assert result.exit_code != 0
    assert "no backbone embedding" in result.output


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tympan.cli import main; main()", *args]


def test_kill_9_then_rerun_gives_the_uninterrupted_outputs(tiny_model_file: Path,
                                                          tmp_path: Path) -> None:
    audio = _corpus(tmp_path / "audio", 20)
    reference = tmp_path / "reference"
    run_corpus(tiny_model_file, audio, reference, "predict",
               CorpusSettings(engine="local", workers=2, shard_files=2, unit_windows=2))
    out = tmp_path / "killed"
    args = _cli("predict-corpus", str(tiny_model_file), str(audio), "-o", str(out),
                "--engine", "local", "--workers", "2", "--shard-files", "2",
                "--unit-windows", "2")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    victim = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "windows").glob("shard-*.parquet")) and victim.poll() is None:
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.15))
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL  # killed mid-run, not finished on its own
    assert not (out / "_SUCCESS").exists()
    for shard in out.glob("*/shard-*.parquet"):  # no final name holds a half-written file
        pq.read_table(shard)
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for folder in ("windows", "errors"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / folder),
                                      pd.read_parquet(reference / folder), atol=1e-6)
    assert not list(out.rglob("*.tmp"))


def test_scorer_onnx_exports_the_model_once(tiny_model_file: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxscript")
    from tympan.fileio import sha256_file

    audio = _corpus(tmp_path / "audio", 3)
    cache = tmp_path / "onnx-cache"
    monkeypatch.setenv("TYMPAN_ONNX_CACHE", str(cache))
    args = ["predict-corpus", str(tiny_model_file), str(audio), "--engine", "local",
            "--workers", "1", "--scorer", "onnx", "-o"]
    first = runner.invoke(app, [*args, str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    export = cache / f"{sha256_file(tiny_model_file)}.onnx"
    assert sorted(cache.iterdir()) == [export]
    stamp = export.stat().st_mtime_ns
    second = runner.invoke(app, [*args, str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert export.stat().st_mtime_ns == stamp  # exported once, then reused
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / "windows"),
                                  pd.read_parquet(tmp_path / "a" / "windows"))
    embed = runner.invoke(app, ["embed", str(export), str(audio), "-o", str(tmp_path / "c"),
                                "--engine", "local"])
    assert embed.exit_code != 0
    assert "torch network" in embed.output
    bad = runner.invoke(app, [*args[:-3], "--scorer", "tflite", "-o", str(tmp_path / "d")])
    assert bad.exit_code != 0 and "tflite" in bad.output
