"""Command line: ``tympan <command> --help``. One module per command group.

The interface layer only: argument parsing and printing; the work lives in the
workflow and data layers, imported inside each command so ``--help`` is fast.
"""

from __future__ import annotations

import sys

from tympan.cli import (
    augment,  # noqa: F401  (registers `augment`, `ablate`)
    common,  # noqa: F401  (registers `version`)
    corpus,  # noqa: F401  (registers `predict-corpus`, `embed`)
    datasets,  # noqa: F401  (registers `datasets fetch`, `datasets info`)
    detect,  # noqa: F401  (registers `detect`)
    export,  # noqa: F401  (registers `export`)
    features,  # noqa: F401  (registers `features`)
    models,  # noqa: F401  (registers `models list`)
    predict,  # noqa: F401  (registers `predict`, `evaluate`)
    serve,  # noqa: F401  (registers `serve`)
    spectrogram,  # noqa: F401  (registers `spectrogram`)
    train,  # noqa: F401  (registers `train`, `demo`)
)
from tympan.cli._app import app
from tympan.errors import TympanError


def main() -> None:
    """Console-script entry point: run the app; a TympanError prints one line and exits with
    its ``exit_code`` (2: change the input or options; 1: a failure such as a full disk)."""
    import warnings

    from tympan.fileio import is_disk_full

    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        app()
    except TympanError as exc:
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = exc.filename or "the disk"
        _print_error(f"no space left on {where}; free some space and rerun: earlier results "
                     "are kept")
        sys.exit(1)
    finally:
        warnings.showwarning = shown


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Warnings on the command line: one ``warning: ...`` line, no source location."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False,
                               soft_wrap=True)


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                               soft_wrap=True)


__all__ = ["app", "main"]
