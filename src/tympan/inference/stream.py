"""Streamed decoding: a long recording read block by block, never whole.

:class:`AudioStream` reads a file with ``soundfile`` in blocks, picks or mixes
channels, and resamples with ``soxr.ResampleStream`` to the model's rate, so
memory is bounded by the block, not the file. Its output equals
:func:`tympan.audio.load_audio` on the whole file (soxr's streaming resampler
gives the one-shot result sample for sample). A file that is cut short or has
a corrupt block stops the stream; :attr:`AudioStream.failure` then says at
which second decoding failed, and every sample before it was delivered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from tympan.audio import _check_file, _describe
from tympan.errors import AudioError

#: Frames per read when re-reading a block that failed (the failure time's resolution).
SALVAGE_FRAMES = 1024

#: ``"mix"`` averages channels to mono, ``"each"`` keeps every channel, an int picks one (0-based).
ChannelChoice = int | Literal["mix", "each"]


@dataclass(frozen=True)
class DecodeFailure:
    """Where and why decoding stopped early: ``seconds`` into the file (at its own rate)."""

    seconds: float
    reason: str

    def __str__(self) -> str:
        return f"decoding failed at {self.seconds:.3f} s: {self.reason}"


def _declared_wav_frames(info: sf._SoundFileInfo) -> int | None:
    """Frames a WAV header declares when libsndfile found fewer bytes ("should be" note)."""
    text = info.extra_info
    data = re.search(r"^data : (\d+) \(should be", text, re.MULTILINE)
    align = re.search(r"Block Align\s*:\s*(\d+)", text)
    if data is None or align is None or int(align.group(1)) <= 0:
        return None
    return int(data.group(1)) // int(align.group(1))


class AudioStream:
    """Iterate a file as float32 blocks ``(samples, channels_out)`` at ``sample_rate`` Hz.

    ``channel`` is ``"mix"`` (mono average, as training decodes), ``"each"``
    (all channels) or a 0-based channel index. ``block_seconds`` is how much
    of the file is read per step. After iteration, :attr:`failure` is None for
    a clean file, else a :class:`DecodeFailure`; :attr:`frames_read` counts
    decoded input frames.

    Raises:
        AudioError: on opening: missing, empty, not audio, no samples, or a
            channel index the file does not have.
    """

    def __init__(self, path: str | Path, sample_rate: int, *, channel: ChannelChoice = "mix",
                 block_seconds: float = 10.0) -> None:
        self.path = Path(path)
        _check_file(self.path)
        try:
            info = sf.info(str(self.path))
        except Exception as exc:  # libsndfile raises several types for bad input
            raise AudioError(self.path, _describe(exc)) from exc
        if info.samplerate <= 0 or info.channels <= 0:
            raise AudioError(self.path, f"invalid header ({info.samplerate} Hz, "
                                        f"{info.channels} channels)")
        if info.frames <= 0:
            raise AudioError(self.path, "empty: the file holds no samples")
        if isinstance(channel, int) and not 0 <= channel < info.channels:
            raise AudioError(self.path, f"has {info.channels} channel(s); channel {channel + 1} "
                                        "does not exist")
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        self.file_rate = int(info.samplerate)
        self.file_channels = int(info.channels)
        self.declared_frames = int(info.frames)
        wav_frames = _declared_wav_frames(info)
        if wav_frames is not None:
            self.declared_frames = max(self.declared_frames, wav_frames)
        self.sample_rate = int(sample_rate)
        self.channel = channel
        self.block_frames = max(1, round(block_seconds * self.file_rate))
        self.frames_read = 0
        self.failure: DecodeFailure | None = None

    @property
    def channels_out(self) -> int:
        """Channels of each block: the file's for ``"each"``, else 1."""
        return self.file_channels if self.channel == "each" else 1

    @property
    def declared_seconds(self) -> float:
        """The duration the header declares (a truncated file ends earlier)."""
        return self.declared_frames / self.file_rate

    def _select(self, block: np.ndarray) -> np.ndarray:
        if self.channel == "each":
            return block
        if isinstance(self.channel, int):
            return block[:, self.channel:self.channel + 1]
        if block.shape[1] == 1:
            return block
        return block.mean(axis=1, dtype=np.float64).astype(np.float32)[:, None]

    def _fail(self, reason: str) -> None:
        self.failure = DecodeFailure(self.frames_read / self.file_rate, reason)

    def _salvage(self) -> tuple[np.ndarray, str | None]:
        """After a failed block read: re-read that block in small steps from its start, so
        the samples before the corrupt spot are kept. Returns them and the error met."""
        pieces: list[np.ndarray] = []
        error = None
        try:  # a decoder that failed may not seek any more: a fresh handle does
            with sf.SoundFile(str(self.path)) as fresh:
                fresh.seek(self.frames_read)
                while True:
                    piece = fresh.read(SALVAGE_FRAMES, dtype="float32", always_2d=True)
                    if piece.shape[0] == 0 or not np.isfinite(piece).all():
                        break
                    pieces.append(piece)
        except Exception as exc:  # the corrupt spot itself (or an unseekable file)
            error = _describe(exc)
        if not pieces:
            return np.zeros((0, self.file_channels), np.float32), error
        return np.concatenate(pieces), error

    def __iter__(self) -> Iterator[np.ndarray]:
        resampler = None
        if self.file_rate != self.sample_rate:
            resampler = soxr.ResampleStream(self.file_rate, self.sample_rate, self.channels_out,
                                            dtype="float32", quality="HQ")
        try:
            handle = sf.SoundFile(str(self.path))
        except Exception as exc:
            raise AudioError(self.path, _describe(exc)) from exc
        with handle:
            while True:
                try:
                    block = handle.read(self.block_frames, dtype="float32", always_2d=True)
                except Exception as exc:  # a corrupt block: keep what came before it
                    block, error = self._salvage()
                    self.frames_read += block.shape[0]
                    self._fail(error or _describe(exc))
                    if block.shape[0]:
                        out = self._select(block)
                        if resampler is not None:
                            out = resampler.resample_chunk(out, last=False)
                        yield np.ascontiguousarray(out, dtype=np.float32)
                    break
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    self._fail("NaN or infinite samples")
                    break
                self.frames_read += block.shape[0]
                out = self._select(block)
                if resampler is not None:
                    out = resampler.resample_chunk(out, last=False)
                if out.shape[0]:
                    yield np.ascontiguousarray(out, dtype=np.float32)
        if self.failure is None and self.frames_read < self.declared_frames:
            self._fail(f"the file ends after {self.frames_read / self.file_rate:.3f} s but its "
                       f"header declares {self.declared_seconds:.3f} s (truncated)")
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, self.channels_out), np.float32),
                                            last=True)
            if tail.shape[0]:
                yield np.ascontiguousarray(tail, dtype=np.float32)


__all__ = ["AudioStream", "ChannelChoice", "DecodeFailure"]
