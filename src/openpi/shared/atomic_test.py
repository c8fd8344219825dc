import os
import pathlib

import pytest

from openpi.shared import atomic
from openpi.shared import errors


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


def test_check_output_dir_refuses_a_path_under_a_file_and_creates_nothing(tmp_path: pathlib.Path):
    """Issue 29.7: the long jobs found this out at their first write, with a traceback."""
    (tmp_path / "a_file").write_text("x")
    for path in (tmp_path / "a_file" / "out", tmp_path / "a_file" / "deeper" / "out", tmp_path / "a_file"):
        with pytest.raises(errors.OutputError) as info:
            atomic.check_output_dir(path)
        assert str(info.value) == (
            f"Cannot write the output directory {path}: {tmp_path / 'a_file'} is a file, not a directory; "
            "choose another output path."
        )
    assert atomic.check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert atomic.check_output_dir(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_check_output_dir_refuses_a_directory_this_user_cannot_write(tmp_path: pathlib.Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(errors.OutputError, match=f"{locked} is not writable by this user"):
        atomic.check_output_dir(locked / "out")
