"""Log-mel throughput on ESC-50: tympan vs librosa (the seed's library), same run, same cores.

    nice -n 10 python bench/features.py [--data PATH] [--limit N] [--out FILE]

Two measurements, both in clips per second over the whole (or ``--limit``) set:

* decode excluded: waveforms are decoded once (mono, 44.1 kHz) and held in memory;
  tympan runs ``compute_log_mel`` on batches with ``torch`` using every core;
  librosa runs ``melspectrogram`` + ``power_to_db`` (the seed's settings) in a
  process pool with one process per core (forked, so the waveforms are shared).
* decode included: from the files. tympan fills a fresh :class:`FeatureCache`
  (decode in a pool of ``--workers`` processes, log-mel batched in the main
  process, results written to disk); librosa runs ``librosa.load(sr=44100)`` +
  the same features in a pool of ``--workers`` processes.

The max |difference| in dB between tympan and librosa is taken over every clip
(decode excluded, same waveforms). Results go to ``bench/results/features.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parent.parent
WAVES: list[np.ndarray] = []  # shared with forked librosa workers


def librosa_log_mel(wave: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=wave, sr=44100, n_fft=1024, hop_length=1024,
                                         n_mels=128, fmin=0.0, fmax=22050.0)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)


def _librosa_from_memory(index: int) -> np.ndarray:
    return librosa_log_mel(WAVES[index])


def _librosa_from_file(path: str) -> np.ndarray:
    import librosa

    wave, _ = librosa.load(path, sr=44100)
    return librosa_log_mel(wave)


def _tympan_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core, like the librosa pool


def _tympan_from_memory(indices: list[int]) -> list[np.ndarray]:
    from tympan.features import compute_log_mel

    return list(compute_log_mel(np.stack([WAVES[i] for i in indices])))


def _warm(_: int) -> int:
    librosa_log_mel(np.zeros(44100, np.float32))
    return os.getpid()






def versions() -> dict[str, str]:
    import librosa
    import scipy
    import soundfile
    import soxr
    import torch

    import tympan

    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "librosa": librosa.__version__,
            "scipy": scipy.__version__, "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__, "soxr": soxr.__version__,
            "tympan": tympan.__version__}


def tympan_batched(waves: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Log-mels for ``waves`` in batches of equal-length clips (as the cache does)."""
    from tympan.features import compute_log_mel

    out: list[np.ndarray | None] = [None] * len(waves)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)
    for idx in by_length.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            for i, spec in zip(chunk, compute_log_mel(np.stack([waves[i] for i in chunk])),
                               strict=True):
                out[i] = spec
    return [o for o in out if o is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="ESC-50 folder (default: $TYMPAN_DATA/esc50)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N clips only")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="processes for librosa and for decoding (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "features.json")
    args = parser.parse_args()

    import torch

    from tympan.audio import load_audio
    from tympan.config import SEED_FEATURES
    from tympan.data.cache import FeatureCache
    from tympan.data.fetch import esc50_path
    from tympan.data.sources import read_esc50
    from tympan.fileio import atomic_write_text

    data = args.data or esc50_path()
    if data is None:
        sys.exit("no ESC-50 copy: set TYMPAN_DATA or pass --data (or run tympan datasets fetch)")
    manifest = read_esc50(data)
    if args.limit:
        manifest = manifest.subset(range(min(args.limit, len(manifest))))
    paths = [str(p) for p in manifest.paths]
    n = len(paths)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    load_start = os.getloadavg()
    print(f"{n} clips from {data}; {cores} cores; torch threads {torch.get_num_threads()}, "
          f"librosa pool {args.workers} processes", flush=True)

    t0 = time.perf_counter()
    WAVES.extend(load_audio(p, 44100) for p in paths)
    print(f"preloaded in {time.perf_counter() - t0:.1f} s", flush=True)

    # -- decode excluded -------------------------------------------------------------
    context = multiprocessing.get_context("fork")  # workers share WAVES copy-on-write
    with context.Pool(args.workers) as pool:
        pool.map(_warm, range(args.workers))
        t0 = time.perf_counter()
        reference = pool.map(_librosa_from_memory, range(n), chunksize=8)
        librosa_mem = time.perf_counter() - t0
    # tympan, one single-threaded process per core (before this process runs torch: a
    # forked child must not inherit a live OpenMP pool)
    chunks: list[list[int]] = []
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(WAVES):
        by_length.setdefault(len(w), []).append(i)
    for idx in by_length.values():
        chunks.extend(idx[s:s + args.batch_size] for s in range(0, len(idx), args.batch_size))
    with context.Pool(args.workers, initializer=_tympan_init) as pool:
        pool.map(_tympan_from_memory, [[0]] * args.workers)
        t0 = time.perf_counter()
        ours_proc = [a for part in pool.map(_tympan_from_memory, chunks) for a in part]
        tympan_proc = time.perf_counter() - t0
    order = [i for c in chunks for i in c]
    proc_diff = max(float(np.abs(a - reference[i]).max()) for a, i in zip(ours_proc, order,
                                                                           strict=True))
    tympan_batched(WAVES[:args.batch_size], args.batch_size)  # warm-up (filterbank, threads)
    t0 = time.perf_counter()
    ours = tympan_batched(WAVES, args.batch_size)
    tympan_mem = time.perf_counter() - t0
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, reference, strict=True))
    print(f"decode excluded: tympan {n / tympan_mem:.0f} clips/s, librosa "
          f"{n / librosa_mem:.0f} clips/s ({librosa_mem / tympan_mem:.1f}x), "
          f"max |diff| {max_diff:.2e} dB; tympan in {args.workers} single-thread processes "
          f"{n / tympan_proc:.0f} clips/s ({librosa_mem / tympan_proc:.1f}x)", flush=True)

    # -- decode included -------------------------------------------------------------
    with context.Pool(args.workers) as pool:
        pool.map(_warm, range(args.workers))
        t0 = time.perf_counter()
        from_files = pool.map(_librosa_from_file, paths, chunksize=8)
        librosa_files = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cached = FeatureCache(Path(tmp)).get(manifest, SEED_FEATURES, workers=args.workers,
                                             progress=False, min_duration_seconds=0.0,
                                             batch_size=args.batch_size)
        tympan_files = time.perf_counter() - t0
        diffs = [float(np.abs(np.asarray(a) - b).max()) for a, b in
                 zip(cached, from_files, strict=True)]
        n_cached = len(cached)
    print(f"decode included: tympan {n_cached / tympan_files:.0f} clips/s (feature cache, "
          f"{args.workers} decode processes), librosa {n / librosa_files:.0f} clips/s "
          f"({librosa_files / tympan_files:.1f}x)", flush=True)

    result = {
        "benchmark": "log-mel features, ESC-50",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": git_commit(),
        "machine": {"cpu": cpu_model(), "cores": cores, "platform": platform.platform(),
                    "load_average_1_5_15_min_at_start": list(load_start),
                    "load_average_1_5_15_min_at_end": list(os.getloadavg())},
        "versions": versions(),
        "data": str(data),
        "clips": n,
        "settings": {"sample_rate": 44100, "n_fft": 1024, "hop_samples": 1024, "n_mels": 128,
                     "f_max_hz": 22050, "top_db": 80, "tympan_batch_size": args.batch_size,
                     "tympan_torch_threads": torch.get_num_threads(),
                     "librosa_processes": args.workers, "decode_processes": args.workers},
        "decode_excluded": {
            "tympan_clips_per_second": n / tympan_mem,
            "librosa_clips_per_second": n / librosa_mem,
            "speedup": librosa_mem / tympan_mem,
            "max_abs_diff_db": max_diff,
            "tympan_processes_clips_per_second": n / tympan_proc,
            "speedup_processes": librosa_mem / tympan_proc,
            "max_abs_diff_db_processes": proc_diff,
            "note": "tympan = compute_log_mel on batches of equal-length clips, torch using "
                    "every core (threads) or one single-thread process per core (processes); "
                    "librosa = one process per core",
        },
        "decode_included": {
            "tympan_clips_per_second": n_cached / tympan_files,
            "librosa_clips_per_second": n / librosa_files,
            "speedup": librosa_files / tympan_files,
            "max_abs_diff_db": max(diffs) if diffs else None,
            "note": "tympan = FeatureCache.get into an empty cache (hashing, decode, log-mel, "
                    "write); librosa = librosa.load(sr=44100) + the same features",
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
