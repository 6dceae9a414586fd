"""Short sounds at their own length: spoken words (espeak-ng), many voices, grouped CV.

    python bench/short_sounds.py generate /tmp/short-words     # wavs + CSVs, outside the repo
    nice -n 10 python bench/short_sounds.py measure /tmp/short-words
    python bench/short_sounds.py generate /tmp/short-pairs --words pairs --variants m1,f2
    nice -n 10 python bench/short_sounds.py measure /tmp/short-pairs \
        --out bench/results/short-sounds-pairs.json

``generate`` speaks a list of :data:`WORD_SETS` with espeak-ng (``apt-get install espeak-ng``)
in every accent of :data:`ACCENTS` crossed with the voice variants of
:data:`VARIANTS` at the speeds of :data:`SPEEDS_WPM`, trims the silence
espeak-ng leaves around a word, and writes ``wav/VOICE/WORD-SPEED.wav`` with
``grouped.csv`` (``path,label,group``: the group is the voice) and
``random.csv`` (no group: each clip its own). Words last 0.2–0.9 s.

``measure`` runs the frozen mn04 recipe (the default :class:`TrainConfig`)
with each front end of :data:`FRONT_ENDS`: kept at their own length with a 1 s
minimum (tympan's default), with the trunk's own 32-frame minimum (one time bin
of its output), and short clips padded to the 5 s patch (the behaviour before
``min_patch_frames``). Each is featurised once on an empty cache (its clips/s
is the embedding throughput, decoding included; embedding on one torch thread
beside two decoding processes) and cross-validated by
:func:`tympan.workflows.crossval.cross_validate` twice: random stratified
5-fold (the same voice in training and test) and 5-fold grouped by voice
(unseen voices: what generalising across sources means). Writes
``bench/results/short-sounds.json`` after each front end (earlier runs kept
under ``earlier_runs``). The harder set of the README::

    python bench/short_sounds.py generate /tmp/short-hard --words confusable --noisy
    nice -n 10 python bench/short_sounds.py measure /tmp/short-hard

``--model cnn-s`` trains the seed CNN from scratch instead (the finetune recipe,
``--epochs`` epochs, otherwise the default :class:`TrainConfig`: batch 32, Adam
1e-3 with a cosine schedule, 15 % of each fold's training clips held out for
early stopping and best-epoch selection) with each front end of
:data:`CNN_FRONT_ENDS`: short clips at their own length (at least the conv
stack's 16-frame minimum) against padded to the 3 s patch, and writes
``bench/results/short-sounds-cnn-s.json``::

    nice -n 10 python bench/short_sounds.py measure /tmp/short-pairs --model cnn-s --epochs 15
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

#: word lists: commands (easy: every word differs in several phonemes), and minimal pairs
#: (words one vowel or consonant apart: bat/bad/bet/bed ...)
WORD_SETS = {
    "commands": ["yes", "no", "up", "down", "left", "right", "stop", "go", "on", "off"],
    "pairs": ["bat", "bad", "bet", "bed", "bit", "bid", "but", "bud", "pat", "pad",
              "cat", "cap", "tap", "tab", "dip", "tip", "pit", "pet", "pot", "dot"],
}
#: confusable: the minimal pairs plus sibilants and digits (32 words, several one phoneme apart)
WORD_SETS["confusable"] = [*WORD_SETS["pairs"], "sip", "ship", "zero", "one", "two", "three",
                           "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VARIANTS = ["m1", "m3", "f2", "f4"]
SPEEDS_WPM = [130, 210]
PITCHES = {"m1": 40, "m3": 30, "f2": 60, "f4": 70}

#: front end name → ``min_patch_frames`` (None: pad to the whole 5 s patch, as before)
FRONT_ENDS: dict[str, int | None] = {"own length, min 1 s": 100,
                                     "own length, min 0.32 s": 32,
                                     "padded to 5 s": None}


#: ``--model cnn-s``: front end name → ``min_patch_frames`` of the seed front end (44.1 kHz,
#: hop 1024, 128-frame patches of ~3 s); 16 frames is cnn-s's minimum (2 ** its 4 pools)
CNN_FRONT_ENDS: dict[str, int | None] = {"own length, min 16 frames (0.37 s)": 16,
                                         "padded to the 3 s patch": None}


def speak(word: str, voice: str, speed_wpm: int, pitch: int, path: Path,
          noisy: bool = False) -> None:
    """espeak-ng's rendering of ``word`` as a trimmed 22.05 kHz wav at ``path``.

    ``noisy``: a random gain (-24 to 0 dB), 0-80 ms of lead and tail, and white or
    brown background noise at a random SNR (5-25 dB), seeded by the file name.

    Raises:
        RuntimeError: espeak-ng is missing or fails.
    """
    import librosa
    import soundfile

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install -y espeak-ng")
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch),
                        "-w", raw.name, word], check=True, capture_output=True)
        wave, rate = soundfile.read(raw.name, dtype="float32")
    trimmed, _ = librosa.effects.trim(wave, top_db=35)
    if noisy:
        trimmed = add_noise(trimmed, rate, path.as_posix())
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, trimmed, rate)


def add_noise(wave: np.ndarray, rate: int, seed_text: str) -> np.ndarray:
    """``wave`` at a random gain with random lead/tail and background noise (see :func:`speak`)."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    lead, tail = (int(rng.uniform(0.0, 0.08) * rate) for _ in range(2))
    speech = np.concatenate([np.zeros(lead), wave, np.zeros(tail)])
    noise = rng.standard_normal(len(speech))
    if rng.random() < 0.5:  # brown: integrated white noise, low-frequency rumble
        noise = np.cumsum(noise)
        noise -= np.linspace(noise[0], noise[-1], len(noise))
    snr_db = rng.uniform(5.0, 25.0)
    rms = np.sqrt(np.mean(wave ** 2)) + 1e-12
    noise *= rms / (np.sqrt(np.mean(noise ** 2)) + 1e-12) / 10 ** (snr_db / 20)
    mixed = (speech + noise) * 10 ** (rng.uniform(-24.0, 0.0) / 20)
    return (mixed / max(1.0, float(np.abs(mixed).max()))).astype(np.float32)


def generate(folder: Path, words: list[str], variants: list[str],
             noisy: bool = False) -> dict[str, Any]:
    """Write the dataset to ``folder`` (see the module); returns counts and durations."""
    import soundfile

    rows = []
    for accent in ACCENTS:
        for variant in variants:
            voice = f"{accent}+{variant}"
            for word in words:
                for speed in SPEEDS_WPM:
                    rel = Path("wav") / voice / f"{word}-{speed}.wav"
                    if not (folder / rel).is_file():
                        speak(word, voice, speed, PITCHES[variant], folder / rel, noisy)
                    rows.append((rel.as_posix(), word, voice))
    for name, header in (("grouped.csv", ["path", "label", "group"]),
                         ("random.csv", ["path", "label"])):
        with (folder / name).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([r[:len(header)] for r in rows])
    seconds = [soundfile.info(str(folder / r[0])).duration for r in rows]
    return {"n_clips": len(rows), "n_voices": len(ACCENTS) * len(variants),
            "words": words, "variants": variants, "noisy": noisy,
            "seconds_min": round(min(seconds), 3),
            "seconds_median": round(float(np.median(seconds)), 3),
            "seconds_max": round(max(seconds), 3)}


def embedding_throughput(recipe: Any, manifest: Any, batch_clips: int = 256,
                         threads: int = 1) -> dict[str, Any]:
    """Clips/s of the recipe's embedding alone (waveforms decoded beforehand, untimed),
    ``batch_clips`` clips per extractor call on ``threads`` torch threads; wall and this
    process's CPU seconds (one thread: the idle estimate is clips / CPU seconds, one core)."""
    import torch

    from tympan.audio import load_audio

    extractor = recipe.extractor()
    rate = extractor.feature_config.sample_rate
    waves = [load_audio(c.path, rate) for c in manifest.clips]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        extractor(waves[:8])  # warm-up: first-call allocations
        cpu, started = time.process_time(), time.perf_counter()
        for s in range(0, len(waves), batch_clips):
            extractor(waves[s:s + batch_clips])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        torch.set_num_threads(before)
    return {"clips": len(waves), "torch_threads": threads, "wall_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2), "clips_per_second": round(len(waves) / wall, 1),
            "clips_per_second_idle_estimate": round(len(waves) / (cpu / threads), 1),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def _with_front_end(config: Any, front: Any) -> Any:
    """The frozen recipe of ``config`` with the front end ``front`` (its patching rule)."""
    from tympan.workflows.recipes.frozen import FrozenRecipe

    class Recipe(FrozenRecipe):
        def feature_config(self) -> Any:
            return front

    return Recipe(config)


def _network_with_front_end(config: Any, front: Any) -> Any:
    """The finetune recipe of ``config`` with the front end ``front`` (its patching rule)."""
    from tympan.workflows.recipes.network import NetworkRecipe

    class Recipe(NetworkRecipe):
        def feature_config(self) -> Any:
            return front

    return Recipe(config)


def measure(folder: Path, done: Callable[[dict[str, Any]], None], model: str = "mn04_as",
            epochs: int = 15, only: str | None = None) -> dict[str, Any]:
    """Accuracy (random and voice-grouped 5-fold) and embedding throughput per front end;
    ``done`` gets the result so far after each front end. One torch thread throughout:
    on two shared cores a second OpenMP thread costs more than it gives. ``model`` cnn-s
    trains the seed CNN for ``epochs`` epochs per fit instead (see the module); ``only``
    (``"16,none"``) picks front ends by ``min_patch_frames``."""
    import torch

    torch.set_num_threads(1)

    from tympan import models
    from tympan.config import TrainConfig
    from tympan.data.cache import FeatureCache
    from tympan.data.sources import read_csv
    from tympan.workflows.crossval import cross_validate
    from tympan.workflows.prepared import PreparedData

    grouped = read_csv(folder / "grouped.csv")
    ungrouped = replace(grouped, clips=[replace(c, group=None) for c in grouped.clips])
    network = model != "mn04_as"
    if network:
        config = TrainConfig(model=model, mode="finetune", folds=5, epochs=epochs)
        front_ends = CNN_FRONT_ENDS
    else:
        config = TrainConfig(model="mn04_as", mode="frozen", folds=5)
        front_ends = FRONT_ENDS
    if only is not None:
        wanted = {None if x.strip().lower() == "none" else int(x) for x in only.split(",")}
        front_ends = {k: v for k, v in front_ends.items() if v in wanted}
    base = models.default_features(model).replace(min_patch_frames=None)
    rows = []
    for name, min_frames in front_ends.items():
        front = base.replace(min_patch_frames=min_frames)
        recipe = (_network_with_front_end if network else _with_front_end)(config, front)
        with tempfile.TemporaryDirectory() as empty:  # an empty cache: the real cost
            load = os.getloadavg()[0]
            own_before, kids_before = _cpu_seconds()
            started = time.perf_counter()
            data = recipe.featurise(grouped, cache=FeatureCache(Path(empty)))
            seconds = time.perf_counter() - started
            own, kids = (a - b for a, b in zip(_cpu_seconds(), (own_before, kids_before),
                                               strict=True))
            items = [np.asarray(x) for x in data.items]
        row: dict[str, Any] = {
            "front_end": name, "min_patch_frames": min_frames,
            "featurise_seconds": round(seconds, 1),
            "clips_per_second": round(len(items) / seconds, 1),
            # on a shared machine wall time counts other jobs. featurise embeds on one torch
            # thread while two processes decode: on an idle machine the slower of the two
            # sides (this process's CPU seconds, the decoders' over their two processes) sets
            # the pace
            "cpu_seconds_embedding_process": round(own, 1),
            "cpu_seconds_decode_workers": round(kids, 1),
            "clips_per_second_idle_estimate": round(len(items) / max(own, kids / 2), 1),
            "load_average_1min_at_start": round(load, 2),
        }
        if min_frames is not None and not network:  # padded: featurise's figure says it
            row["embedding_only"] = embedding_throughput(recipe, grouped)
        for split, manifest in (("random", ungrouped), ("grouped by voice", grouped)):
            load, started = os.getloadavg()[0], time.perf_counter()
            cpu = time.process_time()
            cv = cross_validate(recipe, PreparedData(manifest, items, front))
            summary = cv.summary()
            row[split] = {"accuracy_mean": summary["accuracy_mean"],
                          "accuracy_std": summary["accuracy_std"],
                          "folds": [f["accuracy"] for f in summary["folds"]],
                          # training and scoring all folds, one torch thread
                          "cv_wall_seconds": round(time.perf_counter() - started, 1),
                          "cv_cpu_seconds": round(time.process_time() - cpu, 1),
                          "load_average_1min_at_start": round(load, 2)}
            if network:
                row[split]["epochs_run"] = [f.get("info", {}).get("epochs_run")
                                            for f in summary["folds"]]
        rows.append(row)
        embedding = row.get("embedding_only", {})
        timing = (f"CV {row['random']['cv_cpu_seconds']} + "
                  f"{row['grouped by voice']['cv_cpu_seconds']} CPU s" if network else
                  f"embedding alone {embedding.get('clips_per_second')} clips/s (idle est. "
                  f"{embedding.get('clips_per_second_idle_estimate')})")
        print(f"{name:34s} random {row['random']['accuracy_mean']:.1%}  "
              f"grouped {row['grouped by voice']['accuracy_mean']:.1%}  "
              f"{row['clips_per_second']} clips/s featurised (idle est. "
              f"{row['clips_per_second_idle_estimate']}); {timing}", flush=True)
        done(_measured(rows, config, grouped))
    return _measured(rows, config, grouped)


def _measured(rows: list[dict[str, Any]], config: Any, manifest: Any) -> dict[str, Any]:
    import torch

    out = {"rows": rows, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "n_clips": len(manifest)}
    if config.mode == "finetune":  # the schedule every fit of every front end used
        out["model"] = config.model
        out["train_config"] = {k: v for k, v in config.to_dict().items()
                               if k in ("model", "mode", "epochs", "batch_size", "lr",
                                        "optimizer", "lr_schedule", "weight_decay",
                                        "early_stopping_patience", "monitor", "seed", "folds")}
        out["val_fraction"] = 0.15
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["generate", "measure"])
    parser.add_argument("folder", type=Path, help="dataset folder (outside the repository)")
    parser.add_argument("--words", choices=sorted(WORD_SETS), default="commands",
                        help="generate: the word list")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="generate: espeak-ng voice variants crossed with the accents")
    parser.add_argument("--noisy", action="store_true",
                        help="generate: random gain, lead/tail and background noise per clip")
    parser.add_argument("--model", choices=["mn04_as", "cnn-s", "cnn-m"], default="mn04_as",
                        help="measure: the frozen mn04 recipe, or a seed CNN trained from "
                             "scratch (finetune recipe)")
    parser.add_argument("--epochs", type=int, default=15,
                        help="measure --model cnn-*: epochs per fit")
    parser.add_argument("--front-ends", default=None,
                        help="measure: only these front ends, by min_patch_frames ('16,none'); "
                             "rows a run of the same commit and settings wrote to --out for "
                             "the others are kept (two front ends in two processes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/short-sounds.json (mn04), "
                             "short-sounds-MODEL.json (a CNN)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / ("short-sounds.json" if args.model == "mn04_as"
                              else f"short-sounds-{args.model}.json")
    if args.folder.resolve().is_relative_to(ROOT):
        parser.error(f"{args.folder}: write the dataset outside the repository")
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.action == "generate":
        info = generate(args.folder, WORD_SETS[args.words], args.variants.split(","),
                        args.noisy)
        (args.folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info))
        return 0
    from tympan.fileio import atomic_write_text

    commit = git_commit()
    load_before = os.getloadavg()
    info_file = args.folder / "info.json"
    earlier = json.loads(args.out.read_text()) if args.out.is_file() else None

    def write(measured: dict[str, Any]) -> None:
        result = {
            "benchmark": ("spoken words (espeak-ng), frozen mn04 default recipe, 5-fold CV"
                          if args.model == "mn04_as" else
                          f"spoken words (espeak-ng), {args.model} trained from scratch "
                          f"(finetune recipe, {args.epochs} epochs), 5-fold CV"),
            "dataset": json.loads(info_file.read_text()) if info_file.is_file() else {},
            "generator": {"accents": ACCENTS, "speeds_wpm": SPEEDS_WPM,
                          "espeak_ng": _espeak_version()},
            **measured,
            "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                        "load_average_start": [round(x, 2) for x in load_before],
                        "load_average_now": [round(x, 2) for x in os.getloadavg()],
                        "shared": "two cores shared with other engineers' jobs: throughput "
                                  "is a lower bound of an idle machine's"},
            "commit": commit,
            "command": " ".join(["python", "bench/short_sounds.py", *(argv or sys.argv[1:])]),
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        current = json.loads(args.out.read_text()) if args.out.is_file() else None
        if args.front_ends and current is not None and \
                current.get("command", "").split(" --front-ends")[0] == \
                result["command"].split(" --front-ends")[0] and \
                current.get("dataset") == result["dataset"]:
            # a run of the other front ends with the same settings on the same data (e.g. a
            # concurrent process): its rows join this one's, each commit and command named
            mine = {r["front_end"] for r in result["rows"]}
            others = [r for r in current["rows"] if r["front_end"] not in mine]
            for row in others:
                row.setdefault("commit", current.get("commit"))
            for row in result["rows"]:
                row["commit"] = commit
            result["rows"] = [*result["rows"], *others]
            result["command"] = " + ".join(dict.fromkeys([current["command"],
                                                          result["command"]]))
            if "earlier_runs" in current:
                result["earlier_runs"] = current["earlier_runs"]
        elif earlier is not None:  # earlier runs stay, newest first
            result["earlier_runs"] = [{k: v for k, v in earlier.items() if k != "earlier_runs"},
                                      *earlier.get("earlier_runs", [])]
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")

    measure(args.folder, write, args.model, args.epochs, args.front_ends)
    print(f"-> {args.out}")
    return 0


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of its finished children (decoding workers)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _espeak_version() -> str | None:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
