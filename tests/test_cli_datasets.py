"""End to end: `tympan datasets fetch|info`, `tympan features`, `tympan spectrogram`."""

from __future__ import annotations

import synth
from PIL import Image
from typer.testing import CliRunner

from tympan.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    """Invoke the CLI; return the exit code and the output with rich's line wrapping undone."""
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_info_lists_bad_files_and_exits_zero(bad_folder):
    result = runner.invoke(app, ["datasets", "info", str(bad_folder.root), "--workers", "1"])
    assert result.exit_code == 0, result.output
    for path, cause in bad_folder.bad.items():
        line = next(ln for ln in result.output.splitlines() if path.name in ln)
        assert cause in line
    assert "beep" in result.output and "hiss" in result.output
    assert "8000 Hz × 1" in result.output and "2 × 1" in result.output
    assert "6 clips, 2 classes" in result.output and "5 unreadable" in result.output


def test_info_strict_fails_on_bad_files(bad_folder, tone_dataset):
    result = runner.invoke(app, ["datasets", "info", str(bad_folder.root), "--strict"])
    assert result.exit_code == 1
    assert runner.invoke(app, ["datasets", "info", str(tone_dataset), "--strict"]).exit_code == 0


def test_info_esc50_layout_with_folds_and_json(tmp_path):
    root = synth.make_fake_esc50(tmp_path / "esc50", classes=("dog", "rain", "sea"), folds=2)
    result = runner.invoke(app, ["datasets", "info", str(root)])
    assert result.exit_code == 0 and "fold 2" in result.output
    result = runner.invoke(app, ["datasets", "info", str(root), "--json"])
    assert '"n_clips": 6' in result.output


def test_info_clear_errors_exit_2_before_work(tmp_path):
    code, output = run("datasets", "info", str(tmp_path / "nope"))
    assert code == 2 and "no such file" in output
    synth.write(tmp_path / "one" / "a" / "1.wav", synth.tone(300, 0.2, 8000), 8000)
    code, output = run("datasets", "info", str(tmp_path / "one"))
    assert code == 2 and "at least 2" in output
    (tmp_path / "none" / "a").mkdir(parents=True)
    code, output = run("datasets", "info", str(tmp_path / "none"))
    assert code == 2 and "no audio files" in output


def test_fetch_from_a_local_archive(tmp_path):
    archive = synth.zip_folder(synth.make_fake_esc50(tmp_path / "src"), tmp_path / "m.zip")
    result = runner.invoke(app, ["datasets", "fetch", "esc50", "--data-dir",
                                 str(tmp_path / "data"), "--url", archive.as_uri()])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "esc50" / "meta" / "esc50.csv").is_file()
    code, output = run("datasets", "fetch", "esc50", "--data-dir", str(tmp_path / "d2"),
                       "--url", archive.as_uri(), "--sha256", "0" * 64)
    assert code == 2 and "does not match" in output
    assert runner.invoke(app, ["datasets", "fetch", "nope"]).exit_code == 2


def test_features_fills_the_cache_and_skips_bad_files(bad_folder, tmp_path):
    args = ["features", str(bad_folder.root), "--cache-dir", str(tmp_path / "c"), "--workers", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 clips cached" in result.output and "5 unreadable" in result.output
    assert "NaN" in result.output
    assert runner.invoke(app, [*args, "--strict"]).exit_code == 1
    config = tmp_path / "small.json"
    from tympan.config import SEED_FEATURES

    SEED_FEATURES.replace(sample_rate=16000, n_mels=40).save(config)
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 0 and "6 clips cached" in result.output


def test_spectrogram_figure_and_raw(tmp_path):
    clip = synth.write(tmp_path / "c.wav", synth.chirp(100, 8000, 3.5, 22050), 22050)
    out = tmp_path / "c.png"
    assert runner.invoke(app, ["spectrogram", str(clip), "-o", str(out)]).exit_code == 0
    assert Image.open(out).format == "PNG"
    code, output = run("spectrogram", str(clip), "-o", str(out))
    assert code == 2 and "--overwrite" in output
    result = runner.invoke(app, ["spectrogram", str(clip), "-o", str(tmp_path / "r.png"), "--raw"])
    assert result.exit_code == 0 and "2 patch image(s)" in result.output
    assert Image.open(tmp_path / "r-001.png").size == (128, 128)
    bad = tmp_path / "bad.wav"
    bad.write_text("text")
    code, output = run("spectrogram", str(bad), "-o", str(tmp_path / "b.png"))
    assert code == 2 and "not an audio file" in output


def test_every_command_has_help():
    for args in (["datasets", "--help"], ["datasets", "info", "--help"],
                 ["datasets", "fetch", "--help"], ["features", "--help"],
                 ["spectrogram", "--help"]):
        assert runner.invoke(app, args).exit_code == 0


def test_info_reports_a_broken_csv_in_one_line(tmp_path):
    for name in ("x", "y"):
        synth.write(tmp_path / "audio" / f"{name}.wav", synth.tone(300, 0.2, 8000), 8000)
    table = tmp_path / "labels.csv"
    table.write_text("path,label,fold\naudio/x.wav,a,1\naudio/y.wav,b,\n")
    code, output = run("datasets", "info", str(table))
    assert code == 2 and "fold is blank on line(s) 3" in output  # no per-fold table
    table.write_bytes("path,label\naudio/x.wav,caf\u00e9\naudio/y.wav,b\n".encode("latin-1"))
    code, output = run("datasets", "info", str(table))
    assert code == 2 and "not UTF-8 text: byte 26 (line 2)" in output
    assert "Traceback" not in output and "UnicodeDecodeError" not in output


def _straddling_csv(root):
    """A CSV dataset with folds and groups; group ``rec-b`` has clips in folds 1 and 2."""
    rows = [("a1", "dog", 1, "rec-a"), ("a2", "dog", 1, "rec-a"), ("b1", "dog", 1, "rec-b"),
            ("b2", "dog", 2, "rec-b"), ("c1", "cat", 1, "rec-c"), ("d1", "cat", 2, "rec-d")]
    lines = ["path,label,fold,group"]
    for i, (name, label, fold, group) in enumerate(rows):
        synth.write(root / "audio" / f"{name}.wav", synth.tone(300 + 50 * i, 0.2, 8000), 8000)
        lines.append(f"audio/{name}.wav,{label},{fold},{group}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root / "meta.csv"


def test_info_names_groups_straddling_folds_and_strict_fails(tmp_path):
    table = _straddling_csv(tmp_path)
    code, output = run("datasets", "info", str(table), "--workers", "1")
    assert code == 0
    assert "1 group(s) sit in more than one predefined fold" in output
    assert "rec-b (folds 1, 2)" in output and "rec-a" not in output
    result = runner.invoke(app, ["datasets", "info", str(table), "--json"])
    assert '"straddling_groups": { "rec-b": [ 1, 2 ] }' in " ".join(result.output.split())
    code, output = run("datasets", "info", str(table), "--strict")
    assert code == 1 and "--strict:" in output and "rec-b (folds 1, 2)" in output
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(table.read_text().replace("b2.wav,dog,2,rec-b", "b2.wav,dog,2,rec-e"))
    code, output = run("datasets", "info", str(fixed), "--strict")
    assert code == 0 and "more than one predefined fold" not in output


def test_info_says_symlink_loop_not_no_such_file(tone_dataset):
    loop = tone_dataset / "low" / "loop.wav"
    loop.symlink_to(loop.name)
    code, output = run("datasets", "info", str(tone_dataset), "--workers", "1")
    assert code == 0
    assert "loop.wav: symlink loop" in output and "no such file" not in output
