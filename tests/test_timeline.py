"""Timeline PNG: spectrogram, score curves and event boxes of one file's detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tympan.inference.detect import WindowScores
from tympan.inference.events import Event
from tympan.workflows.timeline import save_timeline


def _scores(spectrum: bool) -> WindowScores:
    n = 40
    starts = np.arange(n, dtype=np.int64) * 4000
    probs = np.zeros((n, 1, 2), np.float32)
    probs[10:20, 0, 1] = 0.9
    probs[:, 0, 0] = 1 - probs[:, 0, 1]
    spec = np.random.default_rng(0).normal(size=(n, 1, 16)).astype(np.float32)
    return WindowScores(Path("rec.wav"), ["bg", "bird"], 16000, 8000, 4000, starts, probs,
                        n * 4000 + 4000, spectrum=spec if spectrum else None)


def test_timeline_is_a_png(tmp_path: Path) -> None:
    events = [Event("bird", 2.5, 5.25, 0.9, 0.9)]
    out = save_timeline(tmp_path / "t.png", _scores(True), events, {"bird": 0.5})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_timeline_needs_window_spectra(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_spectrum"):
        save_timeline(tmp_path / "t.png", _scores(False), [], {})
