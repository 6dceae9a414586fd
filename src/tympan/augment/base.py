"""The waveform-transform contract (audiomentations-style) and its combinators.

A transform holds its hyper-parameters (validated in ``__init__``), a seeded
:class:`numpy.random.Generator` and the parameters it drew last. Calling it
draws new parameters (``randomize_parameters``), then, with probability ``p``,
applies them (``apply``). The same seed gives the same sequence of outputs.

Samples are float32 ``(n_samples,)`` (mono) or ``(channels, n_samples)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Anything :func:`numpy.random.default_rng` accepts as a seed.
SeedLike = int | np.random.Generator | np.random.SeedSequence | None


def check_probability(p: float, name: str = "p") -> float:
    """Return ``p`` as a float, or raise ``ValueError`` if it is not in [0, 1]."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return float(p)


def check_range(low: float, high: float, low_name: str, high_name: str) -> None:
    """Raise ``ValueError`` unless ``low <= high`` (both finite)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{low_name} and {high_name} must be finite, got {low} and {high}")
    if low > high:
        raise ValueError(f"{low_name} ({low}) must be <= {high_name} ({high})")


def as_samples(samples: np.ndarray) -> np.ndarray:
    """Validate a waveform: float32, C-contiguous, ``(n,)`` or ``(channels, n)``."""
    array = np.asarray(samples)
    if array.ndim not in (1, 2):
        raise ValueError(
            f"samples must be (n_samples,) or (channels, n_samples), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"samples must be floating point (float32), got {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def child_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` independent integer seeds drawn from ``rng`` (for seeding sub-transforms)."""
    return [int(s) for s in rng.integers(0, 2**63 - 1, size=n)]


class BaseTransform:
    """One waveform augmentation.

    Args:
        p: probability of applying the transform on a call (Default: ``0.5``).
        seed: seed of the transform's own generator; the same seed gives the
            same outputs for the same inputs.

    Subclasses draw their parameters in :meth:`randomize_parameters` (after
    calling ``super()``, and only when ``self.parameters["should_apply"]``) and
    use only ``self.parameters`` in :meth:`apply`.
    """

    #: Short name used in provenance tags such as ``"TS:1.07"``.
    tag_name = "T"

    def __init__(self, p: float = 0.5, seed: SeedLike = None) -> None:
        self.p = check_probability(p)
        self.rng = np.random.default_rng(seed)
        self.parameters: dict[str, Any] = {"should_apply": None}
        self.are_parameters_frozen = False

    def seed(self, seed: SeedLike) -> None:
        """Reset the generator (e.g. per DataLoader worker)."""
        self.rng = np.random.default_rng(seed)

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        """Draw whether to apply (with probability ``p``) and, in subclasses, how."""
        self.parameters = {"should_apply": bool(self.rng.random() < self.p)}

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Transform ``samples`` with the current ``self.parameters``."""
        raise NotImplementedError

    def describe(self) -> str | None:
        """Provenance tag of the last draw (e.g. ``"TS:1.07"``), None if not applied."""
        return None

    def freeze_parameters(self) -> None:
        """Keep the current parameters on later calls (apply the same change again)."""
        self.are_parameters_frozen = True

    def unfreeze_parameters(self) -> None:
        self.are_parameters_frozen = False

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Draw parameters (unless frozen) and apply them with probability ``p``.

        Raises:
            ValueError: samples of the wrong shape or type, or a non-positive rate.
        """
        samples = as_samples(samples)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not self.are_parameters_frozen or self.parameters["should_apply"] is None:
            self.randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"] and samples.shape[-1] > 0:
            return as_samples(self.apply(samples, sample_rate))
        return samples

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Compose(BaseTransform):
    """Apply ``transforms`` in order (each with its own ``p``), as a whole with probability ``p``.

    With a ``seed`` the children are re-seeded from it, so the whole chain is
    reproducible from one number. ``shuffle=True`` applies them in a random order.
    """

    def __init__(
        self,
        transforms: Sequence[BaseTransform],
        p: float = 1.0,
        shuffle: bool = False,
        seed: SeedLike = None,
    ) -> None:
        if not transforms:
            raise ValueError(f"{type(self).__name__} needs at least one transform")
        for t in transforms:
            if not isinstance(t, BaseTransform):
                raise ValueError(f"{type(self).__name__}: {t!r} is not a BaseTransform")
        super().__init__(p=p, seed=seed)
        self.transforms = list(transforms)
        self.shuffle = shuffle
        if seed is not None:
            self.seed(seed)

    def seed(self, seed: SeedLike) -> None:
        super().seed(seed)
        for t, s in zip(self.transforms, child_seeds(self.rng, len(self.transforms)),
                        strict=True):
            t.seed(s)

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        super().randomize_parameters(samples, sample_rate)
        order = np.arange(len(self.transforms))
        if self.parameters["should_apply"] and self.shuffle:
            order = self.rng.permutation(order)
        self.parameters["order"] = [int(i) for i in order]

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        for i in self.parameters["order"]:
            samples = self.transforms[i](samples, sample_rate)
        return samples

    def describe(self) -> str | None:
        if not self.parameters.get("should_apply"):
            return None
        tags = [self.transforms[i].describe() for i in self.parameters["order"]]
        joined = "+".join(t for t in tags if t)
        return joined or None

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}([{inner}], p={self.p})"


class OneOf(Compose):
    """Apply one of ``transforms``, picked with ``weights`` (uniform by default).

    The picked transform still applies its own ``p``.
    """

    def __init__(
        self,
        transforms: Sequence[BaseTransform],
        p: float = 1.0,
        weights: Sequence[float] | None = None,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(transforms, p=p, shuffle=False, seed=seed)
        if weights is None:
            weights = [1.0] * len(self.transforms)
        if len(weights) != len(self.transforms):
            raise ValueError(
                f"OneOf: {len(weights)} weights for {len(self.transforms)} transforms"
            )
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"OneOf: weights must be finite, >= 0, with a positive sum: {weights}")
        self.weights = w / w.sum()

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        BaseTransform.randomize_parameters(self, samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["order"] = [int(self.rng.choice(len(self.transforms),
                                                           p=self.weights))]
        else:
            self.parameters["order"] = []




def check_choices(values: Sequence[float], name: str) -> tuple[float, ...]:
    """Validate a non-empty set of finite numbers; return it as a tuple of floats."""
    out = tuple(float(v) for v in values)
    if not out:
        raise ValueError(f"{name} must hold at least one value")
    if not all(np.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {list(values)}")
    return out


def draw_value(
    rng: np.random.Generator, low: float, high: float, choices: tuple[float, ...] | None
) -> float:
    """One of ``choices`` (uniform) when given, else uniform in ``[low, high]``."""
    if choices is not None:
        return float(choices[int(rng.integers(len(choices)))])
    return float(rng.uniform(low, high))


__all__ = [
    "BaseTransform",
    "Compose",
    "OneOf",
    "SeedLike",
    "as_samples",
    "check_probability",
    "check_choices",
    "check_range",
    "child_seeds",
    "draw_value",
]
