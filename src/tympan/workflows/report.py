"""What a run folder holds: config, metrics, per-class table, plots and a Markdown report.

The folder itself (temporary name, rename when complete) is
:mod:`tympan.workflows.runfolder`'s. Every file goes through
:mod:`tympan.fileio` (temp name + rename).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tympan.data.manifest import BadFile, Manifest
from tympan.data.splits import describe_straddling, straddling_groups
from tympan.fileio import atomic_path, atomic_write_text
from tympan.workflows.results import CVResult, FoldResult
from tympan.workflows.runfolder import PARTIAL_SUFFIX, final_dir_for

if TYPE_CHECKING:
    from tympan.workflows.evaluation import Evaluation

# -- small writers ----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (Paths and numpy values converted), atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default)
                      + "\n")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV with ``header`` and ``rows`` atomically."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())
    return path


def write_per_class_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``class,precision,recall,f1,support`` rows (from ``CVResult.per_class()``)."""
    return write_csv(path, ["class", "precision", "recall", "f1", "support"],
                     [[r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}",
                       f"{r['f1']:.4f}", r["support"]] for r in rows])


def write_skipped(run_dir: Path, bad_files: Sequence[BadFile]) -> tuple[Path, Path]:
    """``skipped.txt`` (``path: reason`` lines) and ``skipped.csv`` (``path,reason``)."""
    text = "".join(f"{bad.path}: {bad.reason}\n" for bad in bad_files)
    txt = run_dir / "skipped.txt"
    atomic_write_text(txt, text)
    return txt, write_csv(run_dir / "skipped.csv", ["path", "reason"],
                          [[str(bad.path), bad.reason] for bad in bad_files])


# -- plots ------------------------------------------------------------------------------------


def _save_figure(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=figure.dpi, bbox_inches="tight")
    return path


def plot_confusion(
    matrix: np.ndarray,
    classes: Sequence[str],
    path: Path,
    *,
    title: str = "Confusion matrix (rows normalised)",
    col_classes: Sequence[str] | None = None,
) -> Path:
    """Save a row-normalised confusion matrix ``(n_true, n_pred)`` as a labelled PNG.

    The figure grows with the class count and cells show percentages, so 50
    classes stay legible; rows are the true class, columns the prediction.
    """
    from matplotlib.figure import Figure

    cols = list(col_classes) if col_classes is not None else list(classes)
    n_rows, n_cols = matrix.shape
    cell_inches = 0.3 if max(n_rows, n_cols) > 12 else 0.6
    longest = max((len(c) for c in [*classes, *cols]), default=4)
    label_inches = 0.8 + 0.065 * longest
    width = max(4.5, cell_inches * n_cols + label_inches + 1.2)
    height = max(3.5, cell_inches * n_rows + label_inches + 0.6)
    figure = Figure(figsize=(width, height), dpi=110)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest",
                      aspect="equal")
    tick_size = 9 if max(n_rows, n_cols) <= 20 else 7
    ax.set_xticks(np.arange(n_cols), labels=cols, rotation=90, fontsize=tick_size)
    ax.set_yticks(np.arange(n_rows), labels=list(classes), fontsize=tick_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    text_size = 9 if max(n_rows, n_cols) <= 12 else 5.5
    for i in range(n_rows):
        for j in range(n_cols):
            percent = int(round(100 * float(matrix[i, j])))
            if percent == 0:
                continue
            ax.text(j, i, str(percent), ha="center", va="center", fontsize=text_size,
                    color="white" if matrix[i, j] > 0.5 else "black")
    colorbar = figure.colorbar(image, ax=ax, fraction=0.035, pad=0.02)
    colorbar.set_label("share of the true class")
    return _save_figure(figure, path)


def plot_curves(folds: Sequence[FoldResult], path: Path) -> Path:
    """Save training/validation loss and accuracy per epoch, one colour per fold, as PNG.

    Training is dashed, validation solid; a dot marks each fold's best epoch.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=110)
    loss_ax, acc_ax = figure.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(folds))]
    for fold, colour in zip(folds, colours, strict=True):
        epochs = [log.epoch for log in fold.history]
        if not epochs:
            continue
        for ax, train_key, val_key in ((loss_ax, "train_loss", "val_loss"),
                                       (acc_ax, "train_accuracy", "val_accuracy")):
            ax.plot(epochs, [getattr(log, train_key) for log in fold.history], "--",
                    color=colour, alpha=0.7, linewidth=1.2)
            val_points = [(log.epoch, getattr(log, val_key)) for log in fold.history
                          if getattr(log, val_key) is not None]
            if val_points:
                xs, ys = zip(*val_points, strict=True)
                ax.plot(xs, ys, "-", color=colour, linewidth=1.6, label=f"fold {fold.fold}")
                if fold.best_epoch is not None and fold.best_epoch in xs:
                    best = xs.index(fold.best_epoch)
                    ax.plot([xs[best]], [ys[best]], "o", color=colour, markersize=5)
    loss_ax.set_title("loss (cross-entropy)")
    acc_ax.set_title("accuracy")
    acc_ax.set_ylim(0.0, 1.02)
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = acc_ax.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="grey", linestyle="--"),
                Line2D([], [], color="grey", linestyle="-")]
    labels += ["train (dashed)", "validation (solid)"]
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  frameon=False, fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)


# -- the report -------------------------------------------------------------------------------


def _md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def most_confused(
    matrix: np.ndarray, classes: Sequence[str], top: int = 10
) -> list[tuple[str, str, int, float]]:
    """The largest off-diagonal counts ``(true, predicted, count, share of true)``."""
    totals = matrix.sum(axis=1)
    pairs = [(int(matrix[i, j]), i, j) for i in range(matrix.shape[0])
             for j in range(matrix.shape[1]) if i != j and matrix[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [(classes[i], classes[j], count, count / totals[i] if totals[i] else 0.0)
            for count, i, j in pairs[:top]]


def _dataset_info(manifest: Manifest) -> dict[str, Any]:
    return {"name": manifest.name, "root": str(manifest.root) if manifest.root else None,
            "n_clips": len(manifest), "n_skipped": len(manifest.bad_files),
            "n_classes": len(manifest.classes), "classes": manifest.classes,
            "class_counts": dict(sorted(manifest.class_counts().items())),
            "fingerprint": manifest.fingerprint()}


def _skipped_section(bad_files: Sequence[BadFile], limit: int = 50) -> list[str]:
    lines = [f"## Skipped files ({len(bad_files)})", ""]
    if not bad_files:
        return lines + ["None: every file decoded.", ""]
    lines += _table(["file", "reason"], [[bad.path, bad.reason] for bad in bad_files[:limit]])
    if len(bad_files) > limit:
        lines += ["", f"… and {len(bad_files) - limit} more in [skipped.csv](skipped.csv)."]
    return lines + [""]


def _per_class_section(rows: Sequence[dict[str, Any]], note: str) -> list[str]:
    lines = ["## Per class", "", f"{note} ([per_class.csv](per_class.csv)).", ""]
    lines += _table(["class", "precision", "recall", "F1", "support"],
                    [[r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                      f"{r['f1']:.3f}", r["support"]] for r in rows])
    return lines + [""]


def _confused_section(matrix: np.ndarray, classes: Sequence[str]) -> list[str]:
    pairs = most_confused(matrix, classes)
    if not pairs:
        return []
    lines = ["## Most confused pairs", ""]
    lines += _table(["true class", "predicted as", "clips", "share of true class"],
                    [[t, p, c, _pct(s)] for t, p, c, s in pairs])
    return lines + [""]


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar settings with dotted keys (``train.lr``); lists shown inline."""
    rows: list[tuple[str, Any]] = []
    for key, value in sorted(config.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            rows.append((name, ", ".join(str(v) for v in value)))
        else:
            rows.append((name, value))
    return rows


def _config_section(config: dict[str, Any]) -> list[str]:
    lines = ["## Configuration", "", "Full configuration: [config.json](config.json).", ""]
    rows = _flatten(config)
    if rows:
        lines += ["<details><summary>All settings</summary>", ""]
        lines += _table(["setting", "value"], [[k, "" if v is None else v] for k, v in rows])
        lines += ["", "</details>", ""]
    return lines


def write_run(
    run_dir: str | Path,
    cv: CVResult | None,
    *,
    config: dict[str, Any],
    manifest: Manifest,
    model_path: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write every artefact of a run into ``run_dir``; return them by name.

    Always: ``config.json``, ``metrics.json`` (``cv.summary()`` plus classes,
    per-class rows, the confusion counts, dataset provenance and ``extra``),
    ``manifest.csv``, ``skipped.txt``/``skipped.csv`` and ``report.md``. With a
    CV result also ``per_class.csv`` and ``confusion.png``, and ``curves.png``
    when the folds carry per-epoch history. ``model_path`` is linked from the
    report (relative when it lies inside ``run_dir``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    name = final_dir_for(run_dir).name if run_dir.name.endswith(PARTIAL_SUFFIX) else run_dir.name
    written["config"] = write_json(run_dir / "config.json", config)
    written["manifest"] = run_dir / "manifest.csv"
    manifest.save_csv(written["manifest"])
    written["skipped_txt"], written["skipped_csv"] = write_skipped(run_dir, manifest.bad_files)

    dataset = _dataset_info(manifest)
    metrics: dict[str, Any] = {}
    if cv is not None:
        counts = cv.confusion()
        metrics.update(cv.summary())
        metrics.update(classes=cv.classes, per_class=cv.per_class(),
                       confusion=counts.tolist())
        written["per_class"] = write_per_class_csv(run_dir / "per_class.csv", cv.per_class())
        written["confusion"] = plot_confusion(cv.confusion(normalize=True), cv.classes,
                                              run_dir / "confusion.png")
        if any(fold.history for fold in cv.folds):
            written["curves"] = plot_curves(cv.folds, run_dir / "curves.png")
    metrics["dataset"] = dataset
    model_link = None
    if model_path is not None:
        model_path = Path(model_path)
        try:
            model_link = str(model_path.relative_to(run_dir))
        except ValueError:
            model_link = str(model_path)
        metrics["model"] = model_link
    if extra:
        metrics["extra"] = extra
    if straddling_groups(manifest):
        metrics["leakage"] = straddling_groups(manifest)
    written["metrics"] = write_json(run_dir / "metrics.json", metrics)

    lines = [f"# Run `{name}`", "",
             f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
             f"**Data**: {dataset['name']}" + (f" (`{dataset['root']}`)" if dataset["root"] else "")
             + f": {dataset['n_clips']} clips, {dataset['n_classes']} classes, "
             f"{dataset['n_skipped']} skipped ([skipped.csv](skipped.csv)); "
             f"manifest sha256 `{dataset['fingerprint'][:16]}…` ([manifest.csv](manifest.csv)).",
             ""]
    straddle = describe_straddling(manifest)
    if straddle:
        lines += [f"**Leakage warning**: {straddle}. Held-out scores of those clips may be "
                  "optimistic; `--strict` refuses such data.", ""]
    if model_link is not None:
        lines += [f"**Model**: [{Path(model_link).name}]({model_link})", ""]
    if cv is not None:
        summary = cv.summary()
        lines += ["## Cross-validation", "",
                  f"Clip accuracy **{_pct(summary['accuracy_mean'])} ± "
                  f"{_pct(summary['accuracy_std'])}**, macro-F1 "
                  f"**{summary['macro_f1_mean']:.3f} ± {summary['macro_f1_std']:.3f}** "
                  f"over {len(cv.folds)} folds (mean ± std across folds; "
                  "[metrics.json](metrics.json)).", ""]
        rows = [[f["fold"], f["n_clips"], _pct(f["accuracy"]), f"{f['macro_f1']:.3f}",
                 "" if f["best_epoch"] is None else f["best_epoch"], f"{f['seconds']:.0f} s"]
                for f in summary["folds"]]
        rows.append(["**mean ± std**", summary["n_clips"],
                     f"{_pct(summary['accuracy_mean'])} ± {_pct(summary['accuracy_std'])}",
                     f"{summary['macro_f1_mean']:.3f} ± {summary['macro_f1_std']:.3f}", "",
                     f"{summary['seconds']:.0f} s"])
        lines += _table(["fold", "clips", "accuracy", "macro-F1", "best epoch", "time"], rows)
        lines += ["", "![Confusion matrix](confusion.png)", ""]
        if "curves" in written:
            lines += ["![Learning curves](curves.png)", ""]
        lines += _per_class_section(cv.per_class(),
                                    "Pooled over the held-out clips of every fold")
        lines += _confused_section(cv.confusion(), cv.classes)
    else:
        lines += ["No cross-validation was run: no held-out metrics.", ""]
    if extra:
        lines += ["## Notes", ""]
        lines += _table(["key", "value"], [[k, v] for k, v in sorted(extra.items())]) + [""]
    lines += _config_section(config)
    lines += _skipped_section(manifest.bad_files)
    listed = sorted(p.name for p in written.values())
    if model_link is not None:
        listed.append(model_link)
    lines += ["## Files", ""] + [f"- [{n}]({n})" for n in [*listed, "report.md"]] + [""]
    written["report"] = run_dir / "report.md"
    atomic_write_text(written["report"], "\n".join(lines))
    return written


def write_evaluation(
    out_dir: str | Path, evaluation: Evaluation, *, model: str | Path
) -> dict[str, Path]:
    """Write a saved model's scores on labelled data into ``out_dir``; return them by name.

    ``metrics.json``, ``per_class.csv``, ``confusion.png``, ``predictions.csv``
    (path, true, predicted, probability of the prediction), ``skipped.txt``/
    ``skipped.csv`` and ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    per_class = evaluation.per_class()
    names = evaluation.label_names
    summary = evaluation.summary()
    written["metrics"] = write_json(out_dir / "metrics.json", {
        **summary, "model": str(model), "classes": names, "per_class": per_class,
        "confusion": evaluation.confusion().tolist()})
    written["per_class"] = write_per_class_csv(out_dir / "per_class.csv", per_class)
    written["confusion"] = plot_confusion(evaluation.confusion(normalize=True), names,
                                          out_dir / "confusion.png")
    y_pred = evaluation.y_pred
    written["predictions"] = write_csv(
        out_dir / "predictions.csv", ["path", "true", "predicted", "probability"],
        [[str(p), evaluation.classes[t], evaluation.classes[q],
          f"{evaluation.probabilities[i, q]:.4f}"]
         for i, (p, t, q) in enumerate(zip(evaluation.paths, evaluation.y_true, y_pred,
                                           strict=True))])
    written["skipped_txt"], written["skipped_csv"] = write_skipped(out_dir, evaluation.bad_files)
    lines = [f"# Evaluation of `{Path(model).name}` on {evaluation.dataset}", "",
             f"Clip accuracy **{_pct(summary['accuracy'])}**, macro-F1 "
             f"**{summary['macro_f1']:.3f}** on {summary['n_clips']} clips "
             f"({summary['n_skipped']} skipped; [metrics.json](metrics.json), "
             "[predictions.csv](predictions.csv)).", "",
             "![Confusion matrix](confusion.png)", ""]
    lines += _per_class_section(per_class, "Classes present in the data or the predictions")
    lines += _confused_section(evaluation.confusion(), names)
    lines += _skipped_section(evaluation.bad_files)
    written["report"] = out_dir / "report.md"
    atomic_write_text(written["report"], "\n".join(lines))
    return written


__all__ = [
    "most_confused",
    "plot_confusion",
    "plot_curves",
    "write_csv",
    "write_evaluation",
    "write_json",
    "write_per_class_csv",
    "write_run",
    "write_skipped",
]
