"""FeatureCache: hits, invalidation by content and config, crash safety, bad files, pool."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import synth

from tympan.config import SEED_FEATURES
from tympan.data.cache import FeatureCache, cache_root, log_mel_extractor_id
from tympan.data.sources import discover
from tympan.features import compute_log_mel

SMALL = SEED_FEATURES.replace(sample_rate=16000, n_fft=512, hop_samples=256, n_mels=32)


class Counting:
    """An extractor that records how many clips it was asked to compute."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # stands in for a killed run
        self.calls += 1
        return np.array([wave.mean(), wave.std(), len(wave)], dtype=np.float32)


def _get(cache, manifest, extract, **kw):
    kw.setdefault("workers", 0)
    return cache.get_with(manifest, "test/stats-v1", extract, 16000, progress=False, **kw)


def test_log_mels_match_the_front_end_and_are_read_only(tone_dataset, tmp_path):
    m = discover(tone_dataset)
    features = FeatureCache(tmp_path / "c").get(m, SMALL, workers=0, progress=False)
    assert len(features) == len(m) == 6 and features.manifest.bad_files == []
    from tympan.audio import load_audio

    for clip, spec in zip(features.manifest.clips, features, strict=True):
        expected = compute_log_mel(load_audio(clip.path, 16000), SMALL)
        assert spec.dtype == np.float32 and spec.shape == expected.shape
        np.testing.assert_array_equal(spec, expected)
        assert not spec.flags.writeable
        with pytest.raises(ValueError):
            spec[0, 0] = 1.0


def test_second_run_computes_nothing(tone_dataset, tmp_path):
    m = discover(tone_dataset)
    cache, extract = FeatureCache(tmp_path / "c"), Counting()
    first = _get(cache, m, extract)
    assert extract.calls == 6
    again = _get(FeatureCache(tmp_path / "c"), m, extract)
    assert extract.calls == 6
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_changing_one_file_recomputes_only_that_file(tone_dataset, tmp_path):
    m = discover(tone_dataset)
    cache, extract = FeatureCache(tmp_path / "c"), Counting()
    _get(cache, m, extract)
    changed = m.clips[2].path
    synth.write(changed, synth.tone(777, 0.9, 16000), 16000)
    after = _get(cache, m, extract)
    assert extract.calls == 7
    assert after[2][2] == 0.9 * 16000  # the new content's length, not the old one's
    # a touched but unchanged file is rehashed, found identical, and not recomputed
    os.utime(m.clips[0].path, ns=(1, 1))
    _get(cache, m, extract)
    assert extract.calls == 7


def test_changing_the_config_recomputes_everything_into_a_separate_store(tone_dataset, tmp_path):
    m = discover(tone_dataset)
    cache = FeatureCache(tmp_path / "c")
    a = cache.get(m, SMALL, workers=0, progress=False)
    b = cache.get(m, SMALL.replace(n_mels=16), workers=0, progress=False)
    assert a[0].shape[0] == 32 and b[0].shape[0] == 16
    assert log_mel_extractor_id(SMALL) != log_mel_extractor_id(SMALL.replace(n_mels=16))
    stores = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert len(stores) == 2
    assert cache.get(m, SMALL, workers=0, progress=False)[0].shape[0] == 32


def test_duplicate_content_is_computed_once(tmp_path):
    for label in ("a", "b"):
        synth.write(tmp_path / "d" / label / "same.wav", synth.tone(440, 0.3, 16000), 16000)
    m = discover(tmp_path / "d")
    extract = Counting()
    features = _get(FeatureCache(tmp_path / "c"), m, extract)
    assert extract.calls == 1 and len(features) == 2


def test_a_killed_run_leaves_a_consistent_cache_that_resumes(tmp_path):
    for i in range(10):
        synth.write(tmp_path / "d" / ("ab"[i % 2]) / f"{i}.wav",
                    synth.tone(200 + 50 * i, 0.2, 16000), 16000)
    m = discover(tmp_path / "d")
    cache = FeatureCache(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        _get(cache, m, Counting(fail_after=7), flush_every=3, batch_size=1)
    store = next(p for p in (tmp_path / "c").iterdir() if p.is_dir())
    index = json.loads((store / "index.json").read_text())
    assert len(index["entries"]) == 6  # two flushes of three made it; the seventh did not
    assert not list(store.rglob("*.tmp"))  # nothing half-written
    for name, offset, shape in index["entries"].values():
        shard = np.load(store / "shards" / name, mmap_mode="r")
        assert offset + int(np.prod(shape)) <= shard.size
    resumed = Counting()
    features = _get(cache, m, resumed)
    assert resumed.calls == 4 and len(features) == 10
    # after the run the dataset's entries were compacted into one shard
    shards = {e[0] for e in json.loads((store / "index.json").read_text())["entries"].values()}
    assert len(shards) == 1


def test_a_corrupt_index_is_treated_as_empty(tone_dataset, tmp_path):
    m = discover(tone_dataset)
    cache, extract = FeatureCache(tmp_path / "c"), Counting()
    _get(cache, m, extract)
    store = next(p for p in (tmp_path / "c").iterdir() if p.is_dir())
    (store / "index.json").write_text("{ truncated")
    assert len(_get(cache, m, extract)) == 6 and extract.calls == 12


def test_bad_files_are_skipped_reported_and_remembered(bad_folder, tmp_path):
    m = discover(bad_folder.root)
    cache = FeatureCache(tmp_path / "c")
    features = cache.get(m, SMALL, workers=0, progress=False)
    assert sorted(features.manifest.paths) == sorted(bad_folder.good)
    assert len(features) == len(bad_folder.good)
    reasons = {b.path: b.reason for b in features.manifest.bad_files}
    assert set(reasons) == set(bad_folder.bad)
    for path, cause in bad_folder.bad.items():
        assert cause in reasons[path]
    extract = Counting()  # the NaN file's failure is cached: not decoded again
    again = cache.get_with(m, log_mel_extractor_id(SMALL), extract, 16000, workers=0,
                           progress=False)
    assert extract.calls == 0 and len(again.manifest.bad_files) == len(bad_folder.bad)


def test_embedding_extractor_with_batch_function(tone_dataset, tmp_path):
    m = discover(tone_dataset)
    seen_batches: list[int] = []

    def batch(waves):
        seen_batches.append(len(waves))
        return [np.full((4, 384), w.std(), np.float32) for w in waves]

    features = FeatureCache(tmp_path / "c").get_with(
        m, "mn04/efficientat-frontend/v1", lambda w: batch([w])[0], 32000, batch=batch,
        batch_size=4, workers=0, progress=False)
    assert features.shapes == [(4, 384)] * 6 and sum(seen_batches) == 6
    assert max(seen_batches) == 4
    assert features.extractor_id == "mn04/efficientat-frontend/v1"


def test_process_pool_gives_the_same_features(tmp_path):
    for i in range(16):  # the pool starts at 16 clips
        synth.write(tmp_path / "d" / ("ab"[i % 2]) / f"{i}.flac",
                    synth.chirp(100 + 10 * i, 4000, 0.25, 22050), 22050)
    m = discover(tmp_path / "d")
    pooled = FeatureCache(tmp_path / "c1").get(m, SMALL, workers=2, progress=False)
    inline = FeatureCache(tmp_path / "c2").get(m, SMALL, workers=0, progress=False)
    assert len(pooled) == 16
    for a, b in zip(pooled, inline, strict=True):
        np.testing.assert_array_equal(a, b)


def test_default_root_follows_tympan_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "elsewhere"))
    assert FeatureCache().root == tmp_path / "elsewhere"
    monkeypatch.delenv("TYMPAN_CACHE")
    assert cache_root().parts[-2:] == ("tympan", "features")


def test_clear_empties_the_cache(tone_dataset, tmp_path):
    cache, extract = FeatureCache(tmp_path / "c"), Counting()
    m = discover(tone_dataset)
    _get(cache, m, extract)
    cache.clear()
    _get(cache, m, extract)
    assert extract.calls == 12


def test_a_store_being_filled_by_another_process_is_waited_for_not_duplicated(
        tone_dataset, tmp_path):
    import signal
    import subprocess
    import sys
    import threading

    from tympan.data.cache import CacheBusyWarning
    from tympan.data.cache_store import FeatureStore

    cache = FeatureCache(tmp_path / "cache")
    store_dir = FeatureStore(cache.root, log_mel_extractor_id(SEED_FEATURES)).dir
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tympan.locking import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
         str(store_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    release = threading.Timer(1.0, lambda: os.kill(holder.pid, signal.SIGKILL))
    release.start()
    try:
        with pytest.warns(CacheBusyWarning, match=f"process {holder.pid} is filling"):
            features = cache.get(discover(tone_dataset), SEED_FEATURES, workers=1,
                                 progress=False)
    finally:
        release.cancel()
        holder.kill()
        holder.wait()
    assert len(features) == 6


def test_features_are_read_on_demand_not_mapped_or_held(tone_dataset, tmp_path):
    """Memory holds a record per clip, not its features: no shard is mapped into the process
    (mapped pages would count as resident memory growing with the dataset)."""
    m = discover(tone_dataset)
    features = FeatureCache(tmp_path / "c").get(m, SMALL, workers=0, progress=False)
    first = [np.array(spec) for spec in features]
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(tmp_path / "c") not in maps.read_text()
    part = features.subset([4, 1])
    assert len(part) == 2 and part.shapes == [first[4].shape, first[1].shape]
    assert [c.path for c in part.manifest.clips] == [features.manifest.clips[i].path
                                                     for i in (4, 1)]
    np.testing.assert_array_equal(part[0], first[4])
    np.testing.assert_array_equal(part[1], first[1])
    import pickle

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(part))[1], first[1])


def test_compaction_copies_entries_one_at_a_time_into_one_shard(tmp_path):
    from tympan.data.cache_store import FeatureStore

    store = FeatureStore(tmp_path, "test/compact")
    arrays = {f"h{i}": np.full((2, i + 1), i, dtype=np.float32) for i in range(5)}
    for h, a in arrays.items():  # one shard per entry
        store.add({h: a}, {})
    store.compact(["h3", "h0", "h4", "h1", "h2"])
    entries, _ = store.read_index()
    assert len({e.shard for e in entries.values()}) == 1
    from tympan.data.cache_store import load_entry

    for h, a in arrays.items():
        np.testing.assert_array_equal(load_entry(store.shards, entries[h]), a)
    shard = np.load(store.shards / entries["h0"].shard)  # an ordinary .npy file
    assert shard.dtype == np.float32 and shard.size == sum(a.size for a in arrays.values())
