"""Long recordings: streamed windows scored exactly as clips, events at the right times."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import bands
import numpy as np
import pytest
import synth
from conftest import tiny_model_file  # noqa: F401  (fixture)

from tympan.audio import load_audio
from tympan.errors import AudioError
from tympan.inference.detect import Detector
from tympan.inference.events import EventConfig, detect_events
from tympan.inference.predict import Predictor
from tympan.models.modelfile import load_model

RATE = 16000
HOP = 0.256  # the tiny front end's window (0.512 s) halved
SPANS = [("low", 0.0, 2.0), ("high", 4.0, 6.0), ("low", 5.0, 8.0), ("high", 10.5, 12.0)]


@pytest.fixture
def band_model_file(tmp_path: Path) -> Iterator[Path]:
    with bands.registered():
        yield bands.save_band_model(tmp_path / "bands.safetensors", {"low": 0.25, "high": 0.25})


def _found(events: list, labels: tuple[str, ...] = ("low", "high")) -> list[tuple[str, float,
                                                                                    float]]:
    return sorted((e.label, e.start_seconds, e.end_seconds) for e in events
                  if e.label in labels)


def _assert_spans(found: list[tuple[str, float, float]],
                  expected: list[tuple[str, float, float]]) -> None:
    assert [f[0] for f in found] == [e[0] for e in sorted(expected)], found
    for (_, start, end), (_, true_start, true_end) in zip(found, sorted(expected), strict=True):
        assert abs(start - true_start) <= HOP and abs(end - true_end) <= HOP, (found, expected)


@pytest.mark.parametrize("file_rate", [16000, 22050])
def test_bursts_give_labels_and_boundaries_within_one_hop(band_model_file: Path, tmp_path: Path,
                                                          file_rate: int) -> None:
    # silence between, an overlap (5-6 s), an event at the very start and one at the very end
    wave = bands.scene(SPANS, 12.0, file_rate)
    path = synth.write(tmp_path / "scene.wav", wave, file_rate, subtype="FLOAT")
    detector = Detector(load_model(band_model_file))
    scores = detector.score_file(path)
    events = detect_events(scores, EventConfig(thresholds={"low": 0.25, "high": 0.25}))
    found = _found(events)
    _assert_spans(found, SPANS)
    assert found[0] == ("high", pytest.approx(4.0, abs=HOP), pytest.approx(6.0, abs=HOP))
    starts = {(e.label, e.start_seconds) for e in events}
    assert ("low", 0.0) in starts  # the first event starts at the file's start
    assert max(e.end_seconds for e in events if e.label == "high") == pytest.approx(12.0)


def test_windows_are_the_models_training_length_on_an_exact_sample_grid(
        band_model_file: Path, tmp_path: Path) -> None:
    path = synth.write(tmp_path / "s.wav", bands.scene([], 3.3), RATE)
    detector = Detector(load_model(band_model_file))
    assert detector.window_samples == 32 * 256 and detector.hop_samples == 4096
    scores = detector.score_file(path)
    n = round(3.3 * RATE)
    grid = np.arange(0, n - 8192 + 1, 4096)
    np.testing.assert_array_equal(scores.starts[:-1], grid)
    assert scores.starts[-1] == n - 8192  # end-aligned: no sample left unscored
    assert scores.starts.dtype == np.int64 and scores.n_samples == n
    edges = scores.segment_edges_seconds()
    assert edges[0] == 0 and edges[-1] == n / RATE and np.all(np.diff(edges) > 0)

    custom = Detector(load_model(band_model_file), hop_seconds=0.1)
    assert custom.hop_samples == 1600
    with pytest.raises(ValueError, match="hop_seconds"):
        Detector(load_model(band_model_file), hop_seconds=1.0)


def test_each_window_scores_as_the_predictor_scores_that_clip(tiny_model_file: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    wave = synth.chirp(200, 6000, 2.0, RATE) + synth.noise_burst(2.0, RATE, 0.1, seed=1)
    path = synth.write(tmp_path / "c.wav", wave, RATE, subtype="FLOAT")
    loaded = load_model(tiny_model_file)
    scores = Detector(loaded, batch_size=5).score_file(path)
    decoded = load_audio(path, RATE)
    clips = [decoded[s:s + 8192] for s in scores.starts]
    expected = Predictor(loaded, device="cpu").predict_proba(clips)
    np.testing.assert_allclose(scores.scores[:, 0], expected, atol=1e-6)


def test_streamed_and_whole_file_scores_agree_on_a_five_minute_file(
        tiny_model_file: Path, tmp_path: Path) -> None:  # noqa: F811
    # stereo at 22.05 kHz: streamed mixing and resampling must equal the one-shot decode
    rng = np.random.default_rng(0)
    seconds = 300
    left = 0.2 * rng.standard_normal(seconds * 22050).astype(np.float32)
    right = synth.chirp(300, 5000, seconds, 22050, amplitude=0.3)
    path = synth.write(tmp_path / "long.flac", np.stack([left, right], 1), 22050,
                       subtype="PCM_24")
    loaded = load_model(tiny_model_file)
    streamed = Detector(loaded, batch_size=64, block_seconds=7.3).score_file(path)
    whole = load_audio(path, RATE)
    assert streamed.n_samples == whole.shape[0]
    detector = Detector(loaded, batch_size=64)
    reference = np.concatenate([
        detector.score_windows(np.stack([whole[s:s + 8192] for s in streamed.starts[i:i + 256]]))
        for i in range(0, streamed.n_windows, 256)])
    np.testing.assert_allclose(streamed.scores[:, 0], reference, atol=1e-6, rtol=0)


def test_memory_is_bounded_by_the_batch_not_the_file(band_model_file: Path,
                                                     tmp_path: Path) -> None:
    # 10 minutes at 8 kHz, resampled to 16 kHz: 38 MB as float32 if decoded whole
    seconds, rate = 600, 8000
    wave = np.zeros(seconds * rate, dtype=np.float32)
    wave[::97] = 0.5
    path = synth.write(tmp_path / "long.wav", wave, rate)
    detector = Detector(load_model(band_model_file), batch_size=16, block_seconds=10)
    tracemalloc.start()
    try:
        scores = detector.score_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scores.duration_seconds == seconds
    assert peak < 8e6, f"peak traced memory {peak / 1e6:.1f} MB"


def test_a_channel_can_be_chosen_or_each_scored(band_model_file: Path, tmp_path: Path) -> None:
    left = bands.scene([("low", 1.0, 3.0)], 5.0)
    right = bands.scene([("high", 2.0, 4.0)], 5.0)
    path = synth.write(tmp_path / "st.wav", np.stack([left, right], 1), RATE, subtype="FLOAT")
    detector = Detector(load_model(band_model_file))
    config = EventConfig(thresholds={"low": 0.25, "high": 0.25})

    first = detect_events(detector.score_file(path, channel=0), config)
    assert _found(first) == [("low", pytest.approx(1.0, abs=HOP), pytest.approx(3.0, abs=HOP))]
    assert {e.channel for e in first} == {1}
    second = detect_events(detector.score_file(path, channel=1), config)
    assert [e[0] for e in _found(second)] == ["high"]

    each = detector.score_file(path, channel="each")
    assert each.scores.shape[1] == 2 and each.channels == [1, 2]
    by_channel = {(e.channel, e.label) for e in detect_events(each, config)
                  if e.label != "background"}
    assert by_channel == {(1, "low"), (2, "high")}
    with pytest.raises(AudioError, match="channel 3"):
        detector.score_file(path, channel=2)


def _corrupt(path: Path, start: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:start + 4000] = np.random.default_rng(0).integers(0, 256, 4000,
                                                                 dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_a_corrupt_block_reports_the_time_and_keeps_earlier_events(band_model_file: Path,
                                                                   tmp_path: Path) -> None:
    wave = bands.scene([("low", 0.5, 2.0), ("high", 3.0, 4.0), ("low", 9.0, 11.0)], 12.0)
    path = synth.write(tmp_path / "bad.flac", wave, RATE)
    # the bytes of the first 6 s (FLAC compresses silence: bytes are not proportional to time)
    head = synth.write(tmp_path / "head.flac", wave[:6 * RATE], RATE)
    _corrupt(path, head.stat().st_size)
    scores = Detector(load_model(band_model_file)).score_file(path)
    assert scores.failure is not None
    assert 4.5 < scores.failure.seconds < 8.0
    assert "decoding failed at" in str(scores.failure)
    assert scores.duration_seconds <= scores.failure.seconds + 1e-9
    found = _found(detect_events(scores, EventConfig(thresholds={"low": 0.25, "high": 0.25})))
    assert [f[0] for f in found] == ["high", "low"]  # the two events before the failure


def test_a_truncated_wav_reports_where_it_ends(band_model_file: Path, tmp_path: Path) -> None:
    wave = bands.scene([("low", 0.5, 2.0)], 6.0)
    path = synth.write(tmp_path / "cut.wav", wave, RATE)
    data = path.read_bytes()
    path.write_bytes(data[:44 + 2 * 3 * RATE])  # header + the first 3 s of 16-bit samples
    scores = Detector(load_model(band_model_file)).score_file(path)
    assert scores.failure is not None and "truncated" in scores.failure.reason
    assert scores.failure.seconds == pytest.approx(3.0, abs=1e-3)
    assert [f[0] for f in _found(detect_events(scores, EventConfig(
        thresholds={"low": 0.25})))] == ["low"]


def test_a_short_file_is_one_window_scored_as_predict_scores_it(tiny_model_file: Path,  # noqa: F811
                                                                tmp_path: Path) -> None:
    wave = synth.tone(800, 0.3, RATE)
    path = synth.write(tmp_path / "short.wav", wave, RATE, subtype="FLOAT")
    loaded = load_model(tiny_model_file)
    scores = Detector(loaded).score_file(path)
    assert scores.n_windows == 1 and scores.ends()[0] == wave.shape[0]
    np.testing.assert_allclose(scores.scores[:, 0],
                               Predictor(loaded, device="cpu").predict_proba([path]), atol=1e-6)
    tiny = synth.write(tmp_path / "tiny.wav", synth.tone(800, 0.05, RATE), RATE)
    with pytest.raises(AudioError, match="shorter than"):
        Detector(loaded).score_file(tiny)


def test_predict_files_averages_windows_and_reports_bad_files(tiny_model_file: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    loaded = load_model(tiny_model_file)
    one = synth.write(tmp_path / "one.wav", synth.tone(600, 0.4, RATE), RATE, subtype="FLOAT")
    long = synth.write(tmp_path / "long.wav", synth.chirp(300, 3000, 3.0, RATE), RATE,
                       subtype="FLOAT")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    detector = Detector(loaded)
    results = detector.predict_files([one, long, junk])
    np.testing.assert_allclose(results[0].probabilities,
                               Predictor(loaded, device="cpu").predict_proba([one])[0], atol=1e-6)
    assert results[0].n_windows == 1 and results[1].n_windows > 4
    np.testing.assert_allclose(results[1].probabilities,
                               detector.score_file(long).scores[:, 0].mean(axis=0), atol=1e-6)
    assert not results[2].ok and "not an audio file" in (results[2].error or "")


def test_classifier_detect_uses_the_stored_thresholds(band_model_file: Path,
                                                      tmp_path: Path) -> None:
    import tympan

    path = synth.write(tmp_path / "scene.wav", bands.scene(SPANS, 12.0), RATE)
    clf = tympan.Classifier.load(band_model_file)
    (result,) = clf.detect(path)  # thresholds 0.25 from the model file
    _assert_spans(_found(result.events), SPANS)
    assert result.duration_seconds == 12.0 and result.failure is None
    assert _found(clf.detect([path], threshold=0.6)[0].events) == []
