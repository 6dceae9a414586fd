"""Salamon & Bello's sets: their values, tags and on-the-fly transforms."""

from __future__ import annotations

import pytest
import synth

from tympan.augment.presets import (
    Variant,
    check_set_names,
    expand_sets,
    set_transform,
    set_variants,
    stable_seed,
    tag_set,
)


def test_sets_hold_the_published_values() -> None:
    assert [v.tag for v in set_variants("TS")] == ["TS:0.81", "TS:0.93", "TS:1.07", "TS:1.23"]
    assert [v.tag for v in set_variants("PS1")] == ["PS1:-2", "PS1:-1", "PS1:1", "PS1:2"]
    assert [v.tag for v in set_variants("PS2")] == ["PS2:-3.5", "PS2:-2.5", "PS2:2.5",
                                                     "PS2:3.5"]
    assert [v.value for v in set_variants("DRC")] == ["music standard", "film standard",
                                                       "speech", "radio"]
    assert len(set_variants("BG")) == 4
    assert len(set_variants("all")) == 20
    assert set_variants("none") == []


def test_tags_and_file_tags() -> None:
    assert Variant("PS", "-2").tag == "PS1:-2"
    assert Variant("PS", "-1.5").tag == "PS:-1.5"
    assert Variant("DRC", "music standard").file_tag == "drc-music-standard"
    assert Variant("TS", "1.07").file_tag == "ts1.07"
    assert tag_set("DRC:radio") == "DRC" and tag_set(None) == "none"


def test_set_names_are_checked() -> None:
    assert check_set_names(["ts", "Ps1", "ALL"]) == ["TS", "PS1", "all"]
    assert expand_sets(["none", "TS", "all"]) == ["TS", "PS1", "PS2", "DRC", "BG"]
    with pytest.raises(ValueError, match="unknown augmentation set 'PS3'"):
        check_set_names(["PS3"])
    with pytest.raises(ValueError, match="DRC preset"):
        Variant("DRC", "loud")


def test_online_set_transform_draws_the_sets_values() -> None:
    t = set_transform("PS1", seed=0)
    x = synth.tone(440, 0.2, 16000)
    tags = set()
    for _ in range(20):
        out = t(x, 16000)
        assert out.shape == x.shape
        tags.add(t.describe())
    assert tags == {"PS:-2", "PS:-1", "PS:1", "PS:2"}
    with pytest.raises(ValueError, match="background"):
        set_transform("BG")
    with pytest.raises(ValueError, match="none"):
        set_transform("none")


def test_ts_online_keeps_length_and_variant_stretches() -> None:
    x = synth.tone(440, 0.5, 16000)
    assert set_transform("TS", seed=0)(x, 16000).shape == x.shape
    out = Variant("TS", "1.23").transform()(x, 16000)
    assert len(out) == pytest.approx(len(x) / 1.23, rel=0.01)


def test_stable_seed_is_stable() -> None:
    assert stable_seed(0, "a/b", "TS:1.07") == stable_seed(0, "a/b", "TS:1.07")
    assert stable_seed(0, "a/b", "TS:1.07") != stable_seed(1, "a/b", "TS:1.07")
    assert 0 <= stable_seed("x") < 2**63


def test_a_union_of_sets_is_written_with_plus() -> None:
    from tympan.augment.presets import check_set_names, expand_sets, set_variants

    assert check_set_names(["ts+ps1"]) == ["TS+PS1"]
    assert expand_sets(["TS+PS1"]) == ["TS", "PS1"]
    assert len(set_variants("TS+PS1")) == 8
    with pytest.raises(ValueError, match="unknown augmentation set 'XX'"):
        check_set_names(["TS+XX"])
