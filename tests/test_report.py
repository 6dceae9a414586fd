"""The run folder: every artefact written, existing runs refused, nothing half-written."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.workflows.evaluation import Evaluation
from tympan.workflows.report import most_confused, plot_confusion, write_evaluation, write_run
from tympan.workflows.results import CVResult, EpochLog, FoldResult
from tympan.workflows.runfolder import RunFolderError, finalize_run_dir, prepare_run_dir

CLASSES = ["chirp", "click", "noise", "tone"]


def _cv(n_folds: int = 3, epochs: int = 4, seed: int = 0) -> CVResult:
    rng = np.random.default_rng(seed)
    folds = []
    for k in range(n_folds):
        y = np.repeat(np.arange(len(CLASSES)), 3)
        probs = rng.dirichlet(np.ones(len(CLASSES)), size=len(y))
        probs[np.arange(len(y)), y] += 0.8 * (rng.random(len(y)) > 0.2)  # mostly right
        probs /= probs.sum(axis=1, keepdims=True)
        history = [EpochLog(e, 1.0 / (e + 1), 0.5 + 0.1 * e, 1.2 / (e + 1), 0.4 + 0.1 * e)
                   for e in range(epochs)]
        folds.append(FoldResult(str(k + 1), np.arange(len(y)) + k * len(y), y, probs,
                                history=history, best_epoch=epochs - 1, seconds=3.0))
    return CVResult(CLASSES, folds, seconds=9.0)


def _manifest(tmp_path: Path) -> Manifest:
    clips = [Clip(tmp_path / c / f"{i}.wav", c, fold=i % 3 + 1) for c in CLASSES for i in range(9)]
    bad = [BadFile(tmp_path / "tone" / "empty.wav", "empty file (0 bytes)"),
           BadFile(tmp_path / "noise" / "notes|v2.wav", "not an audio file")]
    return Manifest(clips, name="synthetic", root=tmp_path, bad_files=bad)


def _links(markdown: str) -> set[str]:
    return set(re.findall(r"\]\(([^)]+)\)", markdown))


# -- the folder -------------------------------------------------------------------------------


def test_prepare_creates_a_hidden_work_folder_and_finalize_renames_it(tmp_path: Path) -> None:
    work = prepare_run_dir(tmp_path / "runs", "exp")
    assert work == tmp_path / "runs" / ".exp.partial" and work.is_dir()
    assert not (tmp_path / "runs" / "exp").exists()  # nothing under the real name yet
    (work / "a.txt").write_text("done")
    final = finalize_run_dir(work)
    assert final == tmp_path / "runs" / "exp"
    assert (final / "a.txt").read_text() == "done"
    assert not work.exists()


def test_existing_run_is_refused_without_overwrite(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    finalize_run_dir(prepare_run_dir(runs, "exp"))
    (runs / "exp" / "model.safetensors").write_text("precious")
    with pytest.raises(RunFolderError, match="already exists.*--overwrite"):
        prepare_run_dir(runs, "exp")
    assert (runs / "exp" / "model.safetensors").read_text() == "precious"


def test_overwrite_keeps_the_old_run_until_the_new_one_is_complete(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = finalize_run_dir(prepare_run_dir(runs, "exp"))
    (old / "old.txt").write_text("old")
    work = prepare_run_dir(runs, "exp", overwrite=True)
    assert (old / "old.txt").exists()  # a crash here would leave the old run intact
    (work / "new.txt").write_text("new")
    with pytest.raises(RunFolderError, match="already exists"):
        finalize_run_dir(work)
    final = finalize_run_dir(work, overwrite=True)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in runs.iterdir()) == ["exp"]


def test_an_unfinished_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    work = prepare_run_dir(runs, "exp")
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "last.ckpt").write_text("epoch 3")
    with pytest.raises(RunFolderError, match="unfinished.*--resume"):
        prepare_run_dir(runs, "exp")
    resumed = prepare_run_dir(runs, "exp", resume=True)
    assert resumed == work
    assert (resumed / "checkpoints" / "last.ckpt").read_text() == "epoch 3"
    fresh = prepare_run_dir(runs, "exp", overwrite=True)
    assert list(fresh.iterdir()) == []


def test_resume_without_an_unfinished_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="no unfinished run"):
        prepare_run_dir(tmp_path, "exp", resume=True)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", ".hidden"])
def test_invalid_run_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RunFolderError, match="invalid run name"):
        prepare_run_dir(tmp_path, name)


# -- the artefacts ----------------------------------------------------------------------------


def test_write_run_writes_every_artefact(tmp_path: Path) -> None:
    cv, manifest = _cv(), _manifest(tmp_path / "data")
    work = prepare_run_dir(tmp_path / "runs", "exp")
    model = work / "model.safetensors"
    model.write_bytes(b"weights")
    written = write_run(work, cv, config={"model": "cnn-s", "epochs": 4, "data": Path("/d")},
                        manifest=manifest, model_path=model, extra={"device": "cpu"})
    run = finalize_run_dir(work)
    names = {"config.json", "metrics.json", "per_class.csv", "confusion.png", "curves.png",
             "skipped.txt", "skipped.csv", "manifest.csv", "report.md", "model.safetensors"}
    assert {p.name for p in run.iterdir()} == names  # and no temp files
    assert {p.name for p in written.values()} == names - {"model.safetensors"}

    assert json.loads((run / "config.json").read_text())["data"] == "/d"
    metrics = json.loads((run / "metrics.json").read_text())
    summary = cv.summary()
    assert metrics["accuracy_mean"] == pytest.approx(summary["accuracy_mean"])
    assert [f["accuracy"] for f in metrics["folds"]] == pytest.approx(cv.fold_accuracies())
    assert metrics["classes"] == CLASSES
    assert np.array_equal(metrics["confusion"], cv.confusion())
    assert metrics["dataset"]["n_skipped"] == 2
    assert metrics["dataset"]["fingerprint"] == manifest.fingerprint()
    assert metrics["model"] == "model.safetensors"
    assert metrics["extra"] == {"device": "cpu"}

    with open(run / "per_class.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows] == CLASSES
    assert [int(r["support"]) for r in rows] == [9] * 4
    assert float(rows[0]["f1"]) == pytest.approx(cv.per_class()[0]["f1"], abs=1e-4)

    with open(run / "skipped.csv") as handle:
        skipped = list(csv.DictReader(handle))
    assert [(Path(r["path"]).name, r["reason"]) for r in skipped] == [
        ("empty.wav", "empty file (0 bytes)"), ("notes|v2.wav", "not an audio file")]
    assert "empty.wav: empty file (0 bytes)" in (run / "skipped.txt").read_text()

    for png in ("confusion.png", "curves.png"):
        image = imread(run / png)
        assert image.ndim == 3 and min(image.shape[:2]) > 200


def test_report_links_every_artefact_and_shows_the_results(tmp_path: Path) -> None:
    cv = _cv()
    write_run(tmp_path, cv, config={"model": "cnn-s", "train": {"lr": 0.001}},
              manifest=_manifest(tmp_path / "d"), model_path=tmp_path / "model.safetensors")
    report = (tmp_path / "report.md").read_text()
    linked = _links(report)
    for name in ("config.json", "metrics.json", "per_class.csv", "confusion.png", "curves.png",
                 "skipped.csv", "skipped.txt", "manifest.csv", "model.safetensors"):
        assert name in linked, name
    summary = cv.summary()
    mean = f"{100 * summary['accuracy_mean']:.1f} % ± {100 * summary['accuracy_std']:.1f} %"
    assert mean in report
    for fold in summary["folds"]:
        assert f"| {fold['fold']} | {fold['n_clips']} | {100 * fold['accuracy']:.1f} %" in report
    for name in CLASSES:
        assert f"| {name} |" in report
    assert "notes\\|v2.wav" in report  # a | in a file name does not break the table
    assert "| train.lr | 0.001 |" in report  # nested settings are listed with dotted keys


def test_write_run_without_cv_still_records_data_and_config(tmp_path: Path) -> None:
    written = write_run(tmp_path, None, config={"final": True},
                        manifest=_manifest(tmp_path / "d"))
    assert {p.name for p in tmp_path.iterdir() if p.is_file()} == {
        "config.json", "metrics.json", "skipped.txt", "skipped.csv", "manifest.csv",
        "report.md"}
    assert "confusion" not in written
    report = (tmp_path / "report.md").read_text()
    assert "No cross-validation" in report
    assert "confusion.png" not in _links(report)


def test_folds_without_history_get_no_curves(tmp_path: Path) -> None:
    cv = _cv(epochs=0)
    write_run(tmp_path, cv, config={}, manifest=_manifest(tmp_path / "d"))
    assert not (tmp_path / "curves.png").exists()
    assert "curves.png" not in _links((tmp_path / "report.md").read_text())


def test_confusion_plot_stays_legible_with_50_classes(tmp_path: Path) -> None:
    names = [f"class_name_{i:02d}" for i in range(50)]
    matrix = np.eye(50) * 0.7 + 0.3 / 50
    small = plot_confusion(np.eye(4), names[:4], tmp_path / "small.png")
    large = plot_confusion(matrix, names, tmp_path / "large.png")
    # the figure grows with the class count: cells stay > ~25 px wide
    assert imread(large).shape[1] > 50 * 25
    assert imread(large).shape[1] > 2 * imread(small).shape[1]


def test_most_confused_lists_the_largest_off_diagonal_cells() -> None:
    matrix = np.array([[5, 3, 0], [1, 6, 0], [0, 2, 4]])
    assert most_confused(matrix, ["a", "b", "c"], top=2) == [
        ("a", "b", 3, 3 / 8), ("c", "b", 2, 2 / 6)]


def test_write_evaluation_writes_scores(tmp_path: Path) -> None:
    evaluation = Evaluation(["a", "b", "c"], [Path("x.wav"), Path("y.wav"), Path("z.wav")],
                            np.array([0, 1, 1]), np.eye(3)[[0, 1, 2]],
                            bad_files=[BadFile(Path("bad.wav"), "empty file (0 bytes)")],
                            dataset="mini")
    written = write_evaluation(tmp_path, evaluation, model="m.safetensors")
    assert {p.name for p in written.values()} == {
        "metrics.json", "per_class.csv", "confusion.png", "predictions.csv", "skipped.txt",
        "skipped.csv", "report.md"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    with open(tmp_path / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["true"], r["predicted"]) for r in rows] == [("a", "a"), ("b", "b"), ("b", "c")]
    assert "bad.wav" in (tmp_path / "report.md").read_text()
