"""Dataset summary: classes, counts per class and fold, durations, formats, bad files.

Every file is fully decoded (in a process pool), so files whose header is fine
but whose samples are not (NaN, truncated) are found too.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.data.splits import straddling_groups, straddling_message
from tympan.errors import AudioError, SilentAudioWarning


@dataclass(frozen=True)
class _FileFacts:
    sample_rate: int = 0
    channels: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    silent: bool = False


def _inspect(path: str, min_duration_seconds: float) -> _FileFacts:
    """Worker: header facts plus a full decode check."""
    from tympan.audio import read_audio

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SilentAudioWarning)
        try:
            samples, rate = read_audio(path, min_duration_seconds=min_duration_seconds)
        except AudioError as exc:
            return _FileFacts(error=exc.reason)
    silent = any(issubclass(w.category, SilentAudioWarning) for w in caught)
    return _FileFacts(rate, samples.shape[1], samples.shape[0] / rate, silent=silent)


def _inspect_all(paths: list[Path], min_duration_seconds: float, workers: int,
                 advance: Callable[[int], None]) -> Iterator[_FileFacts]:
    if workers <= 1 or len(paths) < 16:
        for p in paths:
            yield _inspect(str(p), min_duration_seconds)
            advance(1)
        return
    from tympan.parallel import process_pool

    with process_pool(workers) as pool:
        chunk = max(1, min(32, len(paths) // (8 * workers)))
        for facts in pool.map(_inspect, [str(p) for p in paths],
                              [min_duration_seconds] * len(paths), chunksize=chunk):
            yield facts
            advance(1)


def _total(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


@dataclass
class DatasetSummary:
    """What :func:`summarize` found. Durations in seconds; counts are of good clips.
    ``straddling`` maps each group found in more than one predefined fold to its folds."""

    name: str
    root: Path | None
    class_counts: dict[str, int]
    fold_counts: dict[int, int]
    class_fold_counts: dict[str, dict[int, int]]
    durations_seconds: list[float]
    sample_rates: dict[int, int]
    channels: dict[int, int]
    bad_files: list[BadFile] = field(default_factory=list)
    silent: list[Path] = field(default_factory=list)
    straddling: dict[str, list[int]] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted(self.class_counts)

    @property
    def n_clips(self) -> int:
        return sum(self.class_counts.values())

    def duration_stats(self) -> tuple[float, float, float]:
        """(min, mean, max) clip duration in seconds; zeros when there are no clips."""
        if not self.durations_seconds:
            return 0.0, 0.0, 0.0
        d = np.asarray(self.durations_seconds)
        return float(d.min()), float(d.mean()), float(d.max())

    def straddling_line(self, limit: int = 5) -> str | None:
        """One line naming the groups that straddle predefined folds, or None if none do."""
        return straddling_message(self.name, self.straddling, limit)

    def summary_line(self) -> str:
        lo, mean, hi = self.duration_stats()
        folds = f", {len(self.fold_counts)} folds" if self.fold_counts else ""
        straddle = (f", {len(self.straddling)} group(s) straddling folds"
                    if self.straddling else "")
        return (f"{self.name}: {self.n_clips} clips, {len(self.class_counts)} classes{folds}, "
                f"{_total(sum(self.durations_seconds))} "
                f"({lo:.2f}/{mean:.2f}/{hi:.2f} s min/mean/max), "
                f"{len(self.bad_files)} unreadable file(s) skipped{straddle}")

    def to_dict(self) -> dict[str, Any]:
        lo, mean, hi = self.duration_stats()
        return {
            "name": self.name,
            "root": str(self.root) if self.root else None,
            "n_clips": self.n_clips,
            "classes": self.classes,
            "class_counts": self.class_counts,
            "fold_counts": {str(k): v for k, v in self.fold_counts.items()},
            "duration_seconds": {"min": lo, "mean": mean, "max": hi},
            "sample_rates": {str(k): v for k, v in self.sample_rates.items()},
            "channels": {str(k): v for k, v in self.channels.items()},
            "bad_files": [{"path": str(b.path), "reason": b.reason} for b in self.bad_files],
            "silent": [str(p) for p in self.silent],
            "straddling_groups": self.straddling,
        }


def summarize(manifest: Manifest, *, min_duration_seconds: float = 0.1, workers: int = 2,
              progress: Callable[[int], None] | None = None) -> DatasetSummary:
    """Decode every clip of ``manifest`` and tally classes, folds, durations and formats.

    Files that fail to decode join ``manifest.bad_files`` in the summary (with their
    reason) and are not counted. Groups of good clips that sit in more than one
    predefined fold are listed in ``straddling``. ``progress`` is called with the
    number of files done.
    """
    advance = progress or (lambda n: None)
    good: list[Clip] = []
    durations: list[float] = []
    rates: Counter[int] = Counter()
    channels: Counter[int] = Counter()
    bad = list(manifest.bad_files)
    silent: list[Path] = []
    facts_iter = _inspect_all(manifest.paths, min_duration_seconds, workers, advance)
    for clip, facts in zip(manifest.clips, facts_iter, strict=True):
        if facts.error is not None:
            bad.append(BadFile(clip.path, facts.error))
            continue
        good.append(clip)
        durations.append(facts.duration_seconds)
        rates[facts.sample_rate] += 1
        channels[facts.channels] += 1
        if facts.silent:
            silent.append(clip.path)
    class_counts = Counter(c.label for c in good)
    fold_counts = Counter(c.fold for c in good if c.fold is not None)
    class_fold: dict[str, Counter[int]] = {}
    for c in good:
        if c.fold is not None:
            class_fold.setdefault(c.label, Counter())[c.fold] += 1
    return DatasetSummary(
        name=manifest.name,
        root=manifest.root,
        class_counts=dict(sorted(class_counts.items())),
        fold_counts=dict(sorted(fold_counts.items())),
        class_fold_counts={k: dict(sorted(v.items())) for k, v in sorted(class_fold.items())},
        durations_seconds=durations,
        sample_rates=dict(sorted(rates.items())),
        channels=dict(sorted(channels.items())),
        bad_files=bad,
        silent=silent,
        straddling=straddling_groups(replace(manifest, clips=good)),
    )
