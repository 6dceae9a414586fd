"""Find or download datasets (and any other checksummed file, e.g. pretrained weights).

The data directory is ``$TYMPAN_DATA`` (one folder per dataset, ``$TYMPAN_DATA/esc50/…``),
else the user cache folder ``tympan/datasets``. A dataset already there is used as is.

:func:`download` is the one generic downloader: streamed to a temporary name,
verified by sha256, renamed into place; ``file://`` URLs work too (tests use them).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tympan.errors import AudioError, ChecksumError, DatasetError
from tympan.fileio import atomic_path, sha256_file

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
_CHUNK_BYTES = 1 << 20


def data_dir() -> Path:
    """The dataset folder: ``$TYMPAN_DATA``, else the user cache dir ``tympan/datasets``."""
    env = os.environ.get("TYMPAN_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tympan")) / "datasets"


def dataset_path(name: str, root: Path | None = None) -> Path:
    """Where dataset ``name`` lives (whether or not it is there yet)."""
    return (root if root is not None else data_dir()) / name


def download(url: str, dest: str | Path, sha256: str | None = None, *,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Streams to a temporary file beside ``dest`` and renames it into place only
    when complete (and, with ``sha256``, verified), so ``dest`` is never half
    written. If ``dest`` already exists with the expected ``sha256`` nothing is
    downloaded; an existing ``dest`` without a ``sha256`` to check is kept as is.
    ``file://`` URLs are read locally. ``progress`` shows a rich progress bar.

    Raises:
        ChecksumError: the download (or the existing ``dest``) does not match ``sha256``.
        DatasetError: the URL cannot be fetched (network error, HTTP error, missing file).
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.exists() and (expected is None or sha256_file(dest) == expected):
        return dest  # a stale copy (wrong hash) is re-fetched, replaced only once verified
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response, atomic_path(dest) as tmp:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, _progress(progress, dest.name, total) as advance:
                while chunk := response.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise ChecksumError(
                    f"{url}: sha256 {actual} does not match the expected {expected}; "
                    f"the download was discarded ({dest} not written)"
                )
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise DatasetError(f"{url}: download failed ({exc})") from exc
    return dest


@contextlib.contextmanager
def _progress(enabled: bool, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)


def esc50_path(root: Path | None = None) -> Path | None:
    """The ESC-50 folder if it is already in the data directory, else None."""
    path = dataset_path("esc50", root)
    return path if (path / "meta" / "esc50.csv").is_file() else None


def fetch_esc50(root: Path | None = None, *, url: str = ESC50_URL, sha256: str | None = None,
                progress: bool = True, check_audio: bool = True) -> Path:
    """Make ESC-50 available at ``<root>/esc50`` (``root`` defaults to :func:`data_dir`).

    A copy already there is used as is. Otherwise the official archive is
    downloaded (the master zip moves, so no sha256 is pinned unless given),
    unpacked into a temporary folder beside the target, checked (every file named
    in ``meta/esc50.csv`` exists and its header decodes) and renamed into place
    in one step: a failure leaves nothing half-unpacked.

    Raises:
        DatasetError: the archive is not ESC-50, or clips are missing/undecodable.
        ChecksumError: ``sha256`` given and the archive does not match.
    """
    root = Path(root) if root is not None else data_dir()
    existing = esc50_path(root)
    if existing is not None:
        return existing
    target = dataset_path("esc50", root)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".esc50-", suffix=".partial", dir=root))
    try:
        archive = download(url, work / "ESC-50-master.zip", sha256, progress=progress)
        unpacked = _unpack(archive, work / "unpacked")
        archive.unlink()
        check_esc50(unpacked, check_audio=check_audio)
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _unpack(archive: Path, into: Path) -> Path:
    """Extract ``archive`` and return the folder holding ``meta/esc50.csv``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse path traversal ("../x", "/etc/x")
                if member.startswith("/") or ".." in Path(member).parts:
                    raise DatasetError(f"{archive}: unsafe member name {member!r}")
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{archive}: not a valid zip archive ({exc})") from exc
    candidates = sorted(into.glob("*/meta/esc50.csv")) + sorted(into.glob("meta/esc50.csv"))
    if not candidates:
        raise DatasetError(f"{archive}: no meta/esc50.csv inside; not the ESC-50 archive")
    return candidates[0].parent.parent


def check_esc50(root: Path, *, check_audio: bool = True) -> int:
    """Check every clip named in ``root/meta/esc50.csv`` exists (and decodes); return the count.

    Raises:
        DatasetError: naming the first few missing or undecodable clips and how many.
    """
    from tympan.audio import probe

    meta = root / "meta" / "esc50.csv"
    with open(meta, newline="", encoding="utf-8") as handle:
        names = [row["filename"] for row in csv.DictReader(handle)]
    if not names:
        raise DatasetError(f"{meta}: lists no clips")
    problems: list[str] = []
    for name in names:
        clip = root / "audio" / name
        if not clip.is_file():
            problems.append(f"{name}: missing")
        elif check_audio:
            try:
                probe(clip)
            except AudioError as exc:
                problems.append(f"{name}: {exc.reason}")
    if problems:
        shown = "; ".join(problems[:5])
        raise DatasetError(f"ESC-50 archive is incomplete: {len(problems)} of {len(names)} "
                           f"clips bad ({shown})")
    return len(names)


FETCHERS = {"esc50": fetch_esc50}
