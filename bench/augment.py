"""Benchmark: in-process Rubber Band (pedalboard) vs the seed's `rubberband` command line.

Both sides make the same copies of the same ESC-50 clips with the same number
of workers: for each clip, a time-stretch (TS 1.07: `rubberband -t 0.934579…`)
and a pitch-shift (PS1 −2: `rubberband -p -2`), reading a WAV and writing a
WAV. The clips are first decoded from the dataset's Ogg Vorbis to mono
44.1 kHz WAV temp files; that decoding is not timed, for either side.

- cli: the seed's way, one `rubberband` process per output file, 2 at a time.
- inprocess: `tympan.augment` (pedalboard's Rubber Band) in a 2-process pool,
  each worker reading its WAV, making both copies and writing them
  (pool start-up included in the time).

Both engines are measured: R2 (`rubberband`'s default; ``engine="faster"``)
and R3 (`rubberband --fine`; ``engine="finer"``, tympan's default).

It also measures the per-clip cost behind the online-augmentation default:
on-the-fly Rubber Band + log-mel in the training loop vs reading a cached
variant's log-mel.

    nice -n 10 python bench/augment.py --limit 40          # quick
    nice -n 10 python bench/augment.py --limit 200 --write # bench/results/augment.json

Needs the `rubberband` program (Debian: apt-get install rubberband-cli).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("TYMPAN_DATA", ROOT.parent / "shared" / "datasets")) / "esc50"
RESULT = ROOT / "bench" / "results" / "augment.json"
RATE, SEMITONES = 1.07, -2.0
SAMPLE_RATE = 44100


def cli_job(args: tuple[str, Path, Path, str]) -> None:
    kind, src, dst, engine = args
    flag = ["-t", repr(1.0 / RATE)] if kind == "ts" else ["-p", repr(SEMITONES)]
    engine_flag = ["--fine"] if engine == "finer" else ["--fast"]
    subprocess.run(["rubberband", "-q", *engine_flag, *flag, str(src), str(dst)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def inprocess_job(args: tuple[Path, Path, str]) -> None:
    from tympan.augment.time_stretch import rubberband

    src, out_dir, engine = args
    samples, rate = sf.read(str(src), dtype="float32")
    stretched = rubberband(samples, rate, rate=RATE, engine=engine)  # type: ignore[arg-type]
    shifted = rubberband(samples, rate, semitones=SEMITONES, engine=engine)  # type: ignore[arg-type]
    sf.write(str(out_dir / f"{src.stem}.ts.wav"), stretched, rate, subtype="PCM_16")
    sf.write(str(out_dir / f"{src.stem}.ps.wav"), shifted, rate, subtype="PCM_16")


def run_cli(wavs: list[Path], out_dir: Path, engine: str, workers: int) -> float:
    jobs = [(kind, w, out_dir / f"{w.stem}.{kind}.wav", engine) for w in wavs
            for kind in ("ts", "ps")]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(cli_job, jobs))
    return time.perf_counter() - start


def run_inprocess(wavs: list[Path], out_dir: Path, engine: str, workers: int) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(inprocess_job, [(w, out_dir, engine) for w in wavs]))
    return time.perf_counter() - start


def online_costs(wavs: list[Path], tmp: Path, n: int = 20) -> dict[str, float]:
    """Milliseconds per clip: on-the-fly TS/PS + log-mel vs a cached variant's log-mel."""
    from tympan.augment import PitchShift, TimeStretch
    from tympan.features import compute_log_mel

    clips = [sf.read(str(w), dtype="float32")[0] for w in wavs[:n]]
    ts = TimeStretch(rates=[RATE], p=1.0, seed=0)
    ps = PitchShift(semitones=[SEMITONES], p=1.0, seed=0)
    fast_ts = TimeStretch(rates=[RATE], p=1.0, seed=0, engine="faster")
    compute_log_mel(clips[0])  # warm up (mel matrix, FFT plans)

    def per_clip(fn) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for i, clip in enumerate(clips):
            fn(i, clip)
        return 1000 * (time.perf_counter() - start) / len(clips)

    specs = [compute_log_mel(c) for c in clips]
    for i, spec in enumerate(specs):
        np.save(tmp / f"spec{i}.npy", spec)
    return {
        "logmel_only_ms": per_clip(lambda i, c: compute_log_mel(c)),
        "on_the_fly_ts_r3_plus_logmel_ms": per_clip(lambda i, c: compute_log_mel(ts(c, 44100))),
        "on_the_fly_ps_r3_plus_logmel_ms": per_clip(lambda i, c: compute_log_mel(ps(c, 44100))),
        "on_the_fly_ts_r2_plus_logmel_ms": per_clip(
            lambda i, c: compute_log_mel(fast_ts(c, 44100))),
        "cached_variant_npy_read_ms": per_clip(lambda i, c: np.load(tmp / f"spec{i}.npy")),
        "cached_variant_in_memory_ms": per_clip(lambda i, c: specs[i].copy()),
    }






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ESC-50 folder")
    parser.add_argument("--limit", type=int, default=40, help="clips to use")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines", default="faster,finer")
    parser.add_argument("--write", action="store_true", help=f"write {RESULT}")
    args = parser.parse_args()
    if shutil.which("rubberband") is None:
        sys.exit("rubberband not found: apt-get install rubberband-cli")
    from tympan.audio import load_audio
    from tympan.data.sources import read_esc50
    from tympan.fileio import atomic_write_text

    clips = read_esc50(args.data).clips[: args.limit]
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tympan-bench-") as tmp_name:
        tmp = Path(tmp_name)
        wavs = []
        for clip in clips:  # not timed: both sides start from the same WAVs
            wav = tmp / "in" / f"{clip.path.stem}.wav"
            wav.parent.mkdir(exist_ok=True)
            sf.write(str(wav), load_audio(clip.path, SAMPLE_RATE), SAMPLE_RATE,
                     subtype="PCM_16")
            wavs.append(wav)
        for engine in args.engines.split(","):
            row: dict[str, float] = {}
            for side, runner in (("cli", run_cli), ("inprocess", run_inprocess)):
                out = tmp / f"{side}-{engine}"
                out.mkdir()
                seconds = runner(wavs, out, engine, args.workers)
                row[f"{side}_seconds"] = round(seconds, 3)
                row[f"{side}_clips_per_second"] = round(len(wavs) / seconds, 2)
                shutil.rmtree(out)
            row["ratio"] = round(row["inprocess_clips_per_second"]
                                 / row["cli_clips_per_second"], 2)
            results[engine] = row
            print(f"{engine}: cli {row['cli_clips_per_second']} clips/s, in-process "
                  f"{row['inprocess_clips_per_second']} clips/s, ratio {row['ratio']}x",
                  flush=True)
        online = {k: round(v, 3) for k, v in online_costs(wavs, tmp).items()}
        print("online, ms per clip:", json.dumps(online), flush=True)
    version = subprocess.run(["rubberband", "-V"], capture_output=True, text=True)
    import pedalboard

    record = {
        "benchmark": "augment: in-process Rubber Band (pedalboard) vs rubberband CLI",
        "command": "nice -n 10 python " + " ".join(["bench/augment.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"rubberband_cli": (version.stdout or version.stderr).strip(),
                     "pedalboard": pedalboard.__version__},
        "load_average_1min": {"before": round(load_before[0], 2),
                              "after": round(os.getloadavg()[0], 2)},
        "clips": len(clips),
        "clip": "ESC-50, 5 s, mono 44.1 kHz WAV (decoded beforehand, untimed)",
        "per_clip_outputs": ["TS 1.07 (rubberband -t 1/1.07)", "PS1 -2 (rubberband -p -2)"],
        "workers": args.workers,
        "engines": results,
        "online_ms_per_clip": online,
    }
    if args.write:
        atomic_write_text(RESULT, json.dumps(record, indent=2) + "\n")
        print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
