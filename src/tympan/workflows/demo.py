"""A synthetic four-class dataset, and the recipe ``tympan demo`` runs on it.

Classes: steady tones, frequency sweeps (chirps), band-limited noise bursts
and click trains, each with a random level, start time and pitch, written as
16-bit WAV files in a folder per class. Nothing is downloaded, so the demo
runs anywhere; a small front end (16 kHz, 64 mel bands, 0.5 s patches) keeps
it to about a minute on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tympan.config import FeatureConfig, TrainConfig
from tympan.fileio import atomic_path

DEMO_CLASSES = ("tone", "chirp", "noise", "click")

#: The demo's front end: 16 kHz, 32 ms windows, 16 ms hop, 64 mel bands, 0.5 s patches.
DEMO_FEATURES = FeatureConfig(
    name="demo", sample_rate=16000, n_fft=512, hop_samples=256, n_mels=64,
    patch_frames=32, patch_hop_frames=16,
)

#: The demo's recipe without pretrained weights: the small seed CNN, a few epochs, 4-fold CV.
DEMO_RECIPE = TrainConfig(model="cnn-s", mode="finetune", features=DEMO_FEATURES, epochs=8,
                          batch_size=32, lr=3e-3, folds=4, early_stopping_patience=4,
                          val_fraction=0.15)


def demo_recipe(epochs: int | None = None) -> tuple[TrainConfig, str]:
    """The recipe ``tympan demo`` runs, and why: the default recipe (frozen AudioSet
    backbone) when its weights are at hand without a download, else :data:`DEMO_RECIPE`
    (also with ``epochs``, which only the seed CNN uses)."""
    from tympan.models.pretrained import get_pretrained, locate_weights

    default = TrainConfig(folds=4)
    path, _ = locate_weights(default.model)
    if epochs is None and path is not None and path.is_file():
        return default, f"the default: {default.model} frozen + logistic head (weights: {path})"
    why = (f"the seed CNN {DEMO_RECIPE.model}, {epochs or DEMO_RECIPE.epochs} epochs"
           + ("" if epochs is not None else
              f" ({default.model}'s weights {get_pretrained(default.model).file_name} are not "
              "at hand: set $TYMPAN_WEIGHTS to their folder to demo the default recipe)"))
    return (DEMO_RECIPE if epochs is None else DEMO_RECIPE.replace(epochs=epochs)), why


def _event(kind: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sample_rate
    if kind == "tone":
        freq = rng.uniform(300.0, 3000.0)
        return np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    if kind == "chirp":
        f0, f1 = rng.uniform(200.0, 800.0), rng.uniform(2500.0, 6000.0)
        if rng.random() < 0.5:
            f0, f1 = f1, f0
        duration = max(t[-1], 1e-3)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
        return np.sin(phase)
    if kind == "noise":
        noise = rng.standard_normal(n)
        # crude band-limiting: a moving average of random length colours the noise
        width = int(rng.integers(1, 6))
        return np.convolve(noise, np.ones(width) / width, mode="same") * np.sqrt(width)
    if kind == "click":
        out = np.zeros(n)
        period = int(sample_rate / rng.uniform(4.0, 12.0))
        decay = np.exp(-np.arange(64) / rng.uniform(3.0, 10.0))
        for start in range(int(rng.integers(0, period)), n - 64, period):
            out[start:start + 64] += decay * rng.choice([-1.0, 1.0])
        return out
    raise ValueError(f"unknown demo class {kind!r} (known: {', '.join(DEMO_CLASSES)})")


def synth_clip(
    kind: str,
    rng: np.random.Generator,
    *,
    sample_rate: int = 16000,
    duration_seconds: float = 1.0,
) -> np.ndarray:
    """One mono float32 clip ``(samples,)`` of class ``kind`` (see :data:`DEMO_CLASSES`).

    The event fills 50–90 % of the clip at a random offset, with a random gain
    of −30 to −3 dBFS peak and faint background noise.
    """
    n = int(round(duration_seconds * sample_rate))
    length = int(n * rng.uniform(0.5, 0.9))
    event = _event(kind, length, sample_rate, rng)
    ramp = min(64, length // 4)
    if ramp:
        fade = np.linspace(0.0, 1.0, ramp)
        event[:ramp] *= fade
        event[-ramp:] *= fade[::-1]
    event /= max(float(np.abs(event).max()), 1e-9)
    out = 10 ** (-60 / 20) * rng.standard_normal(n)
    offset = int(rng.integers(0, n - length + 1))
    out[offset:offset + length] += 10 ** (rng.uniform(-30.0, -3.0) / 20) * event
    return out.astype(np.float32)


def make_dataset(
    root: str | Path,
    *,
    n_per_class: int = 24,
    classes: tuple[str, ...] = DEMO_CLASSES,
    sample_rate: int = 16000,
    duration_seconds: float = 1.0,
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/<class>-<i>.wav`` (16-bit PCM); returns ``root``.

    Deterministic given ``seed``. Existing files of the same names are left
    alone, so an interrupted generation completes on a second call.
    """
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    for kind in classes:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            clip = synth_clip(kind, rng, sample_rate=sample_rate,
                              duration_seconds=duration_seconds)
            path = folder / f"{kind}-{i:03d}.wav"
            if path.exists():
                continue
            with atomic_path(path) as tmp:
                sf.write(str(tmp), clip, sample_rate, subtype="PCM_16", format="WAV")
    return root


def synth_arrays(
    n_per_class: int, *, classes: tuple[str, ...] = DEMO_CLASSES, sample_rate: int = 16000,
    duration_seconds: float = 1.0, seed: int = 0,
) -> tuple[list[np.ndarray], list[str]]:
    """In-memory clips and labels, the same generator as :func:`make_dataset`."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for kind in classes:
        for _ in range(n_per_class):
            clips.append(synth_clip(kind, rng, sample_rate=sample_rate,
                                    duration_seconds=duration_seconds))
            labels.append(kind)
    return clips, labels


