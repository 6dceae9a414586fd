"""Mix a background recording under the clip at a random signal-to-noise ratio."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tympan.audio import AUDIO_EXTENSIONS, load_audio
from tympan.augment.base import BaseTransform, SeedLike, check_range


def find_audio_files(folder_or_files: str | Path | Sequence[str | Path]) -> list[Path]:
    """Audio files in a folder (recursive, sorted) or an explicit list of files."""
    if isinstance(folder_or_files, (str, Path)):
        root = Path(folder_or_files)
        if not root.exists():
            raise ValueError(f"background folder {root} does not exist")
        if root.is_file():
            return [root]
        return sorted(p for p in root.rglob("*")
                      if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    return [Path(p) for p in folder_or_files]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


class MixBackground(BaseTransform):
    """Add a random background recording at a random SNR in dB.

    The background (decoded to mono at the clip's rate) is cut at a random
    offset, or looped when shorter than the clip, then scaled so that
    ``20·log10(rms(clip) / rms(background)) = snr_db`` and added. A silent
    clip or silent background leaves the clip unchanged (no SNR is defined).

    Args:
        folder_or_files: a folder searched recursively for audio, or a list of files.
        min_snr_db, max_snr_db: SNR drawn uniformly (Default: ``0``, ``19``:
            Salamon & Bello's mixing weight w ∈ [0.1, 0.5] for equal-level
            signals, since 20·log10((1 − w) / w) spans 0 to 19 dB).
        cache_size: decoded backgrounds kept in memory.
        p, seed: see :class:`~tympan.augment.base.BaseTransform`.

    Raises:
        ValueError: no audio in the folder, min_snr_db > max_snr_db.
    """

    tag_name = "BG"

    def __init__(
        self,
        folder_or_files: str | Path | Sequence[str | Path],
        min_snr_db: float = 0.0,
        max_snr_db: float = 19.0,
        *,
        cache_size: int = 64,
        p: float = 0.5,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        check_range(min_snr_db, max_snr_db, "min_snr_db", "max_snr_db")
        self.files = find_audio_files(folder_or_files)
        if not self.files:
            raise ValueError(
                f"no background audio found in {folder_or_files} "
                f"(extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"
            )
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[Path, int], np.ndarray] = OrderedDict()

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["file"] = self.files[int(self.rng.integers(len(self.files)))]
            self.parameters["snr_db"] = float(self.rng.uniform(self.min_snr_db,
                                                               self.max_snr_db))
            # A fraction, not a sample index: the background's length is only
            # known once it is decoded, and drawing must not need decoding.
            self.parameters["offset_fraction"] = float(self.rng.random())

    def _background(self, path: Path, sample_rate: int) -> np.ndarray:
        key = (path, sample_rate)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        audio = load_audio(path, sample_rate)
        self._cache[key] = audio
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return audio

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        n = samples.shape[-1]
        background = self._background(self.parameters["file"], sample_rate)
        if background.shape[0] >= n:
            start = int(self.parameters["offset_fraction"] * (background.shape[0] - n + 1))
            piece = background[start:start + n]
        else:
            start = int(self.parameters["offset_fraction"] * background.shape[0])
            piece = np.resize(np.roll(background, -start), n)
        clip_rms, bg_rms = rms(samples), rms(piece)
        if clip_rms == 0.0 or bg_rms == 0.0:
            return samples
        scale = clip_rms / (bg_rms * 10.0 ** (self.parameters["snr_db"] / 20.0))
        return (samples + np.float32(scale) * piece.astype(np.float32)).astype(np.float32)

    def describe(self) -> str | None:
        if not self.parameters.get("should_apply"):
            return None
        return f"BG:{self.parameters['file'].name}@{self.parameters['snr_db']:.1f}dB"

    def __repr__(self) -> str:
        return (f"MixBackground({len(self.files)} files, {self.min_snr_db}..{self.max_snr_db} dB, "
                f"p={self.p})")
