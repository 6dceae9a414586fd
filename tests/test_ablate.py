"""Ablation on a tiny synthetic dataset: same folds per set, honest nested policy."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import tiny_features

from tympan.augment.offline import load_augmented_manifest, make_copies
from tympan.augment.plan import build_variants
from tympan.augment.policy import load_policy
from tympan.config import TrainConfig
from tympan.data.sources import discover
from tympan.workflows import ablate as ablate_module

SR = 16000


CNN = TrainConfig(model="cnn-s", features=tiny_features())

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

    calls: list[dict] = []
    real = ablate_module.cross_validate

    def spy(recipe, data, run_dir=None, **kwargs):  # type: ignore[no-untyped-def]
        folds = np.array([c.fold for c in data.manifest])
        splits = kwargs.get("splits")
        calls.append({
            "copies": sum(len(v) for v in data.variants or []),
            "only": tuple(kwargs["only_folds"]) if kwargs.get("only_folds") else None,
            "splits": None if splits is None else [
                (set(folds[tr].tolist()), set(folds[te].tolist())) for tr, te in splits],
        })
        result = real(recipe, data, run_dir, **kwargs)
        calls[-1]["result"] = result
        return result

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
    main_calls = [c for c in calls if c["splits"] is None and c["only"] is None]
    assert [c["copies"] for c in main_calls] == [0, 12 * 2]
    # The nested ablation: per set, one fit per pair of held-out folds, trained on the rest.
    nested = [c for c in calls if c["splits"] is not None]
    assert [c["copies"] for c in nested] == [0, 12 * 2]
    for c in nested:
        assert c["splits"] == [({3}, {1, 2}), ({2}, {1, 3}), ({1}, {2, 3})]
        assert [f.fold for f in c["result"].folds] == ["1+2", "1+3", "2+3"]
    # Outer fold k's inner CV reads only fits that never trained on k, scored on one fold each.
    none_pairs = nested[0]["result"]
    for outer in ("1", "2", "3"):
        inner = ablate_module._inner_cv(none_pairs, outer, *_splits(manifest))
        assert sorted(f.fold for f in inner.folds) == sorted({"1", "2", "3"} - {outer})
        for f in inner.folds:
            assert {manifest.clips[int(i)].fold for i in f.clip_indices} == {int(f.fold)}
            assert len(f.clip_indices) == 4
    assert set(result.fold_policies) == {"1", "2", "3"}
    for fold, policy in result.fold_policies.items():
        assert set(policy) == {"noise", "tone"}
        assert all(s in ("TS",) for sets in policy.values() for s in sets)
        evaluated = [c for c in calls if c["only"] == (fold,)]
        assert len(evaluated) == 1

    run = tmp_path / "run"
    table = list(csv.DictReader((run / "ablation.csv").read_text().splitlines()))
    assert [r["set"] for r in table] == ["none", "TS", "class-conditional"]
    assert {"accuracy_mean", "fold_1", "fold_2", "fold_3"} <= set(table[0])
    assert "| none |" in (run / "ablation.md").read_text()
    for png in ("delta_heatmap.png", "nested_delta_heatmap.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    policy = load_policy(run / "policy.json")
    assert set(policy) == {"noise", "tone"}
    # With a nested ablation, policy.json comes from it: every clip scored by each
    # pair model that did not train on it.
    assert result.nested is not None
    assert result.nested.results["none"] is nested[0]["result"]
    assert result.nested.results["TS"] is nested[1]["result"]
    deltas = result.nested.deltas()
    for name, sets in policy.items():
        assert sets == (["TS"] if deltas[name]["TS"] > 0 else [])


def _splits(manifest):  # type: ignore[no-untyped-def]
    from tympan.data.splits import fold_names, make_splits

    splits = make_splits(manifest)
    return splits, fold_names(manifest, splits)


def test_ablation_refuses_sets_without_copies(tmp_path: Path) -> None:
    manifest = discover(tiny_dataset(tmp_path / "data"))
    make_copies(manifest, tmp_path / "aug", build_variants([1.1]), workers=1, limit=2)
    copies = load_augmented_manifest(tmp_path / "aug")
    from tympan.errors import DatasetError

    with pytest.raises(DatasetError, match="no copies of set.* PS1"):
        ablate_module.ablate(manifest, copies, CNN, ["none", "PS1"])
    with pytest.raises(ValueError, match="unknown augmentation set"):
        ablate_module.ablate(manifest, copies, CNN, ["none", "PS9"])
    with pytest.raises(DatasetError, match="baseline"):
        ablate_module.ablate(manifest, copies, CNN, ["TS"], class_conditional=True)
    two_folds = manifest.subset(np.flatnonzero([c.fold != 3 for c in manifest.clips]))
    with pytest.raises(DatasetError, match="at least 3 folds"):
        ablate_module.ablate(two_folds, copies, CNN, ["none", "TS"],
                             class_conditional=True)


def test_candidate_sets_default_to_the_single_sets() -> None:
    assert ablate_module._candidates(["none", "TS", "PS1", "all"], None) == ["TS", "PS1"]
    assert ablate_module._candidates(["none", "TS+PS1", "all"], None) == ["TS+PS1"]
    assert ablate_module._candidates(["none", "TS+PS1"], ["ps2", "DRC"]) == ["PS2", "DRC"]
    with pytest.raises(ValueError, match="not none or all"):
        ablate_module._candidates(["none"], ["all"])


def test_resume_fingerprint_names_the_policy_and_only_the_copies_it_uses() -> None:
    from tympan.augment.policy import uniform_policy
    from tympan.data.manifest import Clip, Manifest
    from tympan.workflows.prepared import PreparedData

    originals = [Clip(Path(f"/d/{c}{i}.wav"), c, fold=i) for c in "ab" for i in (1, 2)]
    data = PreparedData(Manifest(originals), [np.zeros((4, 4))] * 4, tiny_features())

    def copies(tags: list[str]) -> Manifest:
        return Manifest([Clip(Path(f"/c/{o.path.stem}.{t}.wav"), o.label, o.fold,
                              source=o.path, transform=t) for o in originals for t in tags])

    def _prepared(manifest: Manifest) -> PreparedData:
        return PreparedData(manifest, [np.ones((4, 4))] * len(manifest), tiny_features())

    ts = copies(["TS:0.9", "TS:1.1"])
    ts_ps = copies(["TS:0.9", "TS:1.1", "PS1:2"])
    uniform_ts = uniform_policy(["a", "b"], ["TS"])
    fp = ablate_module._with_set(data, _prepared(ts), uniform_ts).augmented_fingerprint
    # adding PS1 copies leaves a TS run resumable...
    more = ablate_module._with_set(data, _prepared(ts_ps), uniform_ts)
    assert more.augmented_fingerprint == fp
    assert [len(v) for v in more.variants or []] == [2, 2, 2, 2]
    # ...while another policy over the same copies is another run
    other = ablate_module._with_set(data, _prepared(ts_ps), {"a": ["TS"], "b": []})
    assert other.augmented_fingerprint != fp
    assert [len(v) for v in other.variants or []] == [2, 2, 0, 0]
    # a union names its members' copies
    both = ablate_module._with_set(data, _prepared(ts_ps), {"a": ["TS+PS1"], "b": []})
    assert [len(v) for v in both.variants or []] == [3, 3, 0, 0]
