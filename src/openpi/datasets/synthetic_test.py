import pathlib

import numpy as np
import pytest

from openpi.datasets import lerobot
from openpi.datasets import synthetic
from openpi.recap import labels
from openpi.shared import errors

SMALL = synthetic.SyntheticConfig(num_episodes=12, image_size=32)


@pytest.fixture(scope="module")
def episodes() -> list[synthetic.SyntheticEpisode]:
    return synthetic.generate(synthetic.SyntheticConfig())


def _target_from_head(image: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Recovers the target's table position from the head camera alone (what a policy has to learn)."""
    rows, cols = np.nonzero(np.all(image == np.asarray(color, np.uint8), axis=-1))
    size = image.shape[0]
    r, c = rows.mean() + 0.5, cols.mean() + 0.5
    return np.array(((c - size / 2) / (0.4 * size), (size / 2 - r) / (0.4 * size)))


def test_generation_is_deterministic_and_prefix_stable():
    a = synthetic.generate(SMALL)
    b = synthetic.generate(SMALL)
    longer = synthetic.generate(synthetic.SyntheticConfig(num_episodes=15, image_size=32))
    other = synthetic.generate(synthetic.SyntheticConfig(num_episodes=12, image_size=32, seed=1))
    for x, y, z in zip(a, b, longer, strict=False):
        for key in (synthetic.HEAD_CAMERA, synthetic.STATE, synthetic.ACTION, labels.INTERVENTION):
            np.testing.assert_array_equal(x.frames[key], y.frames[key])
            np.testing.assert_array_equal(x.frames[key], z.frames[key])
    assert any(x.length != y.length or not np.array_equal(x.target, y.target) for x, y in zip(a, other, strict=True))


def test_dataset_mix_covers_every_task_and_kind(episodes):
    assert len(episodes) == 24
    for task in synthetic.TASKS:
        mine = [ep for ep in episodes if ep.task == task]
        assert {ep.kind for ep in mine} == set(synthetic.KINDS)
        assert any(ep.success for ep in mine) and any(not ep.success for ep in mine)
    lengths = [ep.length for ep in episodes]
    assert min(lengths) >= 5 and max(lengths) <= 40 and 350 <= sum(lengths) <= 900
    for ep in episodes:
        human = ep.frames[labels.INTERVENTION]
        if ep.kind == synthetic.DEMO:
            assert human.all() and ep.success
        elif ep.kind == synthetic.CORRECTED:
            # An autonomous start, one human segment, then autonomous again.
            changes = np.flatnonzero(np.diff(human))
            assert human[0] == 0 and human[-1] == 0 and len(changes) == 2
        else:
            assert not human.any()
        if ep.kind == synthetic.FAILURE:
            assert not ep.success


def test_frames_have_the_declared_features(episodes):
    spec = synthetic.features(64)
    for ep in episodes[:4]:
        assert set(ep.frames) == set(spec)
        for cam in synthetic.CAMERAS:
            assert ep.frames[cam].shape == (ep.length, 64, 64, 3) and ep.frames[cam].dtype == np.uint8
        for key in (synthetic.STATE, synthetic.ACTION):
            assert ep.frames[key].shape == (ep.length, 14) and ep.frames[key].dtype == np.float32
    assert (
        spec[synthetic.STATE]["names"][6] == "left_gripper" and spec[synthetic.ACTION]["names"][13] == "right_gripper"
    )


def test_action_direction_is_readable_from_the_head_image(episodes):
    """The target is only in the images; the commanded motion of human frames points at it."""
    cosines = []
    for ep in episodes:
        color = synthetic.TASK_COLORS[synthetic.TASKS.index(ep.task)]
        for t in np.flatnonzero(ep.frames[labels.INTERVENTION])[:-1]:
            target = _target_from_head(ep.frames[synthetic.HEAD_CAMERA][t], color)
            np.testing.assert_allclose(target, ep.target, atol=0.08)
            state_l, state_r = synthetic.effector_positions(ep.frames[synthetic.STATE][t])
            act_l, act_r = synthetic.effector_positions(ep.frames[synthetic.ACTION][t])
            arm = 0 if target[0] < 0 else 1
            pos, cmd = (state_l, act_l) if arm == 0 else (state_r, act_r)
            motion, wanted = cmd - pos, target - pos
            if np.linalg.norm(motion) > 1e-3:
                cosines.append(motion @ wanted / np.linalg.norm(motion) / np.linalg.norm(wanted))
    assert len(cosines) > 100
    assert np.mean(cosines) > 0.95


def test_progress_and_failure_are_visible(episodes):
    """The remaining-distance bar tracks value_label; failures drift away from the target."""
    bars, values = [], []
    for ep in episodes:
        head = ep.frames[synthetic.HEAD_CAMERA]
        bar = (head[:, -2, :, :] == 235).all(axis=-1).sum(axis=-1)  # bottom row of the bar, in pixels
        if ep.success:
            assert bar[-1] < bar[0]
            bars.append(bar)
            values.append(ep.frames[labels.VALUE_LABEL])
        if ep.kind == synthetic.FAILURE:
            arm = 0 if ep.target[0] < 0 else 1
            pos = synthetic.effector_positions(ep.frames[synthetic.STATE])[arm]
            dist = np.linalg.norm(pos - ep.target, axis=-1)
            assert dist[-1] > dist[0]
            assert bar[-1] > bar[0]
            np.testing.assert_array_equal(ep.frames[labels.VALUE_LABEL], -1.0)
    corr = np.corrcoef(np.concatenate(bars), np.concatenate(values))[0, 1]
    assert corr < -0.8


def test_recap_columns_come_from_the_labels_module(episodes):
    expected = labels.label_episodes(
        [
            labels.Episode(task=ep.task, success=ep.success, intervention=ep.frames[labels.INTERVENTION])
            for ep in episodes
        ]
    )
    for ep, cols in zip(episodes, expected, strict=True):
        for name in labels.COLUMNS:
            np.testing.assert_array_equal(ep.frames[name], cols[name])
        assert ep.frames[labels.REWARD][-1] == float(ep.success)
        assert set(ep.frames[labels.ADV_IND][ep.frames[labels.INTERVENTION] == 1]) <= {"positive"}


@pytest.mark.parametrize(("version", "use_videos"), [("v3.0", True), ("v2.1", False)])
def test_write_and_read_back(tmp_path: pathlib.Path, version: str, use_videos: bool):
    eps = synthetic.generate(SMALL)
    ds = synthetic.write_dataset(tmp_path / "demo", SMALL, version=version, use_videos=use_videos, episodes=eps)
    reopened = lerobot.LeRobotDataset.open(tmp_path / "demo")
    assert reopened.version == version and reopened.num_episodes == 12 and reopened.robot_type == "yam"
    assert sorted(reopened.tasks.values()) == sorted(synthetic.TASKS)
    for key in (synthetic.STATE, synthetic.ACTION, *labels.COLUMNS):
        stored = reopened.column(key)
        want = np.concatenate([ep.frames[key] for ep in eps])
        np.testing.assert_array_equal(np.asarray(stored).reshape(want.shape), want)
    # Camera frames: exact for images, within codec tolerance for video.
    i = eps[0].length + 3
    item = ds[i]
    want = eps[1].frames[synthetic.HEAD_CAMERA][3]
    err = np.abs(np.asarray(item[synthetic.HEAD_CAMERA], dtype=np.int16) - want).mean()
    assert err < (8 if use_videos else 1e-9)


def test_the_written_dataset_records_its_label_scale(tmp_path: pathlib.Path):
    """Issue 20: the demo's dataset recorded no label scale, so relabelling it warned and merging it was refused."""
    from openpi.recap import provenance

    ds = synthetic.write_dataset(tmp_path / "demo", SMALL, use_videos=False)
    scale = provenance.read_label_scale(ds.root)
    assert scale == provenance.LabelScale(mode="paper", c_fail=None, task_normaliser=labels.task_max_lengths(ds))
    provenance.check_labels_on_scale(ds, scale)


def test_bad_config_and_existing_output(tmp_path: pathlib.Path):
    with pytest.raises(errors.ConfigError, match="num_episodes"):
        synthetic.SyntheticConfig(num_episodes=0)
    with pytest.raises(errors.ConfigError, match="image_size"):
        synthetic.SyntheticConfig(image_size=8)
    (tmp_path / "taken").mkdir()
    with pytest.raises(errors.DatasetError, match="already exists"):
        synthetic.write_dataset(tmp_path / "taken", synthetic.SyntheticConfig(num_episodes=1, image_size=16))


def _ridge_predict(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, lam: float) -> np.ndarray:
    # Dual (kernel) form: a few hundred frames, thousands of pixel features.
    alpha = np.linalg.solve(x @ x.T + lam * np.eye(len(x)), y)
    return x_test @ x.T @ alpha


def test_a_linear_model_on_head_pixels_learns_value_and_motion():
    """Held-out episodes: pixels (+ task) predict value_label, and the motion direction of good frames."""
    eps = synthetic.generate(synthetic.SyntheticConfig(num_episodes=48))
    train, test = eps[:36], eps[36:]

    def pixels(ep):
        head = ep.frames[synthetic.HEAD_CAMERA].astype(np.float64) / 255
        small = head.reshape(ep.length, 32, 2, 32, 2, 3).mean(axis=(2, 4)).reshape(ep.length, -1)
        task = np.zeros((ep.length, len(synthetic.TASKS)))
        task[:, synthetic.TASKS.index(ep.task)] = 1
        return np.concatenate([small, task, np.ones((ep.length, 1))], axis=1)

    def motion(ep):
        state, action = ep.frames[synthetic.STATE], ep.frames[synthetic.ACTION]
        return np.concatenate([action[:, 0:2] - state[:, 0:2], action[:, 7:9] - state[:, 7:9]], axis=1)

    x, x_test = (np.concatenate([pixels(e) for e in part]) for part in (train, test))
    value, value_test = (np.concatenate([e.frames[labels.VALUE_LABEL] for e in part]) for part in (train, test))
    pred = _ridge_predict(x, value, x_test, lam=1.0)
    r2 = 1 - ((pred - value_test) ** 2).sum() / ((value_test - value_test.mean()) ** 2).sum()
    assert r2 > 0.4, r2

    good, good_test = ([e for e in part if e.kind != synthetic.FAILURE] for part in (train, test))
    moves = _ridge_predict(
        np.concatenate([pixels(e) for e in good]),
        np.concatenate([motion(e) for e in good]),
        np.concatenate([pixels(e) for e in good_test]),
        lam=10.0,
    )
    truth = np.concatenate([motion(e) for e in good_test])
    arm = (np.linalg.norm(truth[:, 2:], axis=1) > np.linalg.norm(truth[:, :2], axis=1)).astype(int)
    rows = np.arange(len(truth))
    p = np.stack([moves[rows, 2 * arm], moves[rows, 2 * arm + 1]], axis=1)
    t = np.stack([truth[rows, 2 * arm], truth[rows, 2 * arm + 1]], axis=1)
    keep = np.linalg.norm(t, axis=1) > 1e-3
    cos = (p * t).sum(1)[keep] / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))[keep]
    assert cos.mean() > 0.5, cos.mean()
