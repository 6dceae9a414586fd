"""Shared pytest fixtures (append yours; keep each one small and documented)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import synth` from any test module

import synth  # noqa: E402


@pytest.fixture
def bad_folder(tmp_path: Path) -> synth.BadFolder:
    """A two-class folder dataset holding good clips and the issue's bad-input zoo."""
    return synth.make_bad_folder(tmp_path / "zoo")


@pytest.fixture
def tone_dataset(tmp_path: Path) -> Path:
    """A clean two-class folder dataset: 3 low tones, 3 high tones, 0.5 s at 22.05 kHz."""
    root = tmp_path / "tones"
    for i, freq in enumerate((300, 400, 500)):
        synth.write(root / "low" / f"{i}.wav", synth.tone(freq, 0.5, 22050), 22050)
    for i, freq in enumerate((3000, 4000, 5000)):
        synth.write(root / "high" / f"{i}.wav", synth.tone(freq, 0.5, 22050), 22050)
    return root


@pytest.fixture(autouse=True)
def _isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point the feature cache at a temp folder so tests never touch the user's cache."""
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path_factory.mktemp("feature-cache")))


# -- model files (tests/test_modelfile.py, test_predict.py, test_cli_predict.py) -------------

if TYPE_CHECKING:
    from torch import nn

    from tympan.config import FeatureConfig

TINY_CLASSES = ["click", "noise", "tone"]


def tiny_features() -> FeatureConfig:
    """A small, fast front end: 16 kHz, 32 mels, 32-frame patches (~0.5 s) with hop 16."""
    from tympan.config import FeatureConfig

    return FeatureConfig(name="tiny16k", sample_rate=16000, n_fft=512, hop_samples=256,
                         n_mels=32, patch_frames=32, patch_hop_frames=16)


def tiny_model(n_classes: int = 3, seed: int = 0) -> nn.Module:
    """An untrained registry ``cnn-s`` with 4/8 channels (a few hundred weights)."""
    import torch

    from tympan import models

    torch.manual_seed(seed)
    return models.create("cnn-s", n_classes, channels=[4, 8], hidden=8).eval()


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """An untrained 3-class tiny ``cnn-s`` saved as ``tmp_path/tiny.safetensors``."""
    from tympan.models.modelfile import make_metadata, save_model

    model = tiny_model(len(TINY_CLASSES))
    metadata = make_metadata(model, TINY_CLASSES, tiny_features(), train_config={"epochs": 0})
    return save_model(tmp_path / "tiny.safetensors", model, metadata)


def own_length_model(n_classes: int = 3, seed: int = 0) -> nn.Module:
    """An untrained ``cnn-s`` of four narrow blocks (its minimum width 16 frames) in eval
    mode, with batch-norm statistics that are not the identity."""
    import torch

    from tympan import models

    torch.manual_seed(seed)
    model = models.create("cnn-s", n_classes, channels=[4, 8, 8, 8], hidden=8)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def own_length_model_file(tmp_path: Path) -> Path:
    """:func:`own_length_model` with the seed front end (44.1 kHz, 128-frame ~3 s patches)
    keeping short clips at their own length, 16 frames (0.37 s) at least."""
    from tympan.config import SEED_FEATURES
    from tympan.models.modelfile import make_metadata, save_model

    model = own_length_model(len(TINY_CLASSES))
    front = SEED_FEATURES.replace(min_patch_frames=16)
    metadata = make_metadata(model, TINY_CLASSES, front, train_config={"epochs": 0})
    return save_model(tmp_path / "own-length.safetensors", model, metadata)


# -- training (tests/test_train.py, test_evaluate.py, test_classifier.py, test_cli_train.py) --


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread per test process: with `pytest -n 2` on two cores, more threads
    only contend (measured here: a 1 s log-mel took 0.2 s with 2 threads vs 1.4 ms with 1)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sound_classes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four-class folder dataset (tone, chirp, noise, click; random gain and offset):
    12 clips of 0.75 s at 16 kHz per class, made by :func:`tympan.workflows.demo.make_dataset`."""
    from tympan.workflows.demo import make_dataset

    return make_dataset(tmp_path_factory.mktemp("sounds") / "sounds", n_per_class=12,
                        duration_seconds=0.75, seed=7)


# -- pretrained weights (tests/test_pretrained.py, test_efficientat.py, test_transfer.py …) ---

#: Where the project's offline copy of the pretrained weights lives, relative to the repo.
SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"


@pytest.fixture(autouse=True)
def _offline_weights(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests never download weights nor touch the user's weight cache: an empty temp cache,
    ``TYMPAN_OFFLINE=1``, and ``TYMPAN_WEIGHTS`` pointing at the shared copy when it exists."""
    import os

    monkeypatch.setenv("TYMPAN_WEIGHTS_CACHE", str(tmp_path_factory.mktemp("weights-cache")))
    monkeypatch.setenv("TYMPAN_OFFLINE", "1")
    if not os.environ.get("TYMPAN_WEIGHTS") and SHARED_WEIGHTS.is_dir():
        monkeypatch.setenv("TYMPAN_WEIGHTS", str(SHARED_WEIGHTS))


@pytest.fixture
def mn04_weights() -> Path:
    """The mn04_as AudioSet checkpoint (skips the test, saying why, when it is absent)."""
    from tympan.models.pretrained import find_local_weights, get_pretrained

    path = find_local_weights(get_pretrained("mn04_as"))
    if path is None:
        pytest.skip("mn04_as weights not found: set TYMPAN_WEIGHTS to a folder holding "
                    "mn04_as_mAP_432.pt (e.g. ../shared/weights)")
    return path


# -- serving (tests/test_serve_*.py) --------------------------------------------------------

SERVE_CLASSES = ("click", "noise", "tone")


@pytest.fixture(scope="session")
def trained_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``cnn-s`` (tiny16k front end) trained on synthetic clicks, noise and tones
    (10 epochs, ~10 s on one core), saved with its CV-style metrics; it labels a steady
    tone "tone" reliably, through lossy codecs too."""
    import torch

    import tympan
    from tympan.models.modelfile import make_metadata, save_model
    from tympan.workflows.demo import synth_arrays

    torch.manual_seed(0)
    waves, labels = synth_arrays(10, classes=SERVE_CLASSES, seed=11, duration_seconds=0.75)
    clf = tympan.Classifier("cnn-s", epochs=10, batch_size=8, features=tiny_features(),
                            early_stopping_patience=0).fit(waves, labels)
    held_out, truth = synth_arrays(4, classes=SERVE_CLASSES, seed=12, duration_seconds=0.75)
    metrics = {"accuracy_mean": float(clf.score(held_out, truth)), "n_clips": len(truth)}
    metadata = make_metadata(clf.model_, list(clf.classes_), clf.feature_config_,
                             train_config=clf.recipe_, metrics=metrics)
    return save_model(tmp_path_factory.mktemp("serve-model") / "tones.safetensors", clf.model_,
                      metadata)


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 at a free port in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


# -- a full disk (tests/test_fileio.py, test_cli.py, test_cache.py …) ---------------------------


class SmallDisk:
    """A 2 MiB tmpfs mounted at ``root``; :meth:`fill` then uses up every free byte."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def fill(self) -> None:
        """Write a ballast file until the file system refuses with ENOSPC."""
        import errno

        with open(self.root / "ballast", "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 2 MiB tmpfs of its own (root on Linux; skipped with the reason elsewhere)."""
    import subprocess

    root = tmp_path / "disk"
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip() or 'not root'})")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


# -- ONNX export (tests/test_export.py, test_onnx_predict.py) ---------------------------------


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model file, exact ONNX export)`` of the untrained tiny 3-class ``cnn-s``
    (exported once per test process: an export takes seconds)."""
    pytest.importorskip("onnxscript")
    from tympan.inference.onnx_export import export_onnx
    from tympan.models.modelfile import load_model, make_metadata, save_model

    folder = tmp_path_factory.mktemp("tiny-onnx")
    model = tiny_model(len(TINY_CLASSES))
    metadata = make_metadata(model, TINY_CLASSES, tiny_features(), train_config={"epochs": 0})
    model_file = save_model(folder / "tiny.safetensors", model, metadata)
    return model_file, export_onnx(load_model(model_file), folder / "tiny.onnx")
