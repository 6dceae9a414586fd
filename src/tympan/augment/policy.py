"""Class-conditional augmentation policies: for each class, the sets that helped it.

A policy maps a class name to the augmentation sets (``"TS"``, ``"PS1"`` …)
whose offline copies its clips train with; ``[]`` means no augmentation for
that class. It is chosen from per-class accuracy deltas of an ablation (each
set against ``none``); an honest choice only ever sees data the evaluated
model trains on (see :mod:`tympan.workflows.ablate`). Saved as JSON::

    {"policy": {"dog": ["TS", "PS1"], "rain": []},
     "min_delta": 0.0, "deltas": {"dog": {"TS": 0.05, ...}}, "source": "..."}

which ``tympan train --augment-policy FILE`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tympan.augment.presets import check_set_names, expand_sets
from tympan.errors import DatasetError
from tympan.fileio import atomic_write_text

Policy = dict[str, list[str]]


def choose_policy(
    deltas: Mapping[str, Mapping[str, float]],
    *,
    min_delta: float = 0.0,
    sets: Sequence[str] | None = None,
) -> Policy:
    """For each class, the single sets whose accuracy delta against ``none`` is above
    ``min_delta`` (in accuracy units, 0.05 = 5 points), best first.

    ``deltas[class][set]`` is per-class accuracy with the set minus without any.
    Only the five single sets are candidates (``"all"`` is their union, not a
    choice of its own); ``sets`` narrows them further.
    """
    allowed = set(expand_sets(sets)) if sets is not None else None
    policy: Policy = {}
    for name, by_set in deltas.items():
        helpful = [(d, s) for s, d in by_set.items()
                   if s not in ("none", "all") and (allowed is None or s in allowed)
                   and d > min_delta]
        policy[name] = [s for _, s in sorted(helpful, key=lambda t: (-t[0], t[1]))]
    return policy


def uniform_policy(classes: Sequence[str], sets: Sequence[str]) -> Policy:
    """Every class trains with the same sets (``["none"]`` → no copies at all)."""
    members = expand_sets(sets)
    return {c: list(members) for c in classes}


def save_policy(path: str | Path, policy: Mapping[str, Sequence[str]], **info: Any) -> Path:
    """Write ``{"policy": …, **info}`` as JSON (atomically); returns the path."""
    for sets in policy.values():
        check_set_names(sets)
    body = {"policy": {c: list(s) for c, s in sorted(policy.items())}, **info}
    path = Path(path)
    atomic_write_text(path, json.dumps(body, indent=2, sort_keys=False) + "\n")
    return path


def load_policy(path: str | Path) -> Policy:
    """Read a policy file (``{"policy": {...}}`` or a bare ``{class: [sets]}``).

    Raises:
        DatasetError: unreadable JSON, a wrong shape, or an unknown set name.
    """
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the augmentation policy ({exc})") from exc
    if isinstance(body, dict) and isinstance(body.get("policy"), dict):
        body = body["policy"]
    if not isinstance(body, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in body.values()
    ):
        raise DatasetError(f'{path}: a policy maps class names to lists of sets, '
                           f'e.g. {{"dog": ["TS", "PS1"]}}')
    try:
        return {str(k): check_set_names(v) for k, v in body.items()}
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None
