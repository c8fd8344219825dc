import pathlib

import pytest

from openpi.shared import download
from openpi.shared import errors


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    assert download.get_cache_dir() == (tmp_path / "cache").resolve()
    assert (tmp_path / "cache").is_dir()


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENPI_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.get_cache_dir(create=False) == tmp_path / ".cache" / "openpi"


def test_local_paths_resolve(tmp_path, monkeypatch):
    f = tmp_path / "w.npz"
    f.write_bytes(b"x")
    assert download.maybe_download(f) == f.resolve()
    assert download.maybe_download(str(f)) == f.resolve()
    assert download.maybe_download(f"file://{f}") == f.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.maybe_download("~/w.npz") == f.resolve()
    assert not download.is_remote(f) and download.is_remote("gs://b/x")


def test_missing_local_path_is_a_user_error(tmp_path):
    with pytest.raises(download.ArtefactNotFoundError, match="does not exist") as e:
        download.maybe_download(tmp_path / "missing")
    assert isinstance(e.value, errors.UserError) and isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("url", ["gs://openpi-assets/checkpoints/pi05_base/params", "https://example.com/a/b.model"])
def test_remote_paths_use_the_openpi_cache_layout(tmp_path, monkeypatch, url):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    expected = tmp_path / pathlib.Path(url.split("://", 1)[1])
    with pytest.raises(download.ArtefactNotFoundError) as e:
        download.maybe_download(url)
    msg = str(e.value)
    assert str(expected) in msg and "OPENPI_DATA_HOME" in msg and "local path" in msg
    expected.parent.mkdir(parents=True)
    expected.mkdir()
    assert download.maybe_download(url) == expected


def test_unsupported_scheme(tmp_path):
    with pytest.raises(download.ArtefactNotFoundError, match="unsupported scheme 'ftp'"):
        download.maybe_download("ftp://host/file")
