"""Dataset discovery: folder per class, CSV, ESC-50 layout, bad input, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import synth

from tympan.data.sources import EmptyClassWarning, discover, iter_audio_files, read_class_folders
from tympan.errors import DatasetError


def test_folder_per_class_with_any_extension(tmp_path):
    synth.write(tmp_path / "a" / "1.wav", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "a" / "2.flac", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "b" / "1.ogg", synth.noise_burst(0.2, 8000), 8000)
    (tmp_path / "b" / "readme.txt").write_text("not listed: not an audio name")
    m = discover(tmp_path)
    assert m.classes == ["a", "b"] and len(m) == 3 and m.bad_files == []
    assert not m.has_folds and m.name == tmp_path.name


def test_nested_folders_and_loose_files_are_ignored_with_a_warning(tmp_path):
    synth.write(tmp_path / "a" / "1.wav", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "a" / "deeper" / "x.wav", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "b" / "1.wav", synth.tone(600, 0.2, 8000), 8000)
    synth.write(tmp_path / "loose.wav", synth.tone(600, 0.2, 8000), 8000)
    with pytest.warns(UserWarning, match="nested folder"):
        m = read_class_folders(tmp_path)
    assert sorted(c.path.name for c in m) == ["1.wav", "1.wav"]


def test_bad_files_are_listed_with_reasons_and_good_ones_kept(bad_folder):
    m = discover(bad_folder.root)
    assert sorted(c.path for c in m) == sorted(bad_folder.good + [
        p for p, cause in bad_folder.bad.items() if cause == "NaN"])  # NaN: header is fine
    reasons = {b.path: b.reason for b in m.bad_files}
    for path, cause in bad_folder.bad.items():
        if cause != "NaN":
            assert cause in reasons[path]


def test_csv_layout_with_relative_paths_folds_and_groups(tmp_path):
    synth.write(tmp_path / "clips" / "x.wav", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "clips" / "y.wav", synth.noise_burst(0.2, 8000), 8000)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,fold,group\nclips/x.wav,tone,1,g1\nclips/y.wav,noise,2,\n")
    m = discover(csv)
    assert [(c.path, c.label, c.fold, c.group) for c in m] == [
        (tmp_path / "clips" / "x.wav", "tone", 1, "g1"),
        (tmp_path / "clips" / "y.wav", "noise", 2, None)]


@pytest.mark.parametrize("text, message", [
    ("file,label\nx.wav,a\n", "missing column"),
    ("path,label,fold\nx.wav,a,one\n", "fold must be an integer"),
    ("path,label\n,a\n", "empty path"),
    ("path,label\n", "lists no clips"),
])
def test_bad_csv_is_a_clear_error(tmp_path, text, message):
    csv = tmp_path / "labels.csv"
    csv.write_text(text)
    with pytest.raises(DatasetError, match=message):
        discover(csv)


def test_esc50_layout_and_esc10_subset(tmp_path):
    root = synth.make_fake_esc50(tmp_path / "esc50", classes=("dog", "rain", "crow"), folds=3)
    m = discover(root)
    assert m.classes == ["crow", "dog", "rain"] and len(m) == 9 and m.has_folds
    assert sorted({c.fold for c in m}) == [1, 2, 3]
    assert {c.group for c in m} == {"100", "101", "102"}
    with pytest.raises(DatasetError, match="at least 2"):
        discover(root, subset="esc10")  # only "dog" is ESC-10 in this fake: one class
    with pytest.raises(DatasetError, match="unknown ESC-50 subset"):
        discover(root, subset="esc20")


def test_subset_outside_esc50_is_rejected(tone_dataset):
    with pytest.raises(DatasetError, match="ESC-50 layout only"):
        discover(tone_dataset, subset="esc10")


def test_missing_path_no_audio_and_single_class_fail_before_work(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        discover(tmp_path / "nowhere")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no audio files"):
        discover(tmp_path / "empty")
    synth.write(tmp_path / "one" / "a" / "1.wav", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "one" / "a" / "2.wav", synth.tone(300, 0.2, 8000), 8000)
    with pytest.raises(DatasetError, match="1 class"):
        discover(tmp_path / "one")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(DatasetError, match="folder or a .csv"):
        discover(text)


def test_all_files_unreadable_is_an_error(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable audio.*2 unreadable"):
        discover(tmp_path)


def test_iter_audio_files_expands_folders(tone_dataset):
    files = iter_audio_files([tone_dataset])
    assert len(files) == 6 and all(f.suffix == ".wav" for f in files)


# -- CSV edge cases: duplicates, partial folds, ragged rows, encodings ------------------------


def _two_clips(tmp_path):
    """Write audio/x.wav (a tone) and audio/y.wav (noise) next to a CSV to come."""
    synth.write(tmp_path / "audio" / "x.wav", synth.tone(300, 0.2, 8000), 8000)
    synth.write(tmp_path / "audio" / "y.wav", synth.noise_burst(0.2, 8000), 8000)


def _csv(tmp_path, text, encoding="utf-8"):
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_same_file_through_two_spellings_is_an_error(tmp_path):
    _two_clips(tmp_path)
    path = _csv(tmp_path, "path,label\naudio/x.wav,a\naudio/y.wav,b\naudio/../audio/x.wav,a\n")
    pattern = r"labels.csv:4: audio/\.\./audio/x.wav is the same file as line 2 \(audio/x.wav\)"
    with pytest.raises(DatasetError, match=pattern) as info:
        discover(path)
    assert "list each clip once" in str(info.value)


def test_csv_same_path_with_two_labels_is_an_error(tmp_path):
    _two_clips(tmp_path)
    path = _csv(tmp_path, "path,label\naudio/x.wav,dog\naudio/y.wav,cat\naudio/x.wav,cat\n")
    with pytest.raises(DatasetError, match=r"labels.csv:4: .*'cat'.*line 2.*'dog'"):
        discover(path)


def test_csv_paths_are_normalised(tmp_path):
    _two_clips(tmp_path)
    path = _csv(tmp_path, "path,label\naudio/./x.wav,a\naudio/../audio/y.wav,b\n")
    assert [c.path for c in discover(path)] == [tmp_path / "audio" / "x.wav",
                                                tmp_path / "audio" / "y.wav"]


def test_csv_with_some_blank_folds_is_an_error(tmp_path):
    _two_clips(tmp_path)
    synth.write(tmp_path / "audio" / "z.wav", synth.tone(600, 0.2, 8000), 8000)
    path = _csv(tmp_path, "path,label,fold\naudio/x.wav,a,1\naudio/y.wav,b,\naudio/z.wav,a, \n")
    with pytest.raises(DatasetError, match=r"labels.csv: fold is blank on line\(s\) 3, 4"):
        discover(path)


def test_csv_with_an_all_blank_fold_column_has_no_folds(tmp_path):
    _two_clips(tmp_path)
    manifest = discover(_csv(tmp_path, "path,label,fold\naudio/x.wav,a,\naudio/y.wav,b,\n"))
    assert not manifest.has_folds and len(manifest) == 2


def test_csv_row_with_an_unquoted_comma_is_an_error(tmp_path):
    _two_clips(tmp_path)
    path = _csv(tmp_path, "path,label\naudio/x.wav,dog, big\naudio/y.wav,cat\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: 3 cells but the header has 2.*quote"):
        discover(path)
    quoted = _csv(tmp_path, 'path,label\naudio/x.wav,"dog, big"\naudio/y.wav,cat\n')
    assert discover(quoted).classes == ["cat", "dog, big"]


def test_csv_row_with_too_few_cells_is_an_error(tmp_path):
    _two_clips(tmp_path)
    path = _csv(tmp_path, "path,label,fold\naudio/x.wav,a,1\naudio/y.wav,b\n")
    with pytest.raises(DatasetError, match=r"labels.csv:3: 2 cells but the header has 3"):
        discover(path)


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    _two_clips(tmp_path)  # as Excel's "CSV UTF-8" writes it: a BOM and CRLF line ends
    manifest = discover(_csv(tmp_path, "\ufeffpath,label\r\naudio/x.wav,a\r\naudio/y.wav,b\r\n"))
    assert manifest.classes == ["a", "b"]


def test_latin1_csv_is_an_error_naming_line_and_byte(tmp_path):
    _two_clips(tmp_path)
    path = _csv(tmp_path, "path,label\naudio/x.wav,caf\u00e9\naudio/y.wav,b\n", "latin-1")
    with pytest.raises(DatasetError, match=r"labels.csv: not UTF-8 text: byte 26 \(line 2\)"):
        discover(path)


def test_binary_file_named_csv_is_an_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"path,label\n" + bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match=r"labels.csv: not UTF-8 text: byte 139 \(line 3\)"):
        discover(path)


def test_broken_esc50_metadata_is_a_clear_error(tmp_path: Path) -> None:
    from tympan.data.sources import read_esc50

    meta = tmp_path / "meta"
    meta.mkdir()
    with pytest.raises(DatasetError, match="esc50.csv: cannot read"):
        read_esc50(tmp_path)
    (meta / "esc50.csv").write_text("filename,fold,category\n")
    with pytest.raises(DatasetError, match="missing column.*src_file"):
        read_esc50(tmp_path)
    header = "filename,fold,target,category,esc10,src_file,take\n"
    (meta / "esc50.csv").write_text(header + "1-1-A-0.ogg,one,0,dog,True,1,A\n")
    with pytest.raises(DatasetError, match=r"esc50.csv:2: fold must be an integer"):
        read_esc50(tmp_path)
    (meta / "esc50.csv").write_text(header + "1-1-A-0.ogg,1,0,dog\n")
    with pytest.raises(DatasetError, match=r"esc50.csv:2: empty src_file"):
        read_esc50(tmp_path)
    (meta / "esc50.csv").write_text(header + "1-1-A-0.ogg,1,0,dog,False,1,A\n")
    with pytest.raises(DatasetError, match="lists no clips of ESC-10"):
        read_esc50(tmp_path, subset="esc10")


def test_an_empty_class_folder_is_left_out_with_a_warning_naming_it(tone_dataset):
    (tone_dataset / "silence").mkdir()
    (tone_dataset / "silence" / "notes.txt").write_text("no audio here")
    with pytest.warns(EmptyClassWarning, match="silence.*no audio files"):
        manifest = discover(tone_dataset)
    assert manifest.classes == ["high", "low"]


def test_a_symlink_loop_in_a_class_folder_is_a_bad_file_saying_so(tone_dataset):
    loop = tone_dataset / "low" / "loop.wav"
    loop.symlink_to(loop.name)
    manifest = discover(tone_dataset)
    assert [(b.path, b.reason) for b in manifest.bad_files] == [
        (loop, "symlink loop (the link resolves to itself)")]


def test_a_csv_row_naming_a_symlink_loop_is_a_bad_file(tone_dataset):
    loop = tone_dataset / "low" / "loop.wav"
    loop.symlink_to(loop.name)
    csv_path = tone_dataset / "list.csv"
    csv_path.write_text("path,label\nlow/0.wav,low\nlow/loop.wav,low\nhigh/0.wav,high\n")
    manifest = discover(csv_path)
    assert len(manifest) == 2 and "symlink loop" in manifest.bad_files[0].reason
