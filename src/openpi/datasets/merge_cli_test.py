"""`merge_datasets.py` end to end: the thin script in a real subprocess once, then `main` in process."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import merge_cli as merge_datasets
from openpi.datasets import merge_test

SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "merge_datasets.py"


def test_cli_merges_and_refuses(tmp_path, capsys):
    merge_test.tiny(tmp_path / "a", ["open"])
    merge_test.tiny(tmp_path / "b", ["wipe", "open"], start=50.0)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path / "ab")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "ab")
    merged = lerobot.LeRobotDataset.open(tmp_path / "ab")
    assert merged.num_episodes == 3 and merged.tasks == {0: "open", 1: "wipe"}
    np.testing.assert_array_equal(merged.column("task_index"), [0] * 3 + [1] * 3 + [0] * 4)

    merge_test.tiny(tmp_path / "c", ["open"], state_dim=5)
    with pytest.raises(SystemExit) as info:
        merge_datasets.main([str(tmp_path / "a"), str(tmp_path / "c"), "--output_dir", str(tmp_path / "ac")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert " ERROR openpi.merge_datasets: Cannot merge" in err and "'observation.state'" in err
    assert err.count("\n") == 1 and not (tmp_path / "ac").exists()


def test_run_in_process(tmp_path):
    merge_test.tiny(tmp_path / "a", ["open", "close"], version="v2.1")
    args = merge_datasets.Args(sources=(str(tmp_path / "a"),), output_dir=tmp_path / "out", version="v2.1")
    assert merge_datasets.run(args) == (tmp_path / "out").resolve()
    assert lerobot.LeRobotDataset.open(tmp_path / "out").version == "v2.1"
