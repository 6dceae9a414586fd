"""Exclusive locks on output folders, so two processes never write (or delete) the same one.

A folder ``parent/NAME`` is locked through ``parent/.NAME.lock``: an
``fcntl.flock`` on that file, which also holds the holder's PID for messages.
The kernel drops a flock when its process dies, so a lock left by a killed
process is stale by construction and the next process simply takes it over.
On systems without ``fcntl`` (Windows) locking is skipped; atomic renames
still keep every file whole there.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tympan.errors import TympanError
from tympan.fileio import is_disk_full, no_space_error

LOCK_SUFFIX = ".lock"


class LockedError(TympanError):
    """Another live process holds the lock on a folder (the message names its PID)."""

    exit_code = 1


def lock_path_for(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``parent/.NAME.lock`` beside it."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def holder_pid(lock_file: Path) -> int | None:
    """The PID written in ``lock_file`` (None when missing or unreadable)."""
    try:
        return int(lock_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _try_flock(handle: int, *, wait: bool) -> bool:
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "folder", *,
                on_wait: Callable[[int | None], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the ``with`` block; yield the lock file.

    Without ``on_wait`` a lock held by another live process raises at once;
    with it, ``on_wait(pid)`` is called once and the lock is awaited.

    Raises:
        LockedError: another live process holds the lock (its PID in the message),
            and ``on_wait`` is None.
        NoSpaceError: the disk is too full to write the lock file.
    """
    lock_file = lock_path_for(folder)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        yield lock_file
        return
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_flock(fd, wait=False):
                pid = holder_pid(lock_file)
                if on_wait is None:
                    who = f"process {pid}" if pid is not None else "another process"
                    raise LockedError(
                        f"{folder}: {what} in use by {who} (lock {lock_file}); wait for it to "
                        "finish, or stop it, then rerun"
                    )
                on_wait(pid)
                on_wait = _ignore
                _try_flock(fd, wait=True)
            # the holder before us may have removed the file on release: lock the file on disk
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(lock_file).st_ino:
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        time.sleep(0.01)
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            if is_disk_full(exc):
                raise no_space_error(lock_file) from exc
            raise
        yield lock_file
    finally:
        with contextlib.suppress(OSError):
            lock_file.unlink()
        os.close(fd)


def _ignore(pid: int | None) -> None:
    """An ``on_wait`` that says nothing (the first wait already did)."""


__all__ = ["LOCK_SUFFIX", "LockedError", "folder_lock", "holder_pid", "lock_path_for"]
