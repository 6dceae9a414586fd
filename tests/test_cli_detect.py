"""``tympan detect``: events from long recordings into Raven, Audacity, CSV, JSON and PNG files,
resumable, with bad files reported and skipped."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import bands
import numpy as np
import pytest
import synth
from typer.testing import CliRunner

from tympan.cli import app
from tympan.workflows.detect import output_name

runner = CliRunner()
HOP = 0.256
RATE = 16000


@pytest.fixture
def band_model_file(tmp_path: Path) -> Iterator[Path]:
    with bands.registered():
        yield bands.save_band_model(tmp_path / "bands.safetensors", {"low": 0.25, "high": 0.25})


@pytest.fixture
def recordings(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "field"
    return {
        "dawn": synth.write(root / "20240101_063000.wav",
                            bands.scene([("low", 1.0, 3.0), ("high", 5.0, 6.5)], 8.0), RATE),
        "stereo": synth.write(root / "sub" / "pair.flac",
                              np.stack([bands.scene([("low", 0.0, 2.0)], 4.0, 22050),
                                        bands.scene([("high", 2.5, 4.0)], 4.0, 22050)], 1),
                              22050),
    }


def _invoke(*args: str) -> object:
    return runner.invoke(app, ["detect", *args], catch_exceptions=False)


def _rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def test_detect_writes_raven_audacity_csv_and_json(band_model_file: Path,
                                                   recordings: dict[str, Path],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _invoke(str(band_model_file), str(tmp_path / "field"), "-o", str(out))
    assert result.exit_code == 0, result.output
    raven = _rows(out / "selections.txt", "\t")
    events = [r for r in raven if r["Common Name"] != "background"]
    by_file = {(Path(r["Begin Path"]).name, r["Common Name"]): r for r in events}
    dawn = by_file[("20240101_063000.wav", "low")]
    assert float(dawn["File Offset (s)"]) == pytest.approx(1.0, abs=HOP)
    assert float(dawn["End Time (s)"]) == pytest.approx(3.0, abs=HOP)
    # stereo is mixed to mono by default: both tones are found
    pair_high = by_file[("pair.flac", "high")]
    assert float(pair_high["File Offset (s)"]) == pytest.approx(2.5, abs=HOP)
    # combined timeline: files in order (the folder's files sorted), each after the previous
    assert float(pair_high["Begin Time (s)"]) == pytest.approx(
        8.0 + float(pair_high["File Offset (s)"]), abs=1e-3)

    labels = (out / "files" / f"{output_name(recordings['dawn'])}.labels.txt").read_text()
    starts = {line.split("\t")[2]: float(line.split("\t")[0]) for line in labels.splitlines()}
    assert starts["low"] == pytest.approx(1.0, abs=HOP)
    assert starts["high"] == pytest.approx(5.0, abs=HOP)

    rows = [r for r in _rows(out / "events.csv") if r["label"] == "high"
            and r["file"].endswith("063000.wav")]
    assert rows[0]["start_time"].startswith("2024-01-01T06:30:0")  # from the file name
    document = json.loads((out / "events.json").read_text())
    assert [Path(f["path"]).name for f in document["files"]] == ["20240101_063000.wav",
                                                                 "pair.flac"]


def test_a_rerun_skips_finished_files_and_redoes_changed_ones(band_model_file: Path,
                                                              recordings: dict[str, Path],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    field = str(tmp_path / "field")
    assert _invoke(str(band_model_file), field, "-o", str(out)).exit_code == 0
    record = out / "files" / f"{output_name(recordings['dawn'])}.json"
    first = record.stat().st_mtime_ns
    first_rows = _rows(out / "events.csv")
    again = _invoke(str(band_model_file), field, "-o", str(out))
    assert "2 reused" in again.output and record.stat().st_mtime_ns == first
    assert _rows(out / "events.csv") == first_rows  # combined tables rebuilt from records

    # other settings are other results: nothing is reused
    changed = _invoke(str(band_model_file), field, "-o", str(out), "--threshold", "0.4")
    assert "reused" not in changed.output
    # a half-written record (a crash mid-write leaves only temp files; this is a stranger's)
    record.write_text("{")
    redo = _invoke(str(band_model_file), field, "-o", str(out), "--threshold", "0.4")
    assert "1 reused" in redo.output and json.loads(record.read_text())["detections"]


def test_threshold_option_overrides_the_models_thresholds(band_model_file: Path,
                                                          recordings: dict[str, Path],
                                                          tmp_path: Path) -> None:
    # the tones score 0.5 at most: a 0.6 threshold finds no tone at all
    out = tmp_path / "out"
    assert _invoke(str(band_model_file), str(recordings["dawn"]), "-o", str(out),
                   "--threshold", "0.6").exit_code == 0
    assert {r["label"] for r in _rows(out / "events.csv")} <= {"background"}


def test_channel_each_and_a_chosen_channel(band_model_file: Path, recordings: dict[str, Path],
                                           tmp_path: Path) -> None:
    pair = str(recordings["stereo"])
    assert _invoke(str(band_model_file), pair, "-o", str(tmp_path / "each"),
                   "--channel", "each").exit_code == 0
    found = {(r["channel"], r["label"]) for r in _rows(tmp_path / "each" / "events.csv")
             if r["label"] != "background"}
    assert found == {("1", "low"), ("2", "high")}
    assert _invoke(str(band_model_file), pair, "-o", str(tmp_path / "two"),
                   "--channel", "2").exit_code == 0
    assert {r["label"] for r in _rows(tmp_path / "two" / "events.csv")} - {"background"} == \
        {"high"}
    bad = runner.invoke(app, ["detect", str(band_model_file), pair, "--channel", "left"])
    assert bad.exit_code == 2 and "channel number" in bad.output


def test_plot_writes_a_timeline_png(band_model_file: Path, recordings: dict[str, Path],
                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _invoke(str(band_model_file), str(recordings["dawn"]), "-o", str(out),
                   "--plot").exit_code == 0
    png = out / "files" / f"{output_name(recordings['dawn'])}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_start_time_option_gives_wall_clock_times(band_model_file: Path,
                                                  recordings: dict[str, Path],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _invoke(str(band_model_file), str(recordings["stereo"]), "-o", str(out),
                   "--start-time", "2024-06-01T22:00:00").exit_code == 0
    high = [r for r in _rows(out / "events.csv") if r["label"] == "high"][0]
    assert high["start_time"].startswith("2024-06-01T22:00:02")
    bad = runner.invoke(app, ["detect", str(band_model_file), str(recordings["stereo"]),
                              "-o", str(out), "--start-time", "noon"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_bad_and_broken_files_are_reported_not_fatal(band_model_file: Path,
                                                     recordings: dict[str, Path],
                                                     tmp_path: Path) -> None:
    junk = tmp_path / "field" / "junk.wav"
    junk.write_bytes(b"RIFF nonsense")
    cut = synth.write(tmp_path / "field" / "cut.wav",
                      bands.scene([("low", 0.5, 2.0)], 6.0), RATE)
    cut.write_bytes(cut.read_bytes()[:44 + 2 * 3 * RATE])  # header + the first 3 s
    out = tmp_path / "out"
    result = _invoke(str(band_model_file), str(tmp_path / "field"), "-o", str(out), "--strict")
    assert result.exit_code == 1
    assert "junk.wav" in result.output and "truncated" in result.output
    document = json.loads((out / "events.json").read_text())
    assert [Path(s["path"]).name for s in document["skipped"]] == ["junk.wav"]
    broken = [f for f in document["files"] if f["path"].endswith("cut.wav")][0]
    assert broken["failure"]["seconds"] == pytest.approx(3.0, abs=1e-3)
    assert [e["label"] for e in broken["events"] if e["label"] != "background"] == ["low"]


def test_an_onnx_export_finds_the_same_events_with_the_stored_thresholds(
        band_model_file: Path, recordings: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tympan.inference.onnx_export import export_onnx
    from tympan.models.modelfile import load_model

    onnx_file = export_onnx(load_model(band_model_file), tmp_path / "bands.onnx")
    tables = []
    for model, out, extra in [(band_model_file, tmp_path / "torch", ["--threads", "1"]),
                              (onnx_file, tmp_path / "onnx", ["--workers", "2"])]:
        result = _invoke(str(model), str(tmp_path / "field"), "-o", str(out), *extra)
        assert result.exit_code == 0, result.output
        tables.append(_rows(out / "events.csv"))
    # the thresholds (0.25) travel in the export: the default 0.5 would find nothing
    assert tables[1] == tables[0] and any(r["label"] == "high" for r in tables[0])
    gpu = _invoke(str(onnx_file), str(recordings["dawn"]), "--device", "cuda")
    assert gpu.exit_code == 2 and "runs on the CPU" in gpu.output
    torch_workers = _invoke(str(band_model_file), str(recordings["dawn"]), "--workers", "2")
    assert torch_workers.exit_code == 2 and "export" in torch_workers.output


def test_engine_onnx_exports_once_into_the_cache_and_finds_the_same_events(
        band_model_file: Path, recordings: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tympan.fileio import sha256_file

    exports = tmp_path / "exports"
    monkeypatch.setenv("TYMPAN_ONNX_CACHE", str(exports))
    field = str(tmp_path / "field")
    torch_run = _invoke(str(band_model_file), field, "-o", str(tmp_path / "torch"))
    assert torch_run.exit_code == 0, torch_run.output
    onnx_run = _invoke(str(band_model_file), field, "-o", str(tmp_path / "onnx"),
                       "--engine", "onnx", "--workers", "2")
    assert onnx_run.exit_code == 0, onnx_run.output
    assert _rows(tmp_path / "onnx" / "events.csv") == _rows(tmp_path / "torch" / "events.csv")
    cached = exports / f"{sha256_file(band_model_file)}.onnx"
    assert sorted(exports.iterdir()) == [cached]
    made = cached.stat().st_mtime_ns
    again = _invoke(str(band_model_file), str(recordings["dawn"]), "-o",
                    str(tmp_path / "again"), "--engine", "onnx")
    assert again.exit_code == 0 and cached.stat().st_mtime_ns == made  # reused, not redone
    bad = _invoke(str(band_model_file), field, "--engine", "tflite")
    assert bad.exit_code == 2 and "torch or onnx" in " ".join(bad.output.split())


def test_detect_killed_mid_run_then_rerun_gives_the_uninterrupted_tables(
    tiny_model_file: Path, tmp_path: Path
) -> None:
    """SIGKILL at a random moment after the first file's record: no final-named output is
    partial, and the rerun (which skips finished files) ends with the same tables."""
    from killing import kill_midway, temporaries, tympan, tympan_command

    field = tmp_path / "long"
    n_files = 48  # enough that the kill lands mid-run however fast the machine
    for i in range(n_files):  # recordings of 10 s: tones and noise bursts in turn
        parts = [synth.tone(300 + 40 * i + 500 * (k % 3), 1.0, RATE) if k % 2
                 else synth.noise_burst(1.0, RATE, seed=i * 100 + k) for k in range(10)]
        synth.write(field / f"rec{i:02d}.wav", np.concatenate(parts), RATE)

    def argv(out: Path) -> list[str]:
        return ["detect", str(tiny_model_file), str(field), "-o", str(out), "--threshold",
                "0.34"]

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    kill_midway(tympan_command(argv(killed)), lambda: any((killed / "files").glob("*.json")),
                seed=11, max_delay_seconds=0.5)
    records = sorted((killed / "files").glob("*.json"))
    assert 0 < len(records) < n_files and not (killed / "events.csv").exists()
    for record in records:  # a record (written last for its file) is whole
        json.loads(record.read_text())
    for out in (killed, straight):
        done = tympan(argv(out))
        assert done.returncode == 0, done.stderr[-2000:]
    assert temporaries(killed) == []
    for name in ("selections.txt", "events.csv", "events.json"):
        assert (killed / name).read_text() == (straight / name).read_text(), name
    labels = sorted(p.name for p in (straight / "files").glob("*.labels.txt"))
    assert len(labels) == n_files
    for name in labels:
        assert (killed / "files" / name).read_text() == (straight / "files" / name).read_text()
