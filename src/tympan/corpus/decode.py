"""Decode one unit's samples: a span ``[begin, end)`` of a file at the model's rate.

A span from the start of a file is :class:`~tympan.inference.stream.AudioStream`
exactly (the samples a :class:`~tympan.inference.detect.Detector` scores). A
later span seeks: it starts at a frame where the file's and the model's rates
align on whole samples, ``LEAD_SECONDS`` early, so soxr's filter has settled
by ``begin`` (equal to the whole-file stream within float rounding; exactly
equal when the file is already at the model's rate).
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tympan.audio import _describe
from tympan.inference.stream import AudioStream

#: Audio decoded before a seeked span's start so the resampler's filter has settled (s).
LEAD_SECONDS = 0.25
#: Frames per read.
BLOCK_SECONDS = 10.0


def _mono(block: np.ndarray) -> np.ndarray:
    """Channels averaged as :class:`AudioStream` does for ``channel="mix"``."""
    if block.shape[1] == 1:
        return block
    return block.mean(axis=1, dtype=np.float64).astype(np.float32)[:, None]


def _from_start(path: Path, sample_rate: int, end: int) -> tuple[np.ndarray, str | None]:
    stream = AudioStream(path, sample_rate, block_seconds=BLOCK_SECONDS)
    pieces, have = [], 0
    for block in stream:
        pieces.append(block[:, 0])
        have += block.shape[0]
        if have >= end:
            break
    samples = np.concatenate(pieces)[:end] if pieces else np.zeros(0, np.float32)
    return samples, None if stream.failure is None else str(stream.failure)


def _seeked(path: Path, sample_rate: int, begin: int, end: int) -> tuple[np.ndarray, str | None]:
    info = sf.info(str(path))
    file_rate = int(info.samplerate)
    common = gcd(file_rate, sample_rate)
    step_in, step_out = file_rate // common, sample_rate // common
    lead = 0 if file_rate == sample_rate else round(LEAD_SECONDS * sample_rate)
    out_at = max(0, begin - lead) // step_out * step_out  # a model sample on a file frame
    frame = out_at // step_out * step_in
    resampler = None
    if file_rate != sample_rate:
        resampler = soxr.ResampleStream(file_rate, sample_rate, 1, dtype="float32",
                                        quality="HQ")
    block_frames = max(1, round(BLOCK_SECONDS * file_rate))
    pieces, have, failure = [], 0, None
    with sf.SoundFile(str(path)) as handle:
        handle.seek(frame)
        while have < end - out_at:
            block = handle.read(block_frames, dtype="float32", always_2d=True)
            last = block.shape[0] < block_frames
            if not np.isfinite(block).all():
                failure = "NaN or infinite samples"
                break
            out = _mono(block)
            if resampler is not None:
                out = resampler.resample_chunk(out, last=last)
            pieces.append(out[:, 0])
            have += out.shape[0]
            if last:
                break
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return np.ascontiguousarray(samples[begin - out_at:end - out_at]), failure


def decode_span(path: str | Path, sample_rate: int, begin: int, end: int
                ) -> tuple[np.ndarray, str | None]:
    """Mono float32 samples ``[begin, end)`` at ``sample_rate`` Hz, and why decoding stopped
    early (None when all ``end - begin`` samples were decoded).

    Raises:
        AudioError: the file cannot be opened as audio at all.
    """
    path = Path(path)
    if begin == 0:
        samples, failure = _from_start(path, sample_rate, end)
    else:
        try:
            samples, failure = _seeked(path, sample_rate, begin, end)
        except Exception as exc:  # a corrupt block or an unseekable file mid-way
            samples, failure = np.zeros(0, np.float32), _describe(exc)
    if failure is None and samples.shape[0] < end - begin:
        got = (begin + samples.shape[0]) / sample_rate
        failure = (f"the file ends after {got:.3f} s but its header declares "
                   f"{end / sample_rate:.3f} s or more (truncated)")
    return samples, failure


__all__ = ["LEAD_SECONDS", "decode_span"]
