"""Ablation on a tiny synthetic dataset: same folds per set, honest nested policy."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import tiny_features

from tympan import ablate as ablate_module
from tympan.augment.offline import build_variants, load_augmented_manifest, make_copies
from tympan.augment.policy import load_policy
from tympan.config import TrainConfig
from tympan.data.sources import discover

SR = 16000


def tiny_dataset(root: Path) -> Path:
    """2 classes x 3 folds x 2 clips of 1 s: tones vs noise bursts."""
    rows = []
    for fold in (1, 2, 3):
        for i in range(2):
            a = synth.write(root / "a" / f"{fold}-{i}.wav",
                            synth.tone(400 + 50 * i + 20 * fold, 1.0, SR), SR)
            b = synth.write(root / "b" / f"{fold}-{i}.wav",
                            synth.noise_burst(1.0, SR, seed=fold * 7 + i), SR)
            rows += [(a, "tone", fold), (b, "noise", fold)]
    with open(root / "meta.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        writer.writerows([(p.relative_to(root), label, fold) for p, label, fold in rows])
    return root / "meta.csv"


@pytest.mark.slow
def test_ablation_table_heatmap_and_nested_policy(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = discover(tiny_dataset(tmp_path / "data"))
    make_copies(manifest, tmp_path / "aug", build_variants([0.9, 1.1]), workers=1)
    copies = load_augmented_manifest(tmp_path / "aug")
    config = TrainConfig(model="cnn-s", model_kwargs={"channels": [4, 8], "hidden": 8},
                         features=tiny_features(), epochs=1, batch_size=8, val_fraction=0.0,
                         early_stopping_patience=0, seed=3)

    calls: list[tuple[set[int | None], int, tuple[str, ...] | None]] = []
    real = ablate_module.cross_validate

    def spy(data, recipe, run_dir=None, **kwargs):  # type: ignore[no-untyped-def]
        n_copies = sum(len(v) for v in data.variants or [])
        only = kwargs.get("only_folds")
        calls.append(({c.fold for c in data.manifest}, n_copies,
                      tuple(only) if only else None))
        return real(data, recipe, run_dir, **kwargs)

    monkeypatch.setattr(ablate_module, "cross_validate", spy)
    result = ablate_module.ablate(manifest, copies, config, ["none", "TS"], tmp_path / "run",
                                  class_conditional=True)

    # Every set (and the class-conditional run) is tested on the same folds and clips.
    reference = result.results["none"]
    for name in ("TS", "class-conditional"):
        cv = result.results[name]
        assert [f.fold for f in cv.folds] == [f.fold for f in reference.folds]
        for f, g in zip(cv.folds, reference.folds, strict=True):
            assert np.array_equal(f.clip_indices, g.clip_indices)
    # `none` trains without copies, TS with them.
    main_calls = [c for c in calls if c[0] == {1, 2, 3} and c[2] is None]
    assert [n for _, n, _ in main_calls] == [0, 12 * 2]
    # Each outer fold's policy came from runs that never saw that fold.
    inner = [c for c in calls if c[0] != {1, 2, 3}]
    assert sorted(tuple(sorted(f)) for f, _, _ in inner) == sorted(
        [(2, 3), (2, 3), (1, 3), (1, 3), (1, 2), (1, 2)])
    assert set(result.fold_policies) == {"1", "2", "3"}
    for fold, policy in result.fold_policies.items():
        assert set(policy) == {"noise", "tone"}
        assert all(s in ("TS",) for sets in policy.values() for s in sets)
        evaluated = [c for c in calls if c[2] == (fold,)]
        assert len(evaluated) == 1

    run = tmp_path / "run"
    table = list(csv.DictReader((run / "ablation.csv").read_text().splitlines()))
    assert [r["set"] for r in table] == ["none", "TS", "class-conditional"]
    assert {"accuracy_mean", "fold_1", "fold_2", "fold_3"} <= set(table[0])
    assert "| none |" in (run / "ablation.md").read_text()
    assert (run / "delta_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    policy = load_policy(run / "policy.json")
    assert set(policy) == {"noise", "tone"}
    deltas = result.deltas()
    for name, sets in policy.items():
        assert sets == (["TS"] if deltas[name]["TS"] > 0 else [])


def test_ablation_refuses_sets_without_copies(tmp_path: Path) -> None:
    manifest = discover(tiny_dataset(tmp_path / "data"))
    make_copies(manifest, tmp_path / "aug", build_variants([1.1]), workers=1, limit=2)
    copies = load_augmented_manifest(tmp_path / "aug")
    from tympan.errors import DatasetError

    with pytest.raises(DatasetError, match="no copies of set.* PS1"):
        ablate_module.ablate(manifest, copies, TrainConfig(), ["none", "PS1"])
    with pytest.raises(ValueError, match="unknown augmentation set"):
        ablate_module.ablate(manifest, copies, TrainConfig(), ["none", "PS9"])
    with pytest.raises(DatasetError, match="baseline"):
        ablate_module.ablate(manifest, copies, TrainConfig(), ["TS"], class_conditional=True)
