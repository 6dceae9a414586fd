"""Multiply the waveform by a gain in decibels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tympan.augment.base import (
    BaseTransform,
    SeedLike,
    check_choices,
    check_range,
    draw_value,
)


class Gain(BaseTransform):
    """Scale by ``10 ** (gain_db / 20)``; no clipping is applied (values may exceed ±1).

    Args:
        min_gain_db, max_gain_db: gain drawn uniformly in dB (Default: ``-12``, ``12``).
        gains_db: a set of gains to pick from instead of a range.
        p, seed: see :class:`~tympan.augment.base.BaseTransform`.

    Raises:
        ValueError: min_gain_db > max_gain_db, a non-finite gain.
    """

    tag_name = "GAIN"

    def __init__(
        self,
        min_gain_db: float = -12.0,
        max_gain_db: float = 12.0,
        *,
        gains_db: Sequence[float] | None = None,
        p: float = 0.5,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        check_range(min_gain_db, max_gain_db, "min_gain_db", "max_gain_db")
        self.gains_db = None if gains_db is None else check_choices(gains_db, "gains_db")
        self.min_gain_db, self.max_gain_db = float(min_gain_db), float(max_gain_db)

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["gain_db"] = draw_value(self.rng, self.min_gain_db,
                                                    self.max_gain_db, self.gains_db)

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        factor = np.float32(10.0 ** (self.parameters["gain_db"] / 20.0))
        return samples * factor

    def describe(self) -> str | None:
        if not self.parameters.get("should_apply"):
            return None
        return f"GAIN:{self.parameters['gain_db']:g}dB"
