"""Command line: ``tympan <command> --help``. One module per command group.

The interface layer only: argument parsing and printing; the work lives in the
workflow and data layers, imported inside each command so ``--help`` is fast.
"""

from __future__ import annotations

import sys

from tympan.cli import (
    augment,  # noqa: F401  (registers `augment`, `ablate`)
    common,  # noqa: F401  (registers `version`)
    datasets,  # noqa: F401  (registers `datasets fetch`, `datasets info`)
    detect,  # noqa: F401  (registers `detect`)
    features,  # noqa: F401  (registers `features`)
    models,  # noqa: F401  (registers `models list`)
    predict,  # noqa: F401  (registers `predict`, `evaluate`)
    spectrogram,  # noqa: F401  (registers `spectrogram`)
    train,  # noqa: F401  (registers `train`, `demo`)
)
from tympan.cli._app import app
from tympan.errors import TympanError


def main() -> None:
    """Console-script entry point: run the app; a TympanError exits 2 with its message."""
    try:
        app()
    except TympanError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


__all__ = ["app", "main"]
