import numpy as np
import pytest

from openpi.sim import base
from openpi.sim import tabletop


def _expert_rollout(env: tabletop.TabletopEnv, seed: int) -> tuple[list[dict], list[np.ndarray]]:
    observations = [env.reset(seed)]
    actions = []
    while not env.done:
        actions.append(env.expert_action())
        observations.append(env.step(actions[-1]))
    return observations, actions


def _same_obs(a: dict, b: dict) -> bool:
    return (
        a["prompt"] == b["prompt"]
        and a["images"].keys() == b["images"].keys()
        and all(a["images"][k].tobytes() == b["images"][k].tobytes() for k in a["images"])
        and a["state"].tobytes() == b["state"].tobytes()
    )


def test_observation_layout_and_protocol():
    env = tabletop.TabletopEnv("press_blue", cameras=("top", "wrist"), image_size=24)
    assert isinstance(env, base.SimEnv)
    obs = env.reset(0)
    assert set(obs) == {"images", "state", "prompt"}
    assert obs["prompt"] == "press the blue button" == env.prompt
    for camera in ("top", "wrist"):
        image = obs["images"][camera]
        assert image.dtype == np.uint8 and image.shape == (24, 24, 3)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (env.state_dim,)
    np.testing.assert_allclose(obs["state"], [*env.gripper, 0.0], atol=1e-6)
    assert (env.done, env.success, env.num_steps) == (False, False, 0)


def test_same_seed_gives_bit_identical_episode_and_different_seeds_differ():
    first, second = (tabletop.TabletopEnv("press_green", cameras=("top", "wrist")) for _ in range(2))
    obs_a, actions_a = _expert_rollout(first, 7)
    obs_b, actions_b = _expert_rollout(second, 7)
    assert len(obs_a) == len(obs_b) > 2
    assert all(_same_obs(a, b) for a, b in zip(obs_a, obs_b, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(actions_a, actions_b, strict=True))
    # Re-using one env object gives the same episode again.
    assert _same_obs(first.reset(7), obs_a[0])
    assert not _same_obs(first.reset(8), obs_a[0])
    assert not np.allclose(first.buttons, second.buttons)  # first now holds seed 8's layout, second seed 7's


def test_layout_constraints_hold_and_tasks_share_the_layout():
    envs = [tabletop.TabletopEnv(task, cameras=()) for task in tabletop.TASKS]
    for seed in range(200):
        for env in envs:
            env.reset(seed)
        buttons, gripper = envs[0].buttons, envs[0].gripper
        assert all(np.array_equal(env.buttons, buttons) and np.array_equal(env.gripper, gripper) for env in envs)
        assert np.all((buttons >= 0.15) & (buttons <= 0.85))
        gaps = np.linalg.norm(buttons[:, None] - buttons[None], axis=-1)[np.triu_indices(3, 1)]
        assert gaps.min() >= 0.3
        assert np.linalg.norm(buttons - gripper, axis=1).min() >= 0.25


@pytest.mark.parametrize("task", tabletop.TASKS)
def test_noise_free_expert_always_succeeds(task):
    env = tabletop.TabletopEnv(task, cameras=())
    lengths = []
    for seed in range(100):
        _, actions = _expert_rollout(env, seed)
        assert env.success and env.outcome == "success", seed
        lengths.append(len(actions))
        assert actions[-1][2] > 0 and all(a[2] < 0 for a in actions[:-1])
    assert max(lengths) <= env.max_steps // 2


def test_images_show_the_layout_that_the_state_does_not_contain():
    env = tabletop.TabletopEnv("press_red", image_size=32)
    gripper = [0.5, 0.1]
    layout_a = [[0.2, 0.3], [0.5, 0.6], [0.8, 0.8]]
    layout_b = [[0.8, 0.8], [0.2, 0.3], [0.5, 0.6]]
    obs_a = env.reset(0, buttons=layout_a, gripper=gripper)
    obs_b = env.reset(0, buttons=layout_b, gripper=gripper)
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    assert not np.array_equal(obs_a["images"]["top"], obs_b["images"]["top"])

    image = obs_b["images"]["top"]
    for colour, centre in zip(tabletop.BUTTON_RGB, layout_b, strict=True):
        assert np.array_equal(image[env.world_to_pixel(centre)], colour)
        rows, cols = np.nonzero(np.all(image == colour, axis=-1))
        # The disc's pixels are centred where the layout says and cover about pi r^2 of the arena.
        assert abs((cols.mean() + 0.5) / 32 - centre[0]) < 1 / 32
        assert abs((rows.mean() + 0.5) / 32 - centre[1]) < 1 / 32
        assert rows.size == pytest.approx(np.pi * (env.button_radius * 32) ** 2, rel=0.25)
    assert np.array_equal(image[env.world_to_pixel(gripper)], tabletop.GRIPPER_RGB)


def test_wrist_camera_is_centred_on_the_gripper():
    env = tabletop.TabletopEnv("press_red", cameras=("wrist",), image_size=32)
    buttons = [[0.2, 0.2], [0.5, 0.8], [0.8, 0.2]]
    over_green = env.reset(0, buttons=buttons, gripper=[0.5, 0.8])["images"]["wrist"]
    assert np.array_equal(over_green[16, 16], tabletop.GRIPPER_RGB)
    # Just off the cross, the pixels are the green button's.
    assert np.array_equal(over_green[16, 19], tabletop.BUTTON_RGB[1])
    corner = env.reset(0, buttons=buttons, gripper=[0.0, 0.0])["images"]["wrist"]
    assert np.array_equal(corner[0, 0], tabletop.OUTSIDE_RGB)
    assert np.array_equal(corner[31, 31], tabletop.BUTTON_RGB[0])  # (0.24, 0.24) lies on the red disc
    assert np.array_equal(corner[31, 20], tabletop.TABLE_RGB)


def test_position_control_moves_toward_the_target_by_at_most_speed():
    env = tabletop.TabletopEnv("press_red", cameras=())
    env.reset(0, buttons=[[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]], gripper=[0.5, 0.2])
    env.step([-0.6, -0.6, -1.0])  # toward (0.2, 0.2): 0.3 away, so one full step of `speed`
    np.testing.assert_allclose(env.gripper, [0.5 - env.speed, 0.2])
    for _ in range(6):  # 0.345 away: five full steps, then the last 0.045 exactly
        env.step([-0.81, -0.6, -1.0])
    np.testing.assert_allclose(env.gripper, [0.095, 0.2])
    expert = env.expert_action()  # position control: the expert's action is the target button's place
    np.testing.assert_allclose(expert[:2], [-0.6, -0.6])
    np.testing.assert_allclose(env.idle_action()[:2], env.gripper * 2 - 1)
    with pytest.raises(base.SimError, match="action_mode"):
        tabletop.TabletopEnv("press_red", action_mode="joints")


def test_press_move_clip_and_step_limit():
    env = tabletop.TabletopEnv("press_red", cameras=(), max_steps=5, action_mode="delta")
    buttons = [[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]]
    env.reset(0, buttons=buttons, gripper=[0.5, 0.2])
    obs = env.step([0.3, 0.0, 1.0])  # press on the bare table: nothing happens, no move
    assert not env.done and obs["state"][2] == 1.0
    np.testing.assert_allclose(env.gripper, [0.5, 0.2])
    obs = env.step([5.0, -2.0, -1.0])  # clipped to (1, -1)
    np.testing.assert_allclose(env.gripper, [0.5 + env.speed, 0.2 - env.speed])
    assert obs["state"][2] == 0.0
    for _ in range(3):
        env.step([0.0, -1.0, -1.0])
    assert env.gripper[1] == 0.0  # clipped to the arena
    assert env.done and not env.success and env.outcome == "timeout" and env.num_steps == 5
    with pytest.raises(base.SimError, match="reset"):
        env.step([0.0, 0.0, 0.0])

    env.reset(0, buttons=buttons, gripper=[0.5 + 0.07, 0.5])  # inside the green disc's rim
    env.step([0.0, 0.0, 0.1])
    assert env.done and not env.success and env.outcome == "wrong_button"
    env.reset(0, buttons=buttons, gripper=[0.2, 0.2 - 0.07])
    env.step([0.0, 0.0, 0.1])
    assert env.done and env.success and env.outcome == "success" and env.num_steps == 1


def test_unsafe_and_progress():
    env = tabletop.TabletopEnv("press_red", cameras=(), action_mode="delta")
    buttons = [[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]]
    env.reset(0, buttons=buttons, gripper=[0.5, 0.5])
    assert env.unsafe(np.array([0.0, 0.0, 1.0]))
    assert not env.unsafe(np.array([1.0, 1.0, -1.0]))
    assert env.progress() == pytest.approx(-np.sqrt(0.18))
    env.reset(0, buttons=buttons, gripper=[0.2, 0.2])
    assert not env.unsafe(np.array([0.0, 0.0, 1.0]))
    assert env.progress() == 0.0
    env.reset(0, buttons=buttons, gripper=[0.02, 0.5])
    assert env.unsafe(np.array([-1.0, 0.0, -1.0]))  # would leave the arena
    assert not env.unsafe(np.array([-0.3, 0.0, -1.0]))
    assert not env.unsafe(np.array([0.0, 0.0, 1.0]))  # pressing the bare table is harmless


def test_bad_input_is_one_clear_error():
    with pytest.raises(base.SimError, match="did you mean 'press_red'"):
        tabletop.TabletopEnv("press_rd")
    with pytest.raises(base.SimError, match="cameras"):
        tabletop.TabletopEnv(cameras=("top", "side"))
    env = tabletop.TabletopEnv()
    env.reset(0)
    with pytest.raises(base.SimError, match=r"shape \(3,\)"):
        env.step(np.zeros(7))
    with pytest.raises(base.SimError, match="non-finite"):
        env.step([np.nan, 0.0, 0.0])
    with pytest.raises(base.SimError, match="non-negative integer"):
        env.reset(-1)
    with pytest.raises(base.SimError, match="buttons"):
        env.reset(0, buttons=[[0.2, 0.2]])
