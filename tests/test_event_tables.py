"""Detection tables: Raven selection table and Audacity labels (golden files), CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from tympan.errors import ConfigError
from tympan.inference.events import Event
from tympan.inference.stream import DecodeFailure
from tympan.workflows.event_tables import (
    CSV_COLUMNS,
    RAVEN_COLUMNS,
    FileDetections,
    audacity_labels,
    events_csv,
    events_json,
    raven_table,
    recording_start,
)

DATA = Path(__file__).parent / "data"


def _files() -> list[FileDetections]:
    first = FileDetections(Path("/field/site1/20240101_063000.wav"), [
        Event("dog", 0.0, 2.5, 0.91234, 0.8),
        Event("rain", 1.25, 7.5, 0.66, 0.6),
    ], 60.0, recording_start=datetime(2024, 1, 1, 6, 30, 0))
    second = FileDetections(Path("/field/site1/night.flac"), [
        Event("rooster", 12.75, 15.0, 0.5, 0.45),
    ], 30.5, failure=DecodeFailure(30.5, "corrupt or unreadable audio (lost sync)"))
    return [first, second]


def test_raven_table_matches_the_golden_file() -> None:
    text = raven_table(_files(), high_freq_hz=15000.0)
    assert text == (DATA / "detect_selections.txt").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert rows[0] == RAVEN_COLUMNS  # BirdNET-Analyzer's column order
    # the second file's events sit after the first file on the combined timeline
    assert rows[3][3] == "72.750" and rows[3][11] == "12.750"
    assert rows[3][10] == "/field/site1/night.flac"


def test_audacity_labels_match_the_golden_file() -> None:
    assert audacity_labels(_files()[0]) == (DATA / "detect_labels.txt").read_text(
        encoding="utf-8")
    two = FileDetections(Path("s.wav"), [Event("dog", 1.0, 2.0, 0.9, 0.9, channel=2)], 3.0,
                         channels=[1, 2])
    assert audacity_labels(two) == "1.000000\t2.000000\tdog (ch 2)\n"


def test_csv_has_wall_clock_times_when_the_start_is_known() -> None:
    rows = list(csv.DictReader(io.StringIO(events_csv(_files()))))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 3
    assert rows[1]["start_time"] == "2024-01-01T06:30:01.250"
    assert rows[1]["end_time"] == "2024-01-01T06:30:07.500"
    assert rows[2]["start_time"] == ""


def test_json_round_trips_a_files_detections() -> None:
    document = json.loads(events_json(_files(), model="m.safetensors", settings={"hop": 1},
                                      skipped=[(Path("bad.wav"), "not audio")]))
    assert document["skipped"] == [{"path": "bad.wav", "reason": "not audio"}]
    assert document["files"][1]["failure"]["seconds"] == 30.5
    for original, data in zip(_files(), document["files"], strict=True):
        assert FileDetections.from_dict(data) == original


def test_recording_start_from_option_or_file_name() -> None:
    assert recording_start(Path("x/20240101_063000.wav")) == datetime(2024, 1, 1, 6, 30)
    assert recording_start(Path("AM1_20231231T235959_rec.flac")) == datetime(2023, 12, 31, 23,
                                                                               59, 59)
    assert recording_start(Path("take_12.wav")) is None
    assert recording_start(Path("99999999_999999.wav")) is None  # digits, not a date
    assert recording_start(Path("20240101_063000.wav"), "2025-05-05T05:05:05") == \
        datetime(2025, 5, 5, 5, 5, 5)
    with pytest.raises(ConfigError, match="--start-time"):
        recording_start(Path("a.wav"), "yesterday")


@pytest.mark.parametrize("files", [_files(), _files()[1:], []])
def test_streamed_json_is_the_same_document_byte_for_byte(files: list[FileDetections]) -> None:
    """`tympan detect` writes events.json a file at a time (its memory must not grow with the
    events): the text is what one json.dumps(indent=2) of the whole document gives."""
    settings, skipped = {"hop": 1, "classes": ["a", "b"]}, [(Path("bad.wav"), 'a "quote"')]
    whole = {"model": "m.onnx", "settings": settings,
             "files": [d.to_dict() for d in files],
             "skipped": [{"path": str(p), "reason": r} for p, r in skipped]}
    streamed = events_json(files, model="m.onnx", settings=settings, skipped=skipped)
    assert streamed == json.dumps(whole, indent=2) + "\n"


def test_tables_read_their_files_once_in_order() -> None:
    """The combined tables take a one-pass iterator (files read back from disk one by one)."""
    from tympan.workflows.event_tables import csv_lines, raven_lines

    assert "".join(raven_lines(iter(_files()), high_freq_hz=15000.0)) == (
        DATA / "detect_selections.txt").read_text(encoding="utf-8")
    assert "".join(csv_lines(iter(_files()))) == events_csv(_files())
