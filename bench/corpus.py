"""Corpus benchmark: ``predict-corpus`` throughput on the local pool vs Ray Data.

    nice -n 10 python bench/corpus.py                       # 200 files of 5-30 s, 2 workers
    nice -n 10 python bench/corpus.py --files 400 --workers 4
    nice -n 10 python bench/corpus.py --files 1000 --scorers torch,onnx   # start-up amortised

Builds ``--files`` recordings of 5-30 s from ESC-50 clips laid end to end
(44.1 kHz; half 16-bit WAV, half FLAC, so decoding is part of the work) and
a model file: ``--model default`` is mn04_as with its AudioSet backbone and a
50-class head (random: throughput does not depend on the head's values),
``--model light`` an untrained ``cnn-s`` on a 16 kHz front end. Each engine
runs the same files with the same worker count in its own process
(``--child``): the local process pool, then Ray Data on a fresh local
instance (``ray.init`` is timed apart; the Ray number includes actor start
and model loading, as the pool's includes worker start). Records files/s,
windows/s, the steady-state files/s and windows per CPU second (from the first
shard written to the last: start-up excluded), the Ray/local ratio (goal: Ray
within 20 %) per scorer (``--scorers torch,onnx``: the model file's network,
or its ONNX export on onnxruntime), CPU seconds per process kind (driver,
pool workers, each Ray actor/task title, and Ray's raylet/GCS/agents), and the peak resident
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
                seed: int = 0, distinct: int | None = None) -> float:
    """Write ``n_files`` recordings of ESC-50 clips end to end (only ``distinct`` of them
    written, the others hard links to those, round-robin); returns their total seconds."""
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
    written: list[tuple[Path, float]] = []
    for i in range(n_files):
        suffix = ".wav" if i % 2 == 0 else ".flac"
        if distinct is not None and i >= distinct:
            source, seconds = written[i % distinct]  # half WAV, half FLAC still
            os.link(source, folder / f"rec{i:05d}{source.suffix}")
            total += seconds
            continue
        seconds = float(rng.uniform(min_seconds, max_seconds))
        need, pieces = round(seconds * rate), []
        while sum(len(p) for p in pieces) < need:
            pieces.append(pool[int(rng.integers(len(pool)))])
        wave = np.concatenate(pieces)[:need]
        sf.write(str(folder / f"rec{i:05d}{suffix}"), wave, rate, subtype="PCM_16")
        written.append((folder / f"rec{i:05d}{suffix}", seconds))
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


def process_title(pid: int, root: int) -> str:
    """What a process of the tree is: ``driver``, or its command line's start (a pool
    worker, or the title Ray gives an actor, a task's worker, raylet, GCS, an agent)."""
    if pid == root:
        return "driver"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
    if "multiprocessing" in raw:
        return "pool worker"
    words = raw.split()
    first = words[0] if words else ""
    if first.startswith("ray::"):
        return first
    return Path(first).name + (" " + Path(words[1]).name if len(words) > 1 else "")


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
        self._kind: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        tree = _tree(os.getpid())
        self.peak_mb = max(self.peak_mb, sum(rss for rss, _ in tree.values()) / 2**20)
        for pid, (_, cpu) in tree.items():
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), cpu)
            if self._kind.get(pid, "") in ("", "ray::IDLE", "python default_worker.py"):
                # Ray retitles a worker once it runs a task or becomes an actor
                self._kind[pid] = process_title(pid, os.getpid())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds so far per :func:`process_title` (a Ray worker by the first task or
        actor title it showed)."""
        out: dict[str, float] = {}
        for pid, cpu in self._cpu.items():
            kind = self._kind.get(pid, "other")
            out[kind] = out.get(kind, 0.0) + cpu
        return out

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def child(engine: str, model: Path, corpus: Path, out: Path, workers: int,
          scorer: str = "torch") -> dict[str, Any]:
    """One engine's run in this process (the parent runs each engine in its own)."""
    from tympan.corpus.run import CorpusSettings, run_corpus
    from tympan.corpus.shards import ShardInfo

    init_seconds = 0.0
    marks: list[tuple[float, int, int, float]] = []  # (time, files, windows, tree CPU s)

    def progress(_shard: int, info: ShardInfo, _reused: bool) -> None:
        files = (marks[-1][1] if marks else 0) + info.n_files
        windows = (marks[-1][2] if marks else 0) + info.n_windows
        sampler._sample()
        marks.append((time.perf_counter(), files, windows, sampler.cpu_seconds))

    with TreeSampler() as sampler:
        if engine == "ray":
            import ray

            started = time.perf_counter()
            ray.init(address="local", num_cpus=workers, include_dashboard=False,
                     log_to_driver=False, object_store_memory=256 * 2**20,
                     configure_logging=False)
            init_seconds = time.perf_counter() - started
        started = time.perf_counter()
        outcome = run_corpus(model, corpus, out, "predict",
                             CorpusSettings(engine=engine,  # type: ignore[arg-type]
                                            workers=workers, shard_files=50,
                                            scorer=scorer),  # type: ignore[arg-type]
                             progress=progress)
        seconds = time.perf_counter() - started
        if engine == "ray":
            ray.shutdown()
    steady: dict[str, Any] = {}
    if len(marks) >= 3:  # from the first shard written to the last
        (t0, f0, w0, c0), (t1, f1, w1, c1) = marks[0], marks[-1]
        steady = {"steady_shards": len(marks) - 1, "steady_seconds": round(t1 - t0, 2),
                  "steady_files_per_second": round((f1 - f0) / (t1 - t0), 3),
                  "steady_windows_per_second": round((w1 - w0) / (t1 - t0), 2),
                  "steady_windows_per_cpu_second": round((w1 - w0) / max(c1 - c0, 1e-9), 2),
                  "first_shard_seconds": round(t0 - started, 2)}
    return {"engine": engine, "scorer": scorer, "workers": workers,
            "seconds": round(seconds, 2),
            "init_seconds": round(init_seconds, 2), "files": outcome.files,
            "windows": outcome.windows, "failed_files": outcome.failed_files,
            "files_per_second": round(outcome.files / seconds, 3),
            "windows_per_second": round(outcome.windows / seconds, 2),
            **steady,
            "peak_tree_rss_mb": round(sampler.peak_mb, 1),
            "tree_cpu_seconds": round(sampler.cpu_seconds, 1),
            "cpu_seconds_by_process": {k: round(v, 1) for k, v in
                                       sorted(sampler.cpu_by_kind().items())},
            "windows_per_cpu_second": round(outcome.windows / max(sampler.cpu_seconds, 1e-9),
                                            2),
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", choices=("default", "light"), default="default")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--scorers", default="torch",
                        help="comma-separated: torch (the model file) and/or onnx (its export, "
                             "made once before the runs)")
    parser.add_argument("--distinct", type=int, default=None,
                        help="write this many distinct recordings, hard-link the rest "
                             "(default: every file distinct)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tympan-bench-corpus"))
    parser.add_argument("--output", type=Path, default=RESULTS / "corpus.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus, model = args.work / "corpus", args.work / f"{args.model}.safetensors"
    os.environ["TYMPAN_ONNX_CACHE"] = str(args.work / "onnx-cache")
    if args.child:
        engine, scorer = args.child.split(":")
        result = child(engine, model, corpus, args.work / f"out-{engine}-{scorer}",
                       args.workers, scorer)
        print(json.dumps(result))
        return
    load_before = os.getloadavg()
    stamp = args.work / "corpus.json"
    spec = [args.files, args.min_seconds, args.max_seconds, args.distinct]
    if not stamp.is_file() or json.loads(stamp.read_text()).get("spec") != spec:
        shutil.rmtree(corpus, ignore_errors=True)
        seconds = make_corpus(corpus, args.files, args.min_seconds, args.max_seconds,
                              distinct=args.distinct)
        stamp.write_text(json.dumps({"spec": spec, "seconds": seconds}))
    audio_seconds = json.loads(stamp.read_text())["seconds"]
    make_model(model, args.model)
    scorers = args.scorers.split(",")
    if "onnx" in scorers:  # exported once here, so no child's time includes the export
        from tympan.inference.onnx_export import cached_export

        cached_export(model)
    runs = []
    for scorer in scorers:
        for engine in args.engines.split(","):
            shutil.rmtree(args.work / f"out-{engine}-{scorer}", ignore_errors=True)
            done = subprocess.run([sys.executable, __file__, "--child", f"{engine}:{scorer}",
                                   "--files", str(args.files), "--workers", str(args.workers),
                                   "--model", args.model, "--work", str(args.work)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{engine}:{scorer} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    record: dict[str, Any] = {
        "benchmark": "corpus", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "model": args.model, "files": args.files, "audio_seconds": round(audio_seconds, 1),
        "distinct_files": args.distinct or args.files,
        "files_note": (f"{args.distinct} distinct recordings, the other names hard links"
                       if args.distinct else "every file distinct"),
        "runs": runs,
    }
    for scorer in scorers:
        by = {r["engine"]: r for r in runs if r["scorer"] == scorer}
        if "local" not in by or "ray" not in by:
            continue
        ratios = {key: round(by["ray"][key] / by["local"][key], 3)
                  for key in ("files_per_second", "windows_per_cpu_second",
                              "steady_files_per_second", "steady_windows_per_cpu_second")
                  if key in by["ray"] and key in by["local"]}
        record.setdefault("ray_over_local", {})[scorer] = ratios
        record["goal"] = "Ray Data within 20 % of the local pool (ratio >= 0.8)"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
