"""Dataset summary: classes, per-class and per-fold counts, durations, formats, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import synth

from tympan.data.info import summarize
from tympan.data.sources import discover, read_esc50

ESC50 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "esc50"


def test_summary_of_a_folder_dataset_with_bad_files(bad_folder):
    summary = summarize(discover(bad_folder.root), workers=0)
    assert summary.class_counts == {"beep": 3, "hiss": 3}
    assert summary.n_clips == len(bad_folder.good) and summary.fold_counts == {}
    assert summary.sample_rates == {8000: 1, 22050: 5}
    assert summary.channels == {1: 5, 2: 1}
    lo, mean, hi = summary.duration_stats()
    assert lo == pytest.approx(0.5, abs=0.01) and hi == pytest.approx(0.5, abs=0.01)
    reasons = {b.path: b.reason for b in summary.bad_files}
    assert set(reasons) == set(bad_folder.bad)
    for path, cause in bad_folder.bad.items():
        assert cause in reasons[path]
    line = summary.summary_line()
    assert "6 clips" in line and "2 classes" in line and "5 unreadable" in line


def test_folds_durations_and_silence(tmp_path):
    root = synth.make_fake_esc50(tmp_path / "esc", classes=("a", "b", "c"), folds=2,
                                 duration_seconds=0.25)
    silent = sorted((root / "audio").iterdir())[0]
    synth.write(silent, np.zeros(11025, np.float32), 22050)
    summary = summarize(discover(root), workers=0)
    assert summary.fold_counts == {1: 3, 2: 3}
    assert summary.class_fold_counts == {"a": {1: 1, 2: 1}, "b": {1: 1, 2: 1},
                                         "c": {1: 1, 2: 1}}
    assert summary.silent == [silent]
    lo, _, hi = summary.duration_stats()
    assert lo == pytest.approx(0.25, abs=0.01) and hi == pytest.approx(0.5, abs=0.01)
    as_dict = summary.to_dict()
    assert as_dict["fold_counts"] == {"1": 3, "2": 3} and as_dict["n_clips"] == 6


def test_pool_and_inline_agree(tmp_path):
    for i in range(16):
        synth.write(tmp_path / "d" / ("ab"[i % 2]) / f"{i}.wav",
                    synth.tone(300 + i, 0.1 + 0.01 * i, 16000), 16000)
    m = discover(tmp_path / "d")
    done: list[int] = []
    pooled = summarize(m, workers=2, progress=done.append)
    assert pooled.to_dict() == summarize(m, workers=0).to_dict()
    assert sum(done) == 16


def test_groups_straddling_folds_are_summarized(tmp_path):
    lines = ["path,label,fold,group"]
    for i, (label, fold, group) in enumerate([("a", 1, "g1"), ("a", 2, "g1"), ("b", 1, "g2"),
                                              ("b", 2, "g3"), ("a", 1, "")]):
        synth.write(tmp_path / f"{i}.wav", synth.tone(300 + 50 * i, 0.2, 8000), 8000)
        lines.append(f"{i}.wav,{label},{fold},{group}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    summary = summarize(discover(tmp_path / "d.csv"), workers=0)
    assert summary.straddling == {"g1": [1, 2]}
    assert summary.to_dict()["straddling_groups"] == {"g1": [1, 2]}
    assert "g1 (folds 1, 2)" in (summary.straddling_line() or "")
    assert "1 group(s) straddling folds" in summary.summary_line()
    clean = summarize(discover(tmp_path / "d.csv").subset([0, 2, 3]), workers=0)
    assert clean.straddling == {} and clean.straddling_line() is None
    assert "straddling" not in clean.summary_line()


@pytest.mark.skipif(not (ESC50 / "meta" / "esc50.csv").is_file(), reason="needs ../shared ESC-50")
def test_real_esc50_straddling_sources_are_summarized():
    with open(ESC50 / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    folds: dict[str, set[int]] = {}
    for row in rows:
        folds.setdefault(row["src_file"], set()).add(int(row["fold"]))
    expected = {src: sorted(f) for src, f in folds.items() if len(f) > 1}
    assert len(expected) == 4
    manifest = read_esc50(ESC50)
    # decoding 2000 clips is slow: keep the straddling groups' clips and a few others
    keep = [i for i, c in enumerate(manifest.clips) if c.group in expected or i < 6]
    summary = summarize(manifest.subset(keep), workers=0)
    assert summary.straddling == expected
    line = summary.straddling_line()
    assert line is not None and "4 group(s)" in line
