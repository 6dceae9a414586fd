"""FeatureConfig / AudioConfig: JSON round trip, unknown keys, validation."""

from __future__ import annotations

import json

import pytest

from tympan.config import (
    EFFICIENTAT_FEATURES,
    SEED_FEATURES,
    AudioConfig,
    FeatureConfig,
    TrainConfig,
)


@pytest.mark.parametrize("config", [SEED_FEATURES, EFFICIENTAT_FEATURES, AudioConfig()])
def test_json_round_trip(config, tmp_path):
    assert type(config).from_json(config.to_json()) == config
    path = tmp_path / "config.json"
    config.save(path)
    assert type(config).load(path) == config


def test_seed_defaults_are_the_seed_front_end():
    c = SEED_FEATURES
    assert (c.sample_rate, c.n_fft, c.hop_samples, c.n_mels) == (44100, 1024, 1024, 128)
    assert (c.f_min_hz, c.f_max, c.top_db, c.amin, c.ref) == (0.0, 22050.0, 80.0, 1e-10, 1.0)
    assert c.patch_frames == 128 and c.patch_seconds == pytest.approx(128 * 1024 / 44100)


def test_json_ints_become_floats_and_none_survives():
    data = json.loads(SEED_FEATURES.to_json())
    data["f_min_hz"] = 20
    config = FeatureConfig.from_dict(data)
    assert config.f_min_hz == 20.0 and isinstance(config.f_min_hz, float)
    assert config.f_max_hz is None


def test_unknown_keys_are_rejected_by_name():
    data = json.loads(SEED_FEATURES.to_json())
    data["hop_lenght"] = 512
    with pytest.raises(ValueError, match="hop_lenght"):
        FeatureConfig.from_dict(data)


def test_non_object_json_is_rejected():
    with pytest.raises(ValueError, match="JSON object"):
        FeatureConfig.from_json("[1, 2]")


@pytest.mark.parametrize("changes, message", [
    ({"sample_rate": 0}, "sample_rate"),
    ({"f_max_hz": 30000.0}, "Nyquist"),
    ({"win_samples": 2048}, "win_samples"),
    ({"n_mels": 0}, "n_mels"),
    ({"patch_frames": 0}, "patch_frames"),
    ({"norm_scale": 0.0}, "norm_scale"),
    ({"min_patch_frames": 0}, "min_patch_frames"),
    ({"min_patch_frames": 129}, "min_patch_frames"),
])
def test_invalid_values_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        SEED_FEATURES.replace(**changes)


def test_configs_are_hashable_and_compare_by_value():
    assert SEED_FEATURES.replace(n_mels=64) == FeatureConfig(n_mels=64)
    assert len({SEED_FEATURES, FeatureConfig(), EFFICIENTAT_FEATURES}) == 2


def test_a_nested_block_of_the_wrong_shape_is_an_error_not_a_dict():
    from tympan.config import TrainConfig

    with pytest.raises(ValueError, match=r"TrainConfig.features: .*FeatureConfig.*unknown field"):
        TrainConfig.from_dict({"features": {"sample_rat": 16000}})
    with pytest.raises(ValueError, match=r"TrainConfig.features: FeatureConfig: expected a JSON"):
        TrainConfig.from_dict({"features": "seed"})


def test_config_files_fail_with_the_file_and_the_problem(tmp_path):
    from tympan.config import TrainConfig
    from tympan.errors import ConfigError

    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        TrainConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"epochs": 3,}')
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON \(line 1"):
        TrainConfig.load(tmp_path / "bad.json")
    (tmp_path / "key.json").write_text('{"epoch": 3}')
    with pytest.raises(ConfigError, match="key.json: TrainConfig: unknown field.*epoch"):
        TrainConfig.load(tmp_path / "key.json")
    (tmp_path / "nested.json").write_text('{"features": {"n_mels": "many"}}')
    with pytest.raises(ConfigError, match="nested.json"):
        TrainConfig.load(tmp_path / "nested.json")


def test_workers_and_precision_are_checked_where_they_are_set() -> None:
    with pytest.raises(ValueError, match="num_workers .* must be >= 0"):
        TrainConfig(num_workers=-1)
    with pytest.raises(ValueError, match="precision must be one of auto, 32-true"):
        TrainConfig(precision="bogus")
    assert TrainConfig(precision="bf16-true", num_workers=0).precision == "bf16-true"


def test_a_model_file_without_min_patch_frames_pads_short_clips_as_before():
    old = {k: v for k, v in EFFICIENTAT_FEATURES.to_dict().items() if k != "min_patch_frames"}
    assert FeatureConfig.from_dict(old).min_patch_frames is None


@pytest.mark.parametrize("changes, message", [
    ({"devices": 0}, "--devices"),
    ({"nodes": 0}, "--nodes"),
    ({"strategy": "ddp_spawn"}, "best weights and history would not come back"),
    ({"strategy": ""}, "--strategy"),
])
def test_distributed_settings_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)
    assert TrainConfig(devices=4, nodes=2, strategy="ddp").to_dict()["devices"] == 4
