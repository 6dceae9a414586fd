"""`tympan augment`: background mixing that would leak test audio is a one-line error."""

from __future__ import annotations

from pathlib import Path

import synth
from typer.testing import CliRunner

from tympan.cli import app

runner = CliRunner()


def test_bg_classes_on_a_dataset_without_folds_exit_2_with_what_to_do(
    tone_dataset: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["augment", str(tone_dataset), "-o", str(tmp_path / "out"),
                                 "--preset", "BG", "--background-classes", "low"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "no predefined folds" in output and "--background FOLDER" in output
    assert "Traceback" not in output and not (tmp_path / "out").exists()


def test_a_background_folder_sharing_a_clip_exit_2_naming_it(
    tone_dataset: Path, tmp_path: Path
) -> None:
    backgrounds = tmp_path / "bg"
    synth.write(backgrounds / "rain.wav", synth.noise_burst(0.5, 22050, seed=3), 22050)
    (backgrounds / "copy.wav").write_bytes((tone_dataset / "high" / "1.wav").read_bytes())
    result = runner.invoke(app, ["augment", str(tone_dataset), "-o", str(tmp_path / "out"),
                                 "--preset", "BG", "--background", str(backgrounds)])
    output = "".join(result.output.split())  # rich may fold a long path mid-word
    assert result.exit_code == 2, result.output
    assert "copy.wavhasthesamecontentasthedataset'sclip" in output
    assert f"{tone_dataset}/high/1.wav".replace(" ", "") in output
