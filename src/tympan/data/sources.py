"""Build a :class:`Manifest` from a folder per class, a CSV, or the ESC-50 layout.

Every file's header is probed (cheap): unreadable, empty, non-audio and
too-short files land in ``manifest.bad_files`` with their reason instead of
stopping the run. A missing path, no audio at all, or a single class is a
:class:`DatasetError` before any work starts.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from tympan.audio import AUDIO_EXTENSIONS, probe
from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.errors import AudioError, DatasetError

ESC50_CSV = Path("meta") / "esc50.csv"


class EmptyClassWarning(UserWarning):
    """A class folder holds no audio files, so its class is left out of the dataset."""


def is_audio_name(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def discover(
    path: str | Path,
    *,
    subset: str | None = None,
    min_duration_seconds: float = 0.1,
    check: bool = True,
    min_classes: int = 2,
) -> Manifest:
    """Read a dataset from ``path``: an ESC-50 folder, a CSV file, or a folder per class.

    ``subset="esc10"`` keeps ESC-50's ESC-10 clips. ``check`` probes every
    header and moves bad files to ``bad_files``.

    Raises:
        DatasetError: missing path, no audio files, fewer than ``min_classes``.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: a dataset is a folder or a .csv file")
        manifest = read_csv(path)
    elif (path / ESC50_CSV).is_file():
        manifest = read_esc50(path, subset=subset)
    else:
        manifest = read_class_folders(path)
    if subset is not None and not (path.is_dir() and (path / ESC50_CSV).is_file()):
        raise DatasetError(f"{path}: --subset {subset} applies to the ESC-50 layout only")
    if check:
        manifest = check_files(manifest, min_duration_seconds=min_duration_seconds)
    validate(manifest, min_classes=min_classes)
    return manifest


def validate(manifest: Manifest, *, min_classes: int = 2) -> None:
    """Raise :class:`DatasetError` if the manifest holds no clips or too few classes."""
    where = manifest.root or manifest.name
    if not manifest.clips:
        bad = f" ({len(manifest.bad_files)} unreadable)" if manifest.bad_files else ""
        raise DatasetError(f"{where}: no usable audio files found{bad}")
    classes = manifest.classes
    if len(classes) < min_classes:
        raise DatasetError(
            f"{where}: found {len(classes)} class ({', '.join(classes)}); "
            f"a classifier needs at least {min_classes}"
        )


def check_files(manifest: Manifest, *, min_duration_seconds: float = 0.1) -> Manifest:
    """Probe every clip's header; move failures to ``bad_files`` with their reason."""
    good: list[Clip] = []
    bad = list(manifest.bad_files)
    for clip in manifest.clips:
        try:
            probe(clip.path, min_duration_seconds=min_duration_seconds)
        except AudioError as exc:
            bad.append(BadFile(clip.path, exc.reason))
        else:
            good.append(clip)
    return Manifest(good, name=manifest.name, root=manifest.root, bad_files=bad)


def read_class_folders(root: str | Path) -> Manifest:
    """The seed's layout: ``root/<class>/*.<ext>``; the folder name is the label.

    Files directly in ``root`` and folders nested inside class folders are
    ignored with a warning naming them (they have no unambiguous label); a
    class folder without audio files is left out with an
    :class:`EmptyClassWarning` naming it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    clips: list[Clip] = []
    ignored: list[Path] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            continue
        found = 0
        for item in sorted(class_dir.iterdir()):
            if item.is_dir():
                ignored.append(item)
            elif is_audio_name(item):
                clips.append(Clip(item, class_dir.name))
                found += 1
        if not found:
            warnings.warn(f"{class_dir}: class folder holds no audio files; class "
                          f"{class_dir.name!r} is left out", EmptyClassWarning, stacklevel=2)
    loose = [p for p in root.iterdir() if p.is_file() and is_audio_name(p)]
    if ignored or loose:
        names = ", ".join(str(p) for p in sorted(ignored + loose)[:5])
        warnings.warn(
            f"{root}: ignored {len(ignored)} nested folder(s) and {len(loose)} file(s) outside "
            f"class folders (labels come from the first folder level only): {names}",
            stacklevel=2,
        )
    if not clips:
        raise DatasetError(
            f"{root}: no audio files in class folders (expected {root}/<class>/<clip>.wav; "
            f"extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"
        )
    return Manifest(clips, name=root.name, root=root)


def _parse_fold(value: str | None, where: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{where}: fold must be an integer, got {value!r}") from None


def _read_text(csv_path: Path) -> str:
    """The CSV's text: UTF-8, an Excel byte-order mark dropped.

    Raises:
        DatasetError: the bytes are not UTF-8 (Latin-1, binary), naming the byte and line.
    """
    data = csv_path.read_bytes()
    skipped = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skipped + exc.start
        line = data[:offset].count(b"\n") + 1
        raise DatasetError(
            f"{csv_path}: not UTF-8 text: byte {offset} (line {line}) is 0x{data[offset]:02x}; "
            "save the CSV as UTF-8 (Excel: 'CSV UTF-8')"
        ) from None


def _check_cells(row: dict[str | None, str | None], n_columns: int, where: str) -> None:
    """Refuse a row with more or fewer cells than the header (csv.DictReader pads/collects)."""
    extra = row.get(None)
    if extra:
        raise DatasetError(
            f"{where}: {n_columns + len(extra)} cells but the header has {n_columns}; "
            'quote a value that holds a comma, e.g. "dog, big"'
        )
    missing = sum(1 for key, value in row.items() if key is not None and value is None)
    if missing:
        raise DatasetError(f"{where}: {n_columns - missing} cells but the header has {n_columns}")


def _check_folds(csv_path: Path, clips: list[Clip], lines: list[int]) -> None:
    """All rows have a fold or none does: partial folds would mean different things to
    ``datasets info`` (per-fold counts) and ``train`` (which then ignores them)."""
    blank = [line for clip, line in zip(clips, lines, strict=True) if clip.fold is None]
    if blank and len(blank) < len(clips):
        shown = ", ".join(map(str, blank[:10])) + (" …" if len(blank) > 10 else "")
        raise DatasetError(
            f"{csv_path}: fold is blank on line(s) {shown} but set on {len(clips) - len(blank)} "
            "other(s); give every row a fold, or leave the fold column empty"
        )


def read_csv(csv_path: str | Path) -> Manifest:
    """A CSV with a header ``path,label[,fold][,group]``; paths relative to the CSV's folder.

    UTF-8 with or without a byte-order mark. Paths are normalised
    (``a/../a/x.wav`` is ``a/x.wav``).

    Raises:
        DatasetError: missing columns; a row that is empty, ragged or has a bad
            fold; one file listed twice (any spelling, any label); folds on only
            some rows; text that is not UTF-8 or not CSV. Messages name the line.
    """
    csv_path = Path(csv_path)
    reader = csv.DictReader(io.StringIO(_read_text(csv_path), newline=""))
    try:
        fieldnames = reader.fieldnames or []
        missing = {"path", "label"} - set(fieldnames)
        if missing:
            raise DatasetError(
                f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
                "expected a header path,label[,fold][,group]"
            )
        clips: list[Clip] = []
        lines: list[int] = []
        seen: dict[Path, tuple[int, str, str]] = {}  # resolved path → (line, as written, label)
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            _check_cells(row, len(fieldnames), where)
            raw, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not raw or not label:
                raise DatasetError(f"{where}: empty path or label")
            clip_path = Path(raw)
            if not clip_path.is_absolute():
                clip_path = csv_path.parent / clip_path
            clip_path = Path(os.path.normpath(clip_path))
            try:
                key = clip_path.resolve()  # also catches two names for one file through symlinks
            except (RuntimeError, OSError):  # a symlink loop: probing reports it as a bad file
                key = clip_path
            if key in seen:
                line, first, first_label = seen[key]
                if first_label != label:
                    raise DatasetError(
                        f"{where}: {raw} is labelled {label!r}, but line {line} labels the same "
                        f"file ({first}) {first_label!r}; a clip has one label"
                    )
                raise DatasetError(f"{where}: {raw} is the same file as line {line} ({first}); "
                                   "list each clip once")
            seen[key] = (reader.line_num, raw, label)
            clips.append(Clip(clip_path, label, _parse_fold(row.get("fold"), where),
                              (row.get("group") or "").strip() or None))
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}:{reader.line_num}: not a CSV row ({exc})") from None
    if not clips:
        raise DatasetError(f"{csv_path}: the CSV lists no clips")
    _check_folds(csv_path, clips, lines)
    return Manifest(clips, name=csv_path.stem, root=csv_path.parent)


ESC50_COLUMNS = ("filename", "fold", "category", "src_file")


def read_esc50(root: str | Path, *, subset: str | None = None) -> Manifest:
    """ESC-50: ``meta/esc50.csv`` gives fold, category (label) and src_file (group).

    ``subset="esc10"`` keeps the 10-class ESC-10 clips.

    Raises:
        DatasetError: the metadata is missing, not UTF-8, lacks a column, or a row
            has an empty cell or a fold that is not an integer (the message names
            the file and line).
    """
    root = Path(root)
    meta = root / ESC50_CSV
    if subset not in (None, "esc10"):
        raise DatasetError(f"unknown ESC-50 subset {subset!r} (known: esc10)")
    needed = ESC50_COLUMNS + (("esc10",) if subset == "esc10" else ())
    clips = []
    try:
        with open(meta, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{meta}: missing column(s) {', '.join(missing)}; "
                                   f"ESC-50 metadata has {','.join(needed)}")
            for line, row in enumerate(reader, start=2):
                cells = {c: (row.get(c) or "").strip() for c in needed}
                empty = [c for c, v in cells.items() if not v]
                if empty:
                    raise DatasetError(f"{meta}:{line}: empty {', '.join(empty)}")
                if subset == "esc10" and cells["esc10"].lower() != "true":
                    continue
                clips.append(Clip(root / "audio" / cells["filename"], cells["category"],
                                  _parse_fold(cells["fold"], f"{meta}:{line}"),
                                  cells["src_file"]))
    except OSError as exc:
        raise DatasetError(f"{meta}: cannot read the ESC-50 metadata "
                           f"({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{meta}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{meta}: not a readable CSV ({exc})") from None
    if not clips:
        raise DatasetError(f"{meta}: lists no clips" + (" of ESC-10" if subset else ""))
    return Manifest(clips, name=subset or "esc50", root=root)


def iter_audio_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of audio files."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.is_file() and is_audio_name(p)))
        else:
            found.append(item)
    return found
