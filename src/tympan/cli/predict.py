"""``tympan predict`` (label files with a saved model) and ``tympan evaluate`` (score it)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tympan.cli._app import app
from tympan.cli.common import check_device, console, err_console, fail

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tympan.data.manifest import BadFile
    from tympan.inference.predict import Prediction
    from tympan.models.modelfile import LoadedModel

#: The ``--verify/--no-verify`` option of every command that loads a model file.
Verify = Annotated[bool, typer.Option(
    "--verify/--no-verify", help="Check the model file's checksum; --no-verify loads a "
    "changed file anyway, with a warning.")]
#: Options of the commands that score windows with a saved model (predict, detect, corpus).
WindowBatch = Annotated[int, typer.Option(min=1, help="Windows per forward pass.")]
TorchDevice = Annotated[str | None, typer.Option(
    help="torch device (cpu, cuda, cuda:1); default: cuda if available.")]
NetworkThreads = Annotated[int | None, typer.Option(
    min=1, help="CPU threads for the network (torch or onnxruntime); default: the "
    "engine's own choice.")]


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (only on a terminal); yields ``advance(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _load_model(path: Path, verify: bool) -> LoadedModel:
    """``load_model``, its warnings (an unverified file) printed as one line each on stderr.

    Raises:
        ModelFileError: as :func:`tympan.modelfile.load_model`.
    """
    import warnings

    from tympan.models.modelfile import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(path, verify=verify)
    for warning in caught:
        err_console.print(f"[yellow]warning:[/] {warning.message}", highlight=False,
                          soft_wrap=True)
    return loaded


def _predictor(model: Path, verify: bool, device: str | None, batch_size: int,
               threads: int | None = None) -> Any:
    """A Detector (streamed windows) for a model file, or an OnnxPredictor (ONNX Runtime,
    no torch) for a ``.onnx`` export; both have ``classes`` and ``predict_files``."""
    from tympan.inference.onnx_predict import OnnxPredictor, is_onnx_model

    if is_onnx_model(model):
        if device not in (None, "cpu"):
            fail(f"--device {device}: an .onnx model runs on the CPU (onnxruntime)")
        return OnnxPredictor(model, threads=threads, batch_size=batch_size)
    from tympan.inference.detect import Detector

    # streamed windows of the training length; a file's answer is the mean over its windows
    return Detector(_load_model(model, verify), device=device, batch_size=batch_size,
                    threads=threads)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError, RuntimeError):  # not below cwd; a symlink loop
        return str(path)


def _report_skipped(skipped: list[BadFile]) -> None:
    if not skipped:
        return
    err_console.print(f"[yellow]skipped {len(skipped)} file(s):[/]", highlight=False)
    for bad in skipped:
        # soft_wrap: a path broken across lines cannot be copied back into a shell
        err_console.print(f"  {_display(bad.path)}: {bad.reason}", highlight=False, markup=False,
                          soft_wrap=True)


def _as_json(model: Path, classes: list[str], k: int, ok: list[Prediction],
             skipped: list[BadFile]) -> str:
    document = {
        "model": str(model), "classes": classes, "top_k": k,
        "predictions": [p.to_dict(k) for p in ok],
        "skipped": [{"path": str(b.path), "reason": b.reason} for b in skipped],
    }
    # allow_nan=False: bare NaN is not JSON; non-finite rows were skipped before this point.
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def _as_csv(ok: list[Prediction], k: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "rank", "label", "probability"])
    for prediction in ok:
        for rank, (label, probability) in enumerate(prediction.top(k), start=1):
            writer.writerow([str(prediction.path), rank, label, f"{probability:.6f}"])
    return out.getvalue()


def _table(ok: list[Prediction], k: int) -> Any:
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    table.add_column("file", overflow="fold")
    for rank in range(1, k + 1):
        table.add_column(f"#{rank}", no_wrap=True)
    for prediction in ok:
        cells = [f"{label} [dim]{probability:.2f}[/]" for label, probability in prediction.top(k)]
        table.add_row(_display(prediction.path), *cells)
    return table


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(
        help="Model file (.safetensors) written by tympan, or its `tympan export` (.onnx, run "
        "on onnxruntime); with --audioset, the first audio file instead.")],
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Audio files and/or folders (recursive).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1,
                                       help="How many labels to show per file.")] = 3,
    audioset: Annotated[bool, typer.Option(
        "--audioset", help="No model needed: tag files with the pretrained backbone's own "
        "527 AudioSet classes (mn04_as).")] = False,
    weights: Annotated[Path | None, typer.Option(
        help="With --audioset: the backbone's weight file (else $TYMPAN_WEIGHTS, the cache, "
        "or a verified download).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print (or write) JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print (or write) CSV: "
                                         "path,rank,label,probability.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the results to this file (.json or .csv; "
        "--json/--csv choose explicitly); the table still prints.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any file was skipped.")] = False,
    batch_size: WindowBatch = 8,
    device: TorchDevice = None,
    threads: NetworkThreads = None,
    verify: Verify = True,
) -> None:
    """Label audio files with a saved model: top-k labels with probabilities per file.

    Files that cannot be decoded are listed with the reason and skipped.
    """
    if as_json and as_csv:
        fail("choose one of --json and --csv")
    from tympan.inference.onnx_predict import is_onnx_model

    if not is_onnx_model(model):  # an export runs on onnxruntime: _predictor says so
        device = check_device(device)
    if audioset:
        _predict_audioset([model, *(paths or [])], top_k, as_json, weights)
        return
    if not paths:
        fail("give the audio files or folders to label after the model file")
    assert paths is not None
    file_format = "json" if as_json else "csv" if as_csv else None
    if output is not None:
        if file_format is None:
            suffix = output.suffix.lower().lstrip(".")
            if suffix not in {"json", "csv"}:
                fail(f"{output}: cannot tell the format from the name; use --json or --csv")
            file_format = suffix
        if output.exists() and not overwrite:
            fail(f"{output}: already exists; pass --overwrite to replace it")

    from tympan.fileio import atomic_write_text
    from tympan.inference.prediction import collect_audio_files

    predictor = _predictor(model, verify, device, batch_size, threads)
    classes = list(predictor.classes)
    k = min(top_k, len(classes))
    files, skipped = collect_audio_files(paths)
    with _progress(len(files), "predicting") as advance:
        results = predictor.predict_files(files, progress=advance)
    ok: list[Prediction] = [p for p in results if p.ok]
    if hasattr(predictor, "window_seconds"):
        _note_long_files(results, predictor.window_seconds)
    from tympan.data.manifest import BadFile

    skipped += [BadFile(p.path, p.error or "could not be decoded") for p in results if not p.ok]

    rendered = None
    if file_format == "json":
        rendered = _as_json(model, classes, k, ok, skipped)
    elif file_format == "csv":
        rendered = _as_csv(ok, k)
    if output is not None and rendered is not None:
        atomic_write_text(output, rendered)
        console.print(_table(ok, k))
        err_console.print(f"wrote {len(ok)} prediction(s) to {output}", highlight=False)
    elif rendered is not None:
        # Plain write: rich would wrap long lines and break the JSON/CSV.
        sys.stdout.write(rendered)
        sys.stdout.flush()
    else:
        console.print(_table(ok, k))
    _report_skipped(skipped)
    if not ok:
        fail("no file could be predicted", code=1)
    if strict and skipped:
        raise typer.Exit(1)


#: Files longer than this many windows get a note pointing to ``tympan detect``.
LONG_FILE_WINDOWS = 4


def _note_long_files(results: list[Any], window_seconds: float) -> None:
    long = [r for r in results if r.ok and r.n_windows > LONG_FILE_WINDOWS]
    if long:
        err_console.print(
            f"note: {len(long)} file(s) are much longer than the model's {window_seconds:g} s "
            f"window (e.g. {_display(long[0].path)}: {long[0].duration_seconds:.1f} s); predict "
            "averages them into one label: `tympan detect` gives timed events",
            highlight=False, soft_wrap=True)


def _predict_audioset(paths: list[Path], top_k: int, as_json: bool,
                      weights: Path | None) -> None:
    """Print each file's top AudioSet tags (a table, or JSON with ``--json``)."""
    from rich.table import Table

    from tympan.errors import AudioError
    from tympan.inference.predict import collect_audio_files
    from tympan.inference.tagging import audioset_tags

    files, skipped = collect_audio_files(paths)
    from tympan.data.manifest import BadFile

    rows: list[dict[str, object]] = []
    for path in files:
        try:
            tags = audioset_tags(path, top_k, weights=weights)
        except AudioError as exc:
            skipped.append(BadFile(path, exc.reason))
            continue
        rows.append({"path": str(path),
                     "tags": [{"label": t.label, "probability": t.probability} for t in tags]})
    if as_json:
        sys.stdout.write(json.dumps({"backbone": "mn04_as", "predictions": rows,
                                     "skipped": [{"path": str(b.path), "reason": b.reason}
                                                 for b in skipped]},
                                    indent=2, allow_nan=False) + "\n")
    else:
        table = Table("file", *(f"#{i + 1}" for i in range(top_k)), title="AudioSet tags")
        for row in rows:
            row_tags = row["tags"]
            assert isinstance(row_tags, list)
            table.add_row(Path(str(row["path"])).name,
                          *(f"{t['label']} {t['probability']:.2f}" for t in row_tags))
        console.print(table)
    _report_skipped(skipped)
    if not rows:
        fail("no file could be tagged", code=1)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model file (.safetensors) written by tympan.")],
    data: Annotated[Path, typer.Argument(help="Labelled data: ESC-50 folder, CSV "
                                         "(path,label[,fold]) or a folder per class.")],
    subset: Annotated[str | None, typer.Option(help="ESC-50 subset, e.g. esc10.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write metrics.json, per_class.csv, confusion.png, "
        "predictions.csv and report.md into this folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per forward pass.")] = 64,
    device: TorchDevice = None,
    verify: Verify = True,
) -> None:
    """Score a saved model on labelled data: accuracy, macro-F1 and a per-class table."""
    from tympan.workflows.runfolder import lock_run

    device = check_device(device)
    with contextlib.ExitStack() as stack:
        if output is not None:
            stack.enter_context(lock_run(output.parent, output.name, "evaluation folder"))
        evaluation, manifest = _evaluate(model, data, subset, output, overwrite, batch_size,
                                         device, verify)
    _print_evaluation(model, manifest, evaluation, as_json, output)


def _evaluate(model: Path, data: Path, subset: str | None, output: Path | None,
              overwrite: bool, batch_size: int, device: str | None, verify: bool,
              ) -> tuple[Any, Any]:
    """``evaluate``'s work: score ``model`` on ``data``, writing ``output`` if given."""
    from tympan.data.sources import discover
    from tympan.errors import ModelOutputError
    from tympan.inference.predict import Predictor
    from tympan.workflows.evaluation import evaluate_model
    from tympan.workflows.report import write_evaluation
    from tympan.workflows.runfolder import finalize_run_dir, prepare_run_dir

    work_dir = None
    if output is not None:
        # Claim the folder before the slow part, so a taken name fails fast.
        work_dir = prepare_run_dir(output.parent, output.name, overwrite, resumable=False)
    try:
        loaded = _load_model(model, verify)
        manifest = discover(data, subset=subset)
        predictor = Predictor(loaded, device=device, batch_size=batch_size)
        with _progress(len(manifest), "evaluating") as advance:
            try:
                evaluation = evaluate_model(predictor, manifest, progress=advance)
            except ModelOutputError as exc:
                fail(str(exc), code=1)  # the model failed, not the command line: exit 1
        if work_dir is not None:
            write_evaluation(work_dir, evaluation, model=model)
            finalize_run_dir(work_dir, overwrite=overwrite)
    except BaseException:
        if work_dir is not None and work_dir.exists():
            import shutil

            shutil.rmtree(work_dir)
        raise
    return evaluation, manifest


def _print_evaluation(model: Path, manifest: Any, evaluation: Any, as_json: bool,
                      output: Path | None) -> None:
    summary = evaluation.summary()
    if as_json:
        sys.stdout.write(json.dumps({**summary, "per_class": evaluation.per_class()}, indent=2,
                                    allow_nan=False) + "\n")
    else:
        from rich.table import Table

        console.print(f"[bold]{model.name}[/] on {manifest.name}: "
                      f"accuracy [bold]{100 * summary['accuracy']:.1f} %[/], "
                      f"macro-F1 [bold]{summary['macro_f1']:.3f}[/] "
                      f"({summary['n_clips']} clips, {summary['n_skipped']} skipped)",
                      highlight=False)
        table = Table(header_style="bold")
        for column in ("class", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for row in evaluation.per_class():
            table.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                          f"{row['f1']:.3f}", str(row["support"]))
        console.print(table)
    _report_skipped(evaluation.bad_files)
    if output is not None:
        err_console.print(f"wrote {output}/report.md", highlight=False)
