"""Augmentation: waveform transforms (Rubber Band time-stretch and pitch-shift,
compression, background mixing, gain), SpecAugment and mixup on spectrogram
batches, Salamon & Bello's sets as presets, offline copies, and class-conditional
policies.

Importing this package is cheap: pedalboard and torch load on first use.
"""

from __future__ import annotations

from tympan.augment.background import MixBackground
from tympan.augment.base import BaseTransform, Compose, OneOf
from tympan.augment.compress import DRC_PRESETS, CompandSettings, Compress, compand
from tympan.augment.gain import Gain
from tympan.augment.pitch_shift import PitchShift
from tympan.augment.presets import SB_SETS, SET_NAMES, Variant, set_transform, set_variants
from tympan.augment.time_stretch import TimeStretch

__all__ = [
    "DRC_PRESETS",
    "SB_SETS",
    "SET_NAMES",
    "BaseTransform",
    "CompandSettings",
    "Compose",
    "Compress",
    "Gain",
    "MixBackground",
    "OneOf",
    "PitchShift",
    "TimeStretch",
    "Variant",
    "compand",
    "set_transform",
    "set_variants",
]
