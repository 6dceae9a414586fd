"""Time-stretch with the Rubber Band library, in-process through pedalboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from tympan.audio import fix_length
from tympan.augment.base import (
    BaseTransform,
    SeedLike,
    check_choices,
    check_range,
    draw_value,
)

Engine = Literal["faster", "finer"]
LengthPolicy = Literal["keep", "stretch"]
ENGINES = ("faster", "finer")
LENGTH_POLICIES = ("keep", "stretch")
MIN_RATE, MAX_RATE = 0.1, 10.0
MAX_SEMITONES = 24.0


def rubberband(
    samples: np.ndarray,
    sample_rate: int,
    *,
    rate: float = 1.0,
    semitones: float = 0.0,
    engine: Engine = "finer",
) -> np.ndarray:
    """Rubber Band's offline stretcher: speed by ``rate``, pitch by ``semitones``.

    ``rate`` > 1 is faster (output about ``n / rate`` samples long); the pitch
    moves by ``2 ** (semitones / 12)``. ``engine="finer"`` is Rubber Band's R3
    engine (``rubberband --fine``): a steady tone keeps its pitch within 0.01 %.
    ``"faster"`` is R2, the default of the ``rubberband`` command line the seed
    ran (``rubberband -t 1/rate -p semitones``): half the CPU, but its crisp
    transient mode smears a steady 440 Hz tone by ~1.5 % (measured). Formants
    are not preserved, as in the command line's default.
    Shapes: ``(n,)`` → ``(m,)``, ``(channels, n)`` → ``(channels, m)``.
    """
    import pedalboard

    out = pedalboard.time_stretch(
        np.ascontiguousarray(samples, dtype=np.float32),
        float(sample_rate),
        stretch_factor=float(rate),
        pitch_shift_in_semitones=float(semitones),
        high_quality=engine == "finer",
        preserve_formants=False,
    )
    if samples.ndim == 1:
        out = out.reshape(-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


class TimeStretch(BaseTransform):
    """Change speed without changing pitch (Rubber Band).

    Args:
        min_rate, max_rate: speed factor drawn uniformly from this range; 1.07
            plays 7 % faster (the clip gets 1/1.07 as long). (Default: ``0.81``,
            ``1.23``, the ends of Salamon & Bello's TS set.)
        rates: a set of speed factors to pick from instead of a range, e.g.
            ``(0.81, 0.93, 1.07, 1.23)``.
        length: ``"keep"`` (default, for training batches): the output is cut
            at the end, or zero-padded at the end, back to the input's length.
            ``"stretch"``: the natural new length ``round(n / rate)`` (offline
            copies; a slowed clip keeps all of its sound).
        engine: ``"finer"`` (default; Rubber Band R3) or ``"faster"`` (R2, the
            command line's default; about half the CPU, but its crisp transient
            handling smears a steady tone's pitch by ~1.5 %).
        p, seed: see :class:`~tympan.augment.base.BaseTransform`.

    Raises:
        ValueError: rates outside [0.1, 10], min_rate > max_rate, an unknown
            ``length`` or ``engine``.
    """

    tag_name = "TS"

    def __init__(
        self,
        min_rate: float = 0.81,
        max_rate: float = 1.23,
        *,
        rates: Sequence[float] | None = None,
        length: LengthPolicy = "keep",
        engine: Engine = "finer",
        p: float = 0.5,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        check_range(min_rate, max_rate, "min_rate", "max_rate")
        self.rates = None if rates is None else check_choices(rates, "rates")
        for value in self.rates or (min_rate, max_rate):
            if not MIN_RATE <= value <= MAX_RATE:
                raise ValueError(
                    f"a time-stretch rate must be in [{MIN_RATE}, {MAX_RATE}] "
                    f"(1.0 = unchanged speed), got {value}"
                )
        if length not in LENGTH_POLICIES:
            raise ValueError(f"length must be 'keep' or 'stretch', got {length!r}")
        check_engine(engine)
        self.min_rate, self.max_rate = float(min_rate), float(max_rate)
        self.length: LengthPolicy = length
        self.engine: Engine = engine

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["rate"] = draw_value(self.rng, self.min_rate, self.max_rate,
                                                 self.rates)

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        out = rubberband(samples, sample_rate, rate=self.parameters["rate"], engine=self.engine)
        if self.length == "keep":
            out = fix_length(out, samples.shape[-1])
        return out

    def describe(self) -> str | None:
        if not self.parameters.get("should_apply"):
            return None
        return f"TS:{self.parameters['rate']:g}"

    def __repr__(self) -> str:
        what = f"rates={self.rates}" if self.rates else f"{self.min_rate}..{self.max_rate}"
        return f"TimeStretch({what}, length={self.length!r}, p={self.p})"
