"""Pretrained backbones: where the weights come from, what they expect, how to load them.

Each backbone is one :class:`PretrainedCfg` (timm style): weight source (URL +
sha256), licence, paper, the front end it was trained with, its embedding
size and its AudioSet label file. Adding a backbone is one
:func:`register_pretrained` call (plus, for a new network family, one
:func:`register_architecture`).

Weights are resolved in this order, and always verified against the sha256
(a mismatch raises :class:`~tympan.errors.ChecksumError`, never a silent load):

1. an explicit ``weights=PATH`` (``--weights PATH`` on the command line);
2. ``$TYMPAN_WEIGHTS``: a folder searched recursively for the file name;
3. the cache folder (``platformdirs`` user cache ``tympan/weights``, or
   ``$TYMPAN_WEIGHTS_CACHE``);
4. a download of the URL into the cache folder (unless ``$TYMPAN_OFFLINE`` is set).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tympan.config import FeatureConfig
from tympan.errors import ChecksumError, DatasetError, TympanError
from tympan.fileio import sha256_file

WEIGHTS_ENV = "TYMPAN_WEIGHTS"
CACHE_ENV = "TYMPAN_WEIGHTS_CACHE"
OFFLINE_ENV = "TYMPAN_OFFLINE"


@dataclass(frozen=True)
class PretrainedCfg:
    """Everything needed to fetch, check and use one pretrained backbone.

    ``architecture`` names an entry of the architecture table and
    ``architecture_kwargs`` are passed to its builder. ``embedding_dim`` is
    the size of the pooled trunk output, ``head_dim`` that of the first
    classifier layer. ``labels_file`` is a file in ``tympan/resources/``
    (AudioSet's ``index,mid,display_name`` CSV). ``n_bytes`` and ``sha256``
    describe the weight file exactly.
    """

    name: str
    url: str
    sha256: str
    file_name: str
    n_bytes: int
    architecture: str
    licence: str
    paper: str
    features: FeatureConfig
    embedding_dim: int
    head_dim: int
    n_audioset_classes: int = 527
    labels_file: str = "audioset_class_labels_indices.csv"
    architecture_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Architecture:
    """A network family: ``build(**kwargs) -> nn.Module`` and a checkpoint key converter."""

    build: Callable[..., nn.Module]
    convert_state_dict: Callable[[Mapping[str, Tensor]], dict[str, Tensor]]


_ARCHITECTURES: dict[str, Architecture] = {}
_PRETRAINED: dict[str, PretrainedCfg] = {}


def register_architecture(name: str, architecture: Architecture) -> None:
    """Make a network family available to pretrained entries under ``name``."""
    _ARCHITECTURES[name] = architecture


def register_pretrained(cfg: PretrainedCfg, *, overwrite: bool = False) -> PretrainedCfg:
    """Add ``cfg`` to the registry; ``ValueError`` if the name is taken (unless ``overwrite``)."""
    if cfg.architecture not in _ARCHITECTURES:
        raise ValueError(f"pretrained {cfg.name!r}: unknown architecture {cfg.architecture!r} "
                         f"(known: {', '.join(sorted(_ARCHITECTURES))})")
    if cfg.name in _PRETRAINED and not overwrite:
        raise ValueError(f"pretrained backbone {cfg.name!r} is already registered")
    _PRETRAINED[cfg.name] = cfg
    return cfg


class UnknownPretrainedError(TympanError, KeyError):
    """No pretrained backbone is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_pretrained(name: str) -> PretrainedCfg:
    """The registered entry called ``name``.

    Raises:
        UnknownPretrainedError: no such backbone (the message lists the known ones).
    """
    try:
        return _PRETRAINED[name]
    except KeyError:
        known = ", ".join(sorted(_PRETRAINED)) or "none"
        raise UnknownPretrainedError(
            f"unknown pretrained backbone {name!r} (known: {known}; `tympan models list`)"
        ) from None


def list_pretrained() -> list[str]:
    """Names of all registered pretrained backbones, sorted."""
    return sorted(_PRETRAINED)


def _as_cfg(backbone: str | PretrainedCfg) -> PretrainedCfg:
    return backbone if isinstance(backbone, PretrainedCfg) else get_pretrained(backbone)


def weights_cache_dir() -> Path:
    """Folder downloaded weights are kept in: ``$TYMPAN_WEIGHTS_CACHE`` or the user cache."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tympan")) / "weights"


def verify_weights(path: Path, cfg: PretrainedCfg) -> Path:
    """Check that ``path`` holds exactly ``cfg``'s weights.

    Raises:
        ChecksumError: the file's sha256 differs from ``cfg.sha256``.
        TympanError: the file does not exist.
    """
    if not path.is_file():
        raise TympanError(f"weights for {cfg.name!r}: {path} is not a file")
    digest = sha256_file(path)
    if digest != cfg.sha256:
        raise ChecksumError(
            f"weights for {cfg.name!r}: {path} has sha256 {digest}, expected {cfg.sha256} "
            f"(wrong or corrupt file; delete it or point to the right one)"
        )
    return path


def find_local_weights(cfg: PretrainedCfg, folder: str | Path | None = None) -> Path | None:
    """The first file named ``cfg.file_name`` under ``folder`` (default ``$TYMPAN_WEIGHTS``).

    Searches recursively; ``None`` when the folder is unset, missing, or holds no such file.
    """
    root = Path(folder) if folder is not None else _env_folder()
    if root is None or not root.is_dir():
        return None
    direct = root / cfg.file_name
    if direct.is_file():
        return direct
    return next((p for p in sorted(root.rglob(cfg.file_name)) if p.is_file()), None)


def _env_folder() -> Path | None:
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def cached_weights(cfg: PretrainedCfg, cache_dir: Path | None = None) -> Path:
    """Where ``cfg``'s downloaded weights live (or would live) in the cache folder."""
    return (cache_dir or weights_cache_dir()) / cfg.file_name


def locate_weights(
    backbone: str | PretrainedCfg,
    weights: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
) -> tuple[Path | None, str]:
    """Where the weights would come from, without reading or downloading them.

    Returns ``(path, source)`` with source ``"explicit"``, ``"env"``, ``"cache"``
    or ``"download"`` (path ``None``: only the URL has them).
    """
    cfg = _as_cfg(backbone)
    if weights is not None:
        return Path(weights), "explicit"
    local = find_local_weights(cfg)
    if local is not None:
        return local, "env"
    cached = cached_weights(cfg, cache_dir)
    if cached.is_file():
        return cached, "cache"
    return None, "download"


def resolve_weights(
    backbone: str | PretrainedCfg,
    weights: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    allow_download: bool | None = None,
) -> Path:
    """Path of verified weights for ``backbone``, downloading them once if needed.

    Order: ``weights`` → ``$TYMPAN_WEIGHTS`` → cache folder → download into the
    cache folder (``cache_dir`` overrides :func:`weights_cache_dir`).
    ``allow_download=None`` allows it unless ``$TYMPAN_OFFLINE`` is set (non-empty, not "0").

    Raises:
        ChecksumError: the chosen file (local or downloaded) has the wrong sha256.
        DatasetError: the download failed (names the file, its sha256, the URL and
            where to put it by hand).
        TympanError: an explicit file is missing, or the weights are not local
            and ``allow_download`` is False (same advice).
    """
    cfg = _as_cfg(backbone)
    path, source = locate_weights(cfg, weights, cache_dir=cache_dir)
    target = cached_weights(cfg, cache_dir)
    if source == "explicit" and path is not None and not path.is_file():
        raise TympanError(f"weights for {cfg.name!r}: {path} is not a file; "
                          f"{_by_hand(cfg, target)}")
    if path is not None:
        return verify_weights(path, cfg)
    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV, "") in ("", "0")
    if not allow_download:
        raise TympanError(
            f"weights for {cfg.name!r} are not available locally and downloads are off; "
            f"{_by_hand(cfg, target)}, or unset ${OFFLINE_ENV}"
        )
    from tympan.data.fetch import download

    try:
        download(cfg.url, target, cfg.sha256, by_hand=_by_hand(cfg, target))
    except DatasetError as exc:
        raise DatasetError(f"weights for {cfg.name!r}: {exc}") from exc
    return verify_weights(target, cfg)


def _by_hand(cfg: PretrainedCfg, target: Path) -> str:
    """What to do without a download: which file, from where, and where to put it."""
    return (f"get {cfg.file_name} (sha256 {cfg.sha256}) from {cfg.url} and put it in the "
            f"${WEIGHTS_ENV} folder, pass --weights PATH, or save it as {target}")


def load_state_dict(path: Path, cfg: PretrainedCfg) -> dict[str, Tensor]:
    """Read a checkpoint without running pickled code and map its keys to our names."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a foreign file
        raise TympanError(f"weights for {cfg.name!r}: cannot read {path} ({exc})") from exc
    if not isinstance(state, Mapping):
        raise TympanError(f"weights for {cfg.name!r}: {path} is not a state dict")
    return _ARCHITECTURES[cfg.architecture].convert_state_dict(state)


def build_backbone(backbone: str | PretrainedCfg, **overrides: Any) -> nn.Module:
    """The network of ``backbone`` with random weights (``overrides`` go to the builder)."""
    cfg = _as_cfg(backbone)
    kwargs = {**cfg.architecture_kwargs, **overrides}
    return _ARCHITECTURES[cfg.architecture].build(**kwargs)


def load_pretrained(
    backbone: str | PretrainedCfg,
    weights: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    allow_download: bool | None = None,
) -> nn.Module:
    """The full pretrained network (AudioSet head included) in eval mode.

    Weights are resolved as :func:`resolve_weights` and loaded with strict key
    matching.

    Raises:
        ChecksumError: wrong weight file.
        TympanError: unreadable file or keys that do not match the network.
    """
    cfg = _as_cfg(backbone)
    path = resolve_weights(cfg, weights, cache_dir=cache_dir, allow_download=allow_download)
    model = build_backbone(cfg)
    try:
        model.load_state_dict(load_state_dict(path, cfg), strict=True)
    except RuntimeError as exc:
        raise TympanError(f"weights for {cfg.name!r}: {path} does not fit the network: "
                          f"{exc}") from exc
    return model.eval()


def audioset_labels(backbone: str | PretrainedCfg = "mn04_as") -> list[str]:
    """Display names of the backbone's outputs, in output order (527 for AudioSet)."""
    cfg = _as_cfg(backbone)
    text = resources.files("tympan").joinpath("resources", cfg.labels_file).read_text("utf-8")
    rows = sorted(csv.DictReader(text.splitlines()), key=lambda row: int(row["index"]))
    names = [row["display_name"] for row in rows]
    if len(names) != cfg.n_audioset_classes:
        raise TympanError(f"{cfg.labels_file}: {len(names)} labels, expected "
                          f"{cfg.n_audioset_classes}")
    return names


__all__ = [
    "Architecture",
    "PretrainedCfg",
    "UnknownPretrainedError",
    "audioset_labels",
    "build_backbone",
    "cached_weights",
    "find_local_weights",
    "get_pretrained",
    "list_pretrained",
    "load_pretrained",
    "load_state_dict",
    "locate_weights",
    "register_architecture",
    "register_pretrained",
    "resolve_weights",
    "verify_weights",
    "weights_cache_dir",
]
