import numpy as np
import pytest

from openpi.recap import labels
from openpi.shared import errors


def _auto(length: int, human: tuple[int, ...] = ()) -> np.ndarray:
    flags = np.zeros(length, dtype=np.int64)
    flags[list(human)] = 1
    return flags


def test_paper_mode_success_fast_and_slow_share_the_task_normaliser():
    fast = labels.Episode(task="pick", success=True, intervention=_auto(3))
    slow = labels.Episode(task="pick", success=True, intervention=_auto(5))
    out_fast, out_slow = labels.label_episodes([fast, slow])
    # L = 5 (the task's longest episode): G_t = -(T-1-t), divided by 5.
    np.testing.assert_allclose(out_fast["value_label"], [-0.4, -0.2, 0.0], atol=1e-7)
    np.testing.assert_allclose(out_slow["value_label"], [-0.8, -0.6, -0.4, -0.2, 0.0], atol=1e-7)
    np.testing.assert_allclose(out_fast["reward_label"], [-0.2, -0.2, 0.0], atol=1e-7)
    np.testing.assert_allclose(out_slow["reward_label"], [-0.2, -0.2, -0.2, -0.2, 0.0], atol=1e-7)
    np.testing.assert_array_equal(out_fast["reward"], [0, 0, 1])
    np.testing.assert_array_equal(out_slow["reward"], [0, 0, 0, 0, 1])
    # A fast success scores better than a slow one from its first frame.
    assert out_fast["value_label"][0] > out_slow["value_label"][0]
    # The last frame stores +0.0, not -0.0.
    assert np.signbit(out_fast["value_label"][-1]) == np.False_
    for out in (out_fast, out_slow):
        assert out["value_label"].dtype == np.float32
        assert out["reward_label"].dtype == np.float32
        assert out["reward"].dtype == np.float32
        assert out["intervention"].dtype == np.int64
        assert list(out["adv_ind"]) == ["none"] * len(out["adv_ind"])


def test_paper_mode_failure_default_penalty_is_flat_minus_one():
    succ = labels.Episode(task="pick", success=True, intervention=_auto(5))
    fail = labels.Episode(task="pick", success=False, intervention=_auto(4))
    _, out = labels.label_episodes([succ, fail])
    # c_fail defaults to L = 5: G = [-8, -7, -6, -5] / 5, clipped to -1.
    np.testing.assert_allclose(out["value_label"], [-1, -1, -1, -1])
    np.testing.assert_allclose(out["reward_label"], [0, 0, 0, -1])
    np.testing.assert_array_equal(out["reward"], [0, 0, 0, 0])


def test_paper_mode_failure_with_explicit_penalty_and_clipping():
    succ = labels.Episode(task="pick", success=True, intervention=_auto(5))
    fail = labels.Episode(task="pick", success=False, intervention=_auto(4))
    _, small = labels.label_episodes([succ, fail], labels.LabelConfig(c_fail=1.5))
    # G = -(3 - t) - 1.5 = [-4.5, -3.5, -2.5, -1.5], / 5.
    np.testing.assert_allclose(small["value_label"], [-0.9, -0.7, -0.5, -0.3], atol=1e-7)
    np.testing.assert_allclose(small["reward_label"], [-0.2, -0.2, -0.2, -0.3], atol=1e-7)
    _, clipped = labels.label_episodes([succ, fail], labels.LabelConfig(c_fail=2.5))
    # G = [-5.5, -4.5, -3.5, -2.5] / 5 = [-1.1 -> -1, -0.9, -0.7, -0.5].
    np.testing.assert_allclose(clipped["value_label"], [-1.0, -0.9, -0.7, -0.5], atol=1e-7)
    # The clipped first frame only loses 0.1 to the next one; the terminal reward carries the penalty.
    np.testing.assert_allclose(clipped["reward_label"], [-0.1, -0.2, -0.2, -0.5], atol=1e-7)


def test_tasks_are_normalised_separately():
    eps = [
        labels.Episode(task="a", success=True, intervention=_auto(3)),
        labels.Episode(task="b", success=True, intervention=_auto(3)),
        labels.Episode(task="b", success=True, intervention=_auto(9)),
    ]
    out_a, out_b, _ = labels.label_episodes(eps)
    np.testing.assert_allclose(out_a["value_label"], [-2 / 3, -1 / 3, 0], atol=1e-7)
    np.testing.assert_allclose(out_b["value_label"], [-2 / 9, -1 / 9, 0], atol=1e-7)


def test_corrections_and_demos_set_intervention_and_initial_indicator():
    corrected = labels.Episode(task="pick", success=True, intervention=_auto(5, human=(2, 3)))
    demo = labels.Episode(task="pick", success=True, length=4)
    out_c, out_d = labels.label_episodes([corrected, demo])
    np.testing.assert_array_equal(out_c["intervention"], [0, 0, 1, 1, 0])
    assert list(out_c["adv_ind"]) == ["none", "none", "positive", "positive", "none"]
    np.testing.assert_array_equal(out_d["intervention"], [1, 1, 1, 1])
    assert list(out_d["adv_ind"]) == ["positive"] * 4
    # Corrections do not change the value targets: the outcome and the length do.
    np.testing.assert_allclose(out_c["value_label"], [-0.8, -0.6, -0.4, -0.2, 0.0], atol=1e-7)


def test_per_episode_mode_matches_community_converters():
    cfg = labels.LabelConfig(mode="per_episode")
    eps = [
        labels.Episode(task="pick", success=True, intervention=_auto(4)),
        labels.Episode(task="pick", success=True, intervention=_auto(8)),
        labels.Episode(task="pick", success=False, intervention=_auto(4, human=(1,))),
    ]
    short, long, fail = labels.label_episodes(eps, cfg)
    # Own-length normalisation: both successes start near -1, speed is lost.
    np.testing.assert_allclose(short["value_label"], [-0.75, -0.5, -0.25, 0.0])
    np.testing.assert_allclose(long["value_label"], -(7 - np.arange(8)) / 8)
    np.testing.assert_allclose(short["reward_label"], [-0.25, -0.25, -0.25, 0.0])
    # Failures: flat -1, and the (misleading) 0 terminal reward_label of the community tools.
    np.testing.assert_allclose(fail["value_label"], [-1, -1, -1, -1])
    np.testing.assert_allclose(fail["reward_label"], [-0.25, -0.25, -0.25, 0.0])
    np.testing.assert_array_equal(fail["reward"], [0, 0, 0, 0])
    assert list(fail["adv_ind"]) == ["none", "positive", "none", "none"]


@pytest.mark.parametrize("c_fail", [None, 1.01, 3.0, 7.5, 100.0])
def test_reward_label_sums_to_value_label_in_paper_mode(c_fail):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=30)
    tasks = [f"task {i % 3}" for i in range(30)]
    success = rng.random(30) < 0.6
    intervention = (rng.random(int(lengths.sum())) < 0.2).astype(np.int64)
    cols = labels.compute_columns(
        episode_lengths=lengths,
        success=success,
        tasks=tasks,
        intervention=intervention,
        config=labels.LabelConfig(c_fail=c_fail),
    )
    value = cols["value_label"].astype(np.float64)
    reward = cols["reward_label"].astype(np.float64)
    assert value.min() >= -1 and value.max() <= 0
    start = 0
    for length in lengths:
        ep_value = value[start : start + length]
        ep_reward = reward[start : start + length]
        remaining = np.cumsum(ep_reward[::-1])[::-1]
        np.testing.assert_allclose(remaining, ep_value, atol=1e-5)
        start += length


def test_flat_and_per_episode_apis_agree():
    eps = [
        labels.Episode(task="x", success=True, intervention=_auto(6, human=(0,))),
        labels.Episode(task="x", success=False, intervention=_auto(3)),
    ]
    per_ep = labels.label_episodes(eps, labels.LabelConfig(c_fail=2))
    flat = labels.compute_columns(
        episode_lengths=np.array([6, 3]),
        success=np.array([True, False]),
        tasks=["x", "x"],
        intervention=np.concatenate([e.intervention for e in eps]),
        config=labels.LabelConfig(c_fail=2),
    )
    for name in labels.COLUMNS:
        np.testing.assert_array_equal(np.concatenate([p[name] for p in per_ep]), flat[name])


def test_task_max_length_override():
    eps = [labels.Episode(task="x", success=True, intervention=_auto(3))]
    (out,) = labels.label_episodes(eps, task_max_length={"x": 10})
    np.testing.assert_allclose(out["value_label"], [-0.2, -0.1, 0.0], atol=1e-7)
    with pytest.raises(errors.ConfigError, match="shorter than an episode"):
        labels.label_episodes(eps, task_max_length={"x": 2})
    with pytest.raises(errors.ConfigError, match="no entry for task 'x'"):
        labels.label_episodes(eps, task_max_length={"y": 5})


def test_bad_input_names_the_problem():
    with pytest.raises(errors.DatasetError, match=r"episode 1 frame 2 holds 2"):
        labels.compute_columns(
            episode_lengths=np.array([2, 3]),
            success=np.array([True, True]),
            tasks=["a", "a"],
            intervention=np.array([0, 0, 0, 1, 2]),
        )
    with pytest.raises(errors.DatasetError, match="5 frames"):
        labels.compute_columns(
            episode_lengths=np.array([2, 3]), success=np.array([True, True]), tasks=["a", "a"], intervention=np.zeros(4)
        )
    with pytest.raises(errors.DatasetError, match="at least one frame"):
        labels.compute_columns(
            episode_lengths=np.array([2, 0]), success=np.array([True, True]), tasks=["a", "a"], intervention=np.zeros(2)
        )
    with pytest.raises(errors.DatasetError, match="non-empty task"):
        labels.label_episodes([labels.Episode(task=" ", success=True, length=2)])
    with pytest.raises(errors.DatasetError, match="no intervention flags and no length"):
        labels.label_episodes([labels.Episode(task="a", success=True)])
    with pytest.raises(errors.DatasetError, match="length=3 but has 2"):
        labels.label_episodes([labels.Episode(task="a", success=True, intervention=_auto(2), length=3)])
    with pytest.raises(errors.ConfigError, match="mode"):
        labels.LabelConfig(mode="episode")  # type: ignore[arg-type]
    for bad in (-1.0, 0.0, 1.0, float("nan")):
        with pytest.raises(errors.ConfigError, match="more than one step"):
            labels.LabelConfig(c_fail=bad)
    assert issubclass(errors.DatasetError, errors.UserError)


def test_single_frame_and_empty_datasets():
    (out,) = labels.label_episodes([labels.Episode(task="a", success=False, intervention=_auto(1))])
    np.testing.assert_allclose(out["value_label"], [-1.0])
    np.testing.assert_allclose(out["reward_label"], [-1.0])
    assert labels.label_episodes([]) == []
