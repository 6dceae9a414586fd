"""Run folders: built under a hidden temporary name, renamed into place when complete.

A run named ``NAME`` is written into ``runs/.NAME.partial`` and renamed to
``runs/NAME`` only when every artefact is there, so a crash never leaves a
half-written run under its final name; ``--resume`` reopens the partial folder.
While a process works on run ``NAME`` it holds ``runs/.NAME.lock``
(:func:`lock_run`), so a second process can neither delete nor resume it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from tympan.errors import TympanError
from tympan.locking import folder_lock

PARTIAL_SUFFIX = ".partial"


class RunFolderError(TympanError):
    """A run folder name is taken, unfinished, or not a valid name."""


# -- the folder itself ------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name or name.startswith("."):
        raise RunFolderError(f"invalid run name {name!r}: use a plain folder name such as "
                             "'esc50-cnn-s' (no slashes, not starting with '.')")


def work_dir_for(runs_dir: str | Path, name: str) -> Path:
    """The hidden folder a run named ``name`` is built in: ``runs_dir/.<name>.partial``."""
    return Path(runs_dir) / f".{name}{PARTIAL_SUFFIX}"


def final_dir_for(work_dir: str | Path) -> Path:
    """The run folder a work folder becomes: ``.<name>.partial`` → ``<name>``."""
    work_dir = Path(work_dir)
    stem = work_dir.name
    if not (stem.startswith(".") and stem.endswith(PARTIAL_SUFFIX)):
        raise RunFolderError(f"{work_dir}: not a run work folder (.<name>{PARTIAL_SUFFIX})")
    return work_dir.parent / stem[1:-len(PARTIAL_SUFFIX)]


@contextlib.contextmanager
def lock_run(runs_dir: str | Path, name: str, what: str = "run") -> Iterator[None]:
    """Hold run ``name``'s lock (``runs_dir/.name.lock``) for the ``with`` block.

    Raises:
        LockedError: another live process works on this run (its PID in the message).
        RunFolderError: ``name`` is not a plain folder name.
    """
    _check_name(name)
    with folder_lock(Path(runs_dir) / name, what):
        yield


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete ``.*.tmp`` files a killed process left in ``folder`` (recursively); return how
    many. Call it only while holding the folder's lock: a live writer's file looks the same."""
    removed = 0
    for item in Path(folder).rglob(".*.tmp"):
        if item.is_file():
            item.unlink(missing_ok=True)
            removed += 1
    return removed


def prepare_run_dir(
    runs_dir: str | Path, name: str, overwrite: bool = False, *, resume: bool = False,
    resumable: bool = True,
) -> Path:
    """Create (or, with ``resume``, reopen) the work folder for run ``name``; return it.

    Write artefacts and checkpoints into the returned folder, then call
    :func:`finalize_run_dir`; hold :func:`lock_run` around both. An existing
    finished run is kept until that rename succeeds, so even ``overwrite``
    loses nothing if the new run crashes. A resumed folder is cleared of the
    temporary files a killed process left.

    Raises:
        RunFolderError: ``runs_dir/name`` exists and ``overwrite`` is False; an
            unfinished run of that name exists and neither ``resume`` nor
            ``overwrite`` is set; ``resume`` but there is nothing to resume;
            or ``name`` is not a plain folder name.
    """
    _check_name(name)
    runs_dir = Path(runs_dir)
    final = runs_dir / name
    work = work_dir_for(runs_dir, name)
    if final.exists() and not overwrite:
        raise RunFolderError(f"{final}: a run with this name already exists; pass --overwrite "
                             "to replace it or choose another --name")
    if resume:
        if not work.is_dir():
            raise RunFolderError(f"{work}: no unfinished run named {name!r} to resume")
        remove_stale_temporaries(work)
        return work
    if work.exists():
        if not overwrite:
            how = ("pass --resume to continue it or --overwrite to start again" if resumable
                   else "pass --overwrite to start again")
            raise RunFolderError(f"{work}: an unfinished run named {name!r} exists "
                                 f"(interrupted: no process is working on it); {how}")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def finalize_run_dir(work_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Rename a finished work folder to its run name; return the run folder.

    With ``overwrite`` an existing run of that name is replaced (moved aside,
    then deleted after the rename, so one of the two is always complete).

    Raises:
        RunFolderError: the run folder exists and ``overwrite`` is False.
    """
    work = Path(work_dir)
    final = final_dir_for(work)
    if not work.is_dir():
        raise RunFolderError(f"{work}: no such work folder")
    if final.exists():
        if not overwrite:
            raise RunFolderError(f"{final}: a run with this name already exists; pass "
                                 "--overwrite to replace it")
        old = final.parent / f".{final.name}.old"
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old)
    else:
        work.rename(final)
    return final


__all__ = ["PARTIAL_SUFFIX", "RunFolderError", "final_dir_for", "finalize_run_dir", "lock_run",
           "prepare_run_dir", "remove_stale_temporaries", "work_dir_for"]
