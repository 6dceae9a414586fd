"""Prepared data: augmented copies follow their source clip and the policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tympan.data.manifest import Clip, Manifest
from tympan.workflows.demo import DEMO_FEATURES
from tympan.workflows.prepared import PreparedData, augmented_variants, with_copies


def _manifest(labels: list[str]) -> Manifest:
    return Manifest([Clip(Path(f"/data/{i}.wav"), label) for i, label in enumerate(labels)],
                    name="toy")


def test_augmented_copies_follow_their_source_and_the_policy() -> None:
    manifest = _manifest(["dog", "dog", "cat"])
    copies = [Clip(Path(f"/aug/{i}.wav"), label, source=src, transform=tag)
              for i, (label, src, tag) in enumerate([
                  ("dog", Path("/data/0.wav"), "TS:1.07"), ("dog", Path("/data/0.wav"), "PS1:2"),
                  ("cat", Path("/data/2.wav"), "TS:0.81"),
                  ("cat", Path("/elsewhere.wav"), "TS:1.0"),
              ])]
    augmented = Manifest(copies, name="aug")
    specs = [np.full((2, 2), float(i)) for i in range(4)]
    every = augmented_variants(manifest, augmented, specs)
    assert [[float(s[0, 0]) for s in v] for v in every] == [[0.0, 1.0], [], [2.0]]
    policy = {"dog": ["PS1"]}
    chosen = augmented_variants(manifest, augmented, specs, policy)
    assert [[float(s[0, 0]) for s in v] for v in chosen] == [[1.0], [], []]


def test_with_copies_attaches_copies_and_names_them_in_the_fingerprint() -> None:
    manifest = _manifest(["dog", "cat"])
    copies = Manifest([Clip(Path("/aug/0.wav"), "dog", source=Path("/data/0.wav"),
                            transform="TS:1.07")], name="aug")
    data = PreparedData(manifest, [np.zeros((2, 2)), np.ones((2, 2))], DEMO_FEATURES)
    aug = PreparedData(copies, [np.full((2, 2), 5.0)], DEMO_FEATURES)
    joined = with_copies(data, aug)
    assert joined.n_copies == 1 and joined.variants is not None
    assert float(joined.variants[0][0][0, 0]) == 5.0 and joined.variants[1] == []
    other = with_copies(data, aug, {"dog": ["PS1"], "cat": []})
    assert other.n_copies == 0
    assert joined.augmented_fingerprint != other.augmented_fingerprint
