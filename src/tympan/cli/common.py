"""Shared CLI helpers and the ``version`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from tympan.cli._app import app

console = Console()
err_console = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the tympan, torch and Python versions."""
    import platform

    from tympan import __version__

    try:
        import torch

        torch_version = str(torch.__version__)
    except ImportError:  # a runtime-only install (tympan[runtime]) runs .onnx models
        torch_version = "not installed"
    python = platform.python_version()
    console.print(f"tympan {__version__}  torch {torch_version}  python {python}")


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def check_device(device: str | None) -> str | None:
    """``--device`` checked before any work: a name torch knows, on hardware this machine has.

    Raises:
        typer.BadParameter: not a torch device, or CUDA/MPS (or that GPU index) absent.
    """
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(f"--device {device}: not a torch device; use cpu, cuda, "
                                 "cuda:1 or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise typer.BadParameter(f"--device {device}: CUDA is not available on this machine "
                                     f"(torch {torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise typer.BadParameter(f"--device {device}: this machine has "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(f"--device {device}: MPS is not available on this machine; "
                                 "use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise typer.BadParameter(f"--device {device}: tympan runs on cpu, cuda or mps")
    return device


#: CLI option of each TrainConfig field it sets (for messages about options a recipe ignores)
OPTION_OF = {
    "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
    "val_fraction": "--val-fraction", "early_stopping_patience": "--patience",
    "mixup_alpha": "--mixup", "spec_time_mask_frames": "--spec-time-mask",
    "spec_freq_mask_bins": "--spec-freq-mask", "num_workers": "--workers",
    "precision": "--precision", "augment_policy": "--augment-policy",
    "max_train_batches": "--max-train-batches", "devices": "--devices", "nodes": "--nodes",
    "strategy": "--strategy",
}


def build_recipe(config: Path | None, mode: str | None, changes: dict[str, Any]) -> Any:
    """The TrainConfig that ``--config``, ``--mode`` and the options describe, checked against
    the recipe it selects: an option the recipe does not use is a usage error naming it."""
    from tympan.config import TrainConfig
    from tympan.errors import ConfigError
    from tympan.workflows.recipes import recipe_fields, resolve_mode, unused_fields

    base = TrainConfig.load(config) if config is not None else TrainConfig()
    if mode is not None:
        changes["mode"] = mode
    try:
        recipe = base.replace(**changes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from tympan import models

    models.model_info(recipe.model)  # an unknown name fails before any decoding
    resolved = resolve_mode(recipe)
    ignored = sorted(OPTION_OF[k] for k in changes
                     if k in OPTION_OF and k not in recipe_fields(resolved))
    if ignored:
        raise typer.BadParameter(
            f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} nothing with "
            f"--mode {resolved} (model {recipe.model}); drop "
            f"{'it' if len(ignored) == 1 else 'them'} or use --mode finetune"
        )
    unused = unused_fields(recipe, resolved)
    if unused:
        where = f"{config}" if config is not None else "the options"
        raise ConfigError(f"{where}: field(s) {', '.join(unused)} are not used by --mode "
                          f"{resolved} (model {recipe.model}); remove them or pick another mode")
    return recipe
