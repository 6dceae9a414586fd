"""Dynamic range compression: Salamon & Bello's DRC set (sox ``compand`` presets).

Salamon & Bello (2017) made their DRC copies with muda, which runs
``sox compand`` with four presets: two from the Dolby E standard ("music
standard", "film standard") and two from the icecast streaming server
("speech", "radio"). :func:`compand` re-implements that effect in-process, so
the presets keep their published parameters (attack/decay times, a
piecewise-linear transfer curve in dB, output gain, initial level, look-ahead
delay) rather than being approximated by a single threshold/ratio compressor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tympan.augment.base import BaseTransform, SeedLike


@dataclass(frozen=True)
class CompandSettings:
    """One ``sox compand`` setting.

    ``points_db`` is the transfer curve as (input dB, output dB) pairs with
    strictly increasing inputs (levels relative to full scale, ≤ 0); levels
    between points are interpolated linearly in dB, below the first point the
    first point's gain holds, above the last the last one's. ``gain_db`` is
    added after the curve; ``initial_volume_db`` is the level the envelope
    starts from; ``delay_seconds`` is look-ahead (the gain is computed that far
    ahead of the sample it multiplies).
    """

    attack_seconds: float
    decay_seconds: float
    points_db: tuple[tuple[float, float], ...]
    gain_db: float = 0.0
    initial_volume_db: float = 0.0
    delay_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.attack_seconds < 0 or self.decay_seconds < 0:
            raise ValueError("attack_seconds and decay_seconds must be >= 0")
        if not self.points_db:
            raise ValueError("points_db needs at least one (input dB, output dB) pair")
        inputs = [x for x, _ in self.points_db]
        if any(b <= a for a, b in zip(inputs, inputs[1:], strict=False)):
            raise ValueError(f"points_db inputs must be strictly increasing, got {inputs}")
        if any(x > 0 or y > 0 for x, y in self.points_db):
            raise ValueError("points_db levels are relative to full scale and must be <= 0 dB")
        if self.initial_volume_db > 0:
            raise ValueError("initial_volume_db must be <= 0 dB")
        if self.delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")


def _points(flat: Sequence[float]) -> tuple[tuple[float, float], ...]:
    return tuple((float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2))


#: muda's sox presets, as used by Salamon & Bello's DRC set.
DRC_PRESETS: dict[str, CompandSettings] = {
    "music standard": CompandSettings(
        0.1, 0.3, _points([-90, -90, -70, -58, -55, -43, -31, -31, -21, -21, 0, -20]),
        0.0, 0.0, 0.1),
    "film standard": CompandSettings(
        0.1, 0.3, _points([-90, -90, -70, -64, -43, -37, -31, -31, -21, -21, 0, -20]),
        0.0, 0.0, 0.1),
    "speech": CompandSettings(
        0.1, 0.3, _points([-90, -90, -70, -55, -50, -35, -31, -31, -21, -21, 0, -20]),
        0.0, 0.0, 0.1),
    "radio": CompandSettings(
        0.01, 1.0, _points([-90, -90, -70, -70, -60, -20, 0, 0]), -5.0),
}


def _coefficient(seconds: float, sample_rate: int) -> float:
    # sox: a time shorter than one sample follows the input at once.
    if seconds > 1.0 / sample_rate:
        return 1.0 - math.exp(-1.0 / (sample_rate * seconds))
    return 1.0


def _envelope_python(level: np.ndarray, start: float, attack: float,
                     decay: float) -> np.ndarray:
    out = np.empty(level.shape[0], dtype=np.float64)
    v = start
    for i in range(level.shape[0]):
        delta = level[i] - v
        v += delta * (attack if delta > 0.0 else decay)
        out[i] = v
    return out


_envelope_jit: Callable[..., np.ndarray] | None = None


def envelope(level: np.ndarray, start: float, attack: float, decay: float) -> np.ndarray:
    """sox's "leaky pump": a one-pole follower of ``level`` (linear, ``(n,)``),
    rising with coefficient ``attack`` and falling with ``decay``.

    Compiled with numba (a librosa dependency) when it imports; the loop is
    recursive, so numpy cannot vectorise it.
    """
    global _envelope_jit
    if _envelope_jit is None:
        try:
            import numba

            _envelope_jit = numba.njit(cache=True, nogil=True)(_envelope_python)
        except Exception:  # numba missing or unable to compile here: same loop, slower
            _envelope_jit = _envelope_python
    follow = _envelope_jit
    assert follow is not None
    return follow(np.ascontiguousarray(level, dtype=np.float64), float(start),
                         float(attack), float(decay))


def compand(samples: np.ndarray, sample_rate: int, settings: CompandSettings) -> np.ndarray:
    """Apply a ``sox compand`` setting to ``(n,)`` or ``(channels, n)`` float32 samples.

    Channels share one envelope driven by their largest magnitude (sox's
    behaviour with a single attack/decay pair). The output has the input's
    length; values are not clipped.
    """
    multi = samples.ndim == 2
    data = samples if multi else samples[None, :]
    level = np.abs(data).max(axis=0).astype(np.float64)
    volume = envelope(
        level,
        10.0 ** (settings.initial_volume_db / 20.0),
        _coefficient(settings.attack_seconds, sample_rate),
        _coefficient(settings.decay_seconds, sample_rate),
    )
    inputs_db = np.array([x for x, _ in settings.points_db])
    gains_db = np.array([y - x for x, y in settings.points_db]) + settings.gain_db
    volume_db = 20.0 * np.log10(np.maximum(volume, 1e-12))
    gain = 10.0 ** (np.interp(volume_db, inputs_db, gains_db) / 20.0)
    delay = int(settings.delay_seconds * sample_rate)
    if delay > 0:
        # Look-ahead: sample i is scaled by the gain computed at i + delay; the
        # last `delay` samples get the final gain, as sox's drain does.
        n = gain.shape[0]
        shifted = np.empty_like(gain)
        if delay < n:
            shifted[: n - delay] = gain[delay:]
            shifted[n - delay:] = gain[-1]
        else:
            shifted[:] = gain[-1]
        gain = shifted
    out = (data * gain[None, :]).astype(np.float32)
    return out if multi else out[0]


class Compress(BaseTransform):
    """Dynamic range compression with one of the DRC presets (picked uniformly).

    Args:
        presets: names from :data:`DRC_PRESETS` (Default: all four of Salamon &
            Bello's: "music standard", "film standard", "speech", "radio"), or
            a mapping of names to :class:`CompandSettings`.
        p, seed: see :class:`~tympan.augment.base.BaseTransform`.

    Raises:
        ValueError: an unknown or empty preset list.
    """

    tag_name = "DRC"

    def __init__(
        self,
        presets: Sequence[str] | dict[str, CompandSettings] = tuple(DRC_PRESETS),
        *,
        p: float = 0.5,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        if isinstance(presets, dict):
            self.settings = dict(presets)
        else:
            if isinstance(presets, str):
                presets = [presets]
            unknown = [name for name in presets if name not in DRC_PRESETS]
            if unknown:
                raise ValueError(
                    f"unknown DRC preset(s) {', '.join(map(repr, unknown))}; "
                    f"known: {', '.join(map(repr, DRC_PRESETS))}"
                )
            self.settings = {name: DRC_PRESETS[name] for name in presets}
        if not self.settings:
            raise ValueError("Compress needs at least one preset")
        self.preset_names = list(self.settings)

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            index = int(self.rng.integers(len(self.preset_names)))
            self.parameters["preset"] = self.preset_names[index]

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return compand(samples, sample_rate, self.settings[self.parameters["preset"]])

    def describe(self) -> str | None:
        if not self.parameters.get("should_apply"):
            return None
        return f"DRC:{self.parameters['preset']}"

    def __repr__(self) -> str:
        return f"Compress({self.preset_names}, p={self.p})"
