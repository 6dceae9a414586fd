"""Atomic writes: a failure mid-write leaves the old file untouched and no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SmallDisk

from tympan.errors import NoSpaceError
from tympan.fileio import atomic_path, atomic_write_text, sha256_file


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_sha256_file_matches_known_digest(tmp_path: Path) -> None:
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_atomic_write_gives_ordinary_file_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        target = tmp_path / "model.safetensors"
        atomic_write_text(target, "x")
        assert target.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def test_a_full_disk_is_one_error_naming_the_folder_and_keeps_the_old_file(
        small_disk: SmallDisk) -> None:
    target = small_disk.root / "results.json"
    atomic_write_text(target, "earlier results")
    small_disk.fill()
    with pytest.raises(NoSpaceError, match=f"no space left on {small_disk.root}"):
        atomic_write_text(target, "x" * 1_000_000)
    assert target.read_text() == "earlier results"
    assert not list(small_disk.root.glob(".*.tmp"))
    assert NoSpaceError.exit_code == 1
