"""The model file: weights + JSON metadata in one .safetensors; every bad file is a clear error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, tiny_features, tiny_model
from safetensors.torch import save_file

from tympan.data.manifest import Clip, Manifest
from tympan.errors import ModelFileError, ModelFileWarning
from tympan.models.modelfile import (
    CHECKSUM_KEY,
    FORMAT_VERSION,
    ModelMetadata,
    load_model,
    make_metadata,
    read_metadata,
    save_model,
)


def _metadata(model: torch.nn.Module, labels: list[str] = TINY_CLASSES) -> ModelMetadata:
    manifest = Manifest([Clip(Path(f"/data/{c}/{i}.wav"), c) for c in labels for i in range(2)],
                        name="synthetic")
    return make_metadata(model, labels, tiny_features(),
                         train_config={"epochs": 3, "out": Path("/runs/x")},
                         metrics={"accuracy_mean": 0.9}, manifest=manifest,
                         extra={"note": "test"})


# -- round trip -------------------------------------------------------------------------------


def test_save_load_round_trip_restores_weights_and_metadata(tmp_path: Path) -> None:
    model = tiny_model()
    path = save_model(tmp_path / "m.safetensors", model, _metadata(model))
    loaded = load_model(path)
    assert loaded.classes == TINY_CLASSES
    assert loaded.feature_config == tiny_features()  # the front end comes from the file
    assert loaded.metadata.model_name == "cnn-s"
    assert loaded.metadata.model_config["channels"] == [4, 8]
    assert loaded.metadata.train_config == {"epochs": 3, "out": "/runs/x"}
    assert loaded.metadata.metrics == {"accuracy_mean": 0.9}
    assert loaded.metadata.dataset is not None
    assert loaded.metadata.dataset.n_files == 6
    assert loaded.metadata.dataset.name == "synthetic"
    assert set(loaded.metadata.versions) == {"tympan", "torch", "python"}
    assert not loaded.model.training
    original, restored = model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name


def test_loaded_model_gives_identical_logits(tmp_path: Path) -> None:
    model = tiny_model()
    loaded = load_model(save_model(tmp_path / "m.safetensors", model, _metadata(model)))
    x = torch.randn(5, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.model(x))


def test_read_metadata_reads_the_header_only(tmp_path: Path) -> None:
    model = tiny_model()
    metadata = make_metadata(model, TINY_CLASSES, tiny_features(), model_name="not-registered")
    path = save_model(tmp_path / "m.safetensors", model, metadata)
    assert read_metadata(path).labels == TINY_CLASSES  # no registry lookup needed
    with pytest.raises(ModelFileError, match="not-registered"):
        load_model(path)


def test_metadata_is_one_json_document_in_the_safetensors_header(tmp_path: Path) -> None:
    model = tiny_model()
    path = save_model(tmp_path / "m.safetensors", model, _metadata(model))
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_length])
    stored = header["__metadata__"]
    assert stored["format_version"] == str(FORMAT_VERSION)
    assert json.loads(stored["tympan"])["labels"] == TINY_CLASSES


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    path = save_model(tmp_path / "m.safetensors", model, _metadata(model))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model file must not be unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_model(path).classes == TINY_CLASSES


# -- saving -----------------------------------------------------------------------------------


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first, second = tiny_model(seed=0), tiny_model(seed=1)
    path = save_model(tmp_path / "m.safetensors", first, _metadata(first))
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match="already exists"):
        save_model(path, second, _metadata(second))
    assert path.read_bytes() == before
    save_model(path, second, _metadata(second), overwrite=True)
    restored = load_model(path).model.state_dict()
    assert all(torch.equal(v, restored[k]) for k, v in second.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp files


def test_make_metadata_requires_a_model_name() -> None:
    with pytest.raises(ValueError, match="model_name"):
        make_metadata(torch.nn.Linear(2, 2), ["a", "b"], tiny_features())


# -- bad files --------------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    model = tiny_model()
    return save_model(tmp_path / "good.safetensors", model, _metadata(model))


def test_missing_file_is_a_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileError, match="no such model file") as info:
        load_model(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelFileError, match="no such model file"):
        read_metadata(path)


def test_folder_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="folder"):
        load_model(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 8, 200, 0.5, -64, -1])
def test_truncated_file_is_a_model_file_error(good_file: Path, tmp_path: Path,
                                              keep: float) -> None:
    data = good_file.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelFileError, match="truncated or corrupt") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_text_file_is_a_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("my notes, not a model\n" * 20)
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(path)


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_foreign_safetensors_is_a_model_file_error(tmp_path: Path,
                                                   metadata: dict[str, str] | None) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="without tympan metadata") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "future.safetensors"
    header = {"tympan": _metadata(model).to_json(), "format_version": str(FORMAT_VERSION + 1)}
    save_file(dict(model.state_dict()), str(path), metadata=header)
    with pytest.raises(ModelFileError, match="newer.*upgrade tympan"):
        load_model(path)


def test_invalid_metadata_json_is_a_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    save_file({"w": torch.zeros(1)}, str(path),
              metadata={"tympan": "{not json", "format_version": "1"})
    with pytest.raises(ModelFileError, match="invalid tympan metadata"):
        read_metadata(path)


def test_unknown_model_name_is_a_model_file_error(tmp_path: Path) -> None:
    model = tiny_model()
    metadata = make_metadata(model, TINY_CLASSES, tiny_features(), model_name="resnet-9000")
    path = save_model(tmp_path / "m.safetensors", model, metadata)
    with pytest.raises(ModelFileError, match="'resnet-9000' is not in this tympan's registry"):
        load_model(path)


def test_weight_shape_mismatch_is_a_model_file_error(tmp_path: Path) -> None:
    model = tiny_model(n_classes=3)
    # metadata claims 4 labels, the weights have a 3-way head
    metadata = make_metadata(model, ["a", "b", "c", "d"], tiny_features())
    path = save_model(tmp_path / "m.safetensors", model, metadata)
    with pytest.raises(ModelFileError, match=r"weights do not fit.*shape \[3, 8\].*\[4, 8\]"):
        load_model(path)


def test_missing_weights_are_a_model_file_error(tmp_path: Path) -> None:
    model = tiny_model()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    path = tmp_path / "partial.safetensors"
    save_file(weights, str(path), metadata={"tympan": _metadata(model).to_json(),
                                            "format_version": "1"})
    with pytest.raises(ModelFileError, match="missing weights: classifier"), \
            pytest.warns(ModelFileWarning, match="no checksum"):
        load_model(path)


def test_metadata_from_a_numpy_metric_is_serialised(tmp_path: Path) -> None:
    model = tiny_model()
    metadata = make_metadata(model, TINY_CLASSES, tiny_features(),
                             metrics={"accuracy_mean": np.float64(0.5)})
    path = save_model(tmp_path / "m.safetensors", model, metadata)
    assert read_metadata(path).metrics == {"accuracy_mean": 0.5}


# -- tamper evidence --------------------------------------------------------------------------


def _split(path: Path) -> tuple[dict, bytes]:  # type: ignore[type-arg]
    """The safetensors JSON header of ``path`` and the data section after it."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length]), data[8 + length:]


def _rewrite_header(path: Path, header: dict) -> None:  # type: ignore[type-arg]
    """Write ``header`` back in front of the unchanged data (valid safetensors)."""
    _, body = _split(path)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + body)


def _edit_metadata(path: Path, edit: object) -> None:
    """Apply ``edit`` to the tympan metadata document, keeping the file valid JSON."""
    header, _ = _split(path)
    document = json.loads(header["__metadata__"]["tympan"])
    edit(document)  # type: ignore[operator]
    header["__metadata__"]["tympan"] = json.dumps(document)
    _rewrite_header(path, header)


def test_a_flipped_weight_byte_is_a_checksum_mismatch(good_file: Path) -> None:
    header, _ = _split(good_file)
    start = header["features.layers.2.running_var"]["data_offsets"][0]
    data = bytearray(good_file.read_bytes())
    sign = 8 + int.from_bytes(data[:8], "little") + start + 3  # float32 little-endian: last byte
    data[sign] ^= 0x80
    good_file.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch: the file was changed") as info:
        load_model(good_file)
    assert str(good_file) in str(info.value)


def test_an_edited_sample_rate_is_a_checksum_mismatch(good_file: Path) -> None:
    _edit_metadata(good_file, lambda d: d["feature_config"].update(sample_rate=26000))
    assert read_metadata(good_file).features.sample_rate == 26000  # still a readable header
    with pytest.raises(ModelFileError, match=f"{good_file}: checksum mismatch"):
        load_model(good_file)


def test_a_renamed_label_is_a_checksum_mismatch(good_file: Path) -> None:
    _edit_metadata(good_file, lambda d: d["labels"].__setitem__(0, "dog"))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(good_file)


def test_an_edited_checksum_is_a_mismatch(good_file: Path) -> None:
    header, _ = _split(good_file)
    header["__metadata__"][CHECKSUM_KEY] = "0" * 64
    _rewrite_header(good_file, header)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(good_file)


def test_no_verify_loads_a_changed_file_with_a_warning(good_file: Path) -> None:
    _edit_metadata(good_file, lambda d: d["labels"].__setitem__(0, "dog"))
    with pytest.warns(ModelFileWarning, match=f"{good_file}: loaded without verifying"):
        loaded = load_model(good_file, verify=False)
    assert loaded.classes == ["dog", *TINY_CLASSES[1:]]


def test_a_file_without_checksum_loads_with_a_warning(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "old.safetensors"  # written as tympan did before checksums
    save_file(dict(model.state_dict()), str(path),
              metadata={"tympan": _metadata(model).to_json(), "format_version": "1"})
    with pytest.warns(ModelFileWarning, match="no checksum.*cannot be verified"):
        loaded = load_model(path)
    assert loaded.classes == TINY_CLASSES


def test_an_unmodified_file_loads_without_warnings(good_file: Path) -> None:
    import warnings

    header, _ = _split(good_file)
    assert len(header["__metadata__"][CHECKSUM_KEY]) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(good_file).classes == TINY_CLASSES
