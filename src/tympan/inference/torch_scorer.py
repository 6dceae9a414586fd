"""Windows → probabilities with a torch model (the :class:`~tympan.inference.detect.Detector`'s
engine for a ``.safetensors`` model file).

Each window is featurised on its own samples (:class:`~tympan.features.LogMel`)
and scored with :func:`~tympan.inference.predict.clip_probabilities`, so a
window's probabilities are what :class:`~tympan.inference.predict.Predictor`
gives for a clip of those samples.
"""

from __future__ import annotations

import numpy as np
import torch

from tympan.errors import ModelOutputError
from tympan.features import LogMel
from tympan.inference.predict import NON_FINITE_OUTPUT, clip_probabilities, resolve_device
from tympan.models.modelfile import LoadedModel


class TorchScorer:
    """Score equal-length waveform windows with ``loaded``'s network on ``device``.

    ``batch_size`` is windows per forward pass (times the patches per window);
    ``threads`` sets torch's intra-op threads for the process (None: leave it).
    """

    def __init__(self, loaded: LoadedModel, *, device: str | torch.device | None = None,
                 batch_size: int = 8, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.classes = loaded.classes
        self.feature_config = loaded.feature_config
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.frontend = LogMel(self.feature_config).to(self.device)

    @torch.inference_mode()
    def score(self, windows: np.ndarray, *, keep_spectrum: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(n, n_classes)`` of waveforms ``(n, samples)`` and, with
        ``keep_spectrum``, each window's mean log-mel ``(n, n_mels)``.

        Raises:
            ModelOutputError: the model gives NaN or infinite probabilities.
        """
        wave = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
        specs = self.frontend(wave).cpu()  # patching runs on the CPU, the network on device
        patches_per_window = max(1, -(-specs.shape[-1] // self.feature_config.patch_hop_frames))
        probs = clip_probabilities(self.model, specs, self.feature_config,
                                   batch_size=max(1, self.batch_size * patches_per_window))
        if not np.isfinite(probs).all():
            raise ModelOutputError(NON_FINITE_OUTPUT)
        return probs, specs.mean(dim=-1).numpy() if keep_spectrum else None


__all__ = ["TorchScorer"]
