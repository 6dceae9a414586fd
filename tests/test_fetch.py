"""Data directory, the generic checksummed downloader, and the ESC-50 fetcher (file:// URLs)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import synth

from tympan.data.fetch import (
    check_esc50,
    data_dir,
    dataset_path,
    download,
    esc50_path,
    fetch_esc50,
)
from tympan.data.sources import discover
from tympan.errors import ChecksumError, DatasetError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_data_dir_is_tympan_data_else_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TYMPAN_DATA", str(tmp_path))
    assert data_dir() == tmp_path and dataset_path("esc50") == tmp_path / "esc50"
    monkeypatch.delenv("TYMPAN_DATA")
    assert data_dir().parts[-2:] == ("tympan", "datasets")


def test_download_verifies_and_caches(tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"pretend model weights" * 100)
    dest = tmp_path / "out" / "w.bin"
    assert download(source.as_uri(), dest, _sha(source.read_bytes()), progress=False) == dest
    assert dest.read_bytes() == source.read_bytes()
    # present with the right hash: not downloaded again (the source may even be gone)
    source.unlink()
    assert download(source.as_uri(), dest, _sha(dest.read_bytes()), progress=False) == dest
    assert [p.name for p in dest.parent.iterdir()] == ["w.bin"]  # no temp files left


def test_checksum_mismatch_raises_and_writes_nothing(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"abc")
    dest = tmp_path / "out" / "a.bin"
    with pytest.raises(ChecksumError, match="does not match"):
        download(source.as_uri(), dest, "0" * 64, progress=False)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_stale_file_with_wrong_hash_is_replaced(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"new content")
    dest = tmp_path / "a-copy.bin"
    dest.write_bytes(b"old, damaged")
    download(source.as_uri(), dest, _sha(b"new content"), progress=False)
    assert dest.read_bytes() == b"new content"


def test_unreachable_url_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="download failed"):
        download((tmp_path / "missing.zip").as_uri(), tmp_path / "x.zip", progress=False)


@pytest.fixture
def esc50_zip(tmp_path):
    fake = synth.make_fake_esc50(tmp_path / "src")
    return synth.zip_folder(fake, tmp_path / "master.zip")


def test_fetch_esc50_unpacks_checks_and_is_discoverable(esc50_zip, tmp_path):
    root = tmp_path / "data"
    path = fetch_esc50(root, url=esc50_zip.as_uri(), sha256=_sha(esc50_zip.read_bytes()),
                       progress=False)
    assert path == root / "esc50" == esc50_path(root)
    assert sorted(p.name for p in root.iterdir()) == ["esc50"]  # no partial folders left
    m = discover(path)
    assert m.classes == ["dog", "rain"] and len(m) == 4 and m.has_folds
    assert check_esc50(path) == 4


def test_existing_dataset_is_used_as_is(tmp_path):
    existing = synth.make_fake_esc50(tmp_path / "data" / "esc50")
    url = (tmp_path / "does-not-exist.zip").as_uri()
    assert fetch_esc50(tmp_path / "data", url=url, progress=False) == existing


def test_fetch_uses_tympan_data_by_default(esc50_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("TYMPAN_DATA", str(tmp_path / "env-data"))
    assert fetch_esc50(url=esc50_zip.as_uri(), progress=False) == tmp_path / "env-data" / "esc50"


def test_checksum_mismatch_leaves_nothing_behind(esc50_zip, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(ChecksumError):
        fetch_esc50(root, url=esc50_zip.as_uri(), sha256="f" * 64, progress=False)
    assert list(root.iterdir()) == []


def test_missing_clip_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    fake = synth.make_fake_esc50(tmp_path / "src")
    missing = sorted((fake / "audio").iterdir())[1]
    missing.unlink()
    archive = synth.zip_folder(fake, tmp_path / "broken.zip")
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=f"1 of 4 clips bad.*{missing.name}: missing"):
        fetch_esc50(root, url=archive.as_uri(), progress=False)
    assert list(root.iterdir()) == []


def test_undecodable_clip_and_foreign_archive_are_clear_errors(tmp_path):
    fake = synth.make_fake_esc50(tmp_path / "src")
    sorted((fake / "audio").iterdir())[0].write_bytes(b"not ogg")
    with pytest.raises(DatasetError, match="not an audio file"):
        fetch_esc50(tmp_path / "d1", url=synth.zip_folder(fake, tmp_path / "b.zip").as_uri(),
                    progress=False)
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    (other / "x" / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not the ESC-50 archive"):
        fetch_esc50(tmp_path / "d2", url=synth.zip_folder(other, tmp_path / "o.zip").as_uri(),
                    progress=False)
    not_zip = tmp_path / "nz.zip"
    not_zip.write_bytes(b"plain bytes")
    with pytest.raises(DatasetError, match="not a valid zip"):
        fetch_esc50(tmp_path / "d3", url=not_zip.as_uri(), progress=False)
    assert all(list(d.iterdir()) == [] for d in (tmp_path / "d1", tmp_path / "d2", tmp_path / "d3"))


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on localhost (no network): ``(folder, base URL)``."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_download_verifies_and_caches(http_folder, tmp_path):
    folder, base = http_folder
    data = b"served over http" * 1000
    (folder / "w.bin").write_bytes(data)
    dest = tmp_path / "out" / "w.bin"
    assert download(f"{base}/w.bin", dest, _sha(data), progress=True) == dest
    assert dest.read_bytes() == data
    (folder / "w.bin").unlink()  # verified copy present: no request at all
    assert download(f"{base}/w.bin", dest, _sha(data), progress=False) == dest
    assert [p.name for p in dest.parent.iterdir()] == ["w.bin"]


def test_http_checksum_mismatch_names_file_and_both_hashes(http_folder, tmp_path):
    folder, base = http_folder
    (folder / "w.bin").write_bytes(b"tampered")
    dest = tmp_path / "out" / "w.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old copy")
    expected = _sha(b"the real weights")
    with pytest.raises(ChecksumError) as caught:
        download(f"{base}/w.bin", dest, expected, progress=False)
    message = str(caught.value)
    assert "w.bin" in message and expected in message and _sha(b"tampered") in message
    assert dest.read_bytes() == b"old copy"  # a bad download replaces nothing
    assert [p.name for p in dest.parent.iterdir()] == ["w.bin"]


def test_http_error_names_the_url_and_where_to_put_the_file(http_folder, tmp_path):
    _, base = http_folder
    dest = tmp_path / "out" / "gone.zip"
    with pytest.raises(DatasetError) as caught:
        download(f"{base}/gone.zip", dest, progress=False)
    message = str(caught.value)
    assert f"{base}/gone.zip: download failed" in message and "404" in message
    assert f"save it as {dest}" in message and not dest.exists()
    with pytest.raises(DatasetError, match="unpack it yourself so that .*esc50/meta/esc50.csv"):
        fetch_esc50(tmp_path / "data", url=f"{base}/gone.zip", progress=False)
