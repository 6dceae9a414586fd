"""Fuzzing the readers: generated bad inputs must give a clear error, never a crash.

    python bench/fuzz.py                       # 10 000 inputs per target → bench/results/fuzz.json
    python bench/fuzz.py --examples 200 --targets audio,csv

Each target feeds hypothesis-generated inputs to one reader that takes what
users hand tympan: audio files (random bytes, and valid WAVs with mutated
bytes, under every extension), CSV datasets, ESC-50 metadata, folder trees, model
files (a valid file with mutated bytes), augmentation policies and the HTTP
server's upload path (``POST /v1/predict``: raw and multipart bodies). An input
either works or raises a :class:`~tympan.errors.TympanError` (a ``ValueError``
counts for in-memory arguments) whose message names the file; anything else is
a crash. The record counts inputs, outcomes, errors by kind, crashes (goal 0)
and errors that do not name their file.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass
class Outcome:
    """What one target did with its inputs."""

    inputs: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unnamed: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "ok": self.ok, "errors_by_kind": dict(self.errors),
                "crashes": len(self.crashes), "crash_examples": self.crashes[:5],
                "errors_not_naming_the_file": len(self.unnamed),
                "unnamed_examples": self.unnamed[:5]}


def _record(outcome: Outcome, path: Path | None, call: Callable[[], Any]) -> None:
    from tympan.errors import TympanError

    outcome.inputs += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
        outcome.ok += 1
    except (TympanError, ValueError) as exc:
        outcome.errors[type(exc).__name__] += 1
        if path is not None and path.name not in str(exc):
            outcome.unnamed.append(f"{type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # a crash: what fuzzing is for
        outcome.crashes.append(f"{type(exc).__name__}: {exc}\n"
                               + "".join(traceback.format_exc(limit=4))[-1500:])


def _wav_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * rng.standard_normal(8000)).astype(np.float32), 16000,
             format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


EXTENSIONS = [".wav", ".flac", ".ogg", ".mp3", ".aiff", ".csv", ".txt", ""]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
CELL = st.sampled_from(["", "a.wav", "../x.wav", "dog", "cat", "1", "2", "x", "dog, big",
                        '"q"', "\u00e9", "NaN", "-1", "  ", "audio/../a.wav"])


def audio_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    from tympan.audio import load_audio

    valid = _wav_bytes(0)

    @given(st.one_of(st.binary(max_size=4096),
                     st.tuples(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                        max_size=20),
                               st.one_of(st.none(), st.integers(0, len(valid))))
                     .map(lambda t: _mutate(valid, t[0], t[1]))),
           st.sampled_from(EXTENSIONS))
    def run(data: bytes, ext: str) -> None:
        path = work / f"clip{ext}"
        path.write_bytes(data)
        _record(outcome, path, lambda: load_audio(path, 16000, min_duration_seconds=0.1))

    return run


def csv_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    from tympan.data.sources import read_csv

    (work / "a.wav").write_bytes(_wav_bytes(1))
    header = st.sampled_from(["path,label", "path,label,fold", "path,label,fold,group",
                              "label,path", "\ufeffpath,label", "path", ""])

    @given(header, st.lists(st.lists(CELL, max_size=5).map(",".join), max_size=8),
           st.one_of(st.none(), st.binary(max_size=200)))
    def run(head: str, rows: list[str], raw: bytes | None) -> None:
        path = work / "data.csv"
        path.write_bytes(raw if raw is not None else "\n".join([head, *rows]).encode("utf-8"))
        _record(outcome, path, lambda: read_csv(path))

    return run


def esc50_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    from tympan.data.sources import read_esc50

    (work / "meta").mkdir(exist_ok=True)
    columns = "filename,fold,target,category,esc10,src_file,take"

    @given(st.lists(st.lists(CELL, min_size=0, max_size=8).map(",".join), max_size=6),
           st.booleans(), st.booleans())
    def run(rows: list[str], with_header: bool, subset: bool) -> None:
        path = work / "meta" / "esc50.csv"
        path.write_text("\n".join(([columns] if with_header else []) + rows), encoding="utf-8")
        _record(outcome, path,
                lambda: read_esc50(work, subset="esc10" if subset else None))

    return run


def folder_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    from tympan.data.sources import discover

    valid = _wav_bytes(2)

    @given(st.lists(st.tuples(st.sampled_from(["dog", "cat", ".hidden", "a b", "x/y"]),
                              st.sampled_from(["1.wav", "2.flac", "._3.wav", "4.txt", "5"]),
                              st.sampled_from(["valid", "empty", "junk"])), max_size=8))
    def run(files: list[tuple[str, str, str]]) -> None:
        root = work / "tree"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for folder, name, kind in files:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes({"valid": valid, "empty": b"", "junk": b"\x00junk" * 9}[kind])
        _record(outcome, root, lambda: discover(root))

    return run


def modelfile_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    from tympan import models
    from tympan.config import FeatureConfig
    from tympan.models.modelfile import load_model, make_metadata, save_model

    features = FeatureConfig(name="fuzz", sample_rate=16000, n_fft=512, hop_samples=256,
                             n_mels=32, patch_frames=32, patch_hop_frames=16)
    model = models.create("cnn-s", 3, channels=[4, 8], hidden=8)
    source = save_model(work / "good.safetensors", model,
                        make_metadata(model, ["a", "b", "c"], features))
    valid = source.read_bytes()

    @given(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)),
                    max_size=6),
           st.one_of(st.none(), st.integers(0, len(valid))))
    def run(edits: list[tuple[int, int]], cut: int | None) -> None:
        path = work / "model.safetensors"
        path.write_bytes(_mutate(valid, edits, cut))
        _record(outcome, path, lambda: load_model(path))

    return run


def policy_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    from tympan.augment.policy import load_policy

    values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), TEXT,
                                    st.sampled_from(["TS", "PS1", "PS2", "DRC", "BG", "all",
                                                     "TS+PS1", "none", "XX"])),
                          lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)

    @given(st.one_of(values.map(json.dumps), TEXT))
    def run(text: str) -> None:
        path = work / "policy.json"
        path.write_text(text, encoding="utf-8")
        _record(outcome, path, lambda: load_policy(path))

    return run


def _encoded(seed: int, fmt: str) -> bytes:
    """A short noise clip encoded as ``fmt`` (a soundfile format) at a random-ish rate."""
    rng = np.random.default_rng(seed)
    rate = int(rng.choice([8000, 16000, 22050, 44100, 48000]))
    wave = (rng.standard_normal(int(rate * rng.uniform(0.05, 1.0))) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


UPLOAD_TYPES = ["audio/wav", "audio/x-wav", "audio/flac", "audio/ogg", "audio/webm",
                "audio/mpeg", "audio/mp4", "application/octet-stream", "text/plain",
                "application/json", "multipart/form-data", "multipart/form-data; boundary=",
                "multipart/form-data; boundary=zz", "audio/", "", "image/png"]
DECODE_KINDS = {"unsupported_audio", "audio_too_short", "too_large"}


def upload_target(work: Path, outcome: Outcome) -> Callable[[], None]:
    """``POST /v1/predict`` of the HTTP server (tympan[serve]) with generated bodies: raw
    bytes, mutated WAV/FLAC/OGG, broken multipart, any Content-Type and filename. A JSON
    4xx is a clear error (one about the audio must name the upload); a 5xx, a non-JSON
    answer or an exception is a crash."""
    from fastapi.testclient import TestClient

    from tympan import models
    from tympan.config import FeatureConfig
    from tympan.models.modelfile import load_model, make_metadata, save_model
    from tympan.serve.app import ServeSettings, create_app

    features = FeatureConfig(name="fuzz", sample_rate=16000, n_fft=512, hop_samples=256,
                             n_mels=32, patch_frames=32, patch_hop_frames=16)
    model = models.create("cnn-s", 3, channels=[4, 8], hidden=8)
    source = save_model(work / "served.safetensors", model,
                        make_metadata(model, ["a", "b", "c"], features))
    client = TestClient(create_app(load_model(source),
                                   ServeSettings(max_upload_mb=0.2, max_audio_seconds=30.0)),
                        raise_server_exceptions=True)
    client.__enter__()  # runs the lifespan (the batching engine); closed with the process
    # python-multipart logs one warning per malformed body: the server's log, not a result
    logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)
    seeds = [_encoded(i, fmt) for i, fmt in enumerate(["WAV", "FLAC", "OGG"])]
    # printable names: httpx percent-encodes control characters and quotes on the wire
    printable_names = st.text(alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp"), blacklist_characters='"%\\'),
        max_size=60)
    names = st.one_of(st.none(), printable_names,
                      st.sampled_from(["clip.wav", "../../etc/passwd", "/etc/passwd",
                                       "C:\\x.wav", ""]))
    bodies = st.one_of(
        st.binary(max_size=4096),
        st.tuples(st.sampled_from(seeds),
                  st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), max_size=12),
                  st.one_of(st.none(), st.integers(0, 70_000)))
        .map(lambda t: _mutate(t[0], t[1], t[2])))

    @given(bodies, st.sampled_from(UPLOAD_TYPES), st.sampled_from(["raw", "form", "bad-form"]),
           names, st.sampled_from(["file", "audio", ""]))
    def run(body: bytes, content_type: str, shape: str, filename: str | None,
            field_name: str) -> None:
        label = "upload"
        if shape == "raw":
            response = _post(lambda: client.post("/v1/predict", content=body,
                                                  headers={"content-type": content_type}))
        elif shape == "form":
            name = filename if filename is not None else "clip.wav"
            response = _post(lambda: client.post(
                "/v1/predict", files={field_name or "file": (name, body, content_type)}))
            label = name.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
        else:  # a multipart Content-Type over a body that is not (quite) multipart
            response = _post(lambda: client.post(
                "/v1/predict", content=b"--zz\r\n" + body[:2048],
                headers={"content-type": "multipart/form-data; boundary=zz"}))
        outcome.inputs += 1
        if isinstance(response, str):
            outcome.crashes.append(response)
            return
        try:
            answer = response.json()
        except ValueError:
            outcome.crashes.append(f"HTTP {response.status_code}, not JSON: {response.text[:200]}")
            return
        if response.status_code == 200:
            outcome.ok += 1
        elif 400 <= response.status_code < 500 and isinstance(answer, dict) and answer.get(
                "detail"):
            kind = str(answer.get("error", f"http_{response.status_code}"))
            outcome.errors[kind] += 1
            printable = "".join(ch for ch in label if ch.isprintable())[:120] or "upload"
            detail = str(answer["detail"])
            about_request = detail.startswith(("Content-Type", "Content-Length", "request body"))
            if kind in DECODE_KINDS and not about_request and printable not in detail:
                outcome.unnamed.append(f"{kind}: {detail}"[:300])
        else:
            outcome.crashes.append(f"HTTP {response.status_code}: {str(answer)[:300]}")

    return run


def _post(call: Callable[[], Any]) -> Any:
    """The response of ``call``, or a crash description if the server raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except Exception as exc:  # the app raised through TestClient: a crash
        return f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=4))[-1500:]


TARGETS: dict[str, Callable[[Path, Outcome], Callable[[], None]]] = {
    "audio": audio_target, "csv": csv_target, "esc50": esc50_target,
    "folder": folder_target, "modelfile": modelfile_target, "policy": policy_target,
    "upload": upload_target,
}


def run_target(name: str, examples: int, seed: int = 0) -> Outcome:
    """Feed ``examples`` generated inputs to target ``name``; never raises for a crash."""
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix=f"tympan-fuzz-{name}-") as tmp:
        test = TARGETS[name](Path(tmp), outcome)
        configured = settings(max_examples=examples, deadline=None, database=None,
                              derandomize=True, phases=[__import__("hypothesis").Phase.generate],
                              suppress_health_check=list(HealthCheck))(test)
        os.environ.setdefault("HYPOTHESIS_SEED", str(seed))
        configured()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from provenance import cpu_model, git_commit

    commit = git_commit()
    # targets not run now keep their earlier record (each carries its own commit and date)
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = {name: {"commit": earlier.get("commit"), "date": earlier.get("date"), **body}
            for name, body in earlier.get("targets", {}).items()}
    record: dict[str, Any] = {"targets": kept, "examples_per_target": args.examples}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    for name in args.targets.split(","):
        begun = time.perf_counter()
        outcome = run_target(name, args.examples)
        record["targets"][name] = {"commit": commit, "date": now, **outcome.to_dict(),
                                   "seconds": round(time.perf_counter() - begun, 1)}
        body = record["targets"][name]
        print(f"{name:>10}: {body['inputs']} inputs, {body['ok']} ok, "
              f"{sum(outcome.errors.values())} clear errors, {body['crashes']} crashes, "
              f"{body['errors_not_naming_the_file']} not naming the file")
    record.update(wall_seconds=round(time.perf_counter() - started, 1), commit=commit,
                  cpu_model=cpu_model(), load_average=os.getloadavg(),
                  command="python bench/fuzz.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
                  date=now)
    from tympan.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(t["crashes"] == 0 for t in record["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
