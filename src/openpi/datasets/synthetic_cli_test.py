import pathlib
import subprocess
import sys

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.datasets import synthetic_cli as make_demo_dataset
from openpi.recap import labels


def test_cli_writes_a_readable_dataset(tmp_path: pathlib.Path, capsys):
    out = tmp_path / "demo_v21"
    script = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "make_demo_dataset.py"
    cmd = ["--out", str(out), "--num-episodes", "4", "--version", "v2.1", "--image_size", "32"]
    result = subprocess.run([sys.executable, str(script), *cmd], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out.absolute())
    ds = lerobot.LeRobotDataset.open(out)
    assert ds.version == "v2.1" and ds.num_episodes == 4 and set(ds.video_keys) == set(synthetic.CAMERAS)
    # A second run refuses to overwrite, with one line and no traceback.
    with pytest.raises(SystemExit) as info:
        make_demo_dataset.main(cmd)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "already exists" in err and err.count("\n") == 1


def test_run_in_process_matches_the_generator(tmp_path: pathlib.Path):
    args = make_demo_dataset.Args(out=tmp_path / "d", num_episodes=5, image_size=16, images=True, c_fail=10.0)
    ds = make_demo_dataset.run(args)
    assert ds.version == "v3.0" and ds.image_keys and not ds.video_keys
    eps = synthetic.generate(
        synthetic.SyntheticConfig(num_episodes=5, image_size=16, labels=labels.LabelConfig(c_fail=10.0))
    )
    np.testing.assert_array_equal(ds.column("value_label"), np.concatenate([e.frames["value_label"] for e in eps]))
