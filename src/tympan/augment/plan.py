"""Planning offline augmented copies: which variant of which clip goes where, with which seed.

:func:`plan_copies` turns a manifest and a list of variants (:func:`build_variants`)
into :class:`PlannedCopy` rows: output path beside a mirror of the dataset's
layout, a stable per-copy seed, and for BG the background files a copy may draw
from — its own fold's clips (never a test fold's) or a ``--background`` folder
that shares no file with the dataset. Writing the copies is
:mod:`tympan.augment.offline`'s job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tympan.augment.presets import Variant, stable_seed
from tympan.data.manifest import Clip, Manifest
from tympan.errors import DatasetError
from tympan.fileio import sha256_file

FORMATS = ("auto", "flac", "wav")


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


__all__ = ["FORMATS", "PlannedCopy", "background_pool", "build_variants", "check_background_files",
           "parse_values", "plan_copies"]
