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

import contextlib
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

from tympan.augment.presets import Variant, stable_seed
from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.errors import AudioError, DatasetError
from tympan.fileio import atomic_path, atomic_write_text, sha256_file
from tympan.locking import folder_lock
from tympan.parallel import process_pool

MANIFEST_NAME = "manifest.csv"
SETTINGS_NAME = "augment.json"
MANIFEST_COLUMNS = ("path", "label", "fold", "group", "source", "transform")
FORMATS = ("auto", "flac", "wav")
PEAK_LIMIT = 0.999
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class PlannedCopy:
    """One copy to make: its source clip, variant, absolute output path, seed and,
    for BG, the background files it may draw from."""

    clip: Clip
    variant: Variant
    output: Path
    seed: int
    backgrounds: tuple[Path, ...] | None = None

    def tag(self) -> str:
        """The manifest's ``transform``: the variant tag; for BG the background and SNR."""
        if self.variant.kind != "BG":
            return self.variant.tag
        transform = self.variant.transform(seed=self.seed, backgrounds=self.backgrounds)
        transform.randomize_parameters(np.zeros(1, np.float32), 1)
        return transform.describe() or self.variant.tag


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


def parse_values(text: str | None, name: str) -> list[float]:
    """``"0.81,0.93"`` → ``[0.81, 0.93]``; ValueError naming the option on bad input."""
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def build_variants(
    stretch: Sequence[float] = (),
    pitch: Sequence[float] = (),
    presets: Sequence[str] = (),
) -> list[Variant]:
    """The variants asked for, in order, without duplicates (``PS1`` and ``--pitch -2``
    name the same copy).

    Raises:
        ValueError: an unknown preset, a rate outside [0.1, 10], a shift beyond ±24.
    """
    from tympan.augment.presets import expand_sets, set_variants

    variants = [Variant("TS", f"{r:g}") for r in stretch]
    variants += [Variant("PS", f"{s:g}") for s in pitch]
    for name in expand_sets(list(presets)):
        variants += set_variants(name)
    for v in variants:
        if v.kind == "TS" and not 0.1 <= v.number <= 10:
            raise ValueError(f"--stretch {v.value}: a speed factor must be in [0.1, 10]")
        if v.kind == "PS" and abs(v.number) > 24:
            raise ValueError(f"--pitch {v.value}: a shift must be within ±24 semitones")
    unique: list[Variant] = []
    for v in variants:
        if v not in unique:
            unique.append(v)
    return unique


def _relative_stem(clip: Clip, root: Path | None) -> Path:
    """Where a clip's copies go inside the output folder (mirrors the dataset's tree)."""
    if root is not None:
        try:
            return clip.path.resolve().relative_to(root.resolve()).with_suffix("")
        except ValueError:
            pass
    return Path(clip.label) / clip.path.stem


def _extension(source: Path, audio_format: str) -> str:
    if audio_format == "auto":
        return ".wav" if source.suffix.lower() in (".wav", ".wave") else ".flac"
    return "." + audio_format


def _check_out_dir(manifest: Manifest, out_dir: Path) -> None:
    out = out_dir.resolve()
    roots = {c.path.resolve().parent for c in manifest.clips}
    if manifest.root is not None:
        roots.add(manifest.root.resolve())
    for root in roots:
        if out == root or out.is_relative_to(root) or root.is_relative_to(out):
            raise DatasetError(
                f"output folder {out_dir} overlaps the dataset folder {root}; "
                "augmented copies never go into (or around) the source data"
            )


def background_pool(
    manifest: Manifest, classes: Sequence[str]
) -> dict[int | None, list[Path]]:
    """Background files per predefined fold from the dataset's own clips of ``classes``.

    A clip only ever gets backgrounds from its own fold, so no test audio
    reaches a training copy.

    Raises:
        DatasetError: an unknown class; a dataset without predefined folds (the
            copies cannot know which clips a later split will test on).
    """
    known = set(manifest.classes)
    missing = [c for c in classes if c not in known]
    if missing:
        raise DatasetError(f"--background-classes: no class {', '.join(missing)} in the dataset")
    if not manifest.has_folds:
        raise DatasetError(
            f"--background-classes: {manifest.name} has no predefined folds, so the copies "
            "cannot know which clips will be test clips and would mix test audio into training "
            "copies; use --background FOLDER of recordings that are not in the dataset, or give "
            "the data a fold column"
        )
    pool: dict[int | None, list[Path]] = {}
    for clip in manifest.clips:
        if clip.label in classes:
            pool.setdefault(clip.fold, []).append(clip.path)
    return pool


def check_background_files(manifest: Manifest, files: Sequence[Path]) -> None:
    """Refuse background ``files`` that are dataset clips: the same file (resolved path)
    or the same content (sha256, compared only between files of equal size).

    Raises:
        DatasetError: naming the first shared file and the dataset clip it matches.
    """
    clips = {c.path.resolve(): c.path for c in manifest.clips}
    by_size: dict[int, list[Path]] = {}
    for path in clips.values():
        with contextlib.suppress(OSError):
            by_size.setdefault(path.stat().st_size, []).append(path)
    hashes: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in hashes:
            hashes[path] = sha256_file(path)
        return hashes[path]

    for file in files:
        same = clips.get(file.resolve())
        if same is None:
            size = file.stat().st_size
            same = next((c for c in by_size.get(size, []) if digest(c) == digest(file)), None)
        if same is not None:
            shared = ("is a clip of the dataset" if file.resolve() == same.resolve()
                      else f"has the same content as the dataset's clip {same}")
            raise DatasetError(
                f"--background: {file} {shared}; backgrounds must be recordings that are not "
                "in the dataset, or test audio leaks into training copies"
            )


def plan_copies(
    manifest: Manifest,
    out_dir: str | Path,
    variants: Sequence[Variant],
    *,
    seed: int = 0,
    audio_format: str = "auto",
    background: str | Path | Sequence[str | Path] | None = None,
    background_classes: Sequence[str] | None = None,
) -> list[PlannedCopy]:
    """Every copy of every clip, with its output path and seed (nothing is written).

    Raises:
        DatasetError: output folder overlapping the data, two copies with one
            output path, BG without backgrounds, ``background`` files that are
            dataset clips, ``background_classes`` without predefined folds, a
            fold without background clips.
        ValueError: an unknown ``audio_format``.
    """
    if audio_format not in FORMATS:
        raise ValueError(f"audio format must be one of {', '.join(FORMATS)}, got {audio_format!r}")
    out_dir = Path(out_dir)
    _check_out_dir(manifest, out_dir)
    wants_bg = any(v.kind == "BG" for v in variants)
    files: tuple[Path, ...] | None = None
    pool: dict[int | None, list[Path]] = {}
    if wants_bg:
        if background is not None and background_classes:
            raise DatasetError("give --background or --background-classes, not both")
        if background is not None:
            from tympan.augment.background import find_audio_files

            try:
                files = tuple(find_audio_files(background))
            except ValueError as exc:
                raise DatasetError(str(exc)) from None
            if not files:
                raise DatasetError(f"no background audio found in {background}")
            check_background_files(manifest, files)
        elif background_classes:
            pool = background_pool(manifest, background_classes)
        else:
            raise DatasetError(
                "the BG set needs backgrounds: --background DIR, or --background-classes "
                "CLASSES to mix clips of those classes from the same fold"
            )
    plan: list[PlannedCopy] = []
    seen: dict[Path, Clip] = {}
    for clip in manifest.clips:
        stem = _relative_stem(clip, manifest.root)
        for variant in variants:
            output = out_dir / stem.parent / (
                f"{stem.name}.{variant.file_tag}{_extension(clip.path, audio_format)}"
            )
            if output in seen:
                raise DatasetError(
                    f"{clip.path} and {seen[output].path} would both be copied to {output}; "
                    "rename one of them"
                )
            seen[output] = clip
            backgrounds = files
            if variant.kind == "BG" and files is None:
                candidates = [p for p in pool.get(clip.fold, []) if p != clip.path]
                if not candidates:
                    raise DatasetError(
                        f"no background clips of {', '.join(background_classes or [])} "
                        f"in fold {clip.fold} (other than {clip.path.name})"
                    )
                backgrounds = tuple(candidates)
            plan.append(PlannedCopy(clip, variant, output,
                                    stable_seed(seed, stem.as_posix(), variant.tag),
                                    backgrounds if variant.kind == "BG" else None))
    return plan


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
    "PlannedCopy",
    "background_pool",
    "build_variants",
    "check_background_files",
    "load_augmented_manifest",
    "make_copies",
    "parse_values",
    "plan_copies",
    "write_augmented_manifest",
]
