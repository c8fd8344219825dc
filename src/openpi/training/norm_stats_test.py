import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import reader_test
from openpi.shared import errors
from openpi.shared import normalize
from openpi.training import norm_stats as cns

SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "compute_norm_stats.py"
LENGTHS = (12, 16, 20)


def _fixture(name: str) -> pathlib.Path:
    return reader_test.fixture_path(name)


def _fixture_columns() -> tuple[np.ndarray, np.ndarray]:
    # The fixture README's rules: state[j] = 1000 e + 10 i + j, action = state + 0.5.
    rows = [[1000 * e + 10 * i + j for j in range(14)] for e, n in enumerate(LENGTHS) for i in range(n)]
    state = np.asarray(rows, dtype=np.float64)
    return state, state + 0.5


def _check(stats: normalize.NormStats, x: np.ndarray) -> None:
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(stats.std, x.std(0), rtol=0, atol=1e-6)
    width = (x.max(0) - x.min(0)) / normalize.NUM_QUANTILE_BINS
    for q, got in ((0.01, stats.q01), (0.99, stats.q99)):
        k = np.sort(x, axis=0)[int(np.ceil(q * len(x))) - 1]
        assert np.all((got <= k + 1e-9) & (got >= k - width - 1e-9))


@pytest.mark.parametrize("name", ["v3.0_image", "v2.1_video"])
def test_stats_of_lerobot_fixture_match_numpy(name: str, tmp_path: pathlib.Path):
    path = cns.run(cns.Args(target=str(_fixture(name)), output_dir=tmp_path / "out"))
    assert path == tmp_path / "out" / "norm_stats.json"
    stats = normalize.load(tmp_path / "out")
    assert set(stats) == {"state", "actions"}
    state, action = _fixture_columns()
    _check(stats["state"], state)
    _check(stats["actions"], action)


@pytest.mark.parametrize("horizon", [1, 2, 5, 7])
def test_chunked_delta_actions_match_the_per_frame_pipeline(horizon: int):
    ds = lerobot.LeRobotDataset.open(_fixture("v3.0_image"))
    mask = cns.bool_mask((6, -1, 6, -1))
    stats = cns.compute_norm_stats(ds, action_horizon=horizon, delta_mask=mask)
    # Reference: what openpi's pipeline sees, one frame at a time (reader chunks + DeltaActions by hand).
    state = np.asarray(ds.column("observation.state"), dtype=np.float64)
    chunks = []
    for i in range(ds.num_frames):
        chunk, _ = ds.action_chunk(i, "action", horizon)
        chunk = chunk.astype(np.float64)
        chunk[:, np.asarray(mask)] -= state[i, np.asarray(mask)]
        chunks.append(chunk)
    _check(stats["actions"], np.concatenate(chunks))
    # Grippers stay absolute, joints become small deltas.
    assert stats["actions"].mean[6] > 1000 and abs(stats["actions"].mean[0]) < 100


def test_chunks_without_delta_weight_episode_ends():
    ds = lerobot.LeRobotDataset.open(_fixture("v3.0_image"))
    stats = cns.compute_norm_stats(ds, action_horizon=3)
    ref = np.concatenate([ds.action_chunk(i, "action", 3)[0] for i in range(ds.num_frames)]).astype(np.float64)
    _check(stats["actions"], ref)
    plain = cns.compute_norm_stats(ds)
    assert not np.allclose(plain["actions"].mean, stats["actions"].mean)


def test_cli_writes_default_assets_dir(tmp_path: pathlib.Path):
    script = SCRIPT
    result = subprocess.run(
        [sys.executable, str(script), str(_fixture("v3.0_image"))], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "assets" / "v3.0_image" / "norm_stats.json"
    assert result.stdout.strip().endswith(str(pathlib.Path("assets") / "v3.0_image" / "norm_stats.json"))
    raw = json.loads(out.read_text())
    assert len(raw["norm_stats"]["state"]["q99"]) == 14
    bad = subprocess.run(
        [sys.executable, str(script), "no_such_config_or_dataset"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "neither a dataset on disk" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_keys_and_targets(tmp_path: pathlib.Path):
    with pytest.raises(errors.DatasetError, match=r"no column 'observation\.joints'"):
        cns.run(cns.Args(target=str(_fixture("v3.0_image")), output_dir=tmp_path, state_key="observation.joints"))
    with pytest.raises(errors.DatasetError, match="dtype"):
        cns.run(cns.Args(target=str(_fixture("v3.0_image")), output_dir=tmp_path, action_key="adv_ind"))
    with pytest.raises(errors.ConfigError, match="neither a dataset"):
        cns.make_plan(cns.Args(target="nothing_here"))
    ds = lerobot.LeRobotDataset.open(_fixture("v3.0_image"))
    with pytest.raises(errors.ConfigError, match="mask covers 20 dims"):
        cns.compute_norm_stats(ds, action_horizon=2, delta_mask=(True,) * 20)
    assert not (tmp_path / "norm_stats.json").exists()


def test_config_name_writes_where_the_training_config_looks(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    config = pytest.importorskip("openpi.training.config")
    from openpi.datasets import synthetic

    name = "demo_pi06"
    cfg = config.get_config(name)
    monkeypatch.chdir(tmp_path)
    small = synthetic.SyntheticConfig(num_episodes=4, image_size=16)
    synthetic.write_dataset(cfg.data.repo_id, small, use_videos=False)
    # Issue 14.4: stale stats in the trainer's first place (<assets>/<config>/<asset_id>, openpi's) must not shadow
    # the fresh ones: the script writes exactly there.
    stale = normalize.NormStats(mean=[0.0] * 14, std=[1.0] * 14, q01=[-1.0] * 14, q99=[1.0] * 14)
    normalize.save(cfg.assets_dirs / cfg.data.resolved_asset_id(), {"state": stale, "actions": stale})
    path = cns.run(cns.Args(target=name))
    assert path.resolve() == (cfg.assets_dirs / cfg.data.resolved_asset_id() / "norm_stats.json").resolve()
    # The training side finds and loads exactly these stats.
    found = cfg.data.load_norm_stats(pathlib.Path(cfg.assets_base_dir).absolute() / name)
    written = normalize.load(path.parent)
    assert found is not None and found["actions"].allclose(written["actions"], atol=0)
    # Actions over the model's horizon, joints relative to the state: what the training pipeline normalises.
    ds = lerobot.LeRobotDataset.open(cfg.data.repo_id)
    mask = np.asarray(cfg.data.delta_action_mask)
    state = np.asarray(ds.column("observation.state"), np.float64)
    ref = []
    for i in range(ds.num_frames):
        chunk = ds.action_chunk(i, "action", cfg.model.action_horizon)[0].astype(np.float64)
        chunk[:, mask] -= state[i, mask]
        ref.append(chunk)
    _check(written["actions"], np.concatenate(ref))
    _check(written["state"], state)


def test_nan_in_a_column_names_episode_and_frame(tmp_path: pathlib.Path):
    spec = {"dtype": "float32", "shape": [3], "names": None}
    writer = lerobot.LeRobotDatasetWriter.create(
        tmp_path / "ds", fps=10, features={"observation.state": spec, "action": spec}, use_videos=False
    )
    for e in range(2):
        state = np.arange(15, dtype=np.float32).reshape(5, 3) + e
        if e == 1:
            state[3, 2] = np.nan
        writer.add_episode({"observation.state": state, "action": state + 1}, "task")
    writer.finalize()
    with pytest.raises(errors.DatasetError, match=r"holds nan at episode 1, frame 3, dim 2"):
        cns.run(cns.Args(target=str(tmp_path / "ds"), output_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("horizon", [1, 2, 3, 4, 6, 13, 50])
def test_window_extrema_match_brute_force(horizon: int):
    rng = np.random.default_rng(horizon)
    values = rng.normal(size=(60, 3))
    ends = np.repeat(np.cumsum([7, 1, 20, 32]), [7, 1, 20, 32])
    before = values.copy()
    lo, hi = cns.window_extrema(values, ends, horizon)
    for t in range(len(values)):
        window = values[t : min(t + horizon, ends[t])]
        np.testing.assert_array_equal(lo[t], window.min(0))
        np.testing.assert_array_equal(hi[t], window.max(0))
    np.testing.assert_array_equal(values, before)
    lo -= 1.0  # the two results are independent arrays
    np.testing.assert_array_equal(hi, cns.window_extrema(values, ends, horizon)[1])


def test_delta_mask_with_wider_state_than_actions(tmp_path: pathlib.Path):
    writer = lerobot.LeRobotDatasetWriter.create(
        tmp_path / "ds",
        fps=10,
        features={
            "observation.state": {"dtype": "float32", "shape": [4], "names": None},
            "action": {"dtype": "float32", "shape": [3], "names": None},
        },
        use_videos=False,
    )
    rng = np.random.default_rng(0)
    for length in (6, 9):
        writer.add_episode(
            {"observation.state": rng.normal(size=(length, 4)), "action": rng.normal(size=(length, 3))}, "t"
        )
    ds = writer.finalize()
    stats = cns.compute_norm_stats(ds, action_horizon=3, delta_mask=cns.bool_mask((2, -1)))
    state = ds.column("observation.state").astype(np.float64)
    ref = []
    for i in range(ds.num_frames):
        chunk = ds.action_chunk(i, "action", 3)[0].astype(np.float64)
        chunk[:, :2] -= state[i, :2]
        ref.append(chunk)
    _check(stats["actions"], np.concatenate(ref))


def test_main_lists_policy_and_value_configs_and_accepts_a_dataset(tmp_path: pathlib.Path, capsys):
    from openpi.training import config as _config
    from openpi.training import value_config

    with pytest.raises(SystemExit) as exit_:
        cns.main([])  # no config name: the usage, listing every config, on stderr and exit 2 (issue 29.12)
    listed = capsys.readouterr().err.split()
    assert exit_.value.code == 2 and {*_config.config_names(), *value_config.config_names()} <= set(listed)
    with pytest.raises(errors.ConfigError, match="value_demo"):
        cns.main(["value_dem"])
    with pytest.raises(errors.ConfigError, match="no-such-flag"):
        cns.main([str(_fixture("v3.0_image")), "--no-such-flag=1"])
    path = cns.main([str(_fixture("v3.0_image")), "--output-dir", str(tmp_path / "out")])
    assert path == tmp_path / "out" / "norm_stats.json" and path.is_file()
