"""The model file: one ``.safetensors`` file holding weights and JSON metadata.

The metadata (labels, model name and config, the feature config, training
config, CV metrics, versions, dataset provenance) lives in the safetensors
header under the key ``tympan``, next to ``format_version``. Loading reads the
header, rebuilds the network through the model registry and loads the weights
strictly; nothing is unpickled, so a model from a stranger cannot run code.

A sha256 under ``tympan.sha256`` covers every tensor (name, dtype, shape, raw
bytes) and every other metadata entry, so a flipped weight byte or a header
edited into other valid JSON is refused on load instead of changing results.
"""

from __future__ import annotations

import hashlib
import json
import platform
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tympan.config import FeatureConfig, JsonConfig
from tympan.errors import ModelFileError, ModelFileWarning
from tympan.fileio import atomic_path

#: Version of the file layout; a reader refuses files from a newer layout.
FORMAT_VERSION = 1
#: The safetensors metadata key holding the JSON document.
METADATA_KEY = "tympan"
#: The file suffix tympan writes and looks for.
MODEL_SUFFIX = ".safetensors"
#: The safetensors metadata key holding the sha256 of the tensors and the other metadata.
CHECKSUM_KEY = "tympan.sha256"


def _json_default(value: Any) -> Any:
    """``json.dumps`` fallback for Paths and numpy scalars/arrays found in configs."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


@dataclass
class DatasetInfo(JsonConfig):
    """Where the training data came from: manifest name, clip count, manifest sha256."""

    name: str
    n_files: int
    fingerprint: str


@dataclass
class ModelMetadata(JsonConfig):
    """Everything a model file says besides its weights.

    ``labels[i]`` is the class of output ``i``. ``model_config`` holds the
    registry kwargs (``tympan.models.create(model_name, len(labels), **model_config)``
    rebuilds the network); ``feature_config`` is a :class:`FeatureConfig` as a
    dict; ``metrics`` is a CV summary (``CVResult.summary()``) or None.
    """

    labels: list[str]
    model_name: str
    model_config: dict[str, Any] = field(default_factory=dict)
    feature_config: dict[str, Any] = field(default_factory=lambda: FeatureConfig().to_dict())
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=lambda: current_versions())
    dataset: DatasetInfo | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> FeatureConfig:
        """The feature config as a :class:`FeatureConfig`."""
        return FeatureConfig.from_dict(self.feature_config)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text; Paths and numpy values in the free-form dicts become str/numbers."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, default=_json_default)


def current_versions() -> dict[str, str]:
    """The tympan, torch and Python versions of this process."""
    from tympan import __version__

    return {"tympan": __version__, "torch": str(torch.__version__),
            "python": platform.python_version()}


def make_metadata(
    model: nn.Module,
    labels: list[str],
    feature_config: FeatureConfig,
    *,
    model_name: str | None = None,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    manifest: Any = None,
    extra: dict[str, Any] | None = None,
) -> ModelMetadata:
    """Assemble :class:`ModelMetadata` for a registry-built ``model``.

    ``model_name`` defaults to ``model.model_name`` (set by the registry);
    ``model_config`` is taken from ``model.config``. ``manifest`` (a
    :class:`~tympan.data.Manifest`) fills the dataset provenance.

    Raises:
        ValueError: the model has no name and none was given.
    """
    name = model_name or getattr(model, "model_name", None)
    if not name:
        raise ValueError("model has no `model_name`; pass model_name=")
    config = dict(getattr(model, "config", {}) or {})
    config.pop("n_classes", None)
    dataset = None
    if manifest is not None:
        dataset = DatasetInfo(name=str(manifest.name), n_files=len(manifest),
                              fingerprint=manifest.fingerprint())
    return ModelMetadata(
        labels=list(labels), model_name=str(name), model_config=config,
        feature_config=feature_config.to_dict(), train_config=dict(train_config or {}),
        metrics=metrics, dataset=dataset, extra=dict(extra or {}),
    )


@dataclass
class LoadedModel:
    """A network in eval mode with the metadata it was saved with.

    Also built directly around an in-memory model (e.g. right after training),
    so prediction code takes one type whether or not the model touched disk.
    """

    model: nn.Module
    metadata: ModelMetadata
    path: Path | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.labels)

    @property
    def feature_config(self) -> FeatureConfig:
        return self.metadata.features


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # Cloning breaks shared storage (tied weights, views), which safetensors refuses.
    return {name: t.detach().to("cpu").contiguous().clone()
            for name, t in model.state_dict().items()}


def _update_bytes(hasher: Any, data: bytes | memoryview) -> None:
    # Length-prefixed, so no two different sequences of fields hash the same.
    hasher.update(len(data).to_bytes(8, "little"))
    hasher.update(data)


def content_sha256(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """Hex sha256 over every tensor and every metadata entry except the checksum itself.

    Tensors are taken in name order as (name, dtype, shape, raw bytes as
    stored: C order, little-endian); metadata entries in key order.
    """
    hasher = hashlib.sha256(b"tympan-model-v1")
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        hasher.update(b"T")
        _update_bytes(hasher, json.dumps([name, str(tensor.dtype).removeprefix("torch."),
                                          list(tensor.shape)]).encode())
        # A byte view works for every dtype (bfloat16 has no numpy twin).
        _update_bytes(hasher, tensor.reshape(-1).view(torch.uint8).numpy().data)
    for key in sorted(header):
        if key != CHECKSUM_KEY:
            hasher.update(b"M")
            _update_bytes(hasher, key.encode())
            _update_bytes(hasher, header[key].encode())
    return hasher.hexdigest()


def save_model(
    path: str | Path, model: nn.Module, metadata: ModelMetadata, *, overwrite: bool = False
) -> Path:
    """Write ``model``'s weights and ``metadata`` to one ``.safetensors`` file, atomically.

    Returns the path written.

    Raises:
        ModelFileError: ``path`` exists and ``overwrite`` is False, is a
            folder, or the metadata has no labels or is not JSON-serialisable.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; give a file name ending in {MODEL_SUFFIX}")
    if path.exists() and not overwrite:
        raise ModelFileError(f"{path}: already exists; pass overwrite=True (--overwrite) "
                             "or choose another name")
    if not metadata.labels:
        raise ModelFileError(f"{path}: metadata has no labels")
    try:
        document = metadata.to_json(indent=None)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: metadata is not JSON-serialisable ({exc})") from exc
    header = {METADATA_KEY: document, "format_version": str(FORMAT_VERSION)}
    tensors = _state_tensors(model)
    header[CHECKSUM_KEY] = content_sha256(tensors, header)
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _read_header(path: Path) -> tuple[dict[str, str], list[str]]:
    """The safetensors metadata and tensor names of ``path`` (header only)."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            names = list(handle.keys())
    except Exception as exc:  # safetensors raises SafetensorError/OSError on bad bytes
        raise ModelFileError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {exc})"
        ) from exc
    return header, names


def _check_layout(path: Path, header: dict[str, str]) -> None:
    """Refuse a safetensors file that is not tympan's, or is from a newer format."""
    if METADATA_KEY not in header:
        raise ModelFileError(
            f"{path}: a safetensors file without tympan metadata (not a tympan model file; "
            "weights saved by other tools need their model code, not tympan)"
        )
    raw_version = header.get("format_version", "")
    try:
        version = int(raw_version)
    except ValueError:
        raise ModelFileError(f"{path}: invalid format_version {raw_version!r}") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written in model-file format {version}, newer than this tympan reads "
            f"({FORMAT_VERSION}); upgrade tympan"
        )


def _parse_metadata(path: Path, header: dict[str, str]) -> ModelMetadata:
    _check_layout(path, header)
    try:
        metadata = ModelMetadata.from_json(header[METADATA_KEY])
        metadata.features  # noqa: B018  (validates the feature config now, not at predict time)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{path}: invalid tympan metadata ({exc})") from exc
    if not metadata.labels:
        raise ModelFileError(f"{path}: metadata has no labels")
    return metadata


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read a model file's metadata without building the network (header only).

    Raises:
        ModelFileError: missing, truncated or foreign file, or a newer format.
    """
    path = Path(path)
    header, _ = _read_header(path)
    return _parse_metadata(path, header)


def _build(path: Path, metadata: ModelMetadata) -> nn.Module:
    from tympan import models

    config = dict(metadata.model_config)
    config.pop("n_classes", None)
    known = models.list_models()
    if metadata.model_name not in known:
        raise ModelFileError(
            f"{path}: model {metadata.model_name!r} is not in this tympan's registry "
            f"(known: {', '.join(known)})"
        )
    try:
        return models.create(metadata.model_name, len(metadata.labels), **config)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"{path}: cannot build model {metadata.model_name!r} from its stored config "
            f"{config} ({exc})"
        ) from exc


def _describe_mismatch(
    expected: dict[str, torch.Tensor], stored: dict[str, tuple[int, ...]]
) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing:
        problems.append(f"missing weights: {', '.join(missing[:5])}"
                        + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected weights: {', '.join(unexpected[:5])}"
                        + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    for name in sorted(set(expected) & set(stored)):
        want = tuple(expected[name].shape)
        if want != stored[name]:
            problems.append(f"{name} has shape {list(stored[name])}, the model expects "
                            f"{list(want)}")
    return problems


def verify_checksum(
    path: Path, header: dict[str, str], tensors: dict[str, torch.Tensor], *, verify: bool = True
) -> None:
    """Check the stored ``tympan.sha256`` against the tensors and metadata read from ``path``.

    With ``verify=False``, or for a file written before checksums, warns
    (:class:`~tympan.errors.ModelFileWarning`) instead of checking.

    Raises:
        ModelFileError: ``verify`` is True and the checksum does not match.
    """
    stored = header.get(CHECKSUM_KEY)
    if stored is None:
        warnings.warn(f"{path}: has no checksum (saved by an older tympan), so it cannot be "
                      "verified; save it again to add one", ModelFileWarning, stacklevel=3)
        return
    if not verify:
        warnings.warn(f"{path}: loaded without verifying its checksum (verify=False, "
                      "--no-verify); its weights and metadata may have been changed",
                      ModelFileWarning, stacklevel=3)
        return
    if content_sha256(tensors, header) != stored:
        raise ModelFileError(
            f"{path}: checksum mismatch: the file was changed after it was saved; use the "
            "original file or save the model again (--no-verify loads it anyway)"
        )


def load_model(
    path: str | Path, *, map_location: str | torch.device = "cpu", verify: bool = True
) -> LoadedModel:
    """Load a model file: verify its checksum, rebuild the network by name + config,
    load weights strictly.

    The returned model is in eval mode on ``map_location``. ``verify=False``
    skips the checksum with a :class:`~tympan.errors.ModelFileWarning`.

    Raises:
        ModelFileError: missing, truncated or foreign file, a newer format, a
            checksum mismatch, a model name the registry does not know, or
            weights that do not fit.
    """
    path = Path(path)
    header, _ = _read_header(path)
    _check_layout(path, header)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # data section shorter than the header promises, etc.
        raise ModelFileError(
            f"{path}: cannot read the weights (truncated or corrupt: {exc})"
        ) from exc
    # Before the metadata is trusted: an edited model name or config must not pick the build.
    verify_checksum(path, header, tensors, verify=verify)
    metadata = _parse_metadata(path, header)
    model = _build(path, metadata)
    problems = _describe_mismatch(model.state_dict(), {k: tuple(v.shape)
                                                       for k, v in tensors.items()})
    if problems:
        raise ModelFileError(
            f"{path}: weights do not fit model {metadata.model_name!r} "
            f"with {len(metadata.labels)} classes: " + "; ".join(problems)
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # e.g. a dtype the parameter cannot take
        raise ModelFileError(f"{path}: cannot load weights ({exc})") from exc
    model.to(map_location).eval()
    return LoadedModel(model=model, metadata=metadata, path=path)


def describe(metadata: ModelMetadata) -> dict[str, Any]:
    """A short JSON-ready summary of a model file (for ``--json`` outputs and logs)."""
    summary: dict[str, Any] = {
        "model": metadata.model_name, "classes": len(metadata.labels),
        "features": metadata.feature_config.get("name"), "created": metadata.created,
        "versions": metadata.versions,
    }
    if metadata.metrics:
        for key in ("accuracy_mean", "accuracy_std", "macro_f1_mean"):
            if key in metadata.metrics:
                summary[key] = metadata.metrics[key]
    if metadata.dataset is not None:
        summary["dataset"] = metadata.dataset.to_dict()
    return summary


__all__ = [
    "CHECKSUM_KEY",
    "DatasetInfo",
    "FORMAT_VERSION",
    "LoadedModel",
    "MODEL_SUFFIX",
    "ModelMetadata",
    "content_sha256",
    "describe",
    "load_model",
    "make_metadata",
    "read_metadata",
    "save_model",
    "verify_checksum",
]

