"""``tympan serve``: the command starts a server that answers on 127.0.0.1; bad input fails fast."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synth
from typer.testing import CliRunner

from tympan.cli import app

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_starts_and_answers(trained_model_file: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tympan.cli import main; main()", "serve",
         str(trained_model_file), "--port", str(port), "--max-upload-mb", "2", "--threads", "1",
         "--max-batch-patches", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start: {proc.stdout.read()}") from None
                time.sleep(0.2)
        assert health.json()["model"] == "cnn-s"
        assert httpx.get(f"{url}/v1/model").json()["limits"]["max_upload_mb"] == 2.0
        wav = synth.write(tmp_path / "tone.wav", synth.tone(1000, 1.0, 22050), 22050)
        out = httpx.post(f"{url}/v1/predict", files={"file": ("tone.wav", wav.read_bytes())})
        assert out.json()["label"] == "tone"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_missing_model_and_bad_limits(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["serve", str(tmp_path / "nope.safetensors")])
    assert missing.exit_code != 0
    assert "nope.safetensors" in str(missing.exception) + missing.output
    bad = runner.invoke(app, ["serve", str(tmp_path / "nope.safetensors"),
                              "--max-upload-mb", "0"])
    assert bad.exit_code == 2 and "max_upload_mb" in bad.output
    bad = runner.invoke(app, ["serve", str(tmp_path / "nope.safetensors"),
                              "--max-batch-patches", "0"])
    assert bad.exit_code == 2 and "max_batch_patches" in bad.output
