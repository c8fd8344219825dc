import sys

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="MetaWorld is the optional 'sim' extra (uv sync --extra sim)")

from openpi.sim import base
from openpi.sim import metaworld_env
from openpi.sim import registry

# Seeds for the expert's success test; all tasks succeed on seeds 0-199 (measured), these are a sample.
EXPERT_SEEDS = range(8)


@pytest.fixture(scope="module")
def push_env() -> metaworld_env.MetaWorldEnv:
    return metaworld_env.MetaWorldEnv("push-v3")


def _rollout(env: metaworld_env.MetaWorldEnv, seed: int, actions: np.ndarray) -> np.ndarray:
    states = [env.reset(seed)["state"]]
    for action in actions:
        states.append(env.step(action)["state"])
    return np.stack(states)


def test_registry_builds_metaworld_envs_that_follow_the_protocol():
    assert registry.task_names("metaworld") == list(metaworld_env.TASKS)
    assert {"push-v3", "reach-v3", "drawer-close-v3"} <= set(metaworld_env.TASKS)
    env = registry.make_env("metaworld", "reach-v3", max_steps=30)
    assert isinstance(env, metaworld_env.MetaWorldEnv) and isinstance(env, base.SimEnv)
    assert (env.env_name, env.task, env.max_steps, env.cameras) == ("metaworld", "reach-v3", 30, ())
    with pytest.raises(base.SimError, match="no task 'push-v2'"):
        registry.make_env("metaworld", "push-v2")
    with pytest.raises(base.SimError, match="max_steps must be at least 1"):
        metaworld_env.MetaWorldEnv("push-v3", max_steps=0)


def test_missing_extra_is_one_clear_sentence(monkeypatch):
    # As if the 'sim' extra were not installed: importing metaworld fails, and so does this module's import.
    monkeypatch.setitem(sys.modules, "metaworld", None)
    monkeypatch.delitem(sys.modules, "openpi.sim.metaworld_env")
    with pytest.raises(base.SimError, match=r"needs the optional 'sim' extra .*uv sync --extra sim"):
        registry.task_names("metaworld")
    with pytest.raises(base.SimError, match="uv sync --extra sim"):
        registry.make_env("metaworld", "push-v3")


def test_observation_layout(push_env):
    obs = push_env.reset(3)
    assert set(obs) == {"images", "state", "prompt"}
    assert obs["images"] == {} and push_env.cameras == ()
    assert obs["prompt"] == push_env.prompt == "push the puck to the goal"
    state = obs["state"]
    assert state.dtype == np.float32 and state.shape == (39,) == (push_env.state_dim,)
    assert push_env.action_dim == 4
    # Goal-observable: the last three entries are the goal the success test measures against.
    np.testing.assert_allclose(state[36:39], push_env._env._target_pos, atol=1e-6)
    # The hand starts at the task's initial hand position (within 1 cm; the arm settles for 50 sim steps).
    np.testing.assert_allclose(state[0:3], push_env._env.hand_init_pos, atol=0.01)
    # The puck's observed position is where the env says the object is; the previous frame equals the first.
    np.testing.assert_allclose(state[4:7], push_env._env._get_pos_objects(), atol=1e-6)
    np.testing.assert_array_equal(state[18:36], state[0:18])
    assert (push_env.done, push_env.success, push_env.num_steps) == (False, False, 0)


def test_same_seed_is_bit_identical_and_seeds_differ():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(15, 4)).astype(np.float32)
    # drawer-open's reset moves the drawer by editing the MuJoCo model, the case most prone to stale state.
    first = metaworld_env.MetaWorldEnv("drawer-open-v3", seed=5)
    numpy_global_state = np.random.get_state()[1].copy()
    episode_a = _rollout(first, 5, actions)
    # A second env, after an unrelated episode, replays seed 5 bit for bit.
    second = metaworld_env.MetaWorldEnv("drawer-open-v3", seed=11)
    _rollout(second, 11, actions[::-1])
    episode_b = _rollout(second, 5, actions)
    assert episode_a.tobytes() == episode_b.tobytes()
    # Different seeds place the drawer (and with it the goal) differently.
    other = second.reset(6)["state"]
    assert not np.allclose(other[4:7], episode_a[0, 4:7]) and not np.allclose(other[36:39], episode_a[0, 36:39])
    # Seeding goes through the env's own generator, never numpy's global one.
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_global_state)


def test_first_observation_shows_where_the_objects_are():
    # MetaWorld's own first observation shows the drawer where an earlier draw put it (about 10 cm off here).
    env = metaworld_env.MetaWorldEnv("drawer-open-v3")
    for seed in range(3):
        first = env.reset(seed)["state"]
        np.testing.assert_allclose(first[4:7], env._env._get_pos_objects(), atol=1e-6)
        after_idle_step = env.step(np.zeros(4))["state"]
        assert np.linalg.norm(after_idle_step[4:7] - first[4:7]) < 1e-3


def test_actions_are_clipped_and_checked(push_env):
    big = np.array([3.0, -7.0, 2.0, 5.0], dtype=np.float32)
    push_env.reset(1)
    clipped_result = push_env.step(np.clip(big, -1, 1))["state"]
    push_env.reset(1)
    assert push_env.step(big)["state"].tobytes() == clipped_result.tobytes()
    push_env.reset(1)
    assert push_env.step(np.zeros(4))["state"].tobytes() != clipped_result.tobytes()
    with pytest.raises(base.SimError, match="action of shape \\(4,\\)"):
        push_env.step(np.zeros(3))
    with pytest.raises(base.SimError, match="non-finite"):
        push_env.step(np.array([0.0, np.nan, 0.0, 0.0]))


def test_episode_ends_at_the_step_limit_as_a_failure():
    env = metaworld_env.MetaWorldEnv("drawer-close-v3", max_steps=5)
    env.reset(0)
    for _ in range(5):
        assert not env.done
        env.step(np.zeros(4))
    assert (env.done, env.success, env.outcome, env.num_steps) == (True, False, "timeout", 5)
    with pytest.raises(base.SimError, match="call reset"):
        env.step(np.zeros(4))
    env.reset(0)
    assert (env.done, env.num_steps, env.outcome) == (False, 0, None)


@pytest.mark.parametrize("task", metaworld_env.TASKS)
def test_expert_succeeds_and_progress_tracks_it(task):
    env = metaworld_env.MetaWorldEnv(task)
    stall_steps = metaworld_env.TASK_SPECS[task].expert_stall_steps
    successes = 0
    for seed in EXPERT_SEEDS:
        env.reset(seed)
        progress = [env.progress()]
        while not env.done:
            action = env.expert_action()
            assert action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
            assert not env.unsafe(action)
            env.step(action)
            progress.append(env.progress())
        successes += env.success
        if env.success:
            assert env.outcome == "success" and env.num_steps < env.max_steps
            # The documented stall window: every `stall_steps` steps of the expert gain at least 1 cm.
            gains = np.array(progress[stall_steps:]) - np.array(progress[:-stall_steps])
            assert gains.size > 0 and gains.min() >= 0.01
    assert successes >= 0.95 * len(EXPERT_SEEDS)


def test_hesitation_and_wrong_way_keep_the_grip(push_env):
    push_env.reset(2)
    for _ in range(40):  # far enough that the expert is pressing down on the puck
        push_env.step(push_env.expert_action())
    expert = push_env.expert_action()
    assert expert[3] > 0
    np.testing.assert_array_equal(push_env.idle_action(), [0.0, 0.0, 0.0, expert[3]])
    np.testing.assert_array_equal(push_env.distractor_action(0), [*(-expert[:3]), expert[3]])
    # The wrong way really undoes progress (after a few steps: the arm lags behind its mocap target).
    before = push_env.progress()
    for _ in range(10):
        push_env.step(push_env.distractor_action(0))
    assert push_env.progress() < before
