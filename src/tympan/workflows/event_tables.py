"""Detections as files other tools read: Raven selection tables, Audacity labels, CSV, JSON.

The Raven table has BirdNET-Analyzer's columns and combined-table layout:
one row per event across all files, ``Begin Time (s)``/``End Time (s)`` on
the files' concatenated timeline (each file starts where the previous one
ended), ``File Offset (s)`` the start within its own file, ``Begin Path``
the file. Audacity labels are per file (``start\\tend\\tlabel``). CSV and
JSON add wall-clock times when a recording's start is known
(:func:`recording_start`: ``--start-time`` or a ``YYYYMMDD_HHMMSS`` in the
file name).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tympan.errors import ConfigError
from tympan.inference.events import Event
from tympan.inference.stream import DecodeFailure

RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                 "Low Freq (Hz)", "High Freq (Hz)", "Common Name", "Species Code", "Confidence",
                 "Begin Path", "File Offset (s)"]
CSV_COLUMNS = ["file", "channel", "label", "start_s", "end_s", "peak_score", "mean_score",
               "start_time", "end_time"]

_NAME_STAMP = re.compile(r"(?<!\d)(\d{8})[_T-]?(\d{6})(?!\d)")


@dataclass
class FileDetections:
    """One file's events, how much of it was decoded, and (if it stopped early) why.

    ``channels`` are the scored channels (1-based; ``[0]`` = mixed);
    ``recording_start`` is the wall-clock time of its first sample, if known.
    """

    path: Path
    events: list[Event]
    duration_seconds: float
    channels: list[int] = field(default_factory=lambda: [0])
    failure: DecodeFailure | None = None
    recording_start: datetime | None = None

    def wall_clock(self, seconds: float) -> str:
        """ISO time of ``seconds`` into the file ('' when the start is unknown)."""
        if self.recording_start is None:
            return ""
        return (self.recording_start + timedelta(seconds=seconds)).isoformat(
            timespec="milliseconds")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "duration_seconds": self.duration_seconds,
            "channels": self.channels,
            "failure": None if self.failure is None else {"seconds": self.failure.seconds,
                                                          "reason": self.failure.reason},
            "recording_start": (None if self.recording_start is None
                                else self.recording_start.isoformat()),
            "events": [{**e.to_dict(), "start_time": self.wall_clock(e.start_seconds) or None,
                        "end_time": self.wall_clock(e.end_seconds) or None}
                       for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileDetections:
        failure = data.get("failure")
        start = data.get("recording_start")
        fields = ("label", "start_seconds", "end_seconds", "peak_score", "mean_score", "channel")
        return cls(Path(data["path"]), [Event(**{k: e[k] for k in fields})
                                        for e in data["events"]],
                   float(data["duration_seconds"]), list(data["channels"]),
                   None if failure is None else DecodeFailure(failure["seconds"],
                                                              failure["reason"]),
                   None if start is None else datetime.fromisoformat(start))


def recording_start(path: Path, start_time: str | None = None) -> datetime | None:
    """When ``path`` began: ``start_time`` (ISO 8601) if given, else a ``YYYYMMDD_HHMMSS``
    (or ``YYYYMMDDTHHMMSS``) stamp in its name, else None.

    Raises:
        ConfigError: ``start_time`` is not an ISO 8601 date-time.
    """
    if start_time is not None:
        try:
            return datetime.fromisoformat(start_time)
        except ValueError:
            raise ConfigError(f"--start-time {start_time!r} is not an ISO 8601 date-time "
                              "(e.g. 2024-01-01T06:30:00)") from None
    match = _NAME_STAMP.search(path.stem)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
    except ValueError:  # eight digits that are not a date
        return None


def raven_lines(files: Iterable[FileDetections], *, high_freq_hz: float,
                low_freq_hz: float = 0.0) -> Iterator[str]:
    """The lines (each ending in a newline) of a combined Raven selection table
    (tab-separated, BirdNET-Analyzer's columns); ``files`` is read once, in order."""
    yield "\t".join(RAVEN_COLUMNS) + "\n"
    selection, offset = 1, 0.0
    for detections in files:
        for e in detections.events:
            yield "\t".join([
                str(selection), "Spectrogram 1", str(max(e.channel, 1)),
                f"{offset + e.start_seconds:.3f}", f"{offset + e.end_seconds:.3f}",
                f"{low_freq_hz:.1f}", f"{high_freq_hz:.1f}", e.label, e.label,
                f"{e.peak_score:.4f}", str(detections.path), f"{e.start_seconds:.3f}"]) + "\n"
            selection += 1
        offset += detections.duration_seconds


def raven_table(files: Sequence[FileDetections], *, high_freq_hz: float,
                low_freq_hz: float = 0.0) -> str:
    """A combined Raven selection table as one string (see :func:`raven_lines`)."""
    return "".join(raven_lines(files, high_freq_hz=high_freq_hz, low_freq_hz=low_freq_hz))


def audacity_labels(detections: FileDetections) -> str:
    """Audacity label track text: ``start\\tend\\tlabel`` per event (a channel suffix when
    channels were scored separately)."""
    rows = []
    for e in detections.events:
        label = e.label if e.channel == 0 or len(detections.channels) == 1 else \
            f"{e.label} (ch {e.channel})"
        rows.append(f"{e.start_seconds:.6f}\t{e.end_seconds:.6f}\t{label}\n")
    return "".join(rows)


def csv_lines(files: Iterable[FileDetections]) -> Iterator[str]:
    """The lines of the events CSV: a header, then one row per event (file, channel, label,
    times in seconds, scores, wall clock); ``files`` is read once, in order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")

    def line(row: Sequence[object]) -> str:
        out.seek(0)
        out.truncate()
        writer.writerow(row)
        return out.getvalue()

    yield line(CSV_COLUMNS)
    for detections in files:
        for e in detections.events:
            yield line([str(detections.path), e.channel, e.label, f"{e.start_seconds:.3f}",
                        f"{e.end_seconds:.3f}", f"{e.peak_score:.4f}", f"{e.mean_score:.4f}",
                        detections.wall_clock(e.start_seconds),
                        detections.wall_clock(e.end_seconds)])


def events_csv(files: Sequence[FileDetections]) -> str:
    """The events CSV as one string (see :func:`csv_lines`)."""
    return "".join(csv_lines(files))


def json_chunks(files: Iterable[FileDetections], *, model: str, settings: dict[str, Any],
                skipped: Sequence[tuple[Path, str]] = ()) -> Iterator[str]:
    """Every file's events, failures and settings as one JSON document, in pieces of one
    file each (``files`` is read once, in order; the pieces join to :func:`events_json`)."""
    def indented(value: Any, depth: int) -> str:
        text = json.dumps(value, indent=2, allow_nan=False)
        return text.replace("\n", "\n" + "  " * depth)

    yield ('{\n  "model": ' + indented(model, 1) + ',\n  "settings": '
           + indented(settings, 1) + ',\n  "files": [')
    first = True
    for detections in files:
        yield ("" if first else ",") + "\n    " + indented(detections.to_dict(), 2)
        first = False
    yield ("]" if first else "\n  ]") + ',\n  "skipped": ' + indented(
        [{"path": str(p), "reason": r} for p, r in skipped], 1) + "\n}\n"


def events_json(files: Sequence[FileDetections], *, model: str, settings: dict[str, Any],
                skipped: Sequence[tuple[Path, str]] = ()) -> str:
    """Every file's events, failures and settings as one JSON document (a string)."""
    return "".join(json_chunks(files, model=model, settings=settings, skipped=skipped))


__all__ = ["CSV_COLUMNS", "FileDetections", "RAVEN_COLUMNS", "audacity_labels", "csv_lines",
           "events_csv", "events_json", "json_chunks", "raven_lines", "raven_table",
           "recording_start"]
