"""Offline copies: folds kept, sources untouched, resumable, a manifest that reads back."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import synth

from tympan.augment import offline
from tympan.augment.offline import load_augmented_manifest, make_copies
from tympan.augment.plan import background_pool, build_variants, parse_values, plan_copies
from tympan.data.sources import discover
from tympan.errors import DatasetError
from tympan.fileio import sha256_file

SR = 16000


def make_fold_dataset(root: Path, n_per_fold: int = 2, seconds: float = 0.5) -> Path:
    """A CSV dataset: 2 classes x 3 folds; tones and noise, WAV and OGG sources."""
    rows = []
    for fold in (1, 2, 3):
        for i in range(n_per_fold):
            tone = synth.write(root / "audio" / f"tone-{fold}-{i}.wav",
                               synth.tone(300 + 100 * fold + 10 * i, seconds, SR), SR)
            hiss = synth.write(root / "audio" / f"hiss-{fold}-{i}.ogg",
                               synth.noise_burst(seconds, SR, seed=fold * 10 + i), SR)
            rows += [(tone.name, "tone", fold, f"t{fold}{i}"), (hiss.name, "hiss", fold, "")]
    with open(root / "meta.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold", "group"])
        writer.writerows([(f"audio/{p}", label, fold, group) for p, label, fold, group in rows])
    return root / "meta.csv"


def source_hashes(root: Path) -> dict[Path, str]:
    return {p: sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_copies_keep_fold_group_label_and_never_touch_the_source(tmp_path: Path) -> None:
    data = make_fold_dataset(tmp_path / "data")
    before = source_hashes(tmp_path / "data")
    manifest = discover(data)
    variants = build_variants([0.81, 1.23], [-2], ["DRC", "BG"])
    report = make_copies(manifest, tmp_path / "out", variants, workers=2,
                         background_classes=["hiss"])
    assert report.written == len(manifest) * len(variants) and not report.failed
    assert source_hashes(tmp_path / "data") == before

    copies = load_augmented_manifest(tmp_path / "out")
    assert len(copies) == report.written
    by_path = {c.path.resolve(): c for c in manifest.clips}
    groups = dict(zip(manifest.paths, manifest.groups, strict=True))
    for copy in copies:
        assert copy.path.is_file()
        assert not copy.path.resolve().is_relative_to((tmp_path / "data").resolve())
        source = by_path[copy.source]
        assert (copy.label, copy.fold) == (source.label, source.fold)
        assert copy.group == groups[source.path]
        assert copy.transform is not None
        if copy.transform.startswith("BG:"):
            # A background comes from the source's own fold, never another.
            background = copy.transform[3:].split("@")[0]
            assert background.startswith("hiss-") and int(background.split("-")[1]) == copy.fold
    tags = {c.transform.split("@")[0] if c.transform.startswith("BG") else c.transform
            for c in copies if c.transform}
    assert {"TS:0.81", "TS:1.23", "PS1:-2", "DRC:radio", "DRC:speech"} <= tags
    # WAV sources give WAV copies, others FLAC; stretched copies have the new length.
    stretched = next(c for c in copies if c.transform == "TS:1.23")
    info = sf.info(str(stretched.path))
    assert stretched.path.suffix == stretched.source.suffix.replace(".ogg", ".flac")
    assert info.frames == pytest.approx(0.5 * SR / 1.23, rel=0.01)


def test_output_inside_the_dataset_is_refused(tmp_path: Path) -> None:
    data = make_fold_dataset(tmp_path / "data", n_per_fold=1)
    manifest = discover(data)
    with pytest.raises(DatasetError, match="overlaps the dataset"):
        make_copies(manifest, tmp_path / "data" / "aug", build_variants([1.07]))
    with pytest.raises(DatasetError, match="overlaps the dataset"):
        make_copies(manifest, tmp_path, build_variants([1.07]))


def test_bg_needs_backgrounds_and_other_settings_are_refused(tmp_path: Path) -> None:
    manifest = discover(make_fold_dataset(tmp_path / "data", n_per_fold=1))
    with pytest.raises(DatasetError, match="needs backgrounds"):
        plan_copies(manifest, tmp_path / "out", build_variants(presets=["BG"]))
    make_copies(manifest, tmp_path / "out", build_variants([1.07]), workers=1)
    with pytest.raises(DatasetError, match="other settings"):
        make_copies(manifest, tmp_path / "out", build_variants([0.93]), workers=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty"):
        make_copies(manifest, tmp_path / "mine", build_variants([1.07]), workers=1)


def test_resumes_after_an_error_mid_run_without_redoing_finished_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = discover(make_fold_dataset(tmp_path / "data"))
    variants = build_variants([0.93, 1.07], [1])
    total = len(manifest) * len(variants)
    real_write = offline._write_audio
    calls = {"n": 0}

    def failing_write(path: Path, samples: np.ndarray, sample_rate: int) -> None:
        calls["n"] += 1
        if calls["n"] == 7:
            # Die halfway through writing: the bytes go to the temporary file only.
            with offline.atomic_path(path) as tmp:
                tmp.write_bytes(b"RIFF half a file")
                raise KeyboardInterrupt
        real_write(path, samples, sample_rate)

    monkeypatch.setattr(offline, "_write_audio", failing_write)
    with pytest.raises(KeyboardInterrupt):
        make_copies(manifest, tmp_path / "out", variants, workers=1)
    finished = {p: (p.stat().st_mtime_ns, sha256_file(p))
                for p in (tmp_path / "out").rglob("*.*") if p.suffix in (".wav", ".flac")}
    assert len(finished) == 6
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    assert not (tmp_path / "out" / "manifest.csv").exists()

    monkeypatch.setattr(offline, "_write_audio", real_write)
    report = make_copies(manifest, tmp_path / "out", variants, workers=1)
    assert (report.skipped, report.written) == (6, total - 6)
    for path, (mtime, digest) in finished.items():
        assert path.stat().st_mtime_ns == mtime and sha256_file(path) == digest
    assert len(load_augmented_manifest(tmp_path / "out")) == total


def test_a_killed_run_leaves_only_whole_files_and_resumes(tmp_path: Path) -> None:
    data = make_fold_dataset(tmp_path / "data", n_per_fold=3, seconds=1.5)
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from tympan.cli import main; main()", "augment",
               str(data), "-o", str(out), "--stretch", "0.81,0.93,1.07,1.23",
               "--pitch", "-2,2", "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if len([p for p in out.rglob("*.*") if p.suffix in (".wav", ".flac")]) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = [p for p in out.rglob("*.*") if p.suffix in (".wav", ".flac")]
    assert 3 <= len(finished) < 18 * 6
    for path in finished:  # every file under a final name decodes whole
        assert sf.info(str(path)).frames > 0
        sf.read(str(path))
    stamps = {p: p.stat().st_mtime_ns for p in finished}

    manifest = discover(data)
    report = make_copies(manifest, out, build_variants([0.81, 0.93, 1.07, 1.23], [-2, 2]),
                         workers=2)
    assert report.skipped == len(finished)
    assert report.written + report.skipped == len(manifest) * 6
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert not list(out.rglob(".*.tmp"))


def test_bad_source_is_reported_and_skipped(tmp_path: Path) -> None:
    data = make_fold_dataset(tmp_path / "data", n_per_fold=1)
    manifest = discover(data)
    broken = manifest.clips[0].path
    broken.write_bytes(b"RIFF" + b"\0" * 10)  # header probe passed earlier; decode now fails
    report = make_copies(manifest, tmp_path / "out", build_variants([1.07]), workers=1)
    assert [b.path for b in report.failed] == [broken]
    assert report.written == len(manifest) - 1
    assert broken not in {c.source for c in load_augmented_manifest(tmp_path / "out")}


def test_parse_and_build_variants_validate() -> None:
    assert parse_values("0.81, 1.07", "--stretch") == [0.81, 1.07]
    with pytest.raises(ValueError, match="--pitch"):
        parse_values("-2,x", "--pitch")
    with pytest.raises(ValueError, match=r"\[0.1, 10\]"):
        build_variants([20.0])
    # PS1 and --pitch -2 name the same copy once.
    assert len(build_variants(pitch=[-2], presets=["PS1"])) == 4


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no manifest.csv"):
        load_augmented_manifest(tmp_path)


def test_bg_classes_draw_from_the_same_fold_only(tmp_path: Path) -> None:
    manifest = discover(make_fold_dataset(tmp_path / "data", n_per_fold=2))
    assert {f: len(p) for f, p in background_pool(manifest, ["hiss"]).items()} == {1: 2, 2: 2,
                                                                                    3: 2}
    plan = plan_copies(manifest, tmp_path / "out", build_variants(presets=["BG"]),
                       background_classes=["hiss"])
    fold_of = {c.path: c.fold for c in manifest.clips}
    assert plan and all(c.backgrounds for c in plan)
    for copy in plan:
        assert copy.backgrounds is not None and copy.clip.path not in copy.backgrounds
        assert {fold_of[b] for b in copy.backgrounds} == {copy.clip.fold}


def test_bg_classes_without_folds_are_refused(tmp_path: Path) -> None:
    data = make_fold_dataset(tmp_path / "data", n_per_fold=2)
    no_folds = tmp_path / "data" / "nofolds.csv"
    with open(data, newline="") as src, open(no_folds, "w", newline="") as dst:
        writer = csv.writer(dst)
        for row in csv.reader(src):
            writer.writerow([row[0], row[1], row[3]])
    manifest = discover(no_folds)
    assert not manifest.has_folds
    with pytest.raises(DatasetError, match="no predefined folds") as caught:
        make_copies(manifest, tmp_path / "out", build_variants(presets=["BG"]), workers=1,
                    background_classes=["hiss"])
    assert "--background FOLDER" in str(caught.value) and "fold column" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_background_files_from_the_dataset_are_refused(tmp_path: Path) -> None:
    manifest = discover(make_fold_dataset(tmp_path / "data", n_per_fold=1))
    bg = build_variants(presets=["BG"])
    # the dataset's own audio folder (same files, by resolved path)
    with pytest.raises(DatasetError, match=r"--background: .*hiss-1-0\.ogg is a clip of the "
                                           r"dataset; backgrounds must be"):
        plan_copies(manifest, tmp_path / "out", bg, background=tmp_path / "data" / "audio")
    # a copy of one clip under another name (same content)
    other = tmp_path / "backgrounds"
    synth.write(other / "street.wav", synth.noise_burst(0.5, SR, seed=99), SR)
    (other / "renamed.wav").write_bytes((tmp_path / "data" / "audio" / "tone-2-0.wav")
                                        .read_bytes())
    with pytest.raises(DatasetError, match=r"renamed\.wav has the same content as the "
                                           r"dataset's clip .*tone-2-0\.wav"):
        plan_copies(manifest, tmp_path / "out", bg, background=other)
    # equal size, other content: a genuine background
    (other / "renamed.wav").unlink()
    synth.write(other / "hum.wav", synth.tone(60, 0.5, SR), SR)
    assert (other / "hum.wav").stat().st_size == (tmp_path / "data" / "audio" / "tone-2-0.wav"
                                                  ).stat().st_size
    plan = plan_copies(manifest, tmp_path / "out", bg, background=other)
    assert len(plan) == len(manifest) * len(bg)
    assert {b.name for c in plan for b in c.backgrounds or ()} == {"hum.wav", "street.wav"}
