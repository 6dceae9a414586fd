"""Pretrained registry: entries, weight resolution order, checksums and the download cache."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from tympan.config import EFFICIENTAT_FEATURES
from tympan.errors import ChecksumError, DatasetError, TympanError
from tympan.models import pretrained
from tympan.models.efficientat_transfer import MN04_AS
from tympan.models.pretrained import (
    PretrainedCfg,
    audioset_labels,
    get_pretrained,
    list_pretrained,
    load_pretrained,
    locate_weights,
    register_pretrained,
    resolve_weights,
)

FAKE_BYTES = b"not really a network, but checksummed all the same\n"


def _fake_cfg(source: Path, data: bytes = FAKE_BYTES) -> PretrainedCfg:
    """A registry entry whose 'weights' are ``data``, served from ``source`` by file:// URL."""
    source.write_bytes(data)
    return dataclasses.replace(
        MN04_AS, name="fake", url=source.as_uri(), file_name="fake_weights.pt",
        sha256=hashlib.sha256(data).hexdigest(), n_bytes=len(data),
    )


# -- registry ---------------------------------------------------------------------------------


def test_mn04_entry_describes_the_release() -> None:
    cfg = get_pretrained("mn04_as")
    assert "mn04_as" in list_pretrained()
    assert cfg.url.endswith("/v0.0.1/mn04_as_mAP_432.pt")
    assert cfg.sha256 == "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
    assert cfg.n_bytes == 4_066_513
    assert cfg.features == EFFICIENTAT_FEATURES
    assert (cfg.embedding_dim, cfg.head_dim, cfg.n_audioset_classes) == (384, 512, 527)
    assert "MIT" in cfg.licence and "ICASSP 2023" in cfg.paper


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="mn04_as"):
        get_pretrained("cnn14")


def test_registering_twice_or_an_unknown_architecture_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_pretrained(MN04_AS)
    with pytest.raises(ValueError, match="unknown architecture"):
        register_pretrained(dataclasses.replace(MN04_AS, name="x", architecture="resnet"))


def test_audioset_labels_ship_with_the_package() -> None:
    labels = audioset_labels("mn04_as")
    assert len(labels) == 527
    assert labels[0] == "Speech"
    assert labels[501] == "Sine wave"


# -- loading the real weights -----------------------------------------------------------------


def test_explicit_weights_load_with_strict_keys(mn04_weights: Path) -> None:
    net = load_pretrained("mn04_as", mn04_weights)
    assert not net.training
    state = torch.load(mn04_weights, weights_only=True)
    torch.testing.assert_close(net.state_dict()["classifier.5.bias"], state["classifier.5.bias"])


def test_env_folder_is_searched_recursively(mn04_weights: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # the shared copy sits in a subfolder (efficientat/); point at its grandparent
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(mn04_weights.parent.parent))
    assert locate_weights("mn04_as") == (mn04_weights, "env")
    assert resolve_weights("mn04_as") == mn04_weights


# -- checksums --------------------------------------------------------------------------------


def test_an_explicit_file_with_the_wrong_hash_is_an_error(tmp_path: Path) -> None:
    wrong = tmp_path / "mn04_as_mAP_432.pt"
    wrong.write_bytes(b"corrupt")
    with pytest.raises(ChecksumError, match="sha256"):
        load_pretrained("mn04_as", wrong)


def test_an_env_file_with_the_wrong_hash_is_an_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "mn04_as_mAP_432.pt").write_bytes(b"truncated")
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path))
    with pytest.raises(ChecksumError, match="nested"):
        resolve_weights("mn04_as")


def test_a_download_with_the_wrong_hash_is_discarded(tmp_path: Path) -> None:
    cfg = dataclasses.replace(_fake_cfg(tmp_path / "served.pt"), sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as caught:
        resolve_weights(cfg, cache_dir=cache, allow_download=True)
    assert cfg.file_name in str(caught.value) and "0" * 64 in str(caught.value)
    assert hashlib.sha256(FAKE_BYTES).hexdigest() in str(caught.value)
    assert not (cache / cfg.file_name).exists()


def test_a_missing_explicit_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TympanError, match="not a file"):
        resolve_weights("mn04_as", tmp_path / "nope.pt")


# -- download cache ---------------------------------------------------------------------------


def test_first_load_downloads_into_the_cache_and_the_second_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path / "empty"))
    source = tmp_path / "served.pt"
    cfg = _fake_cfg(source)
    cache = tmp_path / "cache"
    assert locate_weights(cfg, cache_dir=cache) == (None, "download")

    first = resolve_weights(cfg, cache_dir=cache, allow_download=True)
    assert first == cache / "fake_weights.pt"
    assert first.read_bytes() == FAKE_BYTES
    assert locate_weights(cfg, cache_dir=cache) == (first, "cache")

    source.unlink()  # a second download would now fail
    mtime = first.stat().st_mtime_ns
    second = resolve_weights(cfg, cache_dir=cache, allow_download=True)
    assert second == first
    assert first.stat().st_mtime_ns == mtime  # not rewritten either
    assert sorted(p.name for p in cache.iterdir()) == ["fake_weights.pt"]


def test_the_default_cache_folder_follows_the_env(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS_CACHE", str(tmp_path / "wcache"))
    cfg = _fake_cfg(tmp_path / "served.pt")
    path = resolve_weights(cfg, allow_download=True)
    assert path == tmp_path / "wcache" / "fake_weights.pt"


def test_offline_without_local_weights_says_what_to_do(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("TYMPAN_OFFLINE", "1")
    cfg = _fake_cfg(tmp_path / "served.pt")
    with pytest.raises(TympanError, match="TYMPAN_WEIGHTS") as caught:
        resolve_weights(cfg, cache_dir=tmp_path / "cache")
    _says_which_file_from_where_and_where_to(str(caught.value), cfg, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def _says_which_file_from_where_and_where_to(message: str, cfg: PretrainedCfg,
                                             cache: Path) -> None:
    assert cfg.file_name in message and cfg.sha256 in message and cfg.url in message
    assert "$TYMPAN_WEIGHTS" in message and "--weights PATH" in message
    assert str(cache / cfg.file_name) in message


def test_a_failed_download_says_which_file_from_where_and_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TYMPAN_WEIGHTS", str(tmp_path / "empty"))
    cfg = _fake_cfg(tmp_path / "served.pt")
    (tmp_path / "served.pt").unlink()  # the URL now fails
    with pytest.raises(DatasetError, match="download failed") as caught:
        resolve_weights(cfg, cache_dir=tmp_path / "cache", allow_download=True)
    _says_which_file_from_where_and_where_to(str(caught.value), cfg, tmp_path / "cache")
    with pytest.raises(TympanError, match="not a file") as caught:
        resolve_weights(cfg, tmp_path / "nope.pt", cache_dir=tmp_path / "cache")
    _says_which_file_from_where_and_where_to(str(caught.value), cfg, tmp_path / "cache")


def test_a_cached_file_that_went_bad_is_an_error(tmp_path: Path) -> None:
    cfg = _fake_cfg(tmp_path / "served.pt")
    cache = tmp_path / "cache"
    path = resolve_weights(cfg, cache_dir=cache, allow_download=True)
    path.write_bytes(b"bit rot")
    with pytest.raises(ChecksumError):
        resolve_weights(cfg, cache_dir=cache)


def test_a_checkpoint_that_does_not_fit_the_network_is_a_tympan_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"features.0.0.weight": torch.zeros(3)}, path)
    cfg = dataclasses.replace(MN04_AS, name="other", file_name="other.pt",
                              sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(TympanError, match="does not fit"):
        pretrained.load_pretrained(cfg, path)
