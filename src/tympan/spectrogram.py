"""Spectrogram images: the seed's "audio file as a picture", and the raw patches the CNN sees.

:func:`save_spectrogram` draws time (s) against frequency (Hz, on a mel axis)
with a dB colour bar and the file name as title. :func:`save_patches` writes
each ``(n_mels, patch_frames)`` patch as a bare 8-bit greyscale PNG (low frequencies
at the bottom; black = the clip's floor, white = its peak).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tympan.audio import load_audio
from tympan.config import SEED_FEATURES, FeatureConfig
from tympan.errors import TympanError
from tympan.features import compute_log_mel
from tympan.fileio import atomic_write_bytes
from tympan.windows import split_patches


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise TympanError(f"{existing[0]} already exists (pass --overwrite to replace it)")


def log_mel_of_file(path: str | Path, config: FeatureConfig = SEED_FEATURES) -> np.ndarray:
    """Decode ``path`` and return its log-mel ``(n_mels, frames)``.

    Raises:
        AudioError: the file cannot be decoded.
    """
    return compute_log_mel(load_audio(path, config.sample_rate), config)


def save_spectrogram(path: str | Path, out: str | Path, config: FeatureConfig = SEED_FEATURES,
                     *, overwrite: bool = False, dpi: int = 120) -> Path:
    """Draw ``path``'s log-mel spectrogram to the PNG ``out`` and return ``out``.

    Raises:
        AudioError: the file cannot be decoded.
        TympanError: ``out`` exists and ``overwrite`` is False.
    """
    import matplotlib

    matplotlib.use("Agg")
    import librosa.display
    import matplotlib.pyplot as plt

    path, out = Path(path), Path(out)
    _refuse_existing([out], overwrite)
    spec = log_mel_of_file(path, config)
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    try:
        image = librosa.display.specshow(
            spec, sr=config.sample_rate, hop_length=config.hop_samples, n_fft=config.n_fft,
            x_axis="time", y_axis="mel", fmin=config.f_min_hz, fmax=config.f_max, ax=ax,
            htk=config.mel_scale == "htk", cmap="magma",
        )
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz, mel scale)")
        ax.set_title(path.name)
        unit = "dB" if config.log == "db" else "log"
        fig.colorbar(image, ax=ax, format=f"%+.0f {unit}").set_label(unit)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def patch_paths(out: str | Path, n_patches: int) -> list[Path]:
    """``out.png`` → ``out-000.png``, ``out-001.png``, …"""
    out = Path(out)
    return [out.with_name(f"{out.stem}-{i:03d}.png") for i in range(n_patches)]


def save_patches(path: str | Path, out: str | Path, config: FeatureConfig = SEED_FEATURES,
                 *, overwrite: bool = False) -> list[Path]:
    """Write each patch of ``path``'s log-mel as a bare ``n_mels × patch_frames`` PNG.

    Files are named after ``out`` (``out-000.png``, …). Grey levels map the clip's
    own range (min → 0, max → 255), so every patch of a clip shares one scale.

    Raises:
        AudioError: the file cannot be decoded.
        TympanError: an output exists and ``overwrite`` is False.
    """
    from PIL import Image

    spec = log_mel_of_file(path, config)
    patches = np.asarray(split_patches(spec, config.patch_frames, config.patch_hop_frames))
    outputs = patch_paths(out, len(patches))
    _refuse_existing(outputs, overwrite)
    lo, hi = float(spec.min()), float(spec.max())
    levels = np.clip((patches - lo) / max(hi - lo, 1e-6) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for patch, target in zip(levels, outputs, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(patch[::-1]), mode="L").save(buffer, format="PNG")
        atomic_write_bytes(target, buffer.getvalue())
    return outputs
