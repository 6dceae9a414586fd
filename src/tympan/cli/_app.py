"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tympan",
    help="Train, evaluate and serve sound classifiers from folders of labelled recordings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """tympan: sound classifiers from labelled recordings."""
