"""Find or download datasets (and any other checksummed file, e.g. pretrained weights).

The data directory is ``$TYMPAN_DATA`` (one folder per dataset, ``$TYMPAN_DATA/esc50/…``),
else the user cache folder ``tympan/datasets``. A dataset already there is used as is.

:func:`download` is the one generic downloader, on top of ``pooch``: streamed to a
temporary name, verified by sha256, renamed into place; ``file://`` URLs work too
(tests use them; pooch has no downloader for them, so a local copy stands in).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tympan.errors import AudioError, ChecksumError, DatasetError
from tympan.fileio import sha256_file

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
             progress: bool = True, by_hand: str | None = None) -> Path:
    """Download ``url`` to ``dest`` with :func:`pooch.retrieve` and return ``dest``.

    Streams to a temporary file beside ``dest`` and renames it into place only
    when complete (and, with ``sha256``, verified), so ``dest`` is never half
    written. If ``dest`` already exists with the expected ``sha256`` nothing is
    downloaded; an existing ``dest`` without a ``sha256`` to check is kept as is.
    ``file://`` URLs are copied locally. ``progress`` shows a rich progress bar.
    ``by_hand`` replaces the advice of the download error (default: save the
    file as ``dest``).

    Raises:
        ChecksumError: the download does not match ``sha256`` (names the file,
            the expected and the actual hash; ``dest`` is left as it was).
        DatasetError: the URL cannot be fetched (network error, HTTP error, missing
            file, unknown scheme); names the URL and where to put the file by hand.
    """
    import pooch

    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    bar = _RichBar(dest.name) if progress else False
    downloader = (_copy_file_url if urllib.parse.urlparse(url).scheme == "file"
                  else pooch.HTTPDownloader(progressbar=bar, chunk_size=_CHUNK_BYTES))
    received: dict[str, str] = {}

    def fetch(source: str, output_file: str, caller: object) -> None:
        downloader(source, output_file, caller)
        received["sha256"] = sha256_file(Path(output_file))

    try:
        with _quiet_pooch():
            pooch.retrieve(url, known_hash=f"sha256:{expected}" if expected else None,
                           fname=dest.name, path=dest.parent, downloader=fetch,
                           progressbar=bool(bar))
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors
        actual = received.get("sha256")
        if isinstance(exc, ValueError) and actual is not None and actual != expected:
            raise ChecksumError(
                f"{dest.name} from {url}: sha256 {actual} does not match the expected "
                f"{expected}; the download was discarded ({dest} left as it was)"
            ) from None
        advice = by_hand or f"download it yourself and save it as {dest}"
        raise DatasetError(f"{url}: download failed ({exc}); {advice}") from exc
    finally:
        if isinstance(bar, _RichBar):
            bar.close()
    return dest


def _copy_file_url(url: str, output_file: str, caller: object = None) -> None:
    """pooch downloader for ``file://`` URLs (pooch has none): copy the local file."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    with open(source, "rb") as src, open(output_file, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK_BYTES)


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs every download at INFO on stderr; our progress bar says enough."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _RichBar:
    """The progress-bar object pooch's HTTPDownloader drives (total, update, reset, close),
    drawn with rich."""

    def __init__(self, name: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress("{task.description}", BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
        self._task = self._bar.add_task(name, total=None, start=False)
        self._started = False

    @property
    def total(self) -> float | None:
        return self._bar.tasks[0].total

    @total.setter
    def total(self, n_bytes: int) -> None:
        self._bar.update(self._task, total=n_bytes or None)
        if not self._started:
            self._bar.start()
            self._bar.start_task(self._task)
            self._started = True

    def update(self, n_bytes: int) -> None:
        self._bar.advance(self._task, n_bytes)

    def reset(self) -> None:
        self._bar.update(self._task, completed=0)

    def close(self) -> None:
        if self._started:
            self._bar.stop()
            self._started = False


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
        archive = download(url, work / "ESC-50-master.zip", sha256, progress=progress,
                           by_hand=f"download and unpack it yourself so that {target}/meta/"
                                   "esc50.csv exists")
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
