"""One shard's plan and its assembly: files → units (or error rows) → ordered shard rows.

Torch-free, so every engine's planning stage (a pool task, a Ray task) runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tympan.corpus.scoring import UnitResult
from tympan.corpus.shards import ShardRows
from tympan.corpus.units import Unit, WindowGeometry, plan_file
from tympan.errors import AudioError


@dataclass(frozen=True)
class PlanSettings:
    """How files become units: the window ``geometry``, at most ``unit_windows`` windows a
    unit, files shorter than ``min_duration_seconds`` skipped."""

    geometry: WindowGeometry
    unit_windows: int = 32
    min_duration_seconds: float = 0.1


#: An error row with the index of its file in the shard: (file_index, path, seconds, reason).
IndexedError = tuple[int, str, "float | None", str]


@dataclass
class ChunkPlan:
    """Units of some of a shard's files, and error rows for the files that have none."""

    units: list[Unit] = field(default_factory=list)
    errors: list[IndexedError] = field(default_factory=list)


def plan_files(paths: Sequence[Path | str], first_index: int, settings: PlanSettings
               ) -> ChunkPlan:
    """Plan files ``first_index, first_index + 1, ...`` of a shard from their headers; a file
    that cannot be used becomes an error row with its reason."""
    plan = ChunkPlan()
    for offset, raw in enumerate(paths):
        index = first_index + offset
        try:
            plan.units += plan_file(Path(raw), index, settings.geometry, settings.unit_windows,
                                    settings.min_duration_seconds)
        except AudioError as exc:
            plan.errors.append((index, str(raw), None, exc.reason))
        except Exception as exc:  # an odd header or path: an error row, never a failed run
            plan.errors.append((index, str(raw), None,
                                f"cannot read the header ({type(exc).__name__}: {exc})"))
    return plan


def merge_plans(plans: Iterable[ChunkPlan]) -> ChunkPlan:
    """One shard's plan from its chunks' (in order)."""
    merged = ChunkPlan()
    for plan in plans:
        merged.units += plan.units
        merged.errors += plan.errors
    return merged


def group_units(units: Sequence[Unit], min_windows: int) -> list[list[Unit]]:
    """Consecutive units in groups of at least ``min_windows`` windows (the last may hold
    fewer): one task each, so many short files do not cost one round trip each."""
    groups: list[list[Unit]] = []
    current: list[Unit] = []
    count = 0
    for unit in units:
        current.append(unit)
        count += unit.stop - unit.first
        if count >= min_windows:
            groups.append(current)
            current, count = [], 0
    if current:
        groups.append(current)
    return groups


def assemble(n_files: int, plan_errors: Sequence[IndexedError], results: Iterable[UnitResult],
             width: int) -> ShardRows:
    """A shard's rows from its plan's error rows and its units' results
    (:class:`~tympan.corpus.scoring.UnitResult`, any order): windows in unit order, errors
    in file order."""
    ordered = sorted(results, key=lambda r: (r.unit.file_index, r.unit.first))
    errors: list[IndexedError] = list(plan_errors)
    paths: list[str] = []
    for result in ordered:
        paths += [result.unit.path] * len(result.starts)
        errors += [(result.unit.file_index, p, s, r)
                   for p, s, r in result.errors]
    errors.sort(key=lambda e: (e[0], -1.0 if e[2] is None else e[2]))

    def cat(name: str, empty: np.ndarray) -> np.ndarray:
        parts = [getattr(r, name) for r in ordered]
        return np.concatenate(parts) if parts else empty

    return ShardRows(paths, cat("starts", np.zeros(0, np.int64)),
                     cat("ends", np.zeros(0, np.int64)),
                     cat("values", np.zeros((0, width), np.float32)),
                     [(p, s, r) for _, p, s, r in errors], n_files)


__all__ = ["ChunkPlan", "PlanSettings", "assemble", "group_units", "merge_plans", "plan_files"]
