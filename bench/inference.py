"""End-to-end inference speed (decode → probabilities) of tympan's engines against YAMNet.

    python bench/inference.py runs/esc50-f1/model.safetensors   # trained without fold 1

Every engine decodes the same way (:func:`tympan.audio.load_audio`: soundfile +
soxr, to the engine's rate) and scores one clip at a time, in its own process
(one subprocess per engine and thread count: onnxruntime's spinning threads
would starve a neighbour). Engines: PyTorch eager (:class:`Predictor` on the
model file as saved), ONNX Runtime on exports of it (``VARIANTS``: exact, and
speed tricks), and YAMNet TFLite (the peer: 15,600-sample 16 kHz windows at a
0.48 s hop, 9 calls per 5 s clip, scores averaged). Speed is clips/s over
``--clips`` ESC-50 clips of ``--fold`` after 3 warm-up clips, best of
``--repeats`` rounds, at each ``--threads``; each tympan variant's accuracy is
scored on every clip of ``--fold``, so ``MODEL`` must be trained on the other
folds (its ESC-50 accuracy loss to a speed trick is the difference to
``torch-eager``). Beside wall clips/s each worker reports clips per CPU
second (``time.process_time``): on a shared machine wall time measures the
neighbours, CPU time what one idle core would give. The int8 variants
(``QUANTISED``) quantise only the network's convolutions: dynamic int8 of the
whole graph (once ``tympan export --quantize``, now removed) also quantised the
front end's DFT and mel matmuls, whose activations (power spectra) span far more
than 8 bits, and lost 72 points. Writes ``bench/results/inference.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
YAMNET = "yamnet/yamnet_scores_only_int8.tflite"

#: tympan variants: name → ExportOptions kwargs (None: PyTorch eager on the model file).
VARIANTS: dict[str, dict[str, Any] | None] = {
    "torch-eager": None,
    "onnx-stftop": {"stft": "onnx"},
    "onnx-exact": {},
    "onnx-1shift": {"time_shifts": 1},
    "onnx-int8-dynamic-conv": {},
    "onnx-int8-qdq-conv": {},
}

#: Variants quantised here from the exact export (not ``tympan export`` options): int8 for the
#: network's convolutions only, the front end's DFT/mel matmuls, the first conv, the
#: squeeze-excitation layers (Gemm) and the head kept in float. ``dynamic``: weights int8,
#: activations quantised per call; ``qdq``: static QDQ, per-channel weights, activation
#: ranges calibrated on ``CALIBRATION_CLIPS`` clips of a training fold.
QUANTISED = {"onnx-int8-dynamic-conv": "dynamic", "onnx-int8-qdq-conv": "qdq"}
CALIBRATION_CLIPS = 32


def quantise(source: Path, target: Path, kind: str, calibration: list[Path], rate: int) -> None:
    """Write ``source`` quantised as ``kind`` (see :data:`QUANTISED`) to ``target``."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from tympan.audio import load_audio

    nodes = list(onnx.load(str(source)).graph.node)
    first_conv = next(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    keep_float = [n.name for n in nodes[:first_conv + 1]]  # front end, patching, first conv
    keep_float += [n.name for n in nodes[first_conv:] if n.op_type in ("Gemm", "MatMul")]
    if kind == "dynamic":
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Conv"], nodes_to_exclude=keep_float,
                         per_channel=True)
        return

    class Clips(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"waveform": load_audio(p, rate)[None].astype(np.float32)}
                               for p in calibration])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    quantize_static(str(source), str(target), Clips(), quant_format=QuantFormat.QDQ,
                    per_channel=True, op_types_to_quantize=["Conv"],
                    nodes_to_exclude=keep_float, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)


def esc50_fold(data: Path, fold: str) -> list[tuple[Path, str]]:
    """``(path, category)`` of every clip in ``fold`` of ESC-50's ``meta/esc50.csv``, sorted."""
    with open(data / "meta" / "esc50.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["fold"] == fold]
    return sorted((data / "audio" / r["filename"], r["category"]) for r in rows)


# -- worker: one engine, one process ----------------------------------------------------------


def _scorer(engine: str, target: str, threads: int) -> tuple[Any, int]:
    """A ``path -> probabilities`` function for an engine, and the rate it decodes to."""
    import numpy as np

    from tympan.audio import load_audio, split_windows

    if engine == "yamnet":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=target, num_threads=threads)
        interpreter.allocate_tensors()
        slot_in = interpreter.get_input_details()[0]["index"]
        slot_out = interpreter.get_output_details()[0]["index"]

        def yamnet(path: Path) -> Any:
            wave = load_audio(path, 16000, min_duration_seconds=0.1)
            scores = []
            for window in split_windows(wave, 15600, 7680, pad_last=False):
                interpreter.set_tensor(slot_in, np.ascontiguousarray(window, dtype=np.float32))
                interpreter.invoke()
                scores.append(interpreter.get_tensor(slot_out)[0].copy())
            return np.mean(scores, axis=0)

        return yamnet, 16000
    if engine == "onnx":
        from tympan.inference.onnx_predict import OnnxPredictor

        onnx_predictor = OnnxPredictor(target, threads=threads)
        return (lambda path: onnx_predictor.predict_proba([path])[0]), onnx_predictor.sample_rate
    import torch

    from tympan.inference.predict import Predictor
    from tympan.models.modelfile import load_model

    torch.set_num_threads(threads)
    predictor = Predictor(load_model(target), device="cpu")
    return (lambda path: predictor.predict_proba([path])[0]), predictor.feature_config.sample_rate


def worker(args: argparse.Namespace) -> int:
    """Score the files listed in ``args.files``; print clips/s and top-1 indices as JSON."""
    files = [Path(line) for line in Path(args.files).read_text().splitlines() if line]
    score, rate = _scorer(args.worker, args.target, args.threads[0])
    for path in files[:3]:  # warm-up: first-call allocations, caches
        score(path)
    seconds, top = [], []
    cpu = time.process_time()
    for path in files:
        started = time.perf_counter()
        probabilities = score(path)
        seconds.append(time.perf_counter() - started)
        top.append(int(probabilities.argmax()))
    cpu = time.process_time() - cpu
    total = sum(seconds)
    print(json.dumps({"clips": len(files), "seconds": total, "clips_per_second": len(files) / total,
                      "cpu_seconds": cpu, "clips_per_cpu_second": len(files) / cpu,
                      "ms_per_clip_median": 1000 * sorted(seconds)[len(seconds) // 2],
                      "rate": rate, "top1": top}))
    return 0


def run_worker(engine: str, target: Path, files: list[Path], threads: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh process pinned to ``threads`` threads."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(str(f) for f in files))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads)}
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", engine, "--target",
                               str(target), "--files", handle.name, "--threads", str(threads)],
                              capture_output=True, text=True, env=env, check=False)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} worker failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- driver -----------------------------------------------------------------------------------


def export_variants(model: Path, work: Path, names: list[str],
                    calibration: list[Path] | None = None) -> dict[str, tuple[str, Path]]:
    """``name -> (engine, file)``: the model file itself for torch, an export for ONNX
    (quantised variants from the exact export, calibrated on ``calibration`` clips)."""
    from tympan.fileio import sha256_file
    from tympan.inference.onnx_export import ExportOptions, export_onnx
    from tympan.models.modelfile import load_model

    loaded = load_model(model)
    digest = sha256_file(model)[:12]
    engines: dict[str, tuple[str, Path]] = {}
    for name in names:
        options = VARIANTS[name]
        if options is None:
            engines[name] = ("torch", model)
            continue
        target = work / f"{model.stem}-{digest}-{name}.onnx"
        if not target.is_file() and name in QUANTISED:
            exact = work / f"{model.stem}-{digest}-onnx-exact.onnx"
            if not exact.is_file():
                export_onnx(loaded, exact, ExportOptions())
            print(f"quantising {name} ...", flush=True)
            quantise(exact, target, QUANTISED[name], calibration or [],
                     loaded.feature_config.sample_rate)
        elif not target.is_file():
            print(f"exporting {name} ...", flush=True)
            export_onnx(loaded, target, ExportOptions(**options))
        engines[name] = ("onnx", target)
    return engines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="tympan model file (.safetensors)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "TYMPAN_DATA", "/work/shared/datasets")) / "esc50", help="ESC-50 folder")
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get(
        "TYMPAN_WEIGHTS", "/work/shared/weights")), help="folder holding " + YAMNET)
    parser.add_argument("--fold", default="1", help="ESC-50 fold MODEL was not trained on")
    parser.add_argument("--clips", type=int, default=200, help="clips timed per engine")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accuracy-clips", type=int, default=0,
                        help="score only this many clips of the fold (0: all; quick checks)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (best kept)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--default-export", default="onnx-exact",
                        help="the variant `tympan export` writes by default (reported)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "bench" / "inference")
    parser.add_argument("--out", type=Path, default=RESULTS / "inference.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.model is None:
        parser.error("give the model file")
    commit = git_commit()
    clips = esc50_fold(args.data, args.fold)
    if args.accuracy_clips:
        clips = clips[::max(1, len(clips) // args.accuracy_clips)][:args.accuracy_clips]
    timed = [path for path, _ in clips[::max(1, len(clips) // args.clips)]][:args.clips]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    training = [p for f in ("2", "3", "4", "5", "1") if f != args.fold
                for p, _ in esc50_fold(args.data, f)]
    calibration = training[::max(1, len(training) // CALIBRATION_CLIPS)][:CALIBRATION_CLIPS]
    engines = export_variants(args.model, args.work_dir, args.variants, calibration)
    engines["yamnet-tflite"] = ("yamnet", args.weights / YAMNET)

    from tympan.models.modelfile import read_metadata

    classes = read_metadata(args.model).labels
    results: dict[str, dict[str, Any]] = {name: {"engine": engine, "file": str(target),
                                                 "export_options": VARIANTS.get(name),
                                                 "clips_per_second": {}, "rounds": {}}
                                          for name, (engine, target) in engines.items()}
    for name, (engine, target) in engines.items():
        if engine == "yamnet":
            results[name]["accuracy"] = None  # AudioSet classes: no ESC-50 head
            continue
        scored = run_worker(engine, target, [p for p, _ in clips], max(args.threads))
        hits = sum(classes[i] == label for i, (_, label) in zip(scored["top1"], clips,
                                                                strict=True))
        results[name]["accuracy"] = hits / len(clips)
        print(f"{name}: accuracy {hits / len(clips):.2%} on fold {args.fold}", flush=True)
    for round_ in range(args.repeats):
        for threads in args.threads:
            for name, (engine, target) in engines.items():
                timing = run_worker(engine, target, timed, threads)
                results[name]["rounds"].setdefault(str(threads), []).append(
                    round(timing["clips_per_second"], 2))
                results[name].setdefault("cpu_rounds", {}).setdefault(str(threads), []).append(
                    round(timing["clips_per_cpu_second"], 2))
                print(f"round {round_ + 1}, {threads} thread(s): {name} "
                      f"{timing['clips_per_second']:.1f} clips/s", flush=True)
    peer = results["yamnet-tflite"]
    for entry in results.values():
        entry["clips_per_second"] = {t: max(r) for t, r in entry["rounds"].items()}
        # clips per CPU second: what one idle core would give (robust to a shared machine)
        entry["clips_per_cpu_second"] = {t: max(r) for t, r in entry["cpu_rounds"].items()}
    for entry in results.values():
        entry["speed_vs_yamnet"] = {t: round(cps / peer["clips_per_second"][t], 2)
                                    for t, cps in entry["clips_per_second"].items()}
        entry["cpu_speed_vs_yamnet"] = {t: round(cps / peer["clips_per_cpu_second"][t], 2)
                                        for t, cps in entry["clips_per_cpu_second"].items()}
    eager = results.get("torch-eager", {}).get("accuracy")
    for entry in results.values():
        if eager is not None and entry["accuracy"] is not None:
            entry["accuracy_loss_points"] = round(100 * (eager - entry["accuracy"]), 2)
    import onnxruntime
    import torch

    document = {
        "benchmark": "end-to-end inference, decode -> probabilities, one clip at a time",
        "model": {"file": str(args.model), "classes": len(classes),
                  "note": f"trained without ESC-50 fold {args.fold}"},
        "dataset": {"path": str(args.data), "fold": args.fold, "accuracy_clips": len(clips),
                    "timed_clips": len(timed)},
        "threads": args.threads, "repeats": args.repeats,
        "default_export": args.default_export,
        "variants": results,
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "calibration_clips": [str(p) for p in calibration],
        "commit": commit,
        "command": " ".join(["python", "bench/inference.py", *(argv or sys.argv[1:])]),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from tympan.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
