"""The corpus workflow: manifest → pending shards → an engine → Parquet shards + summary.

:func:`run_corpus` is what ``tympan predict-corpus``, ``tympan embed`` and the
benchmark call. It validates the model once in this process (checksum, and an
embedding for ``embed``), claims the output folder (a lock, and ``corpus.json``
naming the model and settings: another model is refused rather than mixed),
skips every shard already finished for the same paths, runs the rest on the
chosen engine, and writes ``_SUCCESS`` with the totals when every shard is done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tympan.config import FeatureConfig
from tympan.corpus.local import ScoreSettings, run_local
from tympan.corpus.manifest import iter_manifest, iter_shards, manifest_kind
from tympan.corpus.plan import PlanSettings
from tympan.corpus.scoring import Kind, UnitScorer
from tympan.corpus.shards import CorpusOutput, ShardInfo
from tympan.corpus.units import WindowGeometry
from tympan.errors import ConfigError
from tympan.fileio import atomic_write_text, sha256_file

Engine = Literal["local", "ray"]
#: What scores the windows: the model file's torch network or its ONNX export (onnxruntime).
Scorer = Literal["torch", "onnx"]
SUCCESS_FILE = "_SUCCESS"


def ray_available() -> bool:
    """Whether Ray Data can be imported (the ``tympan[ray]`` extra)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@dataclass
class CorpusSettings:
    """A corpus run's knobs: ``engine`` (None = ray when installed, else local), ``workers``
    processes or actors, ``shard_files`` files per shard, ``unit_windows`` windows per work
    unit, ``batch_size`` windows per forward pass, ``threads`` torch threads per worker,
    ``hop_seconds`` between windows (None = half a window), ``ray_address`` of a cluster,
    ``scorer``: ``"torch"`` or ``"onnx"`` (a model file is exported once into the cache,
    :func:`~tympan.inference.onnx_export.cached_export`; an ``.onnx`` model is always scored
    on ONNX Runtime)."""

    engine: Engine | None = None
    workers: int = 2
    shard_files: int = 1000
    unit_windows: int = 32
    batch_size: int = 8
    threads: int = 1
    hop_seconds: float | None = None
    min_duration_seconds: float = 0.1
    verify: bool = True
    ray_address: str | None = None
    scorer: Scorer = "torch"


@dataclass
class CorpusOutcome:
    """Totals of a run (reused shards included) and what this invocation did."""

    engine: str
    files: int = 0
    windows: int = 0
    failed_files: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    #: files in the shards this invocation wrote (the throughput's numerator)
    files_written: int = 0

    @property
    def files_per_second(self) -> float:
        """Files scored per second by this invocation (reused shards not counted)."""
        return self.files_written / self.seconds if self.seconds > 0 else 0.0

    def add(self, info: ShardInfo) -> None:
        self.files += info.n_files
        self.windows += info.n_windows
        self.failed_files += info.n_failed


def _check(settings: CorpusSettings) -> Engine:
    for name in ("workers", "shard_files", "unit_windows", "batch_size", "threads"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got "
                              f"{getattr(settings, name)}")
    engine = settings.engine or ("ray" if ray_available() else "local")
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine {engine!r}: use 'local' or 'ray'")
    if engine == "ray" and not ray_available():
        raise ConfigError("--engine ray: Ray is not installed; pip install 'tympan[ray]' or "
                          "use --engine local")
    if settings.scorer not in ("torch", "onnx"):
        raise ConfigError(f"--scorer {settings.scorer!r}: use 'torch' or 'onnx'")
    return engine


def scoring_model(model_path: Path, kind: Kind, scorer: Scorer, verify: bool = True
                  ) -> tuple[Path, FeatureConfig, list[str]]:
    """The file the workers load (``model_path``, or its cached ONNX export for
    ``scorer="onnx"``), its feature config and its labels.

    Raises:
        ModelFileError: the model file (or export) cannot be read.
        ConfigError: ``embed`` with the ONNX scorer (embeddings come from the torch network).
    """
    from tympan.inference.onnx_predict import OnnxPredictor, is_onnx_model

    if scorer == "onnx" and not is_onnx_model(model_path):
        if kind == "embed":
            raise ConfigError("--scorer onnx: `tympan embed` runs the model file's torch "
                              "network; drop --scorer onnx")
        from tympan.inference.onnx_export import cached_export

        model_path = cached_export(model_path, verify=verify)
    if is_onnx_model(model_path):
        probe = OnnxPredictor(model_path, threads=1)
        return model_path, probe.feature_config, list(probe.classes)
    from tympan.models.modelfile import read_metadata  # imports torch

    metadata = read_metadata(model_path)
    return model_path, metadata.features, list(metadata.labels)


def run_corpus(model_path: str | Path, manifest: str | Path, out_dir: str | Path, kind: Kind,
               settings: CorpusSettings | None = None, *,
               progress: Callable[[int, ShardInfo, bool], None] | None = None) -> CorpusOutcome:
    """Score (``kind="predict"``) or embed (``"embed"``) every file ``manifest`` names into
    Parquet shards under ``out_dir``; a rerun skips finished shards.

    ``progress(shard, info, reused)`` is called after each shard.

    Raises:
        ModelFileError: the model cannot be loaded (or fails its checksum).
        ConfigError: bad settings, an ``embed`` model without a backbone embedding, or an
            ``out_dir`` that holds a run with another model or settings.
        DatasetError: the manifest does not exist or a CSV has no ``path`` column.
        LockedError: another process is writing ``out_dir``.
    """
    from tympan.locking import folder_lock

    settings = settings or CorpusSettings()
    engine = _check(settings)
    model_path, manifest, out_dir = Path(model_path), Path(manifest), Path(out_dir)
    source_kind = manifest_kind(manifest)
    scored_path, features, labels = scoring_model(model_path, kind, settings.scorer,
                                                  settings.verify)
    geometry = WindowGeometry.from_features(features, settings.hop_seconds)
    width = UnitScorer(scored_path, kind, geometry, verify=settings.verify).width
    key = {"kind": kind, "model_sha256": sha256_file(model_path), "labels": labels,
           "sample_rate": geometry.sample_rate, "window_samples": geometry.window_samples,
           "hop_samples": geometry.hop_samples, "shard_files": settings.shard_files,
           "min_duration_seconds": settings.min_duration_seconds,
           "manifest": str(manifest.resolve())}
    if scored_path != model_path:  # torch and ONNX rows agree to ~1e-6, not bit for bit
        key["scorer"] = "onnx"
    plan = PlanSettings(geometry, settings.unit_windows, settings.min_duration_seconds)
    score = ScoreSettings(scored_path.resolve(), kind, settings.batch_size, settings.verify,
                          settings.threads)
    outcome = CorpusOutcome(engine)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, "corpus output folder"):
        output = CorpusOutput(out_dir, key, labels, width)
        (out_dir / SUCCESS_FILE).unlink(missing_ok=True)

        def pending() -> Iterator[tuple[int, list[Path]]]:
            for index, paths in iter_shards(iter_manifest(manifest), settings.shard_files):
                info = output.finished(index, paths)
                if info is None:
                    yield index, paths
                    continue
                outcome.add(info)
                outcome.shards_skipped += 1
                if progress is not None:
                    progress(index, info, True)

        if engine == "ray":
            from tympan.corpus.ray_engine import run_ray

            results = run_ray(pending(), score, plan, workers=settings.workers, width=width,
                              address=settings.ray_address)
        else:
            results = run_local(pending(), score, plan, workers=settings.workers, width=width)
        for index, paths, rows in results:
            info = output.write(index, paths, rows)
            outcome.add(info)
            outcome.shards_written += 1
            outcome.files_written += info.n_files
            for _, _, reason in rows.errors:
                outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1
            if progress is not None:
                progress(index, info, False)
        outcome.seconds = time.perf_counter() - started
        summary = {"source": {"manifest": str(manifest), "kind": source_kind}, **asdict(outcome)}
        atomic_write_text(out_dir / SUCCESS_FILE, json.dumps(summary, indent=2) + "\n")
    return outcome


__all__ = ["CorpusOutcome", "CorpusSettings", "Engine", "SUCCESS_FILE", "Scorer",
           "ray_available", "run_corpus", "scoring_model"]
