"""Salamon & Bello's (2017) augmentation sets as named presets.

Each set is a list of :class:`Variant` s (one deterministic change each, used
for offline copies) and, for on-the-fly use, one random transform that picks
one of the set's values per call:

========  ==========================================================
TS        time-stretch by 0.81, 0.93, 1.07, 1.23 (speed factors)
PS1       pitch-shift by −2, −1, 1, 2 semitones
PS2       pitch-shift by −3.5, −2.5, 2.5, 3.5 semitones
DRC       compression: music standard, film standard, speech, radio
BG        4 mixes with a random background at a random SNR (0–19 dB)
all       the union of the five
========  ==========================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tympan.augment.background import MixBackground
from tympan.augment.base import BaseTransform, OneOf, SeedLike
from tympan.augment.compress import DRC_PRESETS, Compress
from tympan.augment.pitch_shift import PitchShift
from tympan.augment.time_stretch import LengthPolicy, TimeStretch

TS_RATES = (0.81, 0.93, 1.07, 1.23)
PS1_SEMITONES = (-2.0, -1.0, 1.0, 2.0)
PS2_SEMITONES = (-3.5, -2.5, 2.5, 3.5)
DRC_NAMES = ("music standard", "film standard", "speech", "radio")
BG_COPIES = 4
BG_MIN_SNR_DB, BG_MAX_SNR_DB = 0.0, 19.0

#: The five Salamon & Bello sets, in the paper's order.
SB_SETS = ("TS", "PS1", "PS2", "DRC", "BG")
#: Names accepted where a set is asked for: the five, "all", and "none" (no augmentation).
SET_NAMES = ("none", *SB_SETS, "all")


@dataclass(frozen=True)
class Variant:
    """One deterministic change: ``kind`` is TS, PS, DRC or BG; ``value`` its setting.

    TS values are speed factors, PS values semitones, DRC values preset names,
    BG values a copy number (each BG copy draws its own background and SNR).
    """

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in ("TS", "PS", "DRC", "BG"):
            raise ValueError(f"unknown variant kind {self.kind!r} (TS, PS, DRC, BG)")
        if self.kind == "DRC" and self.value not in DRC_PRESETS:
            raise ValueError(f"unknown DRC preset {self.value!r}; known: {', '.join(DRC_NAMES)}")
        if self.kind in ("TS", "PS"):
            float(self.value)  # raises ValueError on a non-number

    @property
    def number(self) -> float:
        return float(self.value)

    @property
    def set_name(self) -> str:
        """The SB set this variant belongs to (PS values outside PS1/PS2: ``"PS"``)."""
        if self.kind == "PS":
            if self.number in PS1_SEMITONES:
                return "PS1"
            if self.number in PS2_SEMITONES:
                return "PS2"
        return self.kind

    @property
    def tag(self) -> str:
        """Provenance tag, e.g. ``"TS:1.07"``, ``"PS1:-2"``, ``"DRC:radio"``, ``"BG:1"``."""
        value = f"{self.number:g}" if self.kind in ("TS", "PS") else self.value
        return f"{self.set_name}:{value}"

    @property
    def file_tag(self) -> str:
        """File-name-safe tag, e.g. ``"ts1.07"``, ``"ps-2"``, ``"drc-radio"``, ``"bg1"``."""
        if self.kind in ("TS", "PS"):
            return f"{self.kind.lower()}{self.number:g}"
        if self.kind == "DRC":
            return "drc-" + self.value.replace(" ", "-")
        return f"bg{self.value}"

    def transform(
        self,
        *,
        seed: SeedLike = None,
        backgrounds: str | Path | Sequence[str | Path] | None = None,
        length: LengthPolicy = "stretch",
    ) -> BaseTransform:
        """The transform that makes this variant (``p=1``).

        Raises:
            ValueError: a BG variant without ``backgrounds``.
        """
        if self.kind == "TS":
            return TimeStretch(rates=[self.number], length=length, p=1.0, seed=seed)
        if self.kind == "PS":
            return PitchShift(semitones=[self.number], p=1.0, seed=seed)
        if self.kind == "DRC":
            return Compress([self.value], p=1.0, seed=seed)
        if backgrounds is None:
            raise ValueError("the BG set needs background recordings (--background DIR)")
        return MixBackground(backgrounds, BG_MIN_SNR_DB, BG_MAX_SNR_DB, p=1.0, seed=seed)


def parse_tag(tag: str) -> tuple[str, str]:
    """``"PS1:-2"`` → ``("PS1", "-2")``; ``"BG:rain.ogg@3.1dB"`` → ``("BG", ...)``."""
    name, _, value = tag.partition(":")
    return name, value


def tag_set(tag: str | None) -> str:
    """The set a provenance tag belongs to (``"none"`` for an original clip)."""
    return "none" if not tag else parse_tag(tag)[0]


def check_set_names(names: Sequence[str]) -> list[str]:
    """Validate set names (case-insensitive for the SB ones); return them canonical.

    A union of sets is written with ``+`` (``"TS+PS1"``: both sets' copies).

    Raises:
        ValueError: an unknown name.
    """
    canonical = {n.lower(): n for n in SET_NAMES}
    out = []
    for name in names:
        parts = []
        for part in name.split("+"):
            key = part.strip().lower()
            if key not in canonical:
                raise ValueError(
                    f"unknown augmentation set {part!r}; known: {', '.join(SET_NAMES)} "
                    "(join several with +, e.g. TS+PS1)"
                )
            parts.append(canonical[key])
        out.append("+".join(parts))
    return out


def expand_sets(names: Sequence[str]) -> list[str]:
    """The SB sets a list of names stands for (``"all"`` → all five, ``"none"`` → none)."""
    out: list[str] = []
    for combined in check_set_names(names):
        for name in combined.split("+"):
            members = list(SB_SETS) if name == "all" else [] if name == "none" else [name]
            out.extend(m for m in members if m not in out)
    return out


def set_variants(name: str) -> list[Variant]:
    """The variants (offline copies per clip) of a set name, ``"all"`` included."""
    variants: list[Variant] = []
    for member in expand_sets([name]):
        if member == "TS":
            variants += [Variant("TS", f"{r:g}") for r in TS_RATES]
        elif member == "PS1":
            variants += [Variant("PS", f"{s:g}") for s in PS1_SEMITONES]
        elif member == "PS2":
            variants += [Variant("PS", f"{s:g}") for s in PS2_SEMITONES]
        elif member == "DRC":
            variants += [Variant("DRC", n) for n in DRC_NAMES]
        elif member == "BG":
            variants += [Variant("BG", str(i)) for i in range(1, BG_COPIES + 1)]
    return variants


def set_transform(
    name: str,
    *,
    p: float = 1.0,
    seed: SeedLike = None,
    backgrounds: str | Path | Sequence[str | Path] | None = None,
    length: LengthPolicy = "keep",
) -> BaseTransform:
    """An on-the-fly transform for a set: with probability ``p``, one of its values.

    ``"all"`` picks one of the five sets first (uniformly), then a value.

    Raises:
        ValueError: ``"none"``, an unknown name, BG without ``backgrounds``.
    """
    members = expand_sets([name])
    if not members:
        raise ValueError("the 'none' set has no transform")
    parts: list[BaseTransform] = []
    for member in members:
        if member == "TS":
            parts.append(TimeStretch(rates=TS_RATES, length=length, p=1.0))
        elif member == "PS1":
            parts.append(PitchShift(semitones=PS1_SEMITONES, p=1.0))
        elif member == "PS2":
            parts.append(PitchShift(semitones=PS2_SEMITONES, p=1.0))
        elif member == "DRC":
            parts.append(Compress(DRC_NAMES, p=1.0))
        elif member == "BG":
            if backgrounds is None:
                raise ValueError("the BG set needs background recordings")
            parts.append(MixBackground(backgrounds, BG_MIN_SNR_DB, BG_MAX_SNR_DB, p=1.0))
    return OneOf(parts, p=p, seed=seed)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any values, the same in every process and Python run."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
