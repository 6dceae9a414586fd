"""The local engine: a pool of worker processes, each loading the model once.

Workers are spawned (a fresh interpreter: no torch state inherited from the
parent) and die with the parent (:func:`tympan.parallel.die_with_parent`), so
a ``kill -9`` of the run leaves nothing writing behind it. Each worker plans
files from their headers and decodes + scores groups of units; the parent
keeps two shards in flight (the next one's tasks are queued before the
current one is collected) and hands shards back in manifest order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tympan.corpus.plan import (
    ChunkPlan,
    PlanSettings,
    assemble,
    group_units,
    merge_plans,
    plan_files,
)
from tympan.corpus.scoring import Kind, UnitResult, UnitScorer
from tympan.corpus.shards import ShardRows
from tympan.corpus.units import Unit

#: Files per planning task.
PLAN_CHUNK_FILES = 64


@dataclass(frozen=True)
class ScoreSettings:
    """How each worker scores: the model file, ``kind``, windows per forward pass, whether to
    verify the model's checksum, and torch threads per worker."""

    model_path: Path
    kind: Kind
    batch_size: int = 8
    verify: bool = True
    threads: int = 1


_scorer: UnitScorer | None = None


def _init_worker(parent_pid: int, score: ScoreSettings, plan: PlanSettings) -> None:
    from tympan.parallel import die_with_parent

    die_with_parent(parent_pid)
    global _scorer
    _scorer = UnitScorer(score.model_path, score.kind, plan.geometry,
                         batch_size=score.batch_size, verify=score.verify,
                         threads=score.threads, quiet=True)


def _score_units(units: list[Unit]) -> list[UnitResult]:
    assert _scorer is not None, "worker not initialised"
    return [_scorer.run(unit) for unit in units]


Shard = tuple[int, list[Path]]


class _InFlight:
    def __init__(self, shard: Shard, plan: ChunkPlan, tasks: list[Future[list[UnitResult]]]):
        self.shard, self.plan, self.tasks = shard, plan, tasks


def run_local(shards: Iterator[Shard], score: ScoreSettings, plan: PlanSettings, *,
              workers: int, width: int) -> Iterator[tuple[int, list[Path], ShardRows]]:
    """Plan, decode and score every shard of ``shards`` on ``workers`` processes; yield
    ``(shard, paths, rows)`` in shard order as each completes."""
    context = multiprocessing.get_context("spawn")
    min_windows = max(1, score.batch_size)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(os.getpid(), score, plan)) as pool:

        def start(shard: Shard) -> _InFlight:
            _, paths = shard
            chunks = [pool.submit(plan_files, paths[i:i + PLAN_CHUNK_FILES], i, plan)
                      for i in range(0, len(paths), PLAN_CHUNK_FILES)]
            merged = merge_plans(f.result() for f in chunks)
            tasks = [pool.submit(_score_units, group)
                     for group in group_units(merged.units, min_windows)]
            return _InFlight(shard, merged, tasks)

        pending: _InFlight | None = None
        for shard in shards:
            current = start(shard)  # queued behind the previous shard's tasks
            if pending is not None:
                yield _finish(pending, width)
            pending = current
        if pending is not None:
            yield _finish(pending, width)


def _finish(flight: _InFlight, width: int) -> tuple[int, list[Path], ShardRows]:
    results = [r for task in flight.tasks for r in task.result()]
    index, paths = flight.shard
    return index, paths, assemble(len(paths), flight.plan.errors, results, width)


__all__ = ["ScoreSettings", "run_local"]
