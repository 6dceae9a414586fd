"""Frozen-mn04 variants on ESC-50's own 5 folds: which CPU recipe is most accurate.

    nice -n 10 python bench/accuracy_cpu.py                 # every variant with <= 2 shifts
    nice -n 10 python bench/accuracy_cpu.py --shifts 4      # and the 4-shift ones (2x trunk)
    nice -n 10 python bench/accuracy_cpu.py --variants "freq (default)" freq+logits
    TYMPAN_CACHE=/tmp/empty nice -n 10 python bench/accuracy_cpu.py --variants "tail: last 1 block"

The ``tail: …`` variants fine-tune mn04's last blocks on cached activations of its
frozen early blocks (:mod:`tail_finetune`: their own trunk pass, timed on an empty
cache; ``--tail-cold-seconds``/``--tail-cold-cpu-seconds`` carry that pass's cost into
later runs that find it cached). Each adds two rows: its blend with the logistic head
it was initialised from, and that head alone (the paired baseline).

One trunk pass serves every variant: each clip is embedded once with the
widest summary (:data:`SUPERSET`: per-frequency mean, max and std over time,
the AudioSet hidden layer and logits) at ``--shifts`` circular time shifts
(variants with more are skipped), through the frozen recipe's own featurising and the feature cache.
A variant is a :class:`TrainConfig`; its embedding parts and time shifts are
column and shift slices of that superset (exactly what embedding it alone
computes: the parts are pooled independently from one feature map, and shift
``k`` of ``n`` is shift ``k·S/n`` of ``S``), and it is cross-validated by
:func:`tympan.workflows.crossval.cross_validate` with the recipe its config
makes. ``"pooled"`` is the mean of ``"freq"`` over its frequency bins.
A variant may swap the head (:mod:`probe_heads`: power normalisation, an MLP
with mixup) or be an ensemble: the mean of its member variants' held-out
probabilities, fold by fold (its wall time is the members' together).

Writes ``bench/results/accuracy-cpu.json``: per variant the accuracy (mean,
std, per fold), the head's cross-validation seconds and an estimated wall
time on an empty cache (the superset pass scaled by the variant's share of
trunk passes, plus its CV), with the machine's load average, command, commit
and CPU model. The machine may be shared: the load average says how much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from probe_heads import MlpMixupRecipe, ensemble_folds, power_l2
from provenance import cpu_model, git_commit
from tail_finetune import evaluate_tail, featurise_tail

from tympan.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

SUPERSET = "freq+freqmax+freqstd+hidden+logits"


@dataclass(frozen=True)
class Variant:
    """A named frozen recipe: its :class:`TrainConfig` says embedding, shifts and C grid;
    ``head`` is ``"logistic"`` (the recipe's), ``"power-l2"`` or ``"mlp-mixup"`` (see
    :mod:`probe_heads`); ``members`` (names of other variants) makes it their ensemble;
    ``tail`` (keyword arguments of :class:`tail_finetune.TailRecipe`) fine-tunes mn04's
    last blocks on cached activations instead (its own trunk pass, see that module)."""

    name: str
    config: TrainConfig
    head: str = "logistic"
    members: tuple[str, ...] = ()
    tail: dict[str, Any] | None = None


def _frozen(**kw: Any) -> TrainConfig:
    return TrainConfig(model="mn04_as", mode="frozen", **kw)


WIDE_C = (0.03, 0.1, 0.3, 1.0, 3.0)
VARIANTS = [
    Variant("freq (default)", _frozen()),
    Variant("freq, 1 shift", _frozen(time_shifts=1)),
    Variant("freq, 4 shifts", _frozen(time_shifts=4)),
    Variant("pooled", _frozen(embedding="pooled")),
    Variant("hidden", _frozen(embedding="hidden")),
    Variant("logits", _frozen(embedding="logits")),
    Variant("freq+hidden", _frozen(embedding="freq+hidden")),
    Variant("freq+logits", _frozen(embedding="freq+logits")),
    Variant("freq+logits, 4 shifts", _frozen(embedding="freq+logits", time_shifts=4)),
    Variant("freq+freqmax", _frozen(embedding="freq+freqmax")),
    Variant("freq+freqstd", _frozen(embedding="freq+freqstd")),
    Variant("freq+freqstd+logits", _frozen(embedding="freq+freqstd+logits")),
    Variant("freq+freqmax+logits", _frozen(embedding="freq+freqmax+logits")),
    Variant("freq+logits, wide C", _frozen(embedding="freq+logits", c_grid=WIDE_C)),
    Variant("all parts", _frozen(embedding=SUPERSET)),
    # the C grid: 8 augmented copies per clip without per-clip weights weighed the data
    # term 9 times, i.e. acted as this grid (the cause of the copies' 1.2-point loss?)
    Variant("freq, C x9 (8 unweighted copies)", _frozen(c_grid=(0.9, 2.7, 9.0))),
    Variant("freq, fine C", _frozen(c_grid=(0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0))),
    Variant("freq, 4 shifts, fine C", _frozen(time_shifts=4,
                                              c_grid=(0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0))),
    Variant("freq, power-l2", _frozen(), head="power-l2"),
    Variant("freq, mlp-mixup", _frozen(), head="mlp-mixup"),
    Variant("freq, 4 shifts, mlp-mixup", _frozen(time_shifts=4), head="mlp-mixup"),
    Variant("freqmax", _frozen(embedding="freqmax")),
    Variant("ensemble freq + freqmax", _frozen(), members=("freq (default)", "freqmax")),
    Variant("ensemble freq + logits", _frozen(), members=("freq (default)", "logits")),
    Variant("ensemble freq + freqmax + logits", _frozen(),
            members=("freq (default)", "freqmax", "logits")),
    Variant("ensemble freq + mlp-mixup", _frozen(),
            members=("freq (default)", "freq, mlp-mixup")),
    Variant("ensemble 4 shifts: freq + logits", _frozen(time_shifts=4),
            members=("freq, 4 shifts", "freq+logits, 4 shifts")),
    # fine-tuning the last blocks on cached activations (tail_finetune; fixed a priori:
    # 8 epochs, AdamW lr 1e-3 head / 1e-4 blocks, mixup 0.3, smoothing 0.1, time masks)
    Variant("tail: final conv", _frozen(), head="tail", tail={"last_blocks": 0}),
    Variant("tail: last 1 block", _frozen(), head="tail", tail={"last_blocks": 1}),
    Variant("tail: last 2 blocks", _frozen(), head="tail", tail={"last_blocks": 2}),
    Variant("tail: last 3 blocks", _frozen(), head="tail", tail={"last_blocks": 3}),
]
BY_NAME = {v.name: v for v in VARIANTS}


def part_columns(layout: list[tuple[str, int]], embedding: str) -> np.ndarray:
    """Column indices into the superset of ``embedding``'s parts, in its order."""
    starts, at = {}, 0
    for part, dim in layout:
        starts[part] = (at, dim)
        at += dim
    cols = []
    for part in embedding.split("+"):
        if part == "pooled":
            continue  # derived from freq, see slice_variant
        begin, dim = starts[part]
        cols.append(np.arange(begin, begin + dim))
    return np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)


def slice_variant(items: list[np.ndarray], layout: list[tuple[str, int]],
                  config: TrainConfig, n_freq_bins: int, super_shifts: int) -> list[np.ndarray]:
    """Each clip's ``(patches, super_shifts, superset_dim)`` cut to the variant's
    ``(patches, time_shifts, dim)``."""
    if super_shifts % config.time_shifts:
        raise ValueError(f"time_shifts {config.time_shifts} does not divide {super_shifts}")
    shifts = np.arange(config.time_shifts) * (super_shifts // config.time_shifts)
    parts = config.embedding.split("+")
    cols = part_columns(layout, config.embedding)
    freq_begin = part_columns(layout, "freq")[0]
    freq_dim = dict(layout)["freq"]
    out = []
    for e in items:
        e = e[:, shifts]
        pieces = []
        for part in parts:
            if part == "pooled":
                freq = e[..., freq_begin:freq_begin + freq_dim]
                pieces.append(freq.reshape(*freq.shape[:-1], -1, n_freq_bins).mean(axis=-1))
            else:
                pieces.append(e[..., part_columns(layout, part)])
        out.append(np.ascontiguousarray(np.concatenate(pieces, axis=-1), dtype=np.float32))
    assert cols is not None
    return out


_SHARED: dict[str, Any] = {}


def evaluate(variant: Variant) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cross-validate one variant on the shared superset embeddings (see :data:`_SHARED`):
    its table row and its held-out probabilities per fold."""
    import torch

    from tympan.workflows.crossval import cross_validate
    from tympan.workflows.prepared import PreparedData
    from tympan.workflows.recipes import create_recipe

    shared = _SHARED
    if shared["jobs"] > 1:
        torch.set_num_threads(1)  # one core per forked worker
    data = shared["data"]
    recipe = (MlpMixupRecipe(variant.config) if variant.head == "mlp-mixup"
              else create_recipe(variant.config))
    items = slice_variant(shared["items"], shared["layout"], variant.config, shared["n_bins"],
                          shared["shifts"])
    if variant.head == "power-l2":
        items = power_l2(items)
    sliced = PreparedData(data.manifest, items, data.feature_config)
    t0, cpu0 = time.perf_counter(), time.process_time()
    cv = cross_validate(recipe, sliced)
    cv_seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    summary = cv.summary()
    share = variant.config.time_shifts / shared["shifts"]
    row = {
        "name": variant.name,
        "head": variant.head,
        "embedding": variant.config.embedding,
        "time_shifts": variant.config.time_shifts,
        "c_grid": list(variant.config.c_grid),
        "dim": int(sliced.items[0].shape[-1]),
        "accuracy_mean": summary["accuracy_mean"],
        "accuracy_std": summary["accuracy_std"],
        "folds": {f["fold"]: f["accuracy"] for f in summary["folds"]},
        "C": {f.fold: f.info.get("C") for f in cv.folds},
        "cv_seconds": round(cv_seconds, 1),
        "trunk_passes": share,
        "cv_cpu_seconds": round(cpu, 1),
        "estimated_wall_seconds_empty_cache": round(
            shared["featurise_seconds"] * share + cv_seconds, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(f"{variant.name:28s} {row['accuracy_mean']:.2%} ± {row['accuracy_std']:.2%}  "
          f"folds {list(row['folds'].values())}  cv {cv_seconds:.0f} s", flush=True)
    return row, {f.fold: f.probabilities for f in cv.folds}


def ensemble_row(variant: Variant, members: list[dict[str, Any]],
                 probs: list[dict[str, np.ndarray]], truth: dict[str, np.ndarray]
                 ) -> dict[str, Any]:
    """The table row of an ensemble from its members' rows and held-out probabilities."""
    folds = ensemble_folds(probs, truth)
    accs = list(folds.values())
    row = {
        "name": variant.name, "head": "ensemble", "members": list(variant.members),
        "embedding": "+".join(m["embedding"] for m in members),
        "time_shifts": variant.config.time_shifts,
        "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
        "folds": folds,
        "cv_seconds": round(sum(m["cv_seconds"] for m in members), 1),
        "cv_cpu_seconds": round(sum(m["cv_cpu_seconds"] for m in members), 1),
        # one trunk pass serves every member: its share counted once
        "estimated_wall_seconds_empty_cache": round(
            _SHARED["featurise_seconds"] * max(m["trunk_passes"] for m in members)
            + sum(m["cv_seconds"] for m in members), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(f"{variant.name:28s} {row['accuracy_mean']:.2%} ± {row['accuracy_std']:.2%}  "
          f"folds {accs}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "TYMPAN_DATA", "/work/shared/datasets")) / "esc50")
    parser.add_argument("--variants", "--only", nargs="+", dest="variants",
                        help="variant names to run (default: all); an ensemble runs its "
                             "members too")
    parser.add_argument("--shifts", type=int, default=2,
                        help="time shifts of the shared trunk pass (variants need a divisor)")
    parser.add_argument("--cold-seconds", type=float,
                        help="wall seconds of the superset pass on an empty cache, when this "
                             "run found it cached (from the run that computed it)")
    parser.add_argument("--tail-cold-seconds", type=float,
                        help="wall seconds of the tail variants' activation pass on an empty "
                             "cache, when this run found it cached")
    parser.add_argument("--tail-cold-cpu-seconds", type=float,
                        help="CPU seconds of that pass on an empty cache (same case)")
    parser.add_argument("--jobs", type=int, default=1, help="variants fitted in parallel")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy-cpu.json")
    args = parser.parse_args(argv)
    commit = git_commit()
    load_before = os.getloadavg()

    import torch

    from tympan.data.sources import discover
    from tympan.data.splits import make_splits
    from tympan.models.efficientat_transfer import trunk_bins
    from tympan.workflows.recipes import create_recipe

    manifest = discover(args.data)
    unknown = sorted(set(args.variants or ()) - set(BY_NAME))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {sorted(BY_NAME)}")
    wanted = [v for v in VARIANTS if (args.variants is None or v.name in args.variants)
              and args.shifts % v.config.time_shifts == 0]
    needed = {m for v in wanted for m in v.members} | {v.name for v in wanted if not v.members}
    chosen = [v for v in VARIANTS if v.name in needed and v.tail is None]
    tails = [v for v in VARIANTS if v.name in needed and v.tail is not None]
    rows: list[dict[str, Any]] = []
    tail_cost: dict[str, Any] = {}
    if tails:
        tail_data, tail_cost = featurise_tail(manifest, _frozen(), args.tail_cold_seconds,
                                              args.tail_cold_cpu_seconds)
        for v in tails:
            assert v.tail is not None
            rows += evaluate_tail(v.name, v.config, v.tail, tail_data, tail_cost)
        data = tail_data
    featurise_seconds, results = 0.0, []
    if chosen:
        wide = create_recipe(_frozen(embedding=SUPERSET, time_shifts=args.shifts))
        started = time.perf_counter()
        data = wide.featurise(manifest, progress=True)
        featurise_seconds = time.perf_counter() - started
        backbone = wide.extractor().model.backbone
        layout = list(zip(backbone.parts, backbone.part_dims, strict=True))
        n_bins = trunk_bins(data.feature_config.n_mels)
        items = [np.asarray(x) for x in data.items]
        _SHARED.update(items=items, layout=layout, n_bins=n_bins, data=data, shifts=args.shifts,
                       featurise_seconds=args.cold_seconds or featurise_seconds, jobs=args.jobs)
    if args.jobs > 1 and chosen:  # forked workers share the embeddings, each fits heads
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(args.jobs, mp_context=get_context("fork")) as pool:
            results = list(pool.map(evaluate, chosen))
    else:
        results = [evaluate(v) for v in chosen]
    done = {v.name: r for v, r in zip(chosen, results, strict=True)}
    rows += [row for row, _ in results]  # members run for an ensemble are recorded too
    labels = data.manifest.label_ids()
    truth = {str(data.manifest.clips[int(test[0])].fold): labels[test]
             for _, test in make_splits(data.manifest)}
    for v in wanted:
        if v.members:
            rows.append(ensemble_row(v, [done[m][0] for m in v.members],
                                     [done[m][1] for m in v.members], truth))
    previous: dict[str, Any] = {}  # variants measured by earlier --only runs are kept
    previous_superset: dict[str, Any] = {}
    previous_tail: dict[str, Any] | None = None
    if args.out.is_file():
        old = json.loads(args.out.read_text())
        previous = {r["name"]: r for r in old.get("variants", [])}
        previous_superset = old.get("superset", {})
        previous_tail = old.get("tail_pass")
    command = " ".join(["python", "bench/accuracy_cpu.py", *(argv or sys.argv[1:])])
    for row in rows:  # each row says which run measured it: the top level is the last run's
        row.update(command=command, commit=commit)
        previous.pop(row["name"], None)
    kept = list(previous.values())
    result = {
        "benchmark": "frozen mn04_as variants, ESC-50 5-fold (the dataset's folds)",
        "dataset": {"path": str(args.data), "n_clips": len(data.manifest),
                    "fingerprint": data.manifest.fingerprint()},
        "superset": previous_superset if not chosen else {
                     "embedding": SUPERSET, "time_shifts": args.shifts,
                     "featurise_seconds_this_run": round(featurise_seconds, 1),
                     "featurise_seconds_empty_cache": args.cold_seconds or round(
                         featurise_seconds, 1)},
        **({"tail_pass": tail_cost} if tails else {"tail_pass": previous_tail}),
        "variants": rows + kept,
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "load_average_start": [round(x, 2) for x in load_before],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()],
                    "shared": "the two cores are shared with other engineers' jobs: "
                              "wall times are upper bounds of an idle machine's"},
        "commit": commit,
        "command": command,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from tympan.fileio import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
