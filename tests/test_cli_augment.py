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


def test_augment_killed_mid_run_then_rerun_makes_the_uninterrupted_copies(
    sound_classes_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL at a random moment after the first copy: no final-named copy is partial, and
    rerunning the same command (the resume contract) ends with the same files and manifest."""
    import numpy as np
    import soundfile as sf
    from killing import kill_midway, temporaries, tympan, tympan_command

    def argv(out: Path) -> list[str]:
        return ["augment", str(sound_classes_dir), "-o", str(out), "--stretch", "0.81",
                "--pitch", "2", "--workers", "2"]

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    kill_midway(tympan_command(argv(killed)),
                lambda: any(p.suffix == ".wav" for p in killed.rglob("[!.]*")),
                seed=7, max_delay_seconds=1.0)
    assert not (killed / "manifest.csv").exists()  # written last, when every copy is done
    made = [p for p in killed.rglob("*.wav") if not p.name.startswith(".")]
    assert 0 < len(made) < 48 * 2
    for path in made:  # whole files only under final names
        assert sf.info(path).frames > 0 and np.isfinite(sf.read(path)[0]).all()
    for out in (killed, straight):
        done = tympan(argv(out))
        assert done.returncode == 0, done.stderr[-2000:]
    assert temporaries(killed) == []

    def files(out: Path) -> dict[str, Path]:
        return {p.relative_to(out).as_posix(): p for p in out.rglob("*.wav")}

    got, want = files(killed), files(straight)
    assert sorted(got) == sorted(want) and len(want) == 48 * 2
    for name, path in want.items():
        assert got[name].read_bytes() == path.read_bytes(), name
    assert (killed / "manifest.csv").read_text() == (straight / "manifest.csv").read_text()
