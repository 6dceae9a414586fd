"""Class-conditional policies: choosing, saving and reading them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tympan.augment.policy import choose_policy, load_policy, save_policy, uniform_policy
from tympan.errors import DatasetError


def test_choose_keeps_sets_that_helped_best_first() -> None:
    deltas = {"dog": {"TS": 0.05, "PS1": 0.10, "DRC": -0.02, "all": 0.2},
              "rain": {"TS": -0.05, "PS1": 0.0}}
    assert choose_policy(deltas) == {"dog": ["PS1", "TS"], "rain": []}
    assert choose_policy(deltas, min_delta=0.06) == {"dog": ["PS1"], "rain": []}
    assert choose_policy(deltas, sets=["TS"]) == {"dog": ["TS"], "rain": []}


def test_uniform_policy_expands_all_and_none() -> None:
    assert uniform_policy(["a"], ["all"]) == {"a": ["TS", "PS1", "PS2", "DRC", "BG"]}
    assert uniform_policy(["a", "b"], ["none"]) == {"a": [], "b": []}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = save_policy(tmp_path / "policy.json", {"dog": ["TS"], "rain": []}, min_delta=0.0)
    assert load_policy(path) == {"dog": ["TS"], "rain": []}
    assert json.loads(path.read_text())["min_delta"] == 0.0
    (tmp_path / "bare.json").write_text('{"dog": ["ps1"]}')
    assert load_policy(tmp_path / "bare.json") == {"dog": ["PS1"]}


def test_bad_policy_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        load_policy(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"dog": "TS"}')
    with pytest.raises(DatasetError, match="lists of sets"):
        load_policy(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"dog": ["XX"]}')
    with pytest.raises(DatasetError, match="unknown augmentation set 'XX'"):
        load_policy(tmp_path / "c.json")
    with pytest.raises(ValueError, match="unknown augmentation set"):
        save_policy(tmp_path / "d.json", {"dog": ["XX"]})
