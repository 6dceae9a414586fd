"""A unit's span decoded on its own equals the same samples of the whole-file stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth

from tympan.corpus.decode import decode_span
from tympan.inference.stream import AudioStream


def _whole(path: Path, rate: int) -> np.ndarray:
    return np.concatenate([b[:, 0] for b in AudioStream(path, rate)])


@pytest.mark.parametrize("file_rate", [44100, 22050, 16000, 48000])
def test_seeked_span_matches_the_whole_stream(tmp_path: Path, file_rate: int) -> None:
    signal = synth.chirp(200, 6000, 4.0, file_rate) + synth.noise_burst(4.0, file_rate, seed=2)
    path = synth.write(tmp_path / "x.wav", signal * 0.4, file_rate, channels=2,
                       subtype="FLOAT")
    whole = _whole(path, 16000)
    for begin, end in ((0, 9000), (12345, 40000), (30001, len(whole))):
        got, failure = decode_span(path, 16000, begin, end)
        assert failure is None
        assert got.shape == (end - begin,)
        tolerance = 0.0 if file_rate == 16000 or begin == 0 else 1e-5
        np.testing.assert_allclose(got, whole[begin:end], atol=tolerance, rtol=0)


def test_truncated_span_reports_where_it_ended(tmp_path: Path) -> None:
    path = synth.write(tmp_path / "x.wav", synth.tone(440, 1.0, 16000), 16000)
    got, failure = decode_span(path, 16000, 8000, 20000)
    assert got.shape == (8000,)
    assert failure is not None and "truncated" in failure


def test_nan_samples_stop_the_span(tmp_path: Path) -> None:
    path = synth.write_nan_wav(tmp_path / "nan.wav", 16000, 1.0)
    got, failure = decode_span(path, 16000, 0, 16000)
    assert got.shape[0] < 16000
    assert failure is not None and "NaN" in failure
