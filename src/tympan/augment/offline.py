"""Offline augmented copies: files on disk beside a manifest of where each came from.

``make_copies`` is the seed's ``rubberband -t 1.5 -p 2 in.wav out.wav`` loop
done in-process, in parallel, and resumably:

- every copy is written atomically (temporary name, then rename), so a killed
  run leaves finished files whole and no half file under a final name; the
  next run deletes stale temporary files, skips finished copies and makes the
  rest;
- outputs never go into the dataset's folder, and no existing file is
  replaced unless ``overwrite=True``;
- a copy keeps its source's label, fold and group (a clip without a group
  gives its copies its own path as group), so it can never land on the other
  side of a CV split from its source;
- the output folder holds ``manifest.csv`` (``path,label,fold,group,source,
  transform``, paths relative to the folder) and ``augment.json`` (the
  settings; a rerun with other settings is refused).

Copies are decoded to mono at the source's rate (or ``sample_rate``) and
written as WAV when the source is WAV, FLAC otherwise (16-bit either way; a
copy whose peak would clip is scaled down to a 0.999 peak).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import soundfile as sf

from tympan.augment.plan import PlannedCopy, plan_copies
from tympan.augment.presets import Variant
from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.errors import AudioError, DatasetError
from tympan.fileio import atomic_path, atomic_write_text
from tympan.locking import folder_lock
from tympan.parallel import process_pool

MANIFEST_NAME = "manifest.csv"
SETTINGS_NAME = "augment.json"
MANIFEST_COLUMNS = ("path", "label", "fold", "group", "source", "transform")
PEAK_LIMIT = 0.999
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AugmentReport:
    """What a run did: copies written now, copies already there, sources that failed."""

    out_dir: Path
    planned: int
    written: int = 0
    skipped: int = 0
    failed: list[BadFile] = field(default_factory=list)
    seconds: float = 0.0
    manifest: Manifest | None = None

    @property
    def copies_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def _write_audio(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > PEAK_LIMIT:
        samples = samples * np.float32(PEAK_LIMIT / peak)
    fmt = "WAV" if path.suffix == ".wav" else "FLAC"
    encoded = io.BytesIO()  # encode in memory: a full disk is then ENOSPC, not "System error."
    sf.write(encoded, samples, sample_rate, format=fmt, subtype="PCM_16")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.getvalue())


def _copy_clip(source: Path, sample_rate: int | None,
               copies: list[tuple[Variant, Path, int, tuple[Path, ...] | None]]
               ) -> tuple[list[Path], str | None]:
    """Worker: decode one source once and write its pending copies.

    Returns the outputs written and, if the source failed, the reason.
    """
    from tympan.audio import load_audio

    try:
        samples = load_audio(source, sample_rate)
    except AudioError as exc:
        return [], exc.reason
    rate = sample_rate or int(sf.info(str(source)).samplerate)
    written: list[Path] = []
    for variant, output, seed, backgrounds in copies:
        try:
            transform = variant.transform(seed=seed, backgrounds=backgrounds)
            out = transform(samples, rate)
        except (AudioError, ValueError, RuntimeError) as exc:
            return written, f"{variant.tag}: {exc}"
        _write_audio(output, out, rate)
        written.append(output)
    return written, None


def _remove_stale_temporaries(outputs: Sequence[Path]) -> int:
    """Delete temporary files a killed run left beside our outputs (``.name.*.tmp``)."""
    by_folder: dict[Path, set[str]] = {}
    for path in outputs:
        by_folder.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for item in folder.iterdir():
            if item.name.startswith(".") and item.name.endswith(".tmp"):
                final = item.name[1:].rsplit(".", 2)[0]
                if final in names:
                    item.unlink(missing_ok=True)
                    removed += 1
    return removed


def _settings(manifest: Manifest, variants: Sequence[Variant], seed: int, audio_format: str,
              sample_rate: int | None, background: Any, background_classes: Any
              ) -> dict[str, Any]:
    return {
        "dataset": str(manifest.root) if manifest.root else manifest.name,
        "dataset_fingerprint": manifest.fingerprint(),
        "transforms": [v.tag for v in variants],
        "seed": seed,
        "format": audio_format,
        "sample_rate": sample_rate,
        "background": None if background is None else (
            str(background) if isinstance(background, (str, Path))
            else [str(p) for p in background]),
        "background_classes": list(background_classes) if background_classes else None,
    }


def _check_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    path = out_dir / SETTINGS_NAME
    if path.exists() and not overwrite:
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != settings:
            changed = sorted(k for k in settings
                             if not isinstance(previous, dict) or previous.get(k) != settings[k])
            raise DatasetError(
                f"{out_dir} holds copies made with other settings ({', '.join(changed)}); "
                "use another output folder, or --overwrite to remake them"
            )
    elif not path.exists() and out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DatasetError(
            f"{out_dir} is not empty and was not made by `tympan augment`; "
            "use an empty or new folder"
        )


def _holding_out_dir_lock(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func(manifest, out_dir, ...)`` holding ``out_dir``'s lock (see tympan.locking)."""

    @functools.wraps(func)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        out_dir = Path(kwargs["out_dir"] if "out_dir" in kwargs else args[1])  # type: ignore[arg-type]
        with folder_lock(out_dir, "augmented copies folder"):
            return func(*args, **kwargs)

    return locked


@_holding_out_dir_lock
def make_copies(
    manifest: Manifest,
    out_dir: str | Path,
    variants: Sequence[Variant],
    *,
    workers: int = 2,
    seed: int = 0,
    audio_format: str = "auto",
    sample_rate: int | None = None,
    background: str | Path | Sequence[str | Path] | None = None,
    background_classes: Sequence[str] | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> AugmentReport:
    """Write the augmented copies of ``manifest`` into ``out_dir`` and its manifest.

    ``workers`` processes share the clips (``workers=1`` runs in this process);
    ``progress(n)`` is called with the number of copies each finished clip
    accounts for (written or skipped). ``limit`` keeps the first clips only
    (for trying things). Finished copies are skipped unless ``overwrite``.

    Raises:
        DatasetError: see :func:`plan_copies`; an output folder made with other
            settings or holding other files (unless ``overwrite``).
        LockedError: another live process is writing into ``out_dir``.
        ValueError: no variants, ``workers`` < 1.
    """
    if not variants:
        raise ValueError("no transforms asked for (give --stretch, --pitch or --preset)")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    settings = _settings(manifest, variants, seed, audio_format, sample_rate, background,
                         background_classes)
    plan = plan_copies(manifest, out_dir, variants, seed=seed, audio_format=audio_format,
                       background=background, background_classes=background_classes)
    if limit is not None:
        # Planned on the whole dataset so BG draws from every same-fold clip.
        kept = {c.path for c in manifest.clips[:limit]}
        plan = [c for c in plan if c.clip.path in kept]
    _check_settings(out_dir, settings, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SETTINGS_NAME, json.dumps(settings, indent=2) + "\n")
    _remove_stale_temporaries([c.output for c in plan])

    report = AugmentReport(out_dir=out_dir, planned=len(plan))
    by_source: dict[Path, list[PlannedCopy]] = {}
    for copy in plan:
        by_source.setdefault(copy.clip.path, []).append(copy)
    tasks: list[tuple[Path, list[PlannedCopy]]] = []
    for source, copies in by_source.items():
        pending = [c for c in copies if overwrite or not c.output.exists()]
        report.skipped += len(copies) - len(pending)
        if pending:
            tasks.append((source, pending))
        elif progress:
            progress(len(copies))
    skipped_in = {s: len(by_source[s]) - len(p) for s, p in tasks}

    def finish(source: Path, written: list[Path], error: str | None) -> None:
        report.written += len(written)
        if error is not None:
            report.failed.append(BadFile(source, error))
        if progress:
            progress(len(by_source[source]) - skipped_in[source])

    def args(source: Path, pending: list[PlannedCopy]) -> tuple[Any, ...]:
        return (source, sample_rate,
                [(c.variant, c.output, c.seed, c.backgrounds) for c in pending])

    if workers == 1 or len(tasks) <= 1:
        for source, pending in tasks:
            finish(source, *_copy_clip(*args(source, pending)))
    else:
        with process_pool(workers) as pool:
            futures: dict[Future[tuple[list[Path], str | None]], Path] = {
                pool.submit(_copy_clip, *args(source, pending)): source
                for source, pending in tasks
            }
            try:
                for future in as_completed(futures):
                    finish(futures[future], *future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    done = [c for c in plan if c.output.exists()]
    report.manifest = write_augmented_manifest(out_dir, done, name=f"{manifest.name}-augmented")
    report.seconds = time.perf_counter() - started
    return report


def write_augmented_manifest(out_dir: Path, copies: Sequence[PlannedCopy],
                             name: str = "augmented") -> Manifest:
    """Write ``manifest.csv`` for the finished ``copies``; return it as a Manifest."""
    out_dir = Path(out_dir)
    clips = [
        Clip(c.output, c.clip.label, c.clip.fold,
             c.clip.group if c.clip.group is not None else str(c.clip.path),
             c.clip.path, c.tag())
        for c in copies
    ]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(MANIFEST_COLUMNS)
    for clip in clips:
        writer.writerow([clip.path.relative_to(out_dir).as_posix(), clip.label,
                         "" if clip.fold is None else clip.fold, clip.group or "",
                         str(Path(clip.source or "").resolve()), clip.transform])
    atomic_write_text(out_dir / MANIFEST_NAME, text.getvalue())
    return Manifest(clips, name=name, root=out_dir)


def load_augmented_manifest(out_dir: str | Path) -> Manifest:
    """Read the copies an ``augment`` run made: each :class:`Clip` has ``source`` and
    ``transform`` set and its source's label, fold and group.

    Raises:
        DatasetError: no ``manifest.csv`` (the run never finished) or a malformed one.
    """
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(
            f"{out_dir}: no {MANIFEST_NAME}; run `tympan augment` into this folder "
            "(an interrupted run writes it when rerun to completion)"
        )
    clips: list[Clip] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                fold = int(row["fold"]) if row["fold"].strip() else None
            except ValueError:
                raise DatasetError(f"{path}:{line}: fold must be an integer, "
                                   f"got {row['fold']!r}") from None
            clips.append(Clip(out_dir / row["path"], row["label"], fold,
                              row["group"] or None, Path(row["source"]),
                              row["transform"] or None))
    return Manifest(clips, name=out_dir.name, root=out_dir)


__all__ = [
    "AugmentReport",
    "load_augmented_manifest",
    "make_copies",
    "write_augmented_manifest",
]
