"""``tympan predict-corpus`` and ``tympan embed``: whole corpora into Parquet shards."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer

from tympan.cli._app import app
from tympan.cli.common import err_console, fail
from tympan.cli.predict import Verify, WindowBatch

if TYPE_CHECKING:
    from tympan.corpus.run import CorpusOutcome
    from tympan.corpus.shards import ShardInfo

Model = Annotated[Path, typer.Argument(help="Model file (.safetensors) written by tympan.")]
ScoreModel = Annotated[Path, typer.Argument(
    help="Model file (.safetensors) written by tympan, or its `tympan export` (.onnx: scored "
    "on onnxruntime, no torch in the workers).")]
ScorerOpt = Annotated[str, typer.Option(
    help="What scores the windows: torch (the model file's network) or onnx (a .safetensors "
    "model is exported once into the cache, then scored on onnxruntime: the same rows within "
    "1e-5, faster on a CPU). `detect --engine` means this; here --engine picks the executor. "
    "An .onnx model always runs on onnxruntime.")]
Manifest = Annotated[Path, typer.Argument(
    help="A folder (searched recursively for audio), a CSV with a 'path' column, or a text "
    "file with one path a line (paths relative to the CSV/text file).")]
Output = Annotated[Path, typer.Option(
    "--output", "-o", help="Folder for windows/shard-*.parquet, errors/shard-*.parquet and "
    "corpus.json; a rerun skips finished shards.")]
EngineOpt = Annotated[str | None, typer.Option(
    help="'local' (a process pool) or 'ray' (Ray Data: the tympan ray extra); "
    "default: ray when installed, else local.")]
Workers = Annotated[int, typer.Option(min=1, help="Worker processes (local) or scoring actors "
                                      "(ray); each loads the model once.")]
ShardFiles = Annotated[int, typer.Option(min=1, help="Files per output shard (the unit of "
                                         "resume). A shard's rows are held until it is "
                                         "written: for long recordings use 25-100.")]
UnitWindows = Annotated[int, typer.Option(min=1, help="Windows per work unit: a longer file "
                                          "is split across workers.")]
Threads = Annotated[int, typer.Option(min=1, help="torch (or onnxruntime) threads per "
                                      "worker.")]
HopSeconds = Annotated[float | None, typer.Option(
    help="Step between windows in seconds (default: half the model's window).")]
RayAddress = Annotated[str | None, typer.Option(
    help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting a local "
    "instance.")]


def _run(kind: Literal["predict", "embed"], model: Path, manifest: Path, output: Path,
         engine: str | None, workers: int, shard_files: int, unit_windows: int,
         batch_size: int, threads: int,
         hop_seconds: float | None, ray_address: str | None, verify: bool,
         scorer: str = "torch") -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        from rich.markup import escape

        fail(escape("corpus runs write Parquet: pip install 'tympan[corpus]' (or "
                    "'tympan[ray]')"))
    from tympan.corpus.run import CorpusSettings, run_corpus

    if engine is not None and engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine {engine!r}: use 'local' or 'ray'")
    if scorer not in ("torch", "onnx"):
        raise typer.BadParameter(f"--scorer {scorer!r}: use 'torch' or 'onnx'")
    from tympan.inference.onnx_predict import is_onnx_model

    if scorer == "onnx" and not is_onnx_model(model):
        from tympan.cli.export import require_exporter

        require_exporter("--scorer onnx (it exports the model first)")
    settings = CorpusSettings(engine=cast('Literal["local", "ray"] | None', engine),
                              workers=workers,
                              shard_files=shard_files, unit_windows=unit_windows,
                              batch_size=batch_size, threads=threads, hop_seconds=hop_seconds,
                              ray_address=ray_address, verify=verify,
                              scorer=cast('Literal["torch", "onnx"]', scorer))

    def progress(shard: int, info: ShardInfo, reused: bool) -> None:
        if not reused:
            err_console.print(f"shard {shard:05d}: {info.n_files} file(s), {info.n_windows} "
                              f"window(s), {info.n_failed} skipped/failed", highlight=False)

    try:
        outcome = run_corpus(model, manifest, output, kind, settings, progress=progress)
    except ValueError as exc:  # a bad --hop-seconds
        fail(str(exc))
        return
    _summary(outcome, output)


def _summary(outcome: CorpusOutcome, output: Path) -> None:
    for reason, count in sorted(outcome.reasons.items(), key=lambda kv: -kv[1])[:10]:
        err_console.print(f"skipped: {count} × {reason}", highlight=False, markup=False,
                          soft_wrap=True)
    err_console.print(
        f"{outcome.files} file(s), {outcome.windows} window(s), {outcome.failed_files} "
        f"skipped or failed (reasons in {output / 'errors'}); shards: "
        f"{outcome.shards_written} written, {outcome.shards_skipped} already done; "
        f"{outcome.seconds:.1f} s, {outcome.files_per_second:.1f} files/s ({outcome.engine})",
        highlight=False, markup=False, soft_wrap=True)
    if outcome.windows == 0:
        fail("no file could be scored", code=1)


@app.command("predict-corpus")
def predict_corpus(model: ScoreModel, manifest: Manifest, output: Output,
                   engine: EngineOpt = None, workers: Workers = 2, shard_files: ShardFiles = 1000,
                   unit_windows: UnitWindows = 32, batch_size: WindowBatch = 8,
                   threads: Threads = 1, hop_seconds: HopSeconds = None,
                   ray_address: RayAddress = None, verify: Verify = True,
                   scorer: ScorerOpt = "torch") -> None:
    """Score every window of every file of a corpus into Parquet shards.

    One row per window: path, start_seconds, end_seconds, the top label and
    score, one column per class. Bad files are listed in errors/ and skipped;
    a rerun (e.g. after a crash) skips finished shards.
    """
    _run("predict", model, manifest, output, engine, workers, shard_files, unit_windows,
         batch_size, threads, hop_seconds, ray_address, verify, scorer)


@app.command("embed")
def embed(model: Model, manifest: Manifest, output: Output,
          engine: EngineOpt = None, workers: Workers = 2, shard_files: ShardFiles = 1000,
          unit_windows: UnitWindows = 32, batch_size: WindowBatch = 8, threads: Threads = 1,
          hop_seconds: HopSeconds = None, ray_address: RayAddress = None,
          verify: Verify = True) -> None:
    """Embed every window of every file of a corpus into Parquet shards.

    One row per window: path, start_seconds, end_seconds and ``embedding``
    (the pretrained backbone's embedding, as the frozen recipe trains on).
    Needs a model with a pretrained backbone (mn04_as).
    """
    _run("embed", model, manifest, output, engine, workers, shard_files, unit_windows,
         batch_size, threads, hop_seconds, ray_address, verify)
