"""The Ray Data engine (``tympan[ray]``): plan → decode → score as separate stages.

Per group of shards one streaming Dataset runs: ``from_items`` of file chunks
→ ``map_batches(plan)`` (CPU tasks: headers → units, or error rows) →
``map_batches(decode)`` (each unit's span at the model's rate) →
``map_batches(Scorer)`` (``workers`` actors that load the model once). The
decode stage asks for the actors' resources, so Ray Data fuses it into the
actors (``MapBatches(_decode_batch)->MapBatches(_Scorer)``) and audio never
crosses the object store; unfused (``fuse_decode=False``), every unit's samples
travel through it: 54 CPU s against 46 for the same 300 files
(bench/results/corpus-300-ray-decode-stage.json). The driver pulls results
with ``iter_batches`` and hands back each shard as soon as all its units are
in, so the caller writes it with its own atomic Parquet writer (per-shard
resume; Ray's ``write_parquet`` has none). A file that cannot be decoded is
an error row inside the stage, never a failed task. Rows between stages
carry pickled units/results: they never leave this pipeline.

Without ``address`` a local Ray instance is started with ``workers`` CPUs and
no dashboard, and shut down at the end; an already initialised Ray (a test's,
a notebook's) is used as it is.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tympan.corpus.local import ScoreSettings
from tympan.corpus.plan import IndexedError, PlanSettings, assemble, plan_files
from tympan.corpus.scoring import UnitResult, UnitScorer, describe_failure
from tympan.corpus.shards import ShardRows
from tympan.corpus.units import Unit
from tympan.errors import AudioError

#: Files per planning row.
PLAN_CHUNK_FILES = 64
#: Shards per Dataset (actors are started once per group).
GROUP_SHARDS = 64
#: CPUs a planning task asks for (headers only: light next to decoding and scoring; not
#: the actors' share, so Ray does not fuse planning into them).
PLAN_CPUS = 0.2
#: CPUs an unfused decoding task asks for (``fuse_decode=False``).
TASK_CPUS = 0.25
#: Units per decode task and per actor call.
UNITS_PER_BATCH = 4
#: Object store of a local instance started here (bytes).
OBJECT_STORE_BYTES = 256 * 1024 * 1024

Shard = tuple[int, list[Path]]


def _plan_batch(batch: dict[str, np.ndarray], plan: PlanSettings) -> dict[str, Any]:
    """Plan rows (shard, first, paths) → one row per unit; a chunk without units gives one
    row without a unit, so the driver learns how many rows each chunk sends."""
    out: dict[str, list[Any]] = {"shard": [], "first": [], "count": [], "unit": [],
                                 "errors": []}
    for shard, first, paths in zip(batch["shard"], batch["first"], batch["paths"],
                                   strict=True):
        chunk = plan_files([str(p) for p in paths], int(first), plan)
        units: list[Unit | None] = list(chunk.units) or [None]
        for i, unit in enumerate(units):
            out["shard"].append(int(shard))
            out["first"].append(int(first))
            out["count"].append(len(units))
            out["unit"].append(b"" if unit is None else pickle.dumps(unit))
            out["errors"].append(pickle.dumps(chunk.errors) if i == 0 else b"")
    return {k: np.array(v, dtype=object) if k in ("unit", "errors") else np.array(v)
            for k, v in out.items()}


def _decode_batch(batch: dict[str, np.ndarray], plan: PlanSettings) -> dict[str, Any]:
    """Adds each unit's samples (float32 bytes) and decoding failure ('' if none)."""
    from tympan.corpus.decode import decode_span

    samples, failures = [], []
    for raw in batch["unit"]:
        if not raw:
            samples.append(b"")
            failures.append("")
            continue
        unit: Unit = pickle.loads(raw)
        begin, end = unit.span(plan.geometry)
        try:
            wave, failure = decode_span(unit.path, plan.geometry.sample_rate, begin, end)
        except AudioError as exc:
            wave, failure = np.zeros(0, np.float32), f"\0{exc.reason}"  # \0: nothing decoded
        except Exception as exc:  # a decoder's own failure: an error row, not a failed job
            wave, failure = np.zeros(0, np.float32), f"\0{describe_failure(exc)}"
        samples.append(wave.astype(np.float32).tobytes())
        failures.append(failure or "")
    return dict(batch, samples=np.array(samples, dtype=object),
                failure=np.array(failures, dtype=object))


class _Scorer:
    """Ray actor: loads the model once; scores the decoded units of each batch."""

    def __init__(self, score: ScoreSettings, plan: PlanSettings) -> None:
        self.scorer = UnitScorer(score.model_path, score.kind, plan.geometry,
                                 batch_size=score.batch_size, verify=score.verify,
                                 threads=score.threads, quiet=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        results = []
        for raw, data, failure in zip(batch["unit"], batch["samples"], batch["failure"],
                                      strict=True):
            if not raw:
                results.append(b"")
                continue
            unit: Unit = pickle.loads(raw)
            if failure.startswith("\0"):
                result = UnitResult(unit, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                    np.zeros((0, self.scorer.width), np.float32),
                                    [(unit.path, None, failure[1:])])
            else:
                result = self.scorer.score(unit, np.frombuffer(data, dtype=np.float32),
                                           failure or None)
            results.append(pickle.dumps(result))
        return {"shard": batch["shard"], "first": batch["first"], "count": batch["count"],
                "errors": batch["errors"], "result": np.array(results, dtype=object)}


class _ShardState:
    def __init__(self, paths: list[Path], firsts: list[int]) -> None:
        self.paths = paths
        self.expected: dict[int, int | None] = dict.fromkeys(firsts)
        self.seen: dict[int, int] = dict.fromkeys(firsts, 0)
        self.results: list[UnitResult] = []
        self.errors: list[IndexedError] = []

    def done(self) -> bool:
        return all(self.expected[f] == self.seen[f] for f in self.expected)


def _init(workers: int, address: str | None) -> bool:
    """Start (or join) Ray unless it is running; True when this call started it.

    Without ``address`` (nor ``RAY_ADDRESS``) a new local instance is started even if
    another one runs on this machine (``address="local"``): e.g. what a killed run left
    behind, which Ray's own default would try to join.
    """
    import os

    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=workers, include_dashboard=False,
                 log_to_driver=False, object_store_memory=OBJECT_STORE_BYTES,
                 configure_logging=False)
    return True


def _dataset(items: list[dict[str, Any]], score: ScoreSettings, plan: PlanSettings,
             workers: int, fuse_decode: bool) -> Any:
    """The Dataset of one group: plan tasks → decode → scoring actors (a ``ray.data.Dataset``;
    with ``fuse_decode`` Ray runs decode inside the actors)."""
    import ray
    import ray.data

    cpus = float(ray.cluster_resources().get("CPU", workers))
    actor_cpus = max(0.1, min(1.0, (cpus - PLAN_CPUS - (0 if fuse_decode else 2 * TASK_CPUS))
                              / workers))
    # the decode stage with the actors' resources and no pool of its own: Ray fuses it
    # into them; with its own small tasks, it runs apart and ships samples to the actors
    decode_args: dict[str, Any] = (
        {"num_cpus": actor_cpus} if fuse_decode else
        {"num_cpus": TASK_CPUS, "compute": ray.data.TaskPoolStrategy(size=workers)})
    dataset = (ray.data.from_items(items, override_num_blocks=len(items))
               .map_batches(partial(_plan_batch, plan=plan), batch_size=1,
                            num_cpus=PLAN_CPUS, compute=ray.data.TaskPoolStrategy(size=1))
               .map_batches(partial(_decode_batch, plan=plan), batch_size=UNITS_PER_BATCH,
                            **decode_args)
               .map_batches(_Scorer, batch_size=UNITS_PER_BATCH,
                            compute=ray.data.ActorPoolStrategy(size=workers),
                            num_cpus=actor_cpus,
                            fn_constructor_kwargs={"score": score, "plan": plan}))
    return dataset


def _run_group(group: list[Shard], score: ScoreSettings, plan: PlanSettings, workers: int,
               width: int, fuse_decode: bool = True
               ) -> Iterator[tuple[int, list[Path], ShardRows]]:
    import logging
    import warnings


    # no per-stage progress log lines off a terminal (Ray's bars still show on one), and no
    # warning that a small group could not keep every actor busy
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(minimum|maximum) number of concurrent",
                            category=UserWarning)
    items, states = [], {}
    for index, paths in group:
        firsts = list(range(0, len(paths), PLAN_CHUNK_FILES))
        states[index] = _ShardState(paths, firsts)
        items += [{"shard": index, "first": f, "paths": [str(p) for p in
                                                          paths[f:f + PLAN_CHUNK_FILES]]}
                  for f in firsts]
    dataset = _dataset(items, score, plan, workers, fuse_decode)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy",
                                      prefetch_batches=0):
        for shard, first, count, errors, raw in zip(batch["shard"], batch["first"],
                                                    batch["count"], batch["errors"],
                                                    batch["result"], strict=True):
            state = states[int(shard)]
            state.expected[int(first)] = int(count)
            state.seen[int(first)] += 1
            if errors:
                state.errors += pickle.loads(errors)
            if raw:
                state.results.append(pickle.loads(raw))
            if state.done():
                del states[int(shard)]
                yield int(shard), state.paths, assemble(len(state.paths), state.errors,
                                                        state.results, width)


def run_ray(shards: Iterator[Shard], score: ScoreSettings, plan: PlanSettings, *,
            workers: int, width: int, address: str | None = None,
            group_shards: int = GROUP_SHARDS, fuse_decode: bool = True,
            ) -> Iterator[tuple[int, list[Path], ShardRows]]:
    """Plan, decode and score every shard on Ray Data; yield ``(shard, paths, rows)`` as each
    shard completes (not necessarily in order). ``fuse_decode=False`` keeps decoding in
    tasks of its own (samples then travel through the object store)."""
    import ray

    started = _init(workers, address)
    try:
        while group := list(islice(shards, group_shards)):
            yield from _run_group(group, score, plan, workers, width, fuse_decode)
    finally:
        if started:
            ray.shutdown()


__all__ = ["run_ray"]
