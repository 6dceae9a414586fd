"""Detect benchmark: real-time factor, peak memory and event precision/recall of ``tympan detect``.

    nice -n 10 python bench/detect.py                    # 1 h + 10 h recordings (slow)
    nice -n 10 python bench/detect.py --long-hours 0     # skip the 10-hour memory run

With the default model (``mn04_as`` frozen + logistic head, trained here on
ESC-10 folds 2-5 through tympan's run workflow, which also stores per-class
thresholds from 4-fold CV), it builds in ``--work``:

* an hour-long WAV (44.1 kHz, 16-bit) of ESC-50 clips end to end, timed
  through the detect workflow (decode, resample, windows, network, events,
  outputs) and profiled by stage (decode, resample, front end, network);
* the same material resampled to 48 kHz and repeated to ``--long-hours``
  (a 16-bit WAV on disk, deleted afterwards) for peak RSS. On two shared
  cores mn04 scores about an hour of audio in many minutes, so the 10-hour
  run uses a light model (an untrained ``cnn-s`` with a 16 kHz front end,
  ``--long-model light``) through the same pipeline (streamed decode,
  resampling, windows, events, outputs), beside the same light model on the
  1-hour file: equal peaks show memory does not grow with the recording;
  ``--long-model default`` runs mn04 on it instead;
* a recording of the ESC-10 fold-1 clips (never trained on) with 1-4 s of
  silence between them: event precision/recall against the clips' spans,
  and a profile by stage (decode, resample, front end, network).

The same hour and fold-1 recording also run on the model's ONNX export
(``tympan export``; onnxruntime, no torch): one process with ``--threads``
intra-op threads, and two single-thread worker processes (``tympan detect
--workers 2``), each with CPU seconds beside wall seconds (the machine may be
shared), a stage profile (decode, resample, graph: front end vs network) and
the event scores and window-probability agreement of the one-time-shift
export (half the network passes) against the exact one.

The peer is YAMNet (TFLite, int8 weights, the same two threads) scoring the
same hour at its own 0.975 s window / 0.48 s hop, decode and resampling
included. Each engine runs in its own process. Writes
``bench/results/detect.json`` with the CPU model, commit, command and the
load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("TYMPAN_DATA", ROOT.parent / "shared" / "datasets")) / "esc50"
WEIGHTS = Path(os.environ.get("TYMPAN_WEIGHTS", ROOT.parent / "shared" / "weights"))
HOUR_RATE, LONG_RATE = 44100, 48000


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the
    parent's size over fork+exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- data -----------------------------------------------------------------------------------


def _esc50_rows() -> list[dict[str, str]]:
    import csv

    with (DATA / "meta" / "esc50.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _clip(path: Path, rate: int) -> np.ndarray:
    from tympan.audio import load_audio

    return load_audio(path, rate)


def make_hour(path: Path, hours: float, seed: int = 0) -> dict[str, Any]:
    """ESC-50 clips (all folds, shuffled) end to end as a 16-bit WAV of ``hours``."""
    import soundfile as sf

    rows = _esc50_rows()
    order = np.random.default_rng(seed).permutation(len(rows))
    needed = round(hours * 3600 * HOUR_RATE)
    written = 0
    with sf.SoundFile(str(path), "w", HOUR_RATE, 1, subtype="PCM_16") as out:
        while written < needed:
            for i in order:
                wave = _clip(DATA / "audio" / rows[i]["filename"], HOUR_RATE)
                wave = wave[:needed - written]
                out.write(wave)
                written += wave.shape[0]
                if written >= needed:
                    break
    return {"path": str(path), "seconds": written / HOUR_RATE, "rate": HOUR_RATE}


def make_long(hour: Path, path: Path, hours: float) -> dict[str, Any]:
    """``hour`` resampled to 48 kHz and repeated to ``hours`` (16-bit WAV), streamed."""
    import soundfile as sf
    import soxr

    with sf.SoundFile(str(hour)) as src:
        rate = src.samplerate
        one_hour = src.read(dtype="float32")
    resampled = soxr.resample(one_hour, rate, LONG_RATE, quality="HQ").astype(np.float32)
    del one_hour
    needed = round(hours * 3600 * LONG_RATE)
    written = 0
    with sf.SoundFile(str(path), "w", LONG_RATE, 1, subtype="PCM_16") as out:
        while written < needed:
            piece = resampled[:needed - written]
            out.write(piece)
            written += piece.shape[0]
    return {"path": str(path), "seconds": written / LONG_RATE, "rate": LONG_RATE,
            "bytes": path.stat().st_size}


def make_events_recording(path: Path, seed: int = 1) -> list[dict[str, Any]]:
    """ESC-10 fold-1 clips with 1-4 s of silence between: returns the true spans."""
    import soundfile as sf

    rows = [r for r in _esc50_rows() if r["esc10"] == "True" and r["fold"] == "1"]
    rng = np.random.default_rng(seed)
    truth = []
    cursor = 0
    with sf.SoundFile(str(path), "w", HOUR_RATE, 1, subtype="PCM_16") as out:
        for i in rng.permutation(len(rows)):
            gap = round(rng.uniform(1.0, 4.0) * HOUR_RATE)
            out.write(np.zeros(gap, np.float32))
            cursor += gap
            wave = _clip(DATA / "audio" / rows[i]["filename"], HOUR_RATE)
            out.write(wave)
            truth.append({"label": rows[i]["category"], "start": cursor / HOUR_RATE,
                          "end": (cursor + wave.shape[0]) / HOUR_RATE})
            cursor += wave.shape[0]
        out.write(np.zeros(2 * HOUR_RATE, np.float32))
    return truth


def light_model(work: Path) -> Path:
    """An untrained small ``cnn-s`` (16 kHz, 32 mels, 0.5 s windows): the pipeline without
    mn04's cost, for the 10-hour memory run."""
    import torch

    from tympan import models
    from tympan.config import FeatureConfig
    from tympan.models.modelfile import make_metadata, save_model

    path = work / "light.safetensors"
    if path.is_file():
        return path
    torch.manual_seed(0)
    model = models.create("cnn-s", 10, channels=[8, 16], hidden=16).eval()
    features = FeatureConfig(name="light16k", sample_rate=16000, n_fft=512, hop_samples=256,
                             n_mels=32, patch_frames=32, patch_hop_frames=16)
    metadata = make_metadata(model, [f"class{i}" for i in range(10)], features,
                             train_config={"epochs": 1})
    return save_model(path, model, metadata)


def train_model(work: Path) -> Path:
    """mn04_as frozen on ESC-10 folds 2-5 (4-fold CV for thresholds, then the final fit)."""
    from tympan.config import TrainConfig
    from tympan.data.sources import discover
    from tympan.workflows.run import run

    model = work / "runs" / "esc10-f2345" / "model.safetensors"
    if model.is_file():
        return model
    manifest = discover(DATA, subset="esc10")
    keep = [i for i, clip in enumerate(manifest.clips) if clip.fold != 1]
    outcome = run(manifest.subset(keep), TrainConfig(), runs_dir=work / "runs",
                  name="esc10-f2345", final=True, overwrite=True)
    assert outcome.model_path is not None
    return outcome.model_path


# -- metrics --------------------------------------------------------------------------------


def event_scores(truth: list[dict[str, Any]], found: list[dict[str, Any]]) -> dict[str, Any]:
    """Overlap matching: a detection is right when it overlaps a true clip of its label; a
    clip is recalled when some detection of its label overlaps it."""
    def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return a["label"] == b["label"] and min(a["end"], b["end"]) > max(a["start"], b["start"])

    right = [f for f in found if any(overlaps(f, t) for t in truth)]
    recalled = [t for t in truth if any(overlaps(f, t) for f in found)]
    onset_errors = [min(abs(f["start"] - t["start"]) for f in found if overlaps(f, t))
                    for t in recalled]
    precision = len(right) / len(found) if found else 0.0
    recall = len(recalled) / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n_true": len(truth), "n_detected": len(found), "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4),
            "median_onset_error_seconds": (round(float(np.median(onset_errors)), 3)
                                           if onset_errors else None)}


# -- workers (each timed engine in its own process) -----------------------------------------


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (robust to a shared machine)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def worker_detect(model: Path, audio: Path, out: Path, threads: int,
                  workers: int = 1) -> dict[str, Any]:
    """``tympan detect``'s workflow on ``audio``: a ``.safetensors`` model on torch with
    ``threads`` threads, or an ``.onnx`` export on onnxruntime (``threads`` intra-op
    threads, or ``workers`` single-thread worker processes)."""
    from tympan.workflows.detect import DetectSettings, detect_files

    if model.suffix == ".onnx":
        from tympan.inference.onnx_predict import OnnxPredictor

        loaded: Any = OnnxPredictor(model, threads=1 if workers > 1 else threads)
    else:
        import torch

        torch.set_num_threads(threads)
        from tympan.models.modelfile import load_model

        loaded = load_model(model)
    shutil.rmtree(out, ignore_errors=True)
    start, cpu = time.perf_counter(), _cpu_seconds()
    outcome = detect_files(loaded, model, [audio], out, DetectSettings(), workers=workers)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    (summary,) = outcome.files
    result = summary.detections()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"engine": "onnxruntime" if model.suffix == ".onnx" else "torch",
            "threads": threads, "workers": workers,
            "wall_seconds": round(seconds, 2), "audio_seconds": result.duration_seconds,
            "real_time_factor": round(result.duration_seconds / seconds, 1),
            "cpu_seconds": round(cpu, 2),
            "audio_seconds_per_cpu_second": round(result.duration_seconds / cpu, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            **({"peak_rss_largest_worker_mb": round(children, 1)} if workers > 1 else {}),
            "n_events": len(result.events),
            "events": [{"label": e.label, "start": e.start_seconds, "end": e.end_seconds}
                       for e in result.events]}


def _stream_seconds(audio: Path, rate: int) -> tuple[float, float]:
    """Seconds to stream ``audio`` decoded only (at the recording's rate), and decoded and
    resampled to ``rate``."""
    from tympan.inference.stream import AudioStream

    spent = []
    for target in (HOUR_RATE, rate):
        t0 = time.perf_counter()
        for _ in AudioStream(audio, target, block_seconds=30.0):
            pass
        spent.append(time.perf_counter() - t0)
    return spent[0], spent[1]


def worker_profile(model: Path, audio: Path, threads: int) -> dict[str, Any]:
    """Seconds per stage over ``audio``: decode, resample, front end, network, the rest."""
    import torch

    torch.set_num_threads(threads)
    from tympan.inference.detect import Detector
    from tympan.models.modelfile import load_model

    loaded = load_model(model)
    rate = loaded.feature_config.sample_rate
    decode, decode_resample = _stream_seconds(audio, rate)

    detector = Detector(loaded)
    scorer: Any = detector.scorer
    spent = {"frontend": 0.0, "network": 0.0}
    started: dict[str, float] = {}

    def timed(module: Any, key: str) -> None:
        module.register_forward_pre_hook(lambda *_: started.__setitem__(key, time.perf_counter()))
        module.register_forward_hook(
            lambda *_: spent.__setitem__(key, spent[key] + time.perf_counter() - started[key]))

    timed(scorer.frontend, "frontend")
    timed(scorer.model, "network")
    t0 = time.perf_counter()
    scores = detector.score_file(audio)
    total = time.perf_counter() - t0
    return {"audio_seconds": scores.duration_seconds, "n_windows": scores.n_windows,
            "total_seconds": round(total, 2), "decode_seconds": round(decode, 2),
            "resample_seconds": round(decode_resample - decode, 2),
            "frontend_seconds": round(spent["frontend"], 2),
            "network_seconds": round(spent["network"], 2),
            "other_seconds": round(total - decode_resample - spent["frontend"]
                                   - spent["network"], 2)}


def worker_profile_onnx(model: Path, frontend: Path, audio: Path) -> dict[str, Any]:
    """Seconds per stage of the ONNX engine (one thread) over ``audio``: decode, resample,
    the graph (of which the front end: the same windows through a front-end-only graph)."""
    import onnxruntime as ort

    from tympan.inference.detect import Detector
    from tympan.inference.onnx_predict import OnnxPredictor

    predictor = OnnxPredictor(model, threads=1)
    rate = predictor.sample_rate
    decode, decode_resample = _stream_seconds(audio, rate)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    front = ort.InferenceSession(str(frontend), options, providers=["CPUExecutionProvider"])
    spent = {"graph": 0.0, "frontend": 0.0}
    run = predictor.session.run

    def timed_run(names: Any, feeds: dict[str, np.ndarray]) -> Any:
        t = time.perf_counter()
        front.run(None, {front.get_inputs()[0].name: next(iter(feeds.values()))})
        t1 = time.perf_counter()
        out = run(names, feeds)
        spent["frontend"] += t1 - t
        spent["graph"] += time.perf_counter() - t1
        return out

    predictor.session.run = timed_run  # type: ignore[method-assign]
    t0 = time.perf_counter()
    scores = Detector(predictor).score_file(audio)
    total = time.perf_counter() - t0 - spent["frontend"]  # the extra front-end runs excluded
    return {"audio_seconds": scores.duration_seconds, "n_windows": scores.n_windows,
            "total_seconds": round(total, 2), "decode_seconds": round(decode, 2),
            "resample_seconds": round(decode_resample - decode, 2),
            "graph_seconds": round(spent["graph"], 2),
            "graph_frontend_seconds": round(spent["frontend"], 2),
            "graph_network_seconds": round(spent["graph"] - spent["frontend"], 2),
            "other_seconds": round(total - decode_resample - spent["graph"], 2)}


def worker_export(model: Path, work: Path) -> dict[str, Any]:
    """The exact ONNX export of ``model``, its one-time-shift variant and a front-end-only
    graph (for the stage profile), written once into ``work``."""
    import torch

    from tympan.inference.onnx_export import ExportOptions, export_onnx
    from tympan.inference.onnx_frontend import ExportLogMel
    from tympan.models.modelfile import load_model

    loaded = load_model(model)
    paths = {"exact": work / "model.onnx", "shift1": work / "model-1shift.onnx",
             "frontend": work / "frontend.onnx"}
    if not paths["exact"].is_file():
        export_onnx(loaded, paths["exact"], overwrite=True)
    if not paths["shift1"].is_file() and hasattr(loaded.model, "time_shifts"):
        export_onnx(loaded, paths["shift1"], ExportOptions(time_shifts=1), overwrite=True)
    if not paths["frontend"].is_file():
        example = torch.randn(2, 3 * loaded.feature_config.patch_frames
                              * loaded.feature_config.hop_samples)
        program = torch.onnx.export(
            ExportLogMel(loaded.feature_config).eval(), (example,), dynamo=True,
            opset_version=18, input_names=["waveform"], output_names=["log_mel"],
            dynamic_shapes={"waveform": {0: torch.export.Dim("batch"),
                                         1: torch.export.Dim("samples", min=1024)}})
        assert program is not None
        program.optimize()
        program.save(str(paths["frontend"]))
    return {k: str(v) for k, v in paths.items() if v.is_file()}


def worker_agreement(exact: Path, shift1: Path, audio: Path) -> dict[str, Any]:
    """Window probabilities of the exact export vs the one-time-shift one on ``audio``."""
    from tympan.inference.detect import Detector
    from tympan.inference.onnx_predict import OnnxPredictor

    a = Detector(OnnxPredictor(exact, threads=1)).score_file(audio).scores[:, 0]
    b = Detector(OnnxPredictor(shift1, threads=1)).score_file(audio).scores[:, 0]
    return {"n_windows": int(a.shape[0]),
            "max_abs_difference": round(float(np.abs(a - b).max()), 4),
            "mean_abs_difference": round(float(np.abs(a - b).mean()), 5),
            "top1_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 4)}


def worker_yamnet(audio: Path, threads: int) -> dict[str, Any]:
    """YAMNet TFLite over ``audio`` at its own framing (0.975 s windows, 0.48 s hop)."""
    from ai_edge_litert.interpreter import Interpreter

    from tympan.inference.stream import AudioStream

    interpreter = Interpreter(model_path=str(WEIGHTS / "yamnet" /
                                             "yamnet_scores_only_int8.tflite"),
                              num_threads=threads)
    (inp,) = interpreter.get_input_details()
    window, hop = 15600, 7680
    if list(inp["shape"]) != [window]:
        interpreter.resize_tensor_input(inp["index"], [window])
    interpreter.allocate_tensors()
    outputs = interpreter.get_output_details()
    start = time.perf_counter()
    buffer = np.zeros(0, np.float32)
    calls = 0
    for block in AudioStream(audio, 16000, block_seconds=30.0):
        buffer = np.concatenate([buffer, block[:, 0]])
        offset = 0
        while offset + window <= buffer.shape[0]:
            interpreter.set_tensor(inp["index"], buffer[offset:offset + window])
            interpreter.invoke()
            interpreter.get_tensor(outputs[0]["index"])
            calls += 1
            offset += hop
        buffer = buffer[offset:]
    seconds = time.perf_counter() - start
    with __import__("soundfile").SoundFile(str(audio)) as handle:
        audio_seconds = handle.frames / handle.samplerate
    return {"wall_seconds": round(seconds, 2), "audio_seconds": audio_seconds, "calls": calls,
            "real_time_factor": round(audio_seconds / seconds, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


STAGES: Path | None = None  # set by main(): finished stages' results, reused by a rerun


def _spawn(stage: str, *args: str) -> dict[str, Any]:
    """Run a worker of this script in a fresh process; its JSON result (cached per stage in
    ``WORK/stages/``, so an interrupted benchmark resumes)."""
    cached = STAGES / f"{stage}.json" if STAGES is not None else None
    if cached is not None and cached.is_file():
        result: dict[str, Any] = json.loads(cached.read_text())
        return result
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(result))
    return result


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tympan-bench-detect"))
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--long-hours", type=float, default=10.0,
                        help="length of the peak-RSS recording (0 skips it)")
    parser.add_argument("--long-model", choices=["light", "default"], default="light",
                        help="model of the 10-hour memory run (see above)")
    parser.add_argument("--fresh", action="store_true", help="forget finished stages")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch / TFLite threads (on a busy machine 1 can be faster: "
                        "OpenMP threads wait on each other when cores are taken)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: bench/results/detect.json at 2 threads, "
                        "detect-Nthread.json otherwise)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a trained model file to time instead of training mn04 on ESC-10 "
                        "folds 2-5 (events are scored against ESC-10 fold-1 clips)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "detect":
            result = worker_detect(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]),
                                   int(rest[4]) if len(rest) > 4 else 1)
        elif kind == "profile":
            result = worker_profile(Path(rest[0]), Path(rest[1]), int(rest[2]))
        elif kind == "profile_onnx":
            result = worker_profile_onnx(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        elif kind == "export":
            result = worker_export(Path(rest[0]), Path(rest[1]))
        elif kind == "agreement":
            result = worker_agreement(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        else:
            result = worker_yamnet(Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    work = args.work
    global STAGES
    STAGES = work / f"stages-{args.threads}thread"
    if args.fresh:
        shutil.rmtree(STAGES, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    model = args.model if args.model is not None else train_model(work)
    hour = work / "hour.wav"
    hour_info = (json.loads((work / "hour.json").read_text()) if (work / "hour.json").is_file()
                 and hour.is_file() else make_hour(hour, args.hours))
    (work / "hour.json").write_text(json.dumps(hour_info))
    events_wav = work / "fold1-events.wav"
    truth = make_events_recording(events_wav)
    threads = str(args.threads)

    record: dict[str, Any] = {
        "benchmark": "detect", "model": "mn04_as frozen + logistic head (ESC-10 folds 2-5)",
        "model_file": str(model), "hour_recording": hour_info,
        **({"model": f"given: {model}"} if args.model is not None else {}),
    }
    record["detect_1h"] = {k: v for k, v in _spawn("detect_1h", "detect", str(model), str(hour),
                                                   str(work / "out-hour"), threads).items()
                           if k != "events"}
    record["yamnet_1h"] = _spawn("yamnet_1h", "yamnet", str(hour), threads)
    record["speed_ratio_vs_yamnet"] = round(record["detect_1h"]["real_time_factor"]
                                            / record["yamnet_1h"]["real_time_factor"], 3)
    found = _spawn("detect_fold1", "detect", str(model), str(events_wav),
                   str(work / "out-events"), threads)
    # stage costs per second of audio are material-independent: profile the shorter recording
    record["profile_fold1_recording"] = _spawn("profile_fold1", "profile", str(model),
                                               str(events_wav), threads)
    record["events_fold1"] = {"recording_seconds": found["audio_seconds"],
                              **event_scores(truth, found["events"]),
                              "matching": "a detection is right if it overlaps a true clip of "
                                          "its label; a clip is found if such a detection "
                                          "overlaps it"}
    # the ONNX engine (tympan export): one process with --threads, and two single-thread
    # worker processes (the parent decodes); events and agreement of the 1-shift export
    exports = _spawn("export", "export", str(model), str(work))
    onnx = exports["exact"]
    record["detect_1h_onnx"] = {k: v for k, v in _spawn(
        "detect_1h_onnx", "detect", onnx, str(hour), str(work / "out-hour-onnx"), threads,
        "1").items() if k != "events"}
    record["detect_1h_onnx_2workers"] = {k: v for k, v in _spawn(
        "detect_1h_onnx_2workers", "detect", onnx, str(hour), str(work / "out-hour-onnx2"), "1",
        "2").items() if k != "events"}
    best = max(record["detect_1h_onnx"]["real_time_factor"],
               record["detect_1h_onnx_2workers"]["real_time_factor"])
    record["speed_ratio_onnx_vs_yamnet"] = round(best / record["yamnet_1h"]["real_time_factor"],
                                                 3)
    record["profile_fold1_onnx"] = _spawn("profile_fold1_onnx", "profile_onnx", onnx,
                                          exports["frontend"], str(events_wav))
    for name, path in [("onnx", onnx), ("onnx_1shift", exports.get("shift1"))]:
        if path is None:
            continue
        found = _spawn(f"detect_fold1_{name}", "detect", path, str(events_wav),
                       str(work / f"out-events-{name}"), threads, "1")
        record[f"events_fold1_{name}"] = {"recording_seconds": found["audio_seconds"],
                                          "real_time_factor": found["real_time_factor"],
                                          **event_scores(truth, found["events"])}
    if "shift1" in exports:
        record["window_agreement_1shift_vs_exact_fold1"] = _spawn(
            "agreement", "agreement", onnx, exports["shift1"], str(events_wav))
    if args.long_hours > 0:
        long_model = model if args.long_model == "default" else light_model(work)
        record["long_model"] = ("the default model" if args.long_model == "default" else
                                "light: untrained cnn-s (8/16 channels), 16 kHz, 32 mels, "
                                "0.512 s windows, hop 0.256 s")
        if args.long_model == "light":
            record["detect_1h_light"] = {k: v for k, v in _spawn(
                "detect_1h_light", "detect", str(long_model), str(hour),
                str(work / "out-hour-light"), threads).items() if k != "events"}
        long = work / "long.wav"
        stage = f"detect_long_{args.long_model}"
        if not (STAGES / f"{stage}.json").is_file():
            record["long_recording"] = make_long(hour, long, args.long_hours)
        try:
            record["detect_long"] = {k: v for k, v in _spawn(
                stage, "detect", str(long_model), str(long), str(work / "out-long"),
                threads).items() if k != "events"}
        finally:
            long.unlink(missing_ok=True)
    record.update({
        "goal": "real_time_factor >= 300 on two CPU cores, peak RSS < 500 MB",
        "threads": args.threads, "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "shared_machine": ("yes: other jobs ran at the same time (see load averages)"
                           if load_before[0] > 1.0 else "no: idle before the run (load < 1)"),
        "python": platform.python_version(), "commit": git_commit(),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "total_seconds": round(time.perf_counter() - started, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the goal's condition (two threads on two cores) is detect.json; other counts beside it
    target = args.out or RESULTS / ("detect.json" if args.threads == 2 else
                                    f"detect-{args.threads}thread.json")
    target.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
