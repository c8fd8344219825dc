import pathlib

import pytest

from openpi.shared import atomic


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path: pathlib.Path):
    target = tmp_path / "sub" / "stats.json"
    atomic.write_text(target, "old")
    atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["stats.json"]


def test_failure_mid_write_keeps_old_file(tmp_path: pathlib.Path):
    target = tmp_path / "values.npz"
    atomic.write_text(target, "complete")
    with pytest.raises(RuntimeError), atomic.atomic_open(target, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["values.npz"]


def test_read_mode_is_refused(tmp_path: pathlib.Path):
    with pytest.raises(ValueError, match="mode"), atomic.atomic_open(tmp_path / "x", "r"):
        pass
