"""Shared CLI helpers and the ``version`` command."""

from __future__ import annotations

import typer
from rich.console import Console

from tympan.cli._app import app

console = Console()
err_console = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the tympan, torch and Python versions."""
    import platform

    import torch

    from tympan import __version__

    python = platform.python_version()
    console.print(f"tympan {__version__}  torch {torch.__version__}  python {python}")


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
