"""The detect workflow: many long recordings → events → per-file and combined outputs.

Each file is scored (:class:`~tympan.inference.detect.Detector`), turned into
events (:mod:`tympan.inference.events`) and written to
``OUT/files/<name>.labels.txt`` (Audacity), optionally ``<name>.png`` (the
timeline) and last ``<name>.json``, each atomically: the JSON marks the file
done. A rerun skips every file whose JSON matches the file (size, mtime), the
model and the settings, then rewrites the combined ``selections.txt``
(Raven), ``events.csv`` and ``events.json`` from all per-file results,
streamed from the per-file JSON one file at a time: memory does not grow
with the number of files or events. A file that cannot be decoded at all is
reported and skipped; one that fails mid-way keeps the events before the
failure and records where it failed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tympan.errors import AudioError, ModelOutputError
from tympan.fileio import atomic_path, atomic_write_text
from tympan.inference.detect import Detector, WindowScores
from tympan.inference.events import (
    DEFAULT_THRESHOLD,
    EventConfig,
    detect_events,
    model_thresholds,
)
from tympan.inference.stream import ChannelChoice, DecodeFailure
from tympan.workflows.event_tables import (
    FileDetections,
    audacity_labels,
    csv_lines,
    json_chunks,
    raven_lines,
    recording_start,
)

if TYPE_CHECKING:
    from tympan.inference.onnx_predict import OnnxPredictor
    from tympan.models.modelfile import LoadedModel

    #: A model file (torch) or an ONNX export (onnxruntime, no torch).
    DetectModel = LoadedModel | OnnxPredictor

RAVEN_FILE = "selections.txt"
CSV_FILE = "events.csv"
JSON_FILE = "events.json"
FILES_DIR = "files"


@dataclass(frozen=True)
class DetectSettings:
    """Everything that decides a file's events besides the model.

    ``threshold`` (None = the model file's per-class thresholds, else 0.5)
    applies to every class; ``channel`` is ``"mix"``, ``"each"`` or a 0-based
    index; ``start_time`` (ISO 8601) is the wall-clock start of every file
    (else a ``YYYYMMDD_HHMMSS`` in the name, if any).
    """

    hop_seconds: float | None = None
    threshold: float | None = None
    hysteresis: float = 0.2
    smooth_windows: int = 1
    min_duration_seconds: float = 0.0
    min_gap_seconds: float = 0.0
    channel: ChannelChoice = "mix"
    start_time: str | None = None

    def event_config(self, loaded: DetectModel) -> EventConfig:
        """The :class:`EventConfig` for ``loaded``: its stored thresholds unless overridden."""
        stored = {} if self.threshold is not None else stored_thresholds(loaded)
        return EventConfig(
            thresholds={k: v for k, v in stored.items() if k in loaded.classes},
            default_threshold=self.threshold if self.threshold is not None else DEFAULT_THRESHOLD,
            hysteresis=self.hysteresis, smooth_windows=self.smooth_windows,
            min_duration_seconds=self.min_duration_seconds, min_gap_seconds=self.min_gap_seconds)


def stored_thresholds(loaded: DetectModel) -> dict[str, float]:
    """Per-class thresholds the training run stored in a model file or its ONNX export."""
    metadata = getattr(loaded, "metadata", None)
    if metadata is not None and hasattr(metadata, "extra"):  # a LoadedModel
        return model_thresholds(metadata.extra)
    return dict(getattr(loaded, "thresholds", {}))


@dataclass(frozen=True)
class FileSummary:
    """One scored file in a :class:`DetectOutcome`: what a summary shows, and ``record``, its
    ``files/<name>.json`` (:meth:`detections` reads its events back)."""

    path: Path
    duration_seconds: float
    n_events: int
    labels: tuple[str, ...]
    failure: DecodeFailure | None
    record: Path

    @classmethod
    def of(cls, detections: FileDetections, record: Path) -> FileSummary:
        return cls(detections.path, detections.duration_seconds, len(detections.events),
                   tuple(sorted({e.label for e in detections.events})), detections.failure,
                   record)

    def detections(self) -> FileDetections:
        """The file's events as written to ``record``.

        Raises:
            OSError, ValueError: the record was removed or changed since.
        """
        data = json.loads(self.record.read_text(encoding="utf-8"))
        return FileDetections.from_dict(data["detections"])


@dataclass
class DetectOutcome:
    """What :func:`detect_files` did: a summary per scored file (in input order; events stay
    on disk, so memory does not grow with them), files skipped with the reason, how many
    were reused from a previous run, and the combined outputs."""

    files: list[FileSummary]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    reused: int = 0
    outputs: list[Path] = field(default_factory=list)


def detect_file(detector: Detector, path: Path, settings: DetectSettings, config: EventConfig,
                *, keep_spectrum: bool = False,
                progress: Callable[[float], None] | None = None,
                ) -> tuple[FileDetections, WindowScores]:
    """Score one file and find its events.

    Raises:
        AudioError: the file cannot be decoded at all (or is too short).
        ModelOutputError: the model gives non-finite probabilities.
    """
    scores = detector.score_file(path, channel=settings.channel, keep_spectrum=keep_spectrum,
                                 progress=progress)
    detections = FileDetections(path, detect_events(scores, config), scores.duration_seconds,
                                scores.channels, scores.failure,
                                recording_start(path, settings.start_time))
    return detections, scores


def output_name(path: Path) -> str:
    """A per-file output name: the file's stem and a hash of its absolute path (two
    ``rec.wav`` in different folders do not collide)."""
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
    stem = re.sub(r"[^\w.-]+", "_", path.stem)[:80] or "audio"
    return f"{stem}_{digest}"


def _key(path: Path, model_path: Path, settings: DetectSettings, plot: bool) -> dict[str, Any]:
    source, model = path.stat(), model_path.stat()
    return {"source": {"path": str(path.resolve()), "size": source.st_size,
                       "mtime_ns": source.st_mtime_ns},
            "model": {"path": str(model_path.resolve()), "size": model.st_size,
                      "mtime_ns": model.st_mtime_ns},
            "settings": asdict(settings), "plot": plot}


def _load_done(record: Path, key: dict[str, Any]) -> FileDetections | None:
    """The results stored in ``record`` if they were made for ``key`` (else None)."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        if data.get("key") != json.loads(json.dumps(key)):
            return None
        return FileDetections.from_dict(data["detections"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, half-written by another tool, or from another version


def detect_files(
    loaded: DetectModel,
    model_path: Path,
    paths: Sequence[Path],
    output_dir: Path,
    settings: DetectSettings,
    *,
    plot: bool = False,
    batch_size: int = 8,
    device: str | None = None,
    threads: int | None = None,
    workers: int = 1,
    progress: Callable[[Path, bool], None] | None = None,
) -> DetectOutcome:
    """Detect events in every file of ``paths`` and write the outputs under ``output_dir``.

    ``loaded`` is a loaded model file (torch, on ``device`` with ``threads``
    threads) or an :class:`~tympan.inference.onnx_predict.OnnxPredictor` (its
    own threads; ``workers`` > 1 scores in that many single-thread worker processes).

    ``progress(path, reused)`` is called after each file. Files already done
    with the same model and settings are reused, not scored again.

    Raises:
        ConfigError: bad event settings or ``start_time``.
        ValueError: a hop that is not positive or longer than a window.
    """
    config = settings.event_config(loaded)
    recording_start(Path("x"), settings.start_time)  # a bad --start-time fails before any work
    detector = Detector(loaded, hop_seconds=settings.hop_seconds, batch_size=batch_size,
                        device=device, threads=threads, workers=workers)
    with detector:
        outcome = _detect_each(detector, loaded, model_path, paths, output_dir, settings,
                               config, plot, progress)
    outcome.outputs = write_combined(outcome, output_dir, loaded, model_path, settings)
    return outcome


def _detect_each(detector: Detector, loaded: DetectModel, model_path: Path,
                 paths: Sequence[Path], output_dir: Path, settings: DetectSettings,
                 config: EventConfig, plot: bool,
                 progress: Callable[[Path, bool], None] | None) -> DetectOutcome:
    files_dir = output_dir / FILES_DIR
    outcome = DetectOutcome([])
    for path in paths:
        name = output_name(path)
        record = files_dir / f"{name}.json"
        key = _key(path, model_path, settings, plot)
        done = _load_done(record, key)
        if done is not None and (not plot or (files_dir / f"{name}.png").is_file()):
            outcome.files.append(FileSummary.of(done, record))
            outcome.reused += 1
            if progress is not None:
                progress(path, True)
            continue
        try:
            detections, scores = detect_file(detector, path, settings, config,
                                             keep_spectrum=plot)
        except AudioError as exc:
            outcome.skipped.append((path, exc.reason))
        except (ModelOutputError, ValueError) as exc:
            outcome.skipped.append((path, str(exc)))
        else:
            atomic_write_text(files_dir / f"{name}.labels.txt", audacity_labels(detections))
            if plot:
                from tympan.workflows.timeline import save_timeline

                thresholds = {c: config.threshold(c) for c in loaded.classes}
                for index, channel in enumerate(scores.channels):
                    suffix = "" if len(scores.channels) == 1 else f".ch{channel}"
                    save_timeline(files_dir / f"{name}{suffix}.png", scores, detections.events,
                                  thresholds, channel_index=index)
                if len(scores.channels) > 1:  # the completeness check looks for <name>.png
                    save_timeline(files_dir / f"{name}.png", scores, detections.events,
                                  thresholds)
            atomic_write_text(record, json.dumps({"key": key,
                                                  "detections": detections.to_dict()},
                                                 indent=2, allow_nan=False) + "\n")
            outcome.files.append(FileSummary.of(detections, record))
        if progress is not None:
            progress(path, False)
    return outcome


def _read_back(files: Sequence[FileSummary]) -> Iterator[FileDetections]:
    for summary in files:
        yield summary.detections()


def _write_lines(target: Path, lines: Iterable[str]) -> None:
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8", newline="") as out:
        out.writelines(lines)


def write_combined(outcome: DetectOutcome, output_dir: Path, loaded: DetectModel,
                   model_path: Path, settings: DetectSettings) -> list[Path]:
    """Write the combined Raven table, CSV and JSON of ``outcome`` (atomically), reading each
    file's events back from its record one file at a time.

    Raises:
        NoSpaceError: the disk filled up (earlier combined outputs are kept).
    """
    high = loaded.feature_config.f_max
    targets = [output_dir / RAVEN_FILE, output_dir / CSV_FILE, output_dir / JSON_FILE]
    _write_lines(targets[0], raven_lines(_read_back(outcome.files), high_freq_hz=high))
    _write_lines(targets[1], csv_lines(_read_back(outcome.files)))
    _write_lines(targets[2], json_chunks(_read_back(outcome.files), model=str(model_path),
                                         settings=asdict(settings), skipped=outcome.skipped))
    return targets


__all__ = ["DetectOutcome", "DetectSettings", "FileSummary", "detect_file", "detect_files",
           "output_name", "stored_thresholds", "write_combined"]
