"""Export a model file to ONNX: one graph from raw waveform to clip probabilities.

The graph holds the whole prediction pipeline of :class:`~tympan.inference.predict.Predictor`
after decoding: the log-mel front end (:class:`~tympan.features.LogMel`, its STFT
exported as ONNX's ``STFT`` op), patching (as :func:`tympan.windows.split_patches`:
a clip shorter than a patch is padded with its own minimum, to the whole patch or,
with ``min_patch_frames``, only up to that minimum, keeping its own length; the
last patch is end-aligned), the network, and the mean of the patches' softmaxes. Input
``waveform`` ``(batch, samples)`` float32 mono at the model's rate (dynamic
batch and length; a batch holds clips of one length); output ``probabilities``
``(batch, n_classes)``. The classes, rate and patch settings travel as ONNX
``metadata_props`` (:data:`METADATA_KEYS`), so running it needs no torch
(:mod:`tympan.runtime`).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tympan import __version__
from tympan.config import FeatureConfig
from tympan.errors import ModelFileError
from tympan.features import LogMel
from tympan.fileio import atomic_path, sha256_file
from tympan.inference.events import model_thresholds
from tympan.inference.onnx_frontend import ExportLogMel
from tympan.models.modelfile import LoadedModel

#: The ONNX opset the exporter targets (the STFT op needs >= 17; dynamo's lowering wants 18).
OPSET = 18

#: ``metadata_props`` every exported graph carries (values are strings; JSON where noted).
METADATA_KEYS = ("tympan.classes", "tympan.sample_rate", "tympan.feature_config",
                 "tympan.patch_frames", "tympan.patch_hop_frames", "tympan.time_shifts",
                 "tympan.source_sha256", "tympan.source_model", "tympan.stft", "tympan.version",
                 "tympan.thresholds")


@dataclass(frozen=True)
class ExportOptions:
    """Speed settings an export may trade against exactness (defaults are exact).

    ``time_shifts``: circular time shifts per patch averaged by a transfer model
    (None keeps the model's own; 1 halves the work of the frozen default).
    ``stft``: ``"matmul"`` (:class:`~tympan.inference.onnx_frontend.MatmulStft`,
    fast) or ``"onnx"`` (ONNX's ``STFT`` op, slow in onnxruntime).
    """

    time_shifts: int | None = None
    stft: Literal["matmul", "onnx"] = "matmul"

    def __post_init__(self) -> None:
        if self.time_shifts is not None and self.time_shifts < 1:
            raise ValueError(f"time_shifts must be >= 1, got {self.time_shifts}")
        if self.stft not in ("matmul", "onnx"):
            raise ValueError(f"stft must be matmul or onnx, got {self.stft!r}")


def patch_count(frames: int, patch_frames: int, hop_frames: int) -> int:
    """Patches :func:`tympan.windows.patch_starts` cuts from ``frames`` frames: one every
    ``hop_frames`` plus an end-aligned one for any frames left over (a log-mel shorter
    than a patch is one patch). ``frames`` may be symbolic (during export)."""
    usable = torch.sym_max(frames - patch_frames, 0)
    return (usable + hop_frames - 1) // hop_frames + 1  # type: ignore[no-any-return]


class WaveformClassifier(nn.Module):
    """Waveform ``(batch, samples)`` at the model's rate → probabilities ``(batch, n_classes)``.

    The module that is exported: front end, patching, network, mean of patch
    softmaxes. With default options it computes what
    :meth:`~tympan.inference.predict.Predictor.predict_proba` computes.
    """

    def __init__(self, network: nn.Module, features: FeatureConfig,
                 stft: str = "matmul") -> None:
        super().__init__()
        self.frontend = ExportLogMel(features) if stft == "matmul" else LogMel(features)
        self.network = network
        self.patch_frames = features.patch_frames
        self.hop_frames = features.patch_hop_frames
        self.min_frames = features.min_patch_frames

    def patches(self, spec: Tensor) -> Tensor:
        """``(batch, n_mels, frames)`` → ``(batch, n_patches, n_mels, width)``: ``width`` is
        ``patch_frames``, or with ``min_patch_frames`` a short clip's own length (at least
        the minimum), as :func:`tympan.windows.split_patches`."""
        batch, n_mels, frames = spec.shape
        size = self.patch_frames
        if self.min_frames is not None and self.min_frames < size:
            size = torch.sym_max(torch.sym_min(frames, size), self.min_frames)
        # A short clip is padded with its own minimum; the filler is never read for a long one.
        floor = spec.amin(dim=(1, 2), keepdim=True).expand(batch, n_mels, size)
        padded = torch.cat([spec, floor], dim=-1)
        n_patches = patch_count(frames, size, self.hop_frames)
        last_start = torch.sym_max(frames - size, 0)
        starts = torch.clamp(torch.arange(n_patches) * self.hop_frames, max=last_start)
        index = starts[:, None] + torch.arange(size)[None, :]  # (n_patches, size)
        # a gather of whole frames (n_mels contiguous values each), not of single values
        picked = torch.index_select(padded.transpose(1, 2), 1, index.reshape(-1))
        return picked.reshape(batch, -1, size, n_mels).transpose(2, 3)

    def forward(self, waveform: Tensor) -> Tensor:
        spec = self.frontend(waveform)  # (batch, n_mels, frames)
        patches = self.patches(spec)
        batch, n_patches = patches.shape[0], patches.shape[1]
        logits = self.network(patches.reshape(batch * n_patches, *patches.shape[2:]))
        probs = torch.softmax(logits.float(), dim=-1)
        return probs.reshape(batch, n_patches, -1).mean(dim=1)


def waveform_classifier(loaded: LoadedModel, options: ExportOptions = ExportOptions()
                        ) -> WaveformClassifier:
    """The exportable module for ``loaded`` (a copy: ``loaded.model`` is not changed).

    Raises:
        ModelFileError: ``options.time_shifts`` is set for a model without time shifts.
    """
    network = copy.deepcopy(loaded.model).cpu().eval()
    if options.time_shifts is not None:
        if not hasattr(network, "time_shifts"):
            raise ModelFileError(f"model {loaded.metadata.model_name!r} has no time shifts; "
                                 "drop --time-shifts")
        setattr(network, "time_shifts", options.time_shifts)  # noqa: B010  (nn.Module typing)
    return WaveformClassifier(network, loaded.feature_config, options.stft).eval()


def export_metadata(loaded: LoadedModel, options: ExportOptions) -> dict[str, str]:
    """The ``metadata_props`` of an export of ``loaded`` (see :data:`METADATA_KEYS`)."""
    features = loaded.feature_config
    shifts = options.time_shifts or int(getattr(loaded.model, "time_shifts", 1))
    return {
        "tympan.classes": json.dumps(loaded.classes),
        "tympan.sample_rate": str(features.sample_rate),
        "tympan.feature_config": features.to_json(indent=None),
        "tympan.patch_frames": str(features.patch_frames),
        "tympan.patch_hop_frames": str(features.patch_hop_frames),
        "tympan.time_shifts": str(shifts),
        "tympan.source_sha256": sha256_file(loaded.path) if loaded.path is not None else "",
        "tympan.source_model": loaded.metadata.model_name,
        "tympan.stft": options.stft,
        "tympan.version": __version__,
        # per-class detection thresholds the training run chose (``tympan detect``)
        "tympan.thresholds": json.dumps(model_thresholds(loaded.metadata.extra)),
    }


def _example_input(features: FeatureConfig) -> Tensor:
    # Longer than two patches, so no length is specialised into the graph.
    samples = (2 * features.patch_frames + 37) * features.hop_samples + 11
    return torch.randn(2, samples, generator=torch.Generator().manual_seed(0)) * 0.1


def _to_onnx(module: WaveformClassifier, features: FeatureConfig) -> Any:
    """The ``onnx.ModelProto`` of ``module`` (dynamo exporter, dynamic batch and length)."""
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples", min=1024)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed": not ours to fix
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (_example_input(features),), dynamo=True, opset_version=OPSET,
                input_names=["waveform"], output_names=["probabilities"],
                dynamic_shapes={"waveform": {0: batch, 1: samples}}, verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    assert program is not None
    program.optimize()
    return program.model_proto


def export_onnx(
    loaded: LoadedModel, path: str | Path, options: ExportOptions = ExportOptions(), *,
    overwrite: bool = False,
) -> Path:
    """Write ``loaded`` as one ONNX graph (waveform → probabilities) to ``path``, atomically.

    Raises:
        ModelFileError: ``path`` exists (and not ``overwrite``) or is a folder.
    """
    import onnx

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; give a file name ending in .onnx")
    if path.exists() and not overwrite:
        raise ModelFileError(f"{path}: already exists; pass --overwrite or choose another name")
    module = waveform_classifier(loaded, options)
    proto = _to_onnx(module, loaded.feature_config)
    for key, value in export_metadata(loaded, options).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"tympan {__version__}: {loaded.metadata.model_name}, "
                        f"{len(loaded.classes)} classes; waveform (batch, samples) at "
                        f"{loaded.feature_config.sample_rate} Hz -> probabilities")
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def export_cache_dir() -> Path:
    """Where :func:`cached_export` keeps exports: ``$TYMPAN_ONNX_CACHE``, else the user
    cache dir ``tympan/onnx``."""
    import os

    env = os.environ.get("TYMPAN_ONNX_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tympan")) / "onnx"


def cached_export(model_path: str | Path, *, verify: bool = True,
                  root: Path | None = None) -> Path:
    """The exact ONNX export of the model file at ``model_path``, made once and kept under
    ``root`` (default :func:`export_cache_dir`) by the file's sha256, so an edited model
    file is exported again.

    Raises:
        ModelFileError: the model file cannot be read or loaded (see ``load_model``).
    """
    from tympan.models.modelfile import load_model

    model_path = Path(model_path)
    try:
        digest = sha256_file(model_path)
    except OSError as exc:
        raise ModelFileError(f"{model_path}: cannot read the model file ({exc})") from exc
    target = (root if root is not None else export_cache_dir()) / f"{digest}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return export_onnx(load_model(model_path, verify=verify), target, overwrite=True)


__all__ = ["METADATA_KEYS", "OPSET", "ExportOptions", "WaveformClassifier", "cached_export",
           "export_cache_dir", "export_metadata", "export_onnx", "patch_count",
           "waveform_classifier"]
