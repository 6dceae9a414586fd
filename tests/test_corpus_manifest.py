"""Corpus manifests: folder trees, CSVs and text files read in order, in shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import synth

from tympan.corpus.manifest import iter_manifest, iter_shards, manifest_kind
from tympan.errors import DatasetError


def _tree(root: Path) -> list[Path]:
    files = [synth.write(root / "b" / "2.wav", synth.tone(440, 0.1, 8000), 8000),
             synth.write(root / "a" / "1.flac", synth.tone(440, 0.1, 8000), 8000),
             synth.write(root / "a" / "0.wav", synth.tone(440, 0.1, 8000), 8000)]
    (root / "a" / "notes.txt").write_text("not audio")
    synth.write(root / ".hidden" / "x.wav", synth.tone(440, 0.1, 8000), 8000)
    return files


def test_folder_is_walked_in_sorted_order_audio_only(tmp_path: Path) -> None:
    _tree(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in iter_manifest(tmp_path)]
    assert names == ["a/0.wav", "a/1.flac", "b/2.wav"]
    assert manifest_kind(tmp_path) == "folder"


def test_csv_paths_are_relative_to_the_csv_and_kept_in_order(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("label,path\nx,b/2.wav\ny,/abs/missing.wav\nz,\n")
    assert list(iter_manifest(tmp_path / "m.csv")) == [tmp_path / "b/2.wav",
                                                      Path("/abs/missing.wav")]


def test_csv_without_path_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\na.wav,x\n")
    with pytest.raises(DatasetError, match="no 'path' column"):
        list(iter_manifest(tmp_path / "m.csv"))


def test_text_file_skips_blanks_and_comments(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("# corpus\na.wav\n\n  sub/b.ogg  \n")
    assert list(iter_manifest(tmp_path / "list.txt")) == [tmp_path / "a.wav",
                                                         tmp_path / "sub/b.ogg"]


def test_missing_manifest_names_itself(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such manifest"):
        iter_manifest(tmp_path / "nope.csv")


def test_shards_are_consecutive_runs_of_files() -> None:
    paths = iter(Path(f"{i}.wav") for i in range(7))
    shards = list(iter_shards(paths, 3))
    assert [index for index, _ in shards] == [0, 1, 2]
    assert [len(chunk) for _, chunk in shards] == [3, 3, 1]
    assert shards[2][1] == [Path("6.wav")]
