"""Atomic file writes: write to a temporary name in the same folder, then rename.

Nothing a user made is ever half-written or overwritten by a crash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tympan.errors import NoSpaceError

#: errno values that mean "the disk (or the user's quota) is full"
_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError (or one it wraps) that says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


def _short_write_on_full_disk(exc: BaseException, folder: Path) -> bool:
    """A write that stopped short without an errno (numpy's "N requested and M written")
    on a file system with (almost) no space left."""
    if not isinstance(exc, OSError) or exc.errno is not None:
        return False
    try:
        usage = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return False
    return usage.f_bavail * usage.f_frsize < 1 << 20


def no_space_error(path: Path) -> NoSpaceError:
    """The one-line error for a write of ``path`` that found the disk full."""
    return NoSpaceError(f"no space left on {Path(path).parent} (writing {Path(path).name}); "
                        "free some space and rerun: earlier results are kept")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.

    Raises:
        NoSpaceError: the disk (or quota) filled up while writing.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise no_space_error(path) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600; give the result the permissions a plain open() would
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as exc:
        if is_disk_full(exc) or _short_write_on_full_disk(exc, path.parent):
            raise no_space_error(path) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
