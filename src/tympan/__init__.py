"""tympan: turn labelled recordings into a strong, honest, deployable sound classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tympan.classifier import Classifier


def __getattr__(name: str) -> Any:
    # Lazy: `import tympan` stays light (no torch, no Lightning) until Classifier is used.
    if name == "Classifier":
        from tympan.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'tympan' has no attribute {name!r}")


__all__ = ["Classifier", "__version__"]
