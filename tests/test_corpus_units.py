"""Work units: Detector's windows planned from headers, split into runs of windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import tiny_features

from tympan.corpus.units import (
    Unit,
    WindowGeometry,
    plan_file,
    resampled_length,
    window_starts,
)
from tympan.errors import AudioError
from tympan.inference.stream import AudioStream


class _Blocks:
    """A stand-in for AudioStream: ``total`` samples in blocks of ``block``."""

    channels_out = 1

    def __init__(self, total: int, block: int) -> None:
        self.total, self.block = total, block

    def __iter__(self):  # type: ignore[no-untyped-def]
        for start in range(0, self.total, self.block):
            yield np.zeros((min(self.block, self.total - start), 1), np.float32)


@pytest.mark.parametrize("total", [1, 50, 511, 512, 513, 767, 768, 1000, 1024, 5000, 12345])
def test_window_starts_are_the_detectors(total: int, tiny_model_file: Path) -> None:
    from tympan.inference.detect import Detector
    from tympan.models.modelfile import load_model

    detector = Detector(load_model(tiny_model_file), hop_seconds=0.02)
    expected = [s for s, _ in detector._windows(_Blocks(total, 700))]  # type: ignore[arg-type]
    got = window_starts(total, detector.window_samples, detector.hop_samples)
    assert got.tolist() == expected


def test_geometry_is_the_detectors(tiny_model_file: Path) -> None:
    from tympan.inference.detect import Detector
    from tympan.models.modelfile import load_model

    detector = Detector(load_model(tiny_model_file))
    geometry = WindowGeometry.from_features(tiny_features())
    assert (geometry.window_samples, geometry.hop_samples) == (detector.window_samples,
                                                               detector.hop_samples)
    with pytest.raises(ValueError, match="hop_seconds"):
        WindowGeometry.from_features(tiny_features(), hop_seconds=10.0)


@pytest.mark.parametrize(("rate", "seconds"), [(44100, 1.3), (22050, 0.77), (8000, 2.0001),
                                                (16000, 1.0), (48000, 0.31)])
def test_header_length_is_what_the_stream_decodes(tmp_path: Path, rate: int,
                                                   seconds: float) -> None:
    path = synth.write(tmp_path / "x.wav", synth.noise_burst(seconds, rate, seed=1), rate)
    frames = round(seconds * rate)
    decoded = sum(block.shape[0] for block in AudioStream(path, 16000))
    assert resampled_length(frames, rate, 16000) == decoded


def test_long_file_is_split_into_units_covering_every_window(tmp_path: Path) -> None:
    path = synth.write(tmp_path / "long.wav", synth.tone(440, 3.0, 16000), 16000)
    geometry = WindowGeometry.from_features(tiny_features())
    units = plan_file(path, 4, geometry, unit_windows=5)
    starts = window_starts(48000, geometry.window_samples, geometry.hop_samples)
    assert [u.first for u in units] == list(range(0, len(starts), 5))
    assert units[-1].stop == len(starts)
    assert all(u.file_index == 4 and u.total_samples == 48000 for u in units)
    assert np.concatenate([u.starts(geometry) for u in units]).tolist() == starts.tolist()
    begin, end = units[1].span(geometry)
    assert (begin, end) == (starts[5], starts[9] + geometry.window_samples)


def test_short_file_is_one_window_of_its_samples(tmp_path: Path) -> None:
    path = synth.write(tmp_path / "s.wav", synth.tone(440, 0.2, 16000), 16000)
    geometry = WindowGeometry.from_features(tiny_features())
    (unit,) = plan_file(path, 0, geometry, unit_windows=8)
    assert unit.span(geometry) == (0, 3200)


def test_unusable_files_raise_audio_errors_naming_them(tmp_path: Path) -> None:
    geometry = WindowGeometry.from_features(tiny_features())
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    short = synth.write(tmp_path / "short.wav", synth.tone(440, 0.05, 16000), 16000)
    for path, fragment in ((empty, "empty"), (short, "shorter than"),
                           (tmp_path / "missing.wav", "no such file")):
        with pytest.raises(AudioError, match=fragment) as caught:
            plan_file(path, 0, geometry, 8)
        assert caught.value.path == path


def test_unit_is_plain_data() -> None:
    unit = Unit("a.wav", 0, 2, 4, 10000)
    assert unit == Unit("a.wav", 0, 2, 4, 10000)
