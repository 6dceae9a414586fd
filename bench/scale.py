"""Peak memory and throughput against the number of files → bench/results/scale.json.

For each size N (default 1 000 and 10 000; add 100 000 with ``--sizes``) it
generates N distinct short clips (0.5 s, 16 kHz mono 16-bit WAV, 4 synthetic
classes in class folders: each file its own tone, chirp rate and noise seed)
and runs, each as its own ``tympan`` command in its own process:

- ``datasets info`` (discovery + full decode of every file),
- ``features`` (fills the feature cache; a light 16 kHz, 32-mel front end),
- ``train`` (one epoch of a small ``cnn-s`` on the cached features, no CV).

Then ``tympan detect`` over ``--detect-files`` ten-minute recordings (hard links
of one synthesised 10-minute file under distinct names: decoding cost is real,
content is shared) with the untrained light model of bench/detect.py.

Memory is sampled every 0.1 s from /proc for the command's process tree
(psutil): ``peak_rss_mb`` (the main process, VmHWM), ``peak_anon_mb`` (its
anonymous memory, i.e. not page cache of mapped files) and
``peak_tree_rss_mb`` (main + worker processes together). The record states the
per-file slope of each between sizes, the machine, the commit and the load.

    nice -n 10 python bench/scale.py                      # 1 000 and 10 000 files
    nice -n 10 python bench/scale.py --sizes 1000 10000 100000 --detect-files 1000
    nice -n 10 python bench/scale.py --sizes 100000 --stages info,features --detect-files 0
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


def long_files(root: Path, n: int) -> Path:
    """``n`` hard links of one 10-minute 16 kHz recording (tones and noise bursts)."""
    import soundfile as sf

    source = root / "source-10min.flac"
    if not source.is_file():
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        with sf.SoundFile(source, "w", RATE, 1, subtype="PCM_16") as out:
            for _ in range(600):
                out.write(synth(CLASSES[int(rng.integers(4))], rng).repeat(2) * 0.5)
    folder = root / f"files-{n}"
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for i in range(n):
            os.link(source, folder / f"rec{i:05d}.flac")
        (folder / ".complete").write_text(str(n))
    return folder


def light_model(work: Path) -> Path:
    """bench/detect.py's untrained light ``cnn-s`` (16 kHz, 32 mels, 0.5 s windows)."""
    from detect import light_model as make

    return make(work)


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
                        help="ten-minute files for detect (the issue's size: 1000)")
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
    if "detect" in earlier:
        record["detect"] = earlier["detect"]
    if args.detect_files:
        folder = long_files(work / "long", args.detect_files)
        model = light_model(work)
        out = work / "detect-out"
        shutil.rmtree(out, ignore_errors=True)
        result = measure("detect", ["detect", str(model), str(folder), "--output", str(out)],
                         env)
        audio_seconds = args.detect_files * 600
        result.update(n_files=args.detect_files, file_seconds=600,
                      files="hard links of one synthesised 10-minute 16 kHz FLAC",
                      model="untrained cnn-s 8/16 channels, 16 kHz, 32 mels, 0.5 s windows",
                      realtime_factor=round(audio_seconds / result["seconds"], 1))
        record["detect"] = result
        print(json.dumps(result), flush=True)
    record["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
