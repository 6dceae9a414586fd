"""Corpus benchmark: ``predict-corpus`` throughput on the local pool vs Ray Data.

    nice -n 10 python bench/corpus.py                       # 200 files of 5-30 s, 2 workers
    nice -n 10 python bench/corpus.py --files 400 --workers 4

Builds ``--files`` recordings of 5-30 s from ESC-50 clips laid end to end
(44.1 kHz; half 16-bit WAV, half FLAC, so decoding is part of the work) and
a model file: ``--model default`` is mn04_as with its AudioSet backbone and a
50-class head (random: throughput does not depend on the head's values),
``--model light`` an untrained ``cnn-s`` on a 16 kHz front end. Each engine
runs the same files with the same worker count in its own process
(``--child``): the local process pool, then Ray Data on a fresh local
instance (``ray.init`` is timed apart; the Ray number includes actor start
and model loading, as the pool's includes worker start). Records files/s,
windows/s, the Ray/local ratio (goal: Ray within 20 %), and the peak resident
memory and the CPU seconds of each engine's whole process tree (sampled every
0.2 s: on a shared machine, windows per CPU second compares the engines' work
where wall time depends on the neighbours), with CPU model, commit, command
and load average, in ``bench/results/corpus.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("TYMPAN_DATA", ROOT.parent / "shared" / "datasets")) / "esc50"


# -- data and model -----------------------------------------------------------------------


def make_corpus(folder: Path, n_files: int, min_seconds: float, max_seconds: float,
                seed: int = 0) -> float:
    """Write ``n_files`` recordings of ESC-50 clips end to end; returns their total seconds."""
    import csv

    import soundfile as sf

    from tympan.audio import load_audio

    rate = 44100
    with (DATA / "meta" / "esc50.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(seed)
    pool = [load_audio(DATA / "audio" / rows[i]["filename"], rate)
            for i in rng.choice(len(rows), 40, replace=False)]
    total = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        seconds = float(rng.uniform(min_seconds, max_seconds))
        need, pieces = round(seconds * rate), []
        while sum(len(p) for p in pieces) < need:
            pieces.append(pool[int(rng.integers(len(pool)))])
        wave = np.concatenate(pieces)[:need]
        suffix, subtype = (".wav", "PCM_16") if i % 2 == 0 else (".flac", "PCM_16")
        sf.write(str(folder / f"rec{i:04d}{suffix}"), wave, rate, subtype=subtype)
        total += seconds
    return total


def make_model(path: Path, kind: str) -> Path:
    """A model file to time with: mn04_as (AudioSet backbone) or a light cnn-s."""
    import torch

    from tympan import models
    from tympan.config import FeatureConfig
    from tympan.models.modelfile import make_metadata, save_model

    torch.manual_seed(0)
    labels = [f"class{i:02d}" for i in range(50)]
    if kind == "default":
        model = models.create("mn04_as", len(labels), pretrained=True)
        features = models.default_features("mn04_as")
    else:
        model = models.create("cnn-s", len(labels))
        features = FeatureConfig(name="light16k", sample_rate=16000, n_fft=512,
                                 hop_samples=256, n_mels=64, patch_frames=128,
                                 patch_hop_frames=64)
    return save_model(path, model.eval(), make_metadata(model, labels, features),
                      overwrite=True)


# -- measuring ------------------------------------------------------------------------------


def _tree(root: int) -> dict[int, tuple[int, float]]:
    """``pid → (resident bytes, CPU seconds so far)`` of process ``root`` and its
    descendants, from /proc."""
    parents: dict[int, int] = {}
    usage: dict[int, tuple[int, float]] = {}
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry.name)] = int(fields[1])
            usage[int(entry.name)] = (int(fields[21]) * page,
                                      (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        for pid, parent in parents.items():
            if parent == current and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return {pid: usage[pid] for pid in tree if pid in usage}


class TreeSampler:
    """Samples this process tree every ``period`` s in a thread: ``peak_mb`` (summed
    resident memory) and ``cpu_seconds`` (user + system, the last value seen per process:
    a load-independent measure of the work each engine does)."""

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.peak_mb = period, 0.0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        tree = _tree(os.getpid())
        self.peak_mb = max(self.peak_mb, sum(rss for rss, _ in tree.values()) / 2**20)
        for pid, (_, cpu) in tree.items():
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def child(engine: str, model: Path, corpus: Path, out: Path, workers: int) -> dict[str, Any]:
    """One engine's run in this process (the parent runs each engine in its own)."""
    from tympan.corpus.run import CorpusSettings, run_corpus

    init_seconds = 0.0
    with TreeSampler() as sampler:
        if engine == "ray":
            import ray

            started = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 * 2**20, configure_logging=False)
            init_seconds = time.perf_counter() - started
        started = time.perf_counter()
        outcome = run_corpus(model, corpus, out, "predict",
                             CorpusSettings(engine=engine,  # type: ignore[arg-type]
                                            workers=workers, shard_files=50))
        seconds = time.perf_counter() - started
        if engine == "ray":
            ray.shutdown()
    return {"engine": engine, "workers": workers, "seconds": round(seconds, 2),
            "init_seconds": round(init_seconds, 2), "files": outcome.files,
            "windows": outcome.windows, "failed_files": outcome.failed_files,
            "files_per_second": round(outcome.files / seconds, 3),
            "windows_per_second": round(outcome.windows / seconds, 2),
            "peak_tree_rss_mb": round(sampler.peak_mb, 1),
            "tree_cpu_seconds": round(sampler.cpu_seconds, 1),
            "windows_per_cpu_second": round(outcome.windows / max(sampler.cpu_seconds, 1e-9),
                                            2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", choices=("default", "light"), default="default")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tympan-bench-corpus"))
    parser.add_argument("--output", type=Path, default=RESULTS / "corpus.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus, model = args.work / "corpus", args.work / f"{args.model}.safetensors"
    if args.child:
        result = child(args.child, model, corpus, args.work / f"out-{args.child}", args.workers)
        print(json.dumps(result))
        return
    load_before = os.getloadavg()
    stamp = args.work / "corpus.json"
    spec = [args.files, args.min_seconds, args.max_seconds]
    if not stamp.is_file() or json.loads(stamp.read_text()).get("spec") != spec:
        shutil.rmtree(corpus, ignore_errors=True)
        seconds = make_corpus(corpus, args.files, args.min_seconds, args.max_seconds)
        stamp.write_text(json.dumps({"spec": spec, "seconds": seconds}))
    audio_seconds = json.loads(stamp.read_text())["seconds"]
    make_model(model, args.model)
    runs = []
    for engine in args.engines.split(","):
        shutil.rmtree(args.work / f"out-{engine}", ignore_errors=True)
        done = subprocess.run([sys.executable, __file__, "--child", engine, "--files",
                               str(args.files), "--workers", str(args.workers), "--model",
                               args.model, "--work", str(args.work)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    by = {r["engine"]: r for r in runs}
    record: dict[str, Any] = {
        "benchmark": "corpus", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "model": args.model, "files": args.files, "audio_seconds": round(audio_seconds, 1),
        "runs": runs,
    }
    if "local" in by and "ray" in by:
        record["ray_over_local_files_per_second"] = round(
            by["ray"]["files_per_second"] / by["local"]["files_per_second"], 3)
        record["ray_over_local_windows_per_cpu_second"] = round(
            by["ray"]["windows_per_cpu_second"] / by["local"]["windows_per_cpu_second"], 3)
        record["goal"] = "Ray Data within 20 % of the local pool (ratio >= 0.8)"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
