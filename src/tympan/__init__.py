"""tympan: turn labelled recordings into a strong, honest, deployable sound classifier."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
