"""The feature cache: per-clip features computed once, stored in flat float32 shards.

Layout under the cache root (``$TYMPAN_CACHE``, else the user cache dir ``tympan/features``)::

    hashes.json                      path -> (size, mtime_ns, sha256): files are rehashed
                                     only when their size or mtime changes
    <store>/meta.json                the extractor id (e.g. the FeatureConfig JSON)
    <store>/index.json               content sha256 -> (shard, offset, shape); bad files
    <store>/shards/<id>.npy          flat float32 arrays, one per write

``<store>`` is a hash of the extractor id, so a different feature config (or a
different model) gets its own store; entries are keyed by each file's content
hash, so editing one clip recomputes that clip only. Shards are written to a
temporary name and renamed, then the index is replaced atomically: a killed run
leaves at most an unreferenced shard (deleted on the next run), never a half
entry, and the next run resumes where it stopped. After a run, a dataset whose
entries span several shards is compacted into one contiguous shard.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from tympan.config import FeatureConfig
from tympan.data.cache_store import (
    FeatureStore,
    HashCache,
    ShardReader,
    StoreEntry,
)
from tympan.data.manifest import BadFile, Manifest
from tympan.errors import AudioError, SilentAudioWarning
from tympan.locking import folder_lock
from tympan.progress import clips_progress

Extract = Callable[[np.ndarray], np.ndarray]
BatchExtract = Callable[[list[np.ndarray]], list[np.ndarray]]

#: Below this many clips to decode, starting worker processes costs more than it saves.
_MIN_CLIPS_FOR_POOL = 16


def cache_root() -> Path:
    """``$TYMPAN_CACHE``, else the user cache dir ``tympan/features``."""
    env = os.environ.get("TYMPAN_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tympan")) / "features"


def log_mel_extractor_id(config: FeatureConfig) -> str:
    """The extractor id under which :meth:`FeatureCache.get` stores ``config``'s log-mels."""
    return "tympan.log_mel/v1:" + config.to_json(indent=None)


def _missing(store: FeatureStore, clips: Sequence[Any], hashes: Sequence[str]) -> dict[str, Path]:
    """Content hash → path of the clips whose features the store lacks."""
    entries, known_bad = store.read_index()
    todo: dict[str, Path] = {}
    for clip, h in zip(clips, hashes, strict=True):
        if h not in entries and h not in known_bad and h not in todo:
            todo[h] = clip.path
    return todo


def _say_waiting(folder: Path) -> Callable[[int | None], None]:
    def say(pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        warnings.warn(f"{folder}: {who} is filling this feature cache; waiting for it "
                      "(its features are then reused)", CacheBusyWarning, stacklevel=2)
    return say


class CacheBusyWarning(UserWarning):
    """Another process is computing the same features; this one waits for it."""


class CachedFeatures(Sequence[np.ndarray]):
    """Features aligned with ``manifest.clips`` (only the clips that decoded).

    ``features[i]`` is a read-only float32 array, e.g. ``(n_mels, frames)`` for
    log-mels, read from its shard when asked for: memory holds one small record
    per clip (shard, offset, shape), not the features. :meth:`subset` is a view
    of some clips. Files that failed the full decode (e.g. NaN samples) are in
    ``manifest.bad_files`` with their reason.
    """

    def __init__(self, manifest: Manifest, entries: Sequence[StoreEntry], reader: ShardReader,
                 extractor_id: str) -> None:
        self.manifest = manifest
        self.extractor_id = extractor_id
        self._entries = list(entries)
        self._reader = reader

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self._reader.read(self._entries[i])

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [e.shape for e in self._entries]

    def subset(self, indices: Sequence[int] | np.ndarray) -> CachedFeatures:
        """The features (and manifest clips) at ``indices``, still read on demand."""
        entries = [self._entries[int(i)] for i in indices]
        clips = [self.manifest.clips[int(i)] for i in indices]
        manifest = Manifest(clips, name=self.manifest.name, root=self.manifest.root)
        return CachedFeatures(manifest, entries, self._reader, self.extractor_id)


def _decode(path: str, sample_rate: int, min_duration_seconds: float) -> np.ndarray | str:
    """Worker: decode to mono float32 at ``sample_rate``; an AudioError becomes its reason."""
    from tympan.audio import load_audio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SilentAudioWarning)  # silence is valid input
        try:
            return load_audio(path, sample_rate, min_duration_seconds=min_duration_seconds)
        except AudioError as exc:
            return exc.reason


def _decoded(paths: list[Path], sample_rate: int, min_duration_seconds: float,
             workers: int) -> Iterator[np.ndarray | str]:
    """Decode ``paths`` in order; with ``workers > 1`` in a process pool, a bounded window ahead."""
    if workers <= 1 or len(paths) < _MIN_CLIPS_FOR_POOL:
        for p in paths:
            yield _decode(str(p), sample_rate, min_duration_seconds)
        return
    from tympan.parallel import process_pool

    with process_pool(workers) as pool:
        window: deque[Future[np.ndarray | str]] = deque()
        pending = iter(paths)
        for p in pending:
            window.append(pool.submit(_decode, str(p), sample_rate, min_duration_seconds))
            if len(window) >= 4 * workers:
                break
        while window:
            result = window.popleft().result()
            nxt = next(pending, None)
            if nxt is not None:
                window.append(pool.submit(_decode, str(nxt), sample_rate, min_duration_seconds))
            yield result



class FeatureCache:
    """On-disk cache of per-clip features keyed by file content and extractor.

    ``root`` defaults to ``$TYMPAN_CACHE``, else the user cache dir ``tympan/features``.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self._hashes = HashCache(self.root / "hashes.json")

    def get(self, manifest: Manifest, config: FeatureConfig, *, workers: int = 2,
            progress: bool = True, min_duration_seconds: float = 0.1,
            batch_size: int = 8, flush_every: int = 256) -> CachedFeatures:
        """Log-mel ``(n_mels, frames)`` per clip of ``manifest`` under ``config``.

        Missing entries are decoded (``workers`` processes) and computed in
        batches of ``batch_size`` equal-length clips in this process, and
        persisted every ``flush_every`` clips (see :meth:`get_with`).
        """
        from tympan.features import compute_log_mel

        def batch(waves: list[np.ndarray]) -> list[np.ndarray]:
            out: list[np.ndarray | None] = [None] * len(waves)
            by_length: dict[int, list[int]] = {}
            for i, w in enumerate(waves):
                by_length.setdefault(w.shape[-1], []).append(i)
            for idx in by_length.values():
                specs = compute_log_mel(np.stack([waves[i] for i in idx]), config)
                for i, spec in zip(idx, specs, strict=True):
                    out[i] = spec
            return [o for o in out if o is not None]

        import torch

        threads = torch.get_num_threads()
        if workers > 1:
            # the decode processes keep the other cores busy; OpenMP threads competing
            # with them for cores cost more than they give (measured: bench/features.py)
            torch.set_num_threads(1)
        try:
            return self.get_with(
                manifest, log_mel_extractor_id(config),
                lambda w: compute_log_mel(w, config), config.sample_rate,
                batch=batch, workers=workers, progress=progress,
                min_duration_seconds=min_duration_seconds, batch_size=batch_size,
                flush_every=flush_every,
            )
        finally:
            torch.set_num_threads(threads)

    def get_with(self, manifest: Manifest, extractor_id: str, extract: Extract,
                 sample_rate: int, *, batch: BatchExtract | None = None, workers: int = 2,
                 progress: bool = True, min_duration_seconds: float = 0.1,
                 batch_size: int = 8, flush_every: int = 256) -> CachedFeatures:
        """Features from any extractor, cached under ``extractor_id``.

        ``extractor_id`` must name everything that changes the output (model,
        weights version, front end). ``extract`` maps a mono float32 waveform
        ``(samples,)`` at ``sample_rate`` Hz to a float32 array with fixed
        trailing dims, e.g. ``(frames, 384)`` or ``(384,)``; ``batch``, if
        given, maps a list of waveforms to a list of arrays (used in groups of
        ``batch_size``). Results are persisted every ``flush_every`` clips, so
        an interrupted run loses at most that much work. Bad files are skipped
        and reported in the returned manifest's ``bad_files``; they never abort.
        """
        store = FeatureStore(self.root, extractor_id)
        good_clips, hashes, bad_files = [], [], list(manifest.bad_files)
        for clip in manifest.clips:
            try:
                hashes.append(self._hashes.sha256(clip.path))
                good_clips.append(clip)
            except OSError as exc:
                bad_files.append(BadFile(clip.path, f"cannot read file ({exc.strerror or exc})"))
        self._hashes.save()

        if _missing(store, good_clips, hashes):
            # one process fills a store at a time; a second waits, then reads its results
            with folder_lock(store.dir, "feature cache", on_wait=_say_waiting(store.dir)):
                self._compute(store, _missing(store, good_clips, hashes), extract, batch,
                              sample_rate, workers=workers, progress=progress,
                              min_duration_seconds=min_duration_seconds,
                              batch_size=batch_size, flush_every=flush_every,
                              label=f"features {manifest.name}")

        store.compact(hashes)
        entries, known_bad = store.read_index()
        clips, found = [], []
        for clip, h in zip(good_clips, hashes, strict=True):
            if h in known_bad:
                bad_files.append(BadFile(clip.path, known_bad[h]))
                continue
            clips.append(clip)
            found.append(entries[h])
        del hashes, entries  # O(n_clips) strings: not needed past this point
        # shards are opened now, so one that a concurrent run compacts away stays readable
        reader = ShardReader(store.shards, dict.fromkeys(e.shard for e in found))
        result = Manifest(clips, name=manifest.name, root=manifest.root, bad_files=bad_files)
        return CachedFeatures(result, found, reader, extractor_id)

    def _compute(self, store: FeatureStore, todo: dict[str, Path], extract: Extract,
                 batch: BatchExtract | None, sample_rate: int, *, workers: int, progress: bool,
                 min_duration_seconds: float, batch_size: int, flush_every: int,
                 label: str) -> None:
        if not todo:
            return
        hashes, paths = list(todo), list(todo.values())
        done: dict[str, np.ndarray] = {}
        bad: dict[str, str] = {}
        waiting: list[tuple[str, np.ndarray]] = []

        def run_batch() -> None:
            if not waiting:
                return
            waves = [w for _, w in waiting]
            outs = batch(waves) if batch is not None else [extract(w) for w in waves]
            for (h, _), out in zip(waiting, outs, strict=True):
                done[h] = np.ascontiguousarray(out, dtype=np.float32)
            waiting.clear()

        def flush() -> None:
            run_batch()
            if done or bad:
                store.add(done, bad)
                done.clear()
                bad.clear()

        with clips_progress(len(hashes), label, enabled=progress) as advance:
            decoded = _decoded(paths, sample_rate, min_duration_seconds, workers)
            for count, (h, result) in enumerate(zip(hashes, decoded, strict=True), start=1):
                if isinstance(result, str):
                    bad[h] = result
                else:
                    waiting.append((h, result))
                    if len(waiting) >= batch_size:
                        run_batch()
                advance(1)
                if count % flush_every == 0:
                    flush()
            flush()

    def clear(self) -> None:
        """Delete every cached entry under this root (the folder itself stays)."""
        import shutil

        for child in self.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self._hashes = HashCache(self.root / "hashes.json")

