"""The manifest: the list of labelled clips a dataset is made of."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tympan.fileio import atomic_write_text


@dataclass(frozen=True)
class Clip:
    """One labelled recording. ``fold`` is a predefined CV fold (1-based) or None;
    ``group`` ties clips cut from one source so they never straddle a split.
    An augmented copy names the clip it was made from (``source``) and how
    (``transform``, e.g. ``"TS:1.07"``); it keeps its source's fold and group."""

    path: Path
    label: str
    fold: int | None = None
    group: str | None = None
    source: Path | None = None
    transform: str | None = None


@dataclass(frozen=True)
class BadFile:
    """A file that was skipped, and why (the :class:`AudioError` message's cause)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Manifest:
    """A dataset: good clips, the files skipped with their reasons, and its provenance."""

    clips: list[Clip]
    name: str = "dataset"
    root: Path | None = None
    bad_files: list[BadFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def __getitem__(self, index: int) -> Clip:
        return self.clips[index]

    @property
    def classes(self) -> list[str]:
        """Sorted class names; index ``i`` is the label id ``i``."""
        return sorted({c.label for c in self.clips})

    @property
    def paths(self) -> list[Path]:
        return [c.path for c in self.clips]

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.clips]

    def label_ids(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """Integer label per clip, ``(n_clips,)`` int64, indexing ``classes``."""
        index = {name: i for i, name in enumerate(classes or self.classes)}
        return np.array([index[c.label] for c in self.clips], dtype=np.int64)

    @property
    def has_folds(self) -> bool:
        return bool(self.clips) and all(c.fold is not None for c in self.clips)

    @property
    def groups(self) -> list[str]:
        """Group per clip; a clip without one is its own group (its path)."""
        return [c.group if c.group is not None else str(c.path) for c in self.clips]

    def class_counts(self) -> Counter[str]:
        return Counter(c.label for c in self.clips)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """A manifest of the clips at ``indices`` (bad files are not carried)."""
        return replace(self, clips=[self.clips[int(i)] for i in indices], bad_files=[])

    def fingerprint(self) -> str:
        """sha256 over the sorted (path name, label, fold, group) rows: names the data."""
        rows = sorted(
            f"{c.path.name}\t{c.label}\t{c.fold}\t{c.group}" for c in self.clips
        )
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()

    def to_csv(self) -> str:
        """CSV text ``path,label,fold,group`` (the layout :func:`read_csv` takes)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["path", "label", "fold", "group"])
        for c in self.clips:
            writer.writerow([str(c.path), c.label, "" if c.fold is None else c.fold,
                             c.group or ""])
        return out.getvalue()

    def save_csv(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_csv())
