"""Options every command shares: a bad --device, --workers or --precision is one usage line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tympan.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(("device", "says"), [
    ("bogus", "not a torch device"),
    ("cuda", "CUDA is not available"),
    ("cuda:7", "CUDA"),
])
def test_a_device_this_machine_lacks_is_a_usage_error(
        command: str, device: str, says: str, tiny_model_file: Path,
        sound_classes_dir: Path) -> None:
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    result = runner.invoke(app, [command, str(tiny_model_file), str(sound_classes_dir),
                                 "--device", device])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert says in " ".join(result.output.split()) and f"--device {device}" in result.output


@pytest.mark.parametrize(("args", "says"), [
    (["train", "--workers", "-1"], "must be >= 0"),
    (["train", "--precision", "bogus"], "precision must be one of"),
    (["augment", "-o", "OUT", "--pitch", "1", "--workers", "-1"], "--workers"),
    (["features", "--workers", "-1"], "--workers"),
    (["datasets", "info", "--workers", "0"], "--workers"),
])
def test_bad_workers_or_precision_are_usage_errors(args: list[str], says: str,
                                                   sound_classes_dir: Path,
                                                   tmp_path: Path) -> None:
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    at = 2 if args[0] == "datasets" else 1
    args[at:at] = [str(sound_classes_dir)]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path)] if args[0] == "train"
                           else args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert says in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
