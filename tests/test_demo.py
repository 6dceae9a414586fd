"""The demo: the default recipe when the backbone's weights are at hand, else the seed CNN."""

from __future__ import annotations

from pathlib import Path

import pytest

from tympan.workflows.demo import DEMO_RECIPE, demo_recipe


def test_demo_uses_the_default_recipe_when_the_weights_are_at_hand(mn04_weights: Path,
                                                                   monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(mn04_weights.parent))
    recipe, why = demo_recipe()
    assert recipe.model == "mn04_as" and recipe.mode == "auto" and "frozen" in why
    recipe, _ = demo_recipe(epochs=2)  # epochs only mean something to the seed CNN
    assert recipe == DEMO_RECIPE.replace(epochs=2)


def test_demo_falls_back_to_the_seed_cnn_without_downloading(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TYMPAN_WEIGHTS_CACHE", str(tmp_path / "cache"))
    recipe, why = demo_recipe()
    assert recipe == DEMO_RECIPE
    assert "mn04_as_mAP_432.pt" in why and "TYMPAN_WEIGHTS" in why
    assert not (tmp_path / "cache").exists()  # nothing was downloaded
