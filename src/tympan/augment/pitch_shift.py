"""Pitch-shift with the Rubber Band library, in-process through pedalboard."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tympan.audio import fix_length
from tympan.augment.base import (
    BaseTransform,
    SeedLike,
    check_choices,
    check_range,
    draw_value,
)
from tympan.augment.time_stretch import MAX_SEMITONES, Engine, check_engine, rubberband


class PitchShift(BaseTransform):
    """Move the pitch by a number of semitones, keeping the duration (Rubber Band).

    A shift of ``n`` semitones multiplies every frequency by ``2 ** (n / 12)``;
    the output has exactly the input's length.

    Args:
        min_semitones, max_semitones: shift drawn uniformly from this range
            (Default: ``-2``, ``2``, Salamon & Bello's PS1 extremes).
        semitones: a set of shifts to pick from instead, e.g. ``(-2, -1, 1, 2)``.
        engine: ``"finer"`` (default; Rubber Band R3) or ``"faster"`` (R2, the
            command line's default; about half the CPU, but its crisp transient
            handling smears a steady tone's pitch by ~1.5 %).
        p, seed: see :class:`~tympan.augment.base.BaseTransform`.

    Raises:
        ValueError: shifts beyond ±24 semitones, min > max, an unknown engine.
    """

    tag_name = "PS"

    def __init__(
        self,
        min_semitones: float = -2.0,
        max_semitones: float = 2.0,
        *,
        semitones: Sequence[float] | None = None,
        engine: Engine = "finer",
        p: float = 0.5,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        check_range(min_semitones, max_semitones, "min_semitones", "max_semitones")
        self.semitones = None if semitones is None else check_choices(semitones, "semitones")
        for value in self.semitones or (min_semitones, max_semitones):
            if abs(value) > MAX_SEMITONES:
                raise ValueError(
                    f"a pitch shift must be within ±{MAX_SEMITONES:g} semitones, got {value}"
                )
        check_engine(engine)
        self.min_semitones, self.max_semitones = float(min_semitones), float(max_semitones)
        self.engine: Engine = engine

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["semitones"] = draw_value(
                self.rng, self.min_semitones, self.max_semitones, self.semitones
            )

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        out = rubberband(samples, sample_rate, semitones=self.parameters["semitones"],
                         engine=self.engine)
        # Rubber Band returns the input's length already; fix_length guards rounding.
        return fix_length(out, samples.shape[-1])

    def describe(self) -> str | None:
        if not self.parameters.get("should_apply"):
            return None
        return f"PS:{self.parameters['semitones']:g}"

    def __repr__(self) -> str:
        what = (f"semitones={self.semitones}" if self.semitones
                else f"{self.min_semitones}..{self.max_semitones}")
        return f"PitchShift({what}, p={self.p})"
