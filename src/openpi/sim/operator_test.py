import numpy as np
import pytest

from openpi.sim import base
from openpi.sim import expert
from openpi.sim import operator
from openpi.sim import tabletop

BUTTONS = [[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]]
# The rule is tested in velocity control, where a zero move is idle and a move can leave the arena.
IDLE = np.array([0.0, 0.0, -1.0], np.float32)


def test_never_intervenes_on_the_noise_free_expert():
    op = operator.Operator()
    for task in tabletop.TASKS:
        env = tabletop.TabletopEnv(task, cameras=())
        for seed in range(100):
            env.reset(seed)
            op.reset()
            while not env.done:
                proposed = env.expert_action()
                action, intervened = op.filter(env, proposed)
                assert not intervened and np.array_equal(action, proposed)
                env.step(action)
            assert env.success and op.num_takeovers == 0


def test_takeover_on_stall_then_handback_after_exactly_k_steps():
    env = tabletop.TabletopEnv("press_red", cameras=(), action_mode="delta")
    env.reset(0, buttons=BUTTONS, gripper=[0.8, 0.2])
    op = operator.Operator(stall_steps=4, min_progress=0.02, handback_steps=3)
    flags = []
    for _ in range(12):
        before = env.progress()
        expert_action = env.expert_action()
        action, intervened = op.filter(env, IDLE)
        flags.append(intervened)
        if intervened:
            np.testing.assert_array_equal(action, expert_action)
            assert op.reason == "stall"
        env.step(action)
        assert env.progress() > before if intervened else env.progress() == before
    # Watched calls 1-4 fill the window; the 5th sees no progress over 4 steps and takes over for 3 calls;
    # after the hand-back the window starts empty, so the next takeover is again on the 5th watched call.
    assert flags == [False] * 4 + [True] * 3 + [False] * 4 + [True]
    assert op.num_takeovers == 2 and op.num_intervened_steps == 4 and op.driving


def test_slow_progress_below_the_threshold_counts_as_a_stall():
    env = tabletop.TabletopEnv("press_red", cameras=(), action_mode="delta")

    def first_takeover(scale: float) -> int | None:
        env.reset(0, buttons=BUTTONS, gripper=[0.9, 0.2])
        op = operator.Operator(stall_steps=6, min_progress=0.02, handback_steps=5)
        for step in range(20):
            slow = env.expert_action() * np.float32(scale)
            slow[2] = -1.0
            action, intervened = op.filter(env, slow)
            if intervened:
                return step
            env.step(action)
        return None

    # 6 steps at 0.05 * speed = 0.018 < 0.02 gained: stall; at 0.07 * speed = 0.0252: no stall.
    assert first_takeover(0.05) == 6
    assert first_takeover(0.07) is None


def test_vetoes_an_unsafe_press_and_a_move_out_of_the_arena():
    env = tabletop.TabletopEnv("press_red", cameras=(), action_mode="delta")
    env.reset(0, buttons=BUTTONS, gripper=[0.5, 0.5])  # on the green button
    op = operator.Operator()
    action, intervened = op.filter(env, np.array([0.0, 0.0, 1.0], np.float32))
    assert intervened and op.reason == "unsafe" and action[2] < 0
    env.step(action)
    assert not env.done and op.driving

    env.reset(0, buttons=BUTTONS, gripper=[0.98, 0.5])
    op.reset()
    assert not op.driving and op.num_takeovers == 0
    action, intervened = op.filter(env, np.array([1.0, 0.0, -1.0], np.float32))
    assert intervened and op.reason == "unsafe"
    np.testing.assert_array_equal(action, env.expert_action())


def test_operator_rescues_a_poor_demonstrator():
    env = tabletop.TabletopEnv("press_red", cameras=(), action_mode="delta")
    scripted = expert.ScriptedExpert(0.25)
    op = operator.Operator()
    alone = np.mean([expert.rollout(env, scripted, seed)["success"] for seed in range(60)])
    helped, intervened_steps = [], 0
    for seed in range(60):
        env.reset(seed)
        scripted.reset(seed)
        op.reset()
        while not env.done:
            action, _ = op.filter(env, scripted.act(env)[0])
            env.step(action)
        helped.append(env.success)
        intervened_steps += op.num_intervened_steps
    assert np.mean(helped) > alone + 0.3 and np.mean(helped) >= 0.9
    assert intervened_steps > 0


def test_bad_parameters_are_a_user_error():
    with pytest.raises(base.SimError, match="stall_steps"):
        operator.Operator(stall_steps=0)
