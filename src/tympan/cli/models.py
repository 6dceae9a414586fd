"""``tympan models list``: registered networks and pretrained backbones (and where their
weights are)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tympan.cli._app import app
from tympan.cli.common import console

models_app = typer.Typer(help="Registered networks and pretrained backbones.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def _weights_status(name: str, weights: Path | None) -> tuple[str, str]:
    """(status, location) of a pretrained entry's weights, without downloading anything."""
    from tympan.models.pretrained import locate_weights

    path, source = locate_weights(name, weights)
    if path is None:
        return "not downloaded", "(downloaded on first use)"
    if not path.is_file():
        return "missing", str(path)
    return {"explicit": "given", "env": "available", "cache": "cached"}[source], str(path)


@models_app.command("list")
def list_command(
    weights: Annotated[Path | None, typer.Option(
        help="A weight file to check as the pretrained weights (else $TYMPAN_WEIGHTS, "
             "the cache).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the model names `tympan train --model` takes and the pretrained backbones,
    with whether their weights are cached or available locally."""
    import json

    from rich.table import Table

    from tympan import models
    from tympan.models.pretrained import get_pretrained, list_pretrained

    networks = [models.model_info(n).to_dict() for n in models.list_models()]
    backbones: list[dict[str, Any]] = []
    for name in list_pretrained():
        cfg = get_pretrained(name)
        status, location = _weights_status(name, weights)
        backbones.append({"name": name, "embedding_dim": cfg.embedding_dim,
                          "features": cfg.features.name, "licence": cfg.licence,
                          "n_bytes": cfg.n_bytes, "status": status, "location": location,
                          "url": cfg.url, "description": cfg.description})
    if as_json:
        typer.echo(json.dumps({"models": networks, "pretrained": backbones}, indent=2))
        return
    table = Table(title="models (tympan train --model NAME)")
    for column in ("name", "family", "front end", "pretrained", "description"):
        table.add_column(column)
    for info in networks:
        table.add_row(info["name"], info["family"], info["default_features"],
                      "yes" if info["pretrained"] else "", info["description"])
    console.print(table)
    table = Table(title="pretrained backbones")
    for column in ("name", "embedding", "front end", "licence", "weights", "where"):
        table.add_column(column)
    for b in backbones:
        table.add_row(b["name"], str(b["embedding_dim"]), b["features"], b["licence"],
                      b["status"], b["location"])
    console.print(table)
