"""Peak memory and throughput against the number of files → bench/results/scale.json.

For each size N (default 1 000 and 10 000; add 100 000 with ``--sizes``) it
generates N distinct short clips (0.5 s, 16 kHz mono 16-bit WAV, 4 synthetic
classes in class folders: each file its own tone, chirp rate and noise seed)
and runs, each as its own ``tympan`` command in its own process:

- ``datasets info`` (discovery + full decode of every file),
- ``features`` (fills the feature cache; a light 16 kHz, 32-mel front end),
- ``train`` (one epoch of a small ``cnn-s`` on the cached features, no CV).

Then, over ``--detect-files`` ten-minute recordings (hard links of
``--distinct`` synthesised 10-minute 16 kHz FLAC files under distinct names:
decoding cost is real, content is shared), the commands a user would run on
the ONNX export (``tympan export``) of bench/detect.py's untrained light
model (0.5 s windows, hop 0.25 s: 2 400 windows a file):

- ``detect`` (``--workers W``: W single-thread onnxruntime workers, the main
  process decodes),
- ``predict-corpus`` (``--engine local --workers W --shard-files S``: W pool
  workers that plan, decode and score; the parent holds a shard's rows until
  it is written, about 1.4 MB a ten-minute file here, so S (default 25) bounds
  memory, not the corpus size).

``--scorer torch`` runs both on the model file instead. Each size is a row of
``long`` (``--add`` keeps rows of other sizes), with audio hours, × real time
and files/s; ``long_growth`` states each stage's peak tree memory per file
between the smallest and largest size.

Memory is sampled every 0.1 s from /proc for the command's process tree
(psutil): ``peak_rss_mb`` (the main process, VmHWM), ``peak_anon_mb`` (its
anonymous memory, i.e. not page cache of mapped files) and
``peak_tree_rss_mb`` (main + worker processes together). The record states the
per-file slope of each between sizes, the machine, the commit and the load.

    nice -n 10 python bench/scale.py                      # 1 000 and 10 000 files
    nice -n 10 python bench/scale.py --sizes 1000 10000 100000 --detect-files 1000
    nice -n 10 python bench/scale.py --sizes 100000 --stages info,features --detect-files 0
    nice -n 10 python bench/scale.py --sizes --detect-files 1000 --add   # the issue's size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import cpu_model, git_commit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
RATE = 16000
CLIP_SECONDS = 0.5
CLASSES = ("tone", "chirp", "noise", "click")
LIGHT_FEATURES = {"name": "light16k", "sample_rate": RATE, "n_fft": 512, "hop_samples": 256,
                  "n_mels": 32, "patch_frames": 32, "patch_hop_frames": 16}


def synth(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One distinct 0.5 s clip of ``kind`` (float32 in [-1, 1])."""
    t = np.arange(int(RATE * CLIP_SECONDS)) / RATE
    f0 = rng.uniform(300, 3000)
    if kind == "tone":
        wave = np.sin(2 * np.pi * f0 * t)
    elif kind == "chirp":
        wave = np.sin(2 * np.pi * (f0 * t + rng.uniform(500, 4000) * t * t))
    elif kind == "noise":
        wave = rng.standard_normal(t.size) * 0.5
    else:
        wave = np.zeros(t.size)
        wave[rng.integers(0, t.size, 20)] = 1.0
    wave = wave + 0.05 * rng.standard_normal(t.size)
    return (0.5 * wave / max(1e-6, float(np.abs(wave).max()))).astype(np.float32)


def generate(root: Path, n: int) -> float:
    """``n`` distinct clips in ``root/<class>/``; returns seconds spent (reused if complete).

    Each class has 64 synthesised base clips; file ``i`` is base ``i // 4 % 64`` of its
    class circularly shifted by a per-file amount and with its index written into its
    first samples, so every file has its own content (hash, features) at the cost of a
    write.
    """
    import soundfile as sf

    marker = root / ".complete"
    if marker.is_file():
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    rng = np.random.default_rng(n)
    bases = {kind: [(synth(kind, rng) * 32767).astype(np.int16) for _ in range(64)]
             for kind in CLASSES}
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
    for i in range(n):
        kind = CLASSES[i % len(CLASSES)]
        wave = np.roll(bases[kind][i // 4 % 64], (i * 7919) % 8000)
        wave[:4] = np.frombuffer(np.int64(i).tobytes(), dtype=np.int16)
        sf.write(root / kind / f"{kind}-{i:06d}.wav", wave, RATE, subtype="PCM_16")
    marker.write_text(str(n))
    return time.perf_counter() - start


def long_files(root: Path, n: int, distinct: int = 4) -> Path:
    """``n`` hard links (``rec00000.flac`` ...) of ``distinct`` 10-minute 16 kHz recordings
    (tones, chirps, noise, clicks; each source its own seed), round-robin."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(distinct):
        source = root / f"source-10min-{k}.flac"
        if not source.is_file():
            rng = np.random.default_rng(k)
            with sf.SoundFile(root / f".{source.name}.partial", "w", RATE, 1, format="FLAC",
                              subtype="PCM_16") as out:
                for _ in range(600):
                    out.write(synth(CLASSES[int(rng.integers(4))], rng).repeat(2) * 0.5)
            (root / f".{source.name}.partial").replace(source)
        sources.append(source)
    folder = root / f"files-{n}-d{distinct}"
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for i in range(n):
            os.link(sources[i % distinct], folder / f"rec{i:05d}.flac")
        (folder / ".complete").write_text(str(n))
    return folder


def light_model(work: Path) -> Path:
    """bench/detect.py's untrained light ``cnn-s`` (16 kHz, 32 mels, 0.5 s windows)."""
    from detect import light_model as make

    return make(work)


def light_export(work: Path, env: dict[str, str]) -> Path:
    """The light model's ONNX export (``tympan export``, made once)."""
    target = work / "light.onnx"
    if not target.is_file():
        subprocess.run([sys.executable, "-c", "from tympan.cli import main; main()", "export",
                        str(light_model(work)), "--output", str(target)], env=env, check=True,
                       capture_output=True)
    return target


def long_stages(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """``detect`` and ``predict-corpus`` over ``args.detect_files`` ten-minute files."""
    work, n = args.work, args.detect_files
    folder = long_files(work / "long", n, args.distinct)
    model = light_export(work, env) if args.scorer == "onnx" else light_model(work)
    audio_seconds = n * 600
    row: dict[str, Any] = {
        "n_files": n, "file_seconds": 600, "audio_hours": round(audio_seconds / 3600, 1),
        "files": f"hard links of {args.distinct} distinct synthesised 10-minute 16 kHz mono "
                 "PCM_16 FLAC files (round-robin)",
        "model": "untrained cnn-s 8/16 channels, 16 kHz, 32 mels, 0.5 s windows, hop 0.25 s "
                 f"({'its ONNX export, onnxruntime' if args.scorer == 'onnx' else 'torch'})"}
    w = str(args.workers)
    stages = {
        "detect": ["detect", str(model), str(folder), "--output", str(work / "detect-out"),
                   "--workers", w] if args.scorer == "onnx" else
                  ["detect", str(model), str(folder), "--output", str(work / "detect-out"),
                   "--threads", w],
        "predict_corpus": ["predict-corpus", str(model), str(folder), "-o",
                           str(work / "corpus-out"), "--engine", "local", "--workers", w,
                           "--shard-files", str(args.shard_files)]}
    for name in args.long_stages.split(","):
        shutil.rmtree(work / ("detect-out" if name == "detect" else "corpus-out"),
                      ignore_errors=True)
        result = measure(name, stages[name], env)
        result.update(realtime_factor=round(audio_seconds / result["seconds"], 1),
                      files_per_second=round(n / result["seconds"], 3),
                      audio_hours_per_hour=round(audio_seconds / result["seconds"], 1),
                      commit=git_commit())
        row[name] = result
        print(json.dumps({"n_files": n, name: result}), flush=True)
    row["command"] = " ".join(["python", "bench/scale.py", *sys.argv[1:]])
    return row


def long_growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak tree memory per file between the smallest and the largest long-file run."""
    out: dict[str, Any] = {}
    for stage in ("detect", "predict_corpus"):
        have = sorted((r["n_files"], r[stage]["peak_tree_rss_mb"]) for r in rows if stage in r)
        if len(have) >= 2 and have[-1][0] > have[0][0]:
            (n0, m0), (n1, m1) = have[0], have[-1]
            out[stage] = {"from_files": n0, "to_files": n1, "peak_tree_rss_mb": [m0, m1],
                          "bytes_per_file": round((m1 - m0) * 2**20 / (n1 - n0), 1)}
    return out


def measure(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``tympan ARGV`` in its own process; wall time and peak memory of its tree."""
    import psutil

    command = [sys.executable, "-c", "from tympan.cli import main; main()", *argv]
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = {"anon": 0, "tree": 0, "hwm": 0}
    main = psutil.Process(proc.pid)

    def poll() -> None:
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as handle:
                    status = dict(line.split(":", 1) for line in handle)
                anon = int(status.get("RssAnon", "0 kB").split()[0]) * 1024
                peak["hwm"] = max(peak["hwm"], int(status.get("VmHWM", "0 kB").split()[0]) * 1024)
                tree = main.memory_info().rss + sum(
                    c.memory_info().rss for c in main.children(recursive=True))
            except (OSError, psutil.Error, ValueError):
                break
            peak["anon"] = max(peak["anon"], anon)
            peak["tree"] = max(peak["tree"], tree)
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {' '.join(argv)}\n{err[-3000:]}")
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # max over children waited for so far
    return {"command": "tympan " + " ".join(argv), "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak["hwm"] / 2**20, 1),
            "peak_anon_mb": round(peak["anon"] / 2**20, 1),
            "peak_tree_rss_mb": round(peak["tree"] / 2**20, 1),
            "max_child_rss_mb_so_far": round(usage.ru_maxrss / 1024, 1),
            "loadavg_before": [round(x, 2) for x in load],
            "stdout_tail": out.strip().splitlines()[-1:] if out.strip() else []}


def slopes(rows: list[dict[str, Any]], stage: str, key: str) -> float | None:
    """Growth of ``key`` per file (bytes) between the smallest and the largest size."""
    have = [(r["n_files"], r[stage][key]) for r in rows if stage in r]
    if len(have) < 2:
        return None
    (n0, m0), (n1, m1) = have[0], have[-1]
    return round((m1 - m0) * 2**20 / (n1 - n0), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--detect-files", type=int, default=100,
                        help="ten-minute files for detect and predict-corpus (the issue's "
                             "size: 1000)")
    parser.add_argument("--distinct", type=int, default=4,
                        help="distinct 10-minute recordings the long files link to")
    parser.add_argument("--scorer", choices=("onnx", "torch"), default="onnx",
                        help="score the long files on the light model's ONNX export or torch")
    parser.add_argument("--shard-files", type=int, default=25,
                        help="predict-corpus --shard-files for the long files: the parent "
                             "holds a shard's rows (2 400 a ten-minute file) until it is "
                             "written, so memory grows with this, not with the corpus")
    parser.add_argument("--long-stages", default="detect,predict_corpus",
                        help="comma-separated subset of detect,predict_corpus")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tympan-scale"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stages", default="info,features,train",
                        help="comma-separated subset of info,features,train")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--add", action="store_true",
                        help="keep the sizes (and detect run) already in --out that this run "
                             "does not measure; each row names its own command and commit")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TYMPAN_CACHE": str(work / "cache"), "COLUMNS": "200"}
    features_json = work / "light16k.json"
    features_json.write_text(json.dumps(LIGHT_FEATURES))
    train_json = work / "train-light.json"
    train_json.write_text(json.dumps({
        "model": "cnn-s", "mode": "finetune", "epochs": 1, "folds": 0, "val_fraction": 0.1,
        "batch_size": 64, "features": LIGHT_FEATURES,
        "model_kwargs": {"channels": [8, 16], "hidden": 16}}))
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        data = work / f"clips-{n}"
        row: dict[str, Any] = {"n_files": n, "generate_seconds": round(generate(data, n), 1)}
        shutil.rmtree(work / "cache", ignore_errors=True)
        shutil.rmtree(work / "runs", ignore_errors=True)
        w = str(args.workers)
        stages = args.stages.split(",")
        if "info" in stages:
            row["info"] = measure("info", ["datasets", "info", str(data), "--json",
                                           "--workers", w], env)
        if "features" in stages:
            row["features"] = measure("features", ["features", str(data), "--config",
                                                   str(features_json), "--workers", w], env)
        if "train" in stages:  # featurises into the cache, reusing what the features stage filled
            row["train_1_epoch"] = measure("train", [
                "train", str(data), "--config", str(train_json), "--no-cv", "--name", f"n{n}",
                "--runs-dir", str(work / "runs"), "--no-progress"], env)
        command = " ".join(["python", "bench/scale.py", *sys.argv[1:]])
        for stage in ("info", "features", "train_1_epoch"):
            if stage in row:  # each stage names its own run (--add merges stages of a size)
                row[stage].update(files_per_second=round(n / row[stage]["seconds"], 1),
                                  run=command, commit=git_commit())
        row.update(command=command, commit=git_commit())
        rows.append(row)
        print(json.dumps(row), flush=True)
    earlier: dict[str, Any] = {}
    if args.add and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        merged = {r["n_files"]: r for r in earlier.get("sizes", [])}
        for row in rows:  # stages measured now replace theirs; the size's other stages stay
            merged[row["n_files"]] = {**merged.get(row["n_files"], {}), **row}
        rows = sorted(merged.values(), key=lambda r: r["n_files"])
    record: dict[str, Any] = {
        "benchmark": "scale", "machine": cpu_model(), "cpus": os.cpu_count(),
        "commit": git_commit(), "command": " ".join(["python", "bench/scale.py", *sys.argv[1:]]),
        "clips": f"{CLIP_SECONDS} s, {RATE} Hz mono PCM_16 WAV, distinct content (64 sounds "
                 "per class, each file shifted and stamped), "
                 f"{len(CLASSES)} class folders",
        "features": LIGHT_FEATURES, "sizes": rows,
        "bytes_per_file_growth": {
            stage: {key.removesuffix("_mb") + "_bytes_per_file": slopes(rows, stage, key)
                    for key in ("peak_rss_mb", "peak_anon_mb", "peak_tree_rss_mb")}
            for stage in ("info", "features", "train_1_epoch")},
    }
    long_rows = {r["n_files"]: r for r in earlier.get("long", [])}
    if args.detect_files:
        row = long_stages(args, env)
        long_rows[row["n_files"]] = {**long_rows.get(row["n_files"], {}), **row}
    if long_rows:
        record["long"] = [long_rows[n] for n in sorted(long_rows)]
        record["long_growth"] = long_growth(record["long"])
    if "detect" in earlier:  # the earlier torch run on 4 files
        record["detect_torch_earlier"] = earlier["detect"]
    elif "detect_torch_earlier" in earlier:
        record["detect_torch_earlier"] = earlier["detect_torch_earlier"]
    record["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
