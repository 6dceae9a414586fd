"""Load test of ``tympan serve`` on loopback: concurrent 5 s uploads, latency, memory, abuse.

    nice -n 10 python bench/serve.py                     # 500 ESC-10 uploads, 64 at a time
    nice -n 10 python bench/serve.py --model M.safetensors --requests 100

Starts ``tympan serve`` on 127.0.0.1 (a free port) in its own process, then:

1. quiet phase: ``--requests // 2`` uploads, ``--concurrency`` at a time → p50/p99;
2. load phase: ``--requests`` uploads while an oversized upload (streamed, no
   Content-Length) and a slow upload (trickling bytes) run at the same time →
   p50/p99 of the others, the status of both abusive uploads, zero 5xx;
3. peer: the same clips through an in-process ``Predictor`` in a separate process
   (no HTTP) → clips/s; the ratio says what serving costs.

Every phase has a fixed number of requests and a time cap (``--time-cap-s``);
the script stops by itself. Without ``--model`` it trains the default recipe
(mn04_as frozen, ESC-10, no CV) once into ``runs/bench/serve-esc10/``. Writes
``bench/results/serve.json`` with the machine, command and commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
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
CLI = [sys.executable, "-c", "from tympan.cli import main; main()"]


def esc10_clips(data: Path) -> list[Path]:
    """The ESC-10 clips (5 s Ogg files) of an ESC-50 folder, in CSV order."""
    import csv

    with open(data / "meta" / "esc50.csv", newline="") as f:
        return [data / "audio" / row["filename"] for row in csv.DictReader(f)
                if row["esc10"].strip().lower() == "true"]


def default_model(data: Path) -> Path:
    """Train (once) the default recipe on ESC-10 without CV; returns its model file."""
    runs = ROOT / "runs" / "bench"
    model = runs / "serve-esc10" / "model.safetensors"
    if not model.is_file():
        subprocess.run([*CLI, "train", str(data), "--subset", "esc10", "--no-cv",
                        "--name", "serve-esc10", "--runs-dir", str(runs), "--overwrite"],
                       check=True)
    return model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM) in MB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1),
            "max_ms": round(float(values.max()), 1)}


async def load_phase(url: str, bodies: list[bytes], n: int, concurrency: int,
                     cap_seconds: float, abuse: bool, max_upload_mb: float) -> dict[str, Any]:
    """``n`` uploads, ``concurrency`` at a time, within ``cap_seconds``; with ``abuse`` an
    oversized and a slow upload run alongside."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    labels: dict[int, str] = {}

    async with httpx.AsyncClient(base_url=url, timeout=cap_seconds, limits=limits) as client:

        async def one(i: int) -> None:
            async with sem:
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/predict?k=1", content=bodies[i % len(bodies)],
                                          headers={"content-type": "audio/ogg"})
                    key = str(r.status_code)
                    if r.status_code == 200:
                        labels[i % len(bodies)] = r.json()["label"]
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                statuses[key] = statuses.get(key, 0) + 1

        async def oversized() -> dict[str, Any]:
            chunk = b"\0" * 65536
            total = int(max_upload_mb * 1e6 * 1.2) // len(chunk)

            async def body() -> Any:
                for _ in range(total):
                    yield chunk

            await asyncio.sleep(1.0)
            start = time.perf_counter()
            try:
                r = await client.post("/v1/predict", content=body(),
                                      headers={"content-type": "audio/wav"})
                status: str | int = r.status_code
            except httpx.HTTPError as exc:  # the server may close the socket after its 413
                status = type(exc).__name__
            return {"status": status, "seconds": round(time.perf_counter() - start, 2),
                    "sent_mb": round(total * len(chunk) / 1e6, 1)}

        async def slow() -> dict[str, Any]:
            async def body() -> Any:  # a 5 s clip's bytes, 1 kB every 0.5 s
                data = bodies[0]
                for i in range(0, len(data), 1000):
                    yield data[i:i + 1000]
                    await asyncio.sleep(0.5)

            await asyncio.sleep(0.5)
            start = time.perf_counter()
            try:
                r = await client.post("/v1/predict", content=body(),
                                      headers={"content-type": "audio/ogg"})
                status: str | int = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            return {"status": status, "seconds": round(time.perf_counter() - start, 2)}

        started = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        side = [asyncio.create_task(oversized()), asyncio.create_task(slow())] if abuse else []
        done, pending = await asyncio.wait(tasks, timeout=cap_seconds)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - started
        side_results = []
        for task in side:
            try:
                side_results.append(await asyncio.wait_for(task, timeout=cap_seconds))
            except asyncio.TimeoutError:
                side_results.append({"status": "unfinished at the time cap"})
    out: dict[str, Any] = {
        "requests": n, "completed": len(latencies), "cancelled_at_time_cap": len(pending),
        "concurrency": concurrency, "wall_seconds": round(wall, 2),
        "throughput_per_second": round(len(latencies) / wall, 2), "statuses": statuses,
        "server_errors_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        **percentiles(latencies), "labels": labels,
    }
    if abuse:
        out["oversized_upload"], out["slow_upload"] = side_results
    return out


def direct_peer(model: Path, clips: list[Path], threads: int) -> dict[str, Any]:
    """Time the same clips through an in-process Predictor, in this (separate) process."""
    import torch

    from tympan.inference.predict import Predictor
    from tympan.models.modelfile import load_model

    torch.set_num_threads(threads)
    predictor = Predictor(load_model(model), device="cpu")
    predictor.predict_proba(clips[:2])  # warm-up
    start = time.perf_counter()
    probabilities = predictor.predict_proba(clips)
    wall = time.perf_counter() - start
    return {"clips": len(clips), "wall_seconds": round(wall, 2),
            "throughput_per_second": round(len(clips) / wall, 2),
            "labels": {i: predictor.classes[int(j)] for i, j in
                       enumerate(probabilities.argmax(axis=1))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model file (default: mn04_as frozen, ESC-10)")
    parser.add_argument("--data", type=Path, default=DATA, help="ESC-50 folder")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--time-cap-s", type=float, default=300.0, help="per phase")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (server and peer)")
    parser.add_argument("--max-upload-mb", type=float, default=25.0)
    parser.add_argument("--upload-timeout-s", type=float, default=30.0)
    parser.add_argument("--peer-clips", type=int, default=100,
                        help="clips the in-process peer scores (the first N distinct uploads)")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    parser.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    clips = esc10_clips(args.data)
    if args.direct:  # the peer, run by the parent in its own process
        print(json.dumps(direct_peer(args.model, clips[:args.peer_clips], args.threads)))
        return 0
    commit = git_commit()
    model = args.model or default_model(args.data)
    bodies = [p.read_bytes() for p in clips]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*CLI, "serve", str(model), "--port", str(port), "--threads", str(args.threads),
         "--max-upload-mb", str(args.max_upload_mb),
         "--upload-timeout-s", str(args.upload_timeout_s)])
    import httpx

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                info = httpx.get(f"{url}/v1/model", timeout=2).json()
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.5)
        rss_idle = peak_rss_mb(server.pid)
        load = os.getloadavg()
        quiet = asyncio.run(load_phase(url, bodies, args.requests // 2, args.concurrency,
                                       args.time_cap_s, False, args.max_upload_mb))
        busy = asyncio.run(load_phase(url, bodies, args.requests, args.concurrency,
                                      args.time_cap_s, True, args.max_upload_mb))
        health = httpx.get(f"{url}/health").json()
        rss_peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    peer_proc = subprocess.run([sys.executable, __file__, "--direct", "--model", str(model),
                                "--data", str(args.data), "--threads", str(args.threads),
                                "--peer-clips", str(args.peer_clips)],
                               capture_output=True, text=True, check=True)
    peer = json.loads(peer_proc.stdout.strip().splitlines()[-1])
    served_labels = {**quiet.pop("labels"), **busy.pop("labels")}
    agree = [served_labels[i] == peer["labels"][str(i)] for i in served_labels
             if str(i) in peer["labels"]]
    peer.pop("labels")
    result = {
        "benchmark": "serve",
        "model": {"path": str(model), "name": info["model"], "classes": len(info["labels"]),
                  "features": info["features"]["name"], "sample_rate": info["sample_rate"]},
        "uploads": {"dataset": "ESC-10 (ESC-50 subset), original Ogg Vorbis 5 s clips",
                    "n_distinct": len(bodies),
                    "mean_bytes": int(np.mean([len(b) for b in bodies]))},
        "quiet": quiet,
        "under_abuse": busy,
        "abuse_p99_over_quiet_p99": (round(busy["p99_ms"] / quiet["p99_ms"], 2)
                                     if quiet["p99_ms"] and busy["p99_ms"] else None),
        "peer_in_process_predictor": peer,
        "served_over_in_process_throughput": round(busy["throughput_per_second"]
                                                   / peer["throughput_per_second"], 2),
        "labels_equal_in_process": f"{sum(agree)}/{len(agree)}",
        "server": {"peak_rss_mb": rss_peak, "rss_after_start_mb": rss_idle,
                   "torch_threads": args.threads, "health": health},
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "commit": commit,
        "command": " ".join(["python", "bench/serve.py", *(argv if argv is not None
                                                            else sys.argv[1:])]),
        "versions": {"python": platform.python_version()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from tympan.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("quiet", "under_abuse", "server",
                                             "served_over_in_process_throughput",
                                             "labels_equal_in_process")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
