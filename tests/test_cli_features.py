"""``tympan features`` and the feature cache under SIGKILL: a rerun ends with the features of
an uninterrupted run, and no half-written entry is ever read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from killing import kill_midway, temporaries, tympan, tympan_command

from tympan.config import FeatureConfig
from tympan.data.cache import FeatureCache
from tympan.data.sources import discover

LIGHT = FeatureConfig(name="light", sample_rate=16000, n_fft=512, hop_samples=256, n_mels=32,
                      patch_frames=32, patch_hop_frames=16)

# fills the cache persisting every 4 clips; each batch takes a while, so a kill lands mid-way
_FILL = '''
import sys, time
import torch
torch.set_num_threads(1)
from tympan.config import FeatureConfig
from tympan.data.cache import FeatureCache
from tympan.data.sources import discover
from tympan.features import compute_log_mel

data, root, config_json = sys.argv[1:4]
config = FeatureConfig.from_json(config_json)
from tympan.data.cache import log_mel_extractor_id

def slow(wave):
    time.sleep(0.03)
    return compute_log_mel(wave, config)

FeatureCache(root).get_with(discover(data), log_mel_extractor_id(config), slow,
                            config.sample_rate, workers=2, progress=False, flush_every=4)
'''


def _store(root: Path) -> Path:
    return next(p for p in root.iterdir() if p.is_dir())


def _cached(root: Path, data: Path) -> list[np.ndarray]:
    """The cached log-mels of ``data``, refusing to compute any (all must be cached)."""
    def refuse(wave: np.ndarray) -> np.ndarray:
        raise AssertionError("a clip was not cached")

    from tympan.data.cache import log_mel_extractor_id

    got = FeatureCache(root).get_with(discover(data), log_mel_extractor_id(LIGHT), refuse,
                                      16000, workers=0, progress=False)
    return [np.array(a) for a in got]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_killed_cache_fill_reruns_to_the_uninterrupted_features(
    seed: int, sound_classes_dir: Path, tmp_path: Path
) -> None:
    import subprocess

    killed_root, straight_root = tmp_path / "killed", tmp_path / "straight"
    argv = [str(sound_classes_dir), str(killed_root), LIGHT.to_json()]
    cmd = [sys.executable, "-c", _FILL]

    def fill(root: Path) -> None:
        done = subprocess.run([*cmd, str(sound_classes_dir), str(root), LIGHT.to_json()],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]

    def index_written() -> bool:
        return any(killed_root.glob("*/index.json"))

    kill_midway(cmd + argv, index_written, seed=seed, max_delay_seconds=0.5)
    store = _store(killed_root)
    index = json.loads((store / "index.json").read_text())
    assert 0 < len(index["entries"]) < 48  # stopped mid-way, with some work saved
    for name, offset, shape in index["entries"].values():  # every entry lies inside a whole shard
        shard = np.load(store / "shards" / name, mmap_mode="r")
        assert offset + int(np.prod(shape)) <= shard.size
    fill(killed_root)  # the rerun: computes what is missing
    fill(straight_root)
    assert temporaries(killed_root) == []
    for a, b in zip(_cached(killed_root, sound_classes_dir),
                    _cached(straight_root, sound_classes_dir), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tympan_features_killed_then_rerun_caches_every_clip(tmp_path: Path) -> None:
    import synth

    data = tmp_path / "data"
    for i in range(240):  # enough work (1 s clips, resampled to 44.1 kHz) to be interrupted
        synth.write(data / "ab"[i % 2] / f"{i:03d}.wav",
                    synth.tone(200 + 7 * i, 1.0, 16000) if i % 2
                    else synth.noise_burst(1.0, 16000, seed=i), 16000)
    root = tmp_path / "cache"
    argv = ["features", str(data), "--cache-dir", str(root), "--workers", "2"]
    # killed while it hashes, decodes (its worker processes alive) or writes
    kill_midway(tympan_command(argv), lambda: root.is_dir(), seed=3, max_delay_seconds=1.0)
    done = tympan(argv)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "240 clips cached" in done.stdout
    assert temporaries(root) == []
    straight = tmp_path / "straight"
    from tympan.config import SEED_FEATURES

    want = FeatureCache(straight).get(discover(data), SEED_FEATURES, workers=0, progress=False)
    got = FeatureCache(root).get(discover(data), SEED_FEATURES, workers=0, progress=False)
    assert len(got) == len(want) == 240
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
