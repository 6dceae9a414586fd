"""A featurised dataset: what every recipe trains on and scores.

A recipe turns each clip of a manifest into one array (a log-mel for the
``finetune`` recipe, patch embeddings for ``frozen``): :class:`PreparedData`
holds them with the clips that decoded. Offline augmented copies are
featurised the same way and attached to the clip they were made from
(:func:`with_copies`); they join that clip's training rows only, never its
validation or test fold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tympan.config import FeatureConfig
from tympan.data.manifest import Manifest


@dataclass
class PreparedData:
    """Clips that featurised, one array each, and (optionally) their augmented copies.

    ``items[i]`` is clip ``i``'s features (recipe-specific shape);
    ``variants[i]`` the features of the copies clip ``i`` may train with (after
    the policy), or None without copies. ``seconds`` is the featurising time.
    """

    manifest: Manifest
    items: Sequence[np.ndarray]
    feature_config: FeatureConfig
    variants: list[list[np.ndarray]] | None = None
    augmented_fingerprint: str | None = None
    seconds: float = 0.0

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def labels(self) -> np.ndarray:
        return self.manifest.label_ids()

    @property
    def n_copies(self) -> int:
        """Augmented copies attached to the clips."""
        return sum(len(v) for v in self.variants) if self.variants is not None else 0

    def select(self, indices: np.ndarray) -> Sequence[np.ndarray]:
        """The features of the clips at ``indices``: a lazy view when the items are cached
        features (read from disk when used), else a list."""
        subset = getattr(self.items, "subset", None)
        if subset is not None:
            return subset(indices)  # type: ignore[no-any-return]
        return [self.items[int(i)] for i in indices]


def augmented_variants(
    manifest: Manifest,
    augmented: Manifest,
    items: Sequence[np.ndarray],
    policy: Mapping[str, Sequence[str]] | None = None,
) -> list[list[np.ndarray]]:
    """For each clip of ``manifest``, the features of its copies in ``augmented``.

    A copy belongs to the clip its ``source`` names; it is kept if ``policy``
    is None or lists the copy's set (``"TS"`` of ``"TS:1.07"``; unions like
    ``"TS+PS1"`` and ``"all"`` count for their members) for the clip's class.
    ``items[j]`` is the features of ``augmented.clips[j]``.
    """
    from tympan.augment.presets import expand_sets, tag_set

    allowed = None if policy is None else {c: set(expand_sets(s)) for c, s in policy.items()}
    by_path = {Path(c.path).resolve(): i for i, c in enumerate(manifest.clips)}
    variants: list[list[np.ndarray]] = [[] for _ in manifest.clips]
    for copy, item in zip(augmented.clips, items, strict=True):
        if copy.source is None:
            continue
        owner = by_path.get(Path(copy.source).resolve())
        if owner is None:
            continue
        label = manifest.clips[owner].label
        if allowed is not None and tag_set(copy.transform) not in allowed.get(label, ()):
            continue
        variants[owner].append(item)
    return variants


def with_copies(data: PreparedData, copies: PreparedData,
                policy: Mapping[str, Sequence[str]] | None = None,
                fingerprint: str | None = None) -> PreparedData:
    """``data`` whose clips train with their copies in ``copies`` that ``policy`` allows.

    ``fingerprint`` names the copies for a resumed run's check (default: the
    copies' manifest and the policy).
    """
    variants = augmented_variants(data.manifest, copies.manifest, copies.items, policy)
    if fingerprint is None:
        body = json.dumps({"copies": copies.manifest.fingerprint(),
                           "policy": {c: sorted(s) for c, s in sorted((policy or {}).items())}
                           if policy is not None else None}, sort_keys=True)
        fingerprint = hashlib.sha256(body.encode()).hexdigest()
    return replace(data, variants=variants, augmented_fingerprint=fingerprint,
                   seconds=data.seconds + copies.seconds)


__all__ = ["PreparedData", "augmented_variants", "with_copies"]
