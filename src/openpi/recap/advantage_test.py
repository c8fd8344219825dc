import numpy as np
import pytest

from openpi.recap import advantage as adv


def test_n_step_advantage_hand_computed_middle_and_end():
    # T = 5, N = 2, success episode: r = -0.1 per step, terminal 0.
    rewards = np.array([-0.1, -0.1, -0.1, -0.1, 0.0])
    values = np.array([-0.5, -0.4, -0.2, -0.3, -0.05])
    out = adv.n_step_advantage(rewards, values, lookahead=2)
    expected = [
        -0.1 - 0.1 + (-0.2) - (-0.5),  # t=0: bootstrap V[2]
        -0.1 - 0.1 + (-0.3) - (-0.4),  # t=1: bootstrap V[3]
        -0.1 - 0.1 + (-0.05) - (-0.2),  # t=2: bootstrap V[4]
        -0.1 + 0.0 + 0.0 - (-0.3),  # t=3: t+N = T, sum stops at terminal, bootstrap 0
        0.0 + 0.0 - (-0.05),  # t=4: terminal step only
    ]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_n_step_advantage_perfect_value_gives_zero():
    # With V equal to the true return the advantage is 0 everywhere, including near the end.
    rewards = np.array([-0.1] * 6 + [0.0])
    values = np.cumsum(rewards[::-1])[::-1]
    np.testing.assert_allclose(adv.n_step_advantage(rewards, values, lookahead=3), 0.0, atol=1e-12)


def test_nan_values_only_affect_advantages_that_use_them():
    rewards = np.array([-0.1, -0.1, -0.1, 0.0])
    values = np.array([-0.3, np.nan, -0.1, np.nan])
    out = adv.n_step_advantage(rewards, values, lookahead=2)
    assert out[0] == pytest.approx(-0.2 + (-0.1) + 0.3)
    assert np.isnan(out[1])  # its own value is missing
    assert out[2] == pytest.approx(-0.1 + 0.0 + 0.1)  # bootstrap beyond the end: terminal value 0


def test_failed_episode_with_zero_terminal_reward_gets_failure_penalty():
    # Two episodes: a failure written community-style (-1/T per step, 0 at the end) and a success.
    reward_label = np.array([-0.25, -0.25, -0.25, 0.0, -0.5, 0.0], dtype=np.float32)
    reward = np.array([0, 0, 0, 0, 0, 1], dtype=np.float32)
    bounds = [(0, 4), (4, 6)]
    success = adv.episode_success(reward, bounds)
    np.testing.assert_array_equal(success, [False, True])
    fixed = adv.repair_terminal_rewards(reward_label, success, bounds, failure_reward=-1.0)
    np.testing.assert_allclose(fixed, [-0.25, -0.25, -0.25, -1.0, -0.5, 0.0])


def test_failed_episode_with_real_penalty_is_trusted():
    reward_label = np.array([-0.1, -0.1, -0.7], dtype=np.float32)
    fixed = adv.repair_terminal_rewards(reward_label, np.array([False]), [(0, 3)], failure_reward=-1.0)
    np.testing.assert_allclose(fixed, reward_label)
    # A terminal reward that is no worse than an ordinary step is not a penalty.
    flat = np.array([-0.1, -0.1, -0.1], dtype=np.float32)
    fixed = adv.repair_terminal_rewards(flat, np.array([False]), [(0, 3)], failure_reward=-1.0)
    np.testing.assert_allclose(fixed, [-0.1, -0.1, -1.0])


def test_frames_needing_values():
    # Episode 0: frames 0..5, autonomous 1,2 and 5; episode 1: frames 6..8, all human.
    autonomous = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    needed = adv.frames_needing_values(autonomous, [(0, 6), (6, 9)], lookahead=3)
    # 1 -> bootstrap 4, 2 -> bootstrap 5, 5 -> past the end.
    np.testing.assert_array_equal(needed, [1, 2, 4, 5])


def test_task_thresholds_exact_fraction_per_task():
    advantage = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, -5.0, -4.0, 3.0])
    task = np.array([0] * 10 + [1] * 3)
    autonomous = np.array([True] * 12 + [False])
    eps = adv.task_thresholds(advantage, task, autonomous, top_percent=30)
    # Task 0: k = 3 of 10 -> halfway between 0.8 and 0.7.
    assert eps[0] == pytest.approx(0.75)
    # Task 1: autonomous frames -5, -4; k = round(0.6) = 1 -> halfway between -4 and -5. The human frame is ignored.
    assert eps[1] == pytest.approx(-4.5)
    ind = adv.indicators(advantage, task, autonomous, eps)
    assert list(ind[:10]) == ["negative"] * 7 + ["positive"] * 3
    assert list(ind[10:]) == ["negative", "positive", "positive"]


def test_thresholds_are_per_task_not_global():
    # Task 1's advantages are all below task 0's; a global threshold would make task 1 all negative.
    advantage = np.array([10.0, 11.0, 12.0, 13.0, -3.0, -2.0, -1.0, 0.0])
    task = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    autonomous = np.ones(8, dtype=bool)
    eps = adv.task_thresholds(advantage, task, autonomous, top_percent=50)
    ind = adv.indicators(advantage, task, autonomous, eps)
    assert list(ind) == ["negative", "negative", "positive", "positive"] * 2


def test_threshold_edge_percentages():
    advantage = np.array([1.0, 2.0, 3.0])
    task = np.zeros(3, dtype=int)
    autonomous = np.ones(3, dtype=bool)
    for top, n_pos in ((0, 0), (100, 3)):
        eps = adv.task_thresholds(advantage, task, autonomous, top_percent=top)
        assert (adv.indicators(advantage, task, autonomous, eps) == "positive").sum() == n_pos


def test_compute_end_to_end_hand_example():
    # Episode 0 (task 0, success, T=4): autonomous 0..2, human correction at 3.
    # Episode 1 (task 0, failure community-style, T=4): all autonomous.
    # Episode 2 (task 1, demonstration only, T=2).
    reward = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 1], dtype=np.float32)
    reward_label = np.array([-0.25, -0.25, -0.25, 0.0, -0.25, -0.25, -0.25, 0.0, -0.5, 0.0], dtype=np.float32)
    intervention = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 1])
    task = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    values = np.full(10, np.nan)
    values[0:4] = [-0.75, -0.5, -0.25, 0.0]  # perfect for the success episode
    values[4:8] = [-0.75, -0.5, -0.25, -0.1]  # optimistic on the failure (it believes it is succeeding)
    bounds = [(0, 4), (4, 8), (8, 10)]
    cfg = adv.AdvantageConfig(lookahead=2, top_percent=50, failure_reward=-1.0)
    res = adv.compute(
        reward=reward,
        reward_label=reward_label,
        intervention=intervention,
        task_index=task,
        values=values,
        bounds=bounds,
        config=cfg,
    )
    np.testing.assert_array_equal(res.success, [True, False, True])
    # Success: A = 0 for t=0,1 (perfect V); t=2: -0.25 + 0 + 0 - (-0.25) = 0.
    np.testing.assert_allclose(res.advantage[0:3], [0.0, 0.0, 0.0], atol=1e-7)
    assert np.isnan(res.advantage[3])
    # Failure with the repaired terminal reward -1:
    # t=4: -0.5 + V6 - V4 = -0.5 - 0.25 + 0.75 = 0.0
    # t=5: -0.5 + V7 - V5 = -0.5 - 0.1 + 0.5 = -0.1
    # t=6: -0.25 + -1 + 0 + 0.25 = -1.0
    # t=7: -1 - (-0.1) = -0.9
    np.testing.assert_allclose(res.advantage[4:8], [0.0, -0.1, -1.0, -0.9], atol=1e-6)
    # Task 0 autonomous advantages sorted: [0, 0, 0, 0, -0.1, -0.9, -1] -> k = round(3.5) = 4 -> eps = -0.05.
    # Task 1 has no autonomous frames, so no threshold.
    assert res.thresholds == {0: pytest.approx(-0.05)}
    assert list(res.adv_ind) == ["positive"] * 5 + ["negative"] * 3 + ["positive"] * 2


def test_compute_trusting_zero_terminal_would_hide_failure():
    # The trap: with the raw terminal 0 the failure's last frames look as good as a success.
    reward = np.array([0, 0, 0, 0], dtype=np.float32)
    reward_label = np.array([-0.25, -0.25, -0.25, 0.0], dtype=np.float32)
    values = np.array([-0.75, -0.5, -0.25, 0.0])
    raw = adv.n_step_advantage(reward_label, values, lookahead=2)
    assert raw[-1] == pytest.approx(0.0)
    res = adv.compute(
        reward=reward,
        reward_label=reward_label,
        intervention=np.zeros(4, dtype=int),
        task_index=np.zeros(4, dtype=int),
        values=values,
        bounds=[(0, 4)],
        config=adv.AdvantageConfig(lookahead=2),
    )
    assert res.advantage[-1] == pytest.approx(-1.0)


def test_compute_rejects_missing_values():
    with pytest.raises(ValueError, match="frame 1"):
        adv.compute(
            reward=np.zeros(3),
            reward_label=np.zeros(3),
            intervention=np.array([1, 0, 1]),
            task_index=np.zeros(3, dtype=int),
            values=np.array([0.0, np.nan, 0.0]),
            bounds=[(0, 3)],
        )


def test_config_validation():
    with pytest.raises(ValueError, match="lookahead"):
        adv.AdvantageConfig(lookahead=0)
    with pytest.raises(ValueError, match="top_percent"):
        adv.AdvantageConfig(top_percent=120)


def test_advantage_errors_are_user_errors():
    """Issue 14.9: a NaN value prediction must end in one sentence (exit 2), not a ValueError traceback."""
    from openpi.shared import errors

    with pytest.raises(errors.UserError, match="not finite"):
        adv.compute(
            reward=np.array([0.0, 0.0, -1.0]),
            reward_label=np.array([0.0, 0.0, -1.0]),
            intervention=np.zeros(3),
            task_index=np.zeros(3, int),
            values=np.array([np.nan, -0.5, -0.2]),
            bounds=[(0, 3)],
            config=adv.AdvantageConfig(lookahead=1),
        )
    with pytest.raises(errors.UserError, match="NaN"):
        adv.task_thresholds(np.array([np.nan, 1.0]), np.zeros(2, int), np.ones(2, bool), 30.0)
    with pytest.raises(errors.UserError, match="lookahead"):
        adv.AdvantageConfig(lookahead=0)
