"""Exception and warning types a user can catch and act on."""

from __future__ import annotations

from pathlib import Path


class TympanError(Exception):
    """Base class of every error tympan raises on purpose.

    ``exit_code`` is the command line's exit status for it: 2 for input or
    options to change, 1 for a failure while working (disk full, folder in use).
    """

    exit_code = 2


class AudioError(TympanError):
    """A file could not be used as audio; the message names the file and the cause."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(TympanError):
    """A dataset cannot be used as given (missing path, no audio, one class …)."""


class ModelFileError(TympanError):
    """A model file is missing, truncated, foreign or inconsistent."""


class ChecksumError(TympanError):
    """A downloaded or local file does not match its expected sha256."""


class ConfigError(TympanError, ValueError):
    """A config file or a combination of options cannot be used; the message names the
    file, key or option and what to do instead."""


class DivergedError(TympanError):
    """Training produced a non-finite loss or model output (the message says where)."""


class NoSpaceError(TympanError):
    """A write ran out of disk space (or quota); earlier results are left as they were."""

    exit_code = 1


class SilentAudioWarning(UserWarning):
    """A clip decoded fine but every sample is (near) zero."""


class SkippedFilesWarning(UserWarning):
    """Files that passed the header check failed the full decode (e.g. NaN samples) and are
    left out; the message names them and why."""


class ModelFileWarning(UserWarning):
    """A model file was loaded without its checksum being verified."""


class ModelOutputError(TympanError):
    """A model produced non-finite probabilities (NaN/inf), e.g. from NaN weights."""
