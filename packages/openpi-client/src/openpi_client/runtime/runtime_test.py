"""The episode loop on a small real world: a point on a line that the agent must bring to a goal."""

from __future__ import annotations

import time

import numpy as np
import pytest

from openpi_client import action_chunk_broker
from openpi_client import base_policy
from openpi_client.runtime import agent as _agent
from openpi_client.runtime import environment as _environment
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime import subscriber as _subscriber
from openpi_client.runtime.agents import policy_agent

_real_sleep = time.sleep  # captured before any test records the runtime's sleeps
STEP_SIZE = 0.1


class LineWorld(_environment.Environment):
    """A point at `x` moved by ``STEP_SIZE * clip(action, -1, 1)`` per step; the episode ends within 0.05 of `goal`."""

    def __init__(self, start: float = 0.0, goal: float = 1.0, log: list | None = None, step_delay_s: float = 0.0):
        self.start, self.goal = start, goal
        self.log = log if log is not None else []
        self.step_delay_s = step_delay_s
        self.x = start
        self.resets = 0
        self.applied: list[dict] = []

    def reset(self) -> None:
        self.x = self.start
        self.resets += 1
        self.log.append("env.reset")

    def is_episode_complete(self) -> bool:
        return abs(self.x - self.goal) < 0.05

    def get_observation(self) -> dict:
        return {"state": np.array([self.x], np.float32), "prompt": "go to the goal"}

    def apply_action(self, action: dict) -> None:
        if self.step_delay_s:
            _real_sleep(self.step_delay_s)  # stands in for a slow actuator or slow inference
        self.applied.append(action)
        self.x += STEP_SIZE * float(np.clip(action["actions"][0], -1.0, 1.0))


class PlannerPolicy(base_policy.BasePolicy):
    """Plans a chunk of `horizon` unit moves toward `goal` from the observed state (so a stale chunk overshoots)."""

    def __init__(self, goal: float, horizon: int, direction: float = 1.0):
        self.goal, self.horizon, self.direction = goal, horizon, direction
        self.requests: list[float] = []
        self.resets = 0

    def infer(self, obs: dict) -> dict:
        x = float(obs["state"][0])
        self.requests.append(x)
        moves = []
        for _ in range(self.horizon):
            move = self.direction * float(np.clip((self.goal - x) / STEP_SIZE, -1.0, 1.0))
            moves.append([move])
            x += STEP_SIZE * move
        return {"actions": np.array(moves, np.float32), "policy_timing": {"infer_ms": 0.0}}

    def reset(self) -> None:
        self.resets += 1


class RecordingSubscriber(_subscriber.Subscriber):
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log
        self.steps: list[tuple[dict, dict]] = []

    def on_episode_start(self) -> None:
        self.log.append(f"{self.name}.start")

    def on_step(self, observation: dict, action: dict) -> None:
        self.steps.append((observation, action))
        self.log.append(f"{self.name}.step")

    def on_episode_end(self) -> None:
        self.log.append(f"{self.name}.end")


def _broker_agent(goal: float = 1.0, horizon: int = 4, **kwargs) -> tuple[policy_agent.PolicyAgent, PlannerPolicy]:
    planner = PlannerPolicy(goal, horizon=horizon, **kwargs)
    return policy_agent.PolicyAgent(action_chunk_broker.ActionChunkBroker(planner, action_horizon=horizon)), planner


def test_runs_every_episode_until_the_environment_completes():
    env = LineWorld(start=0.0, goal=1.0)
    agent, planner = _broker_agent()
    steps = _runtime.Runtime(env, agent, num_episodes=3).run()
    # 10 moves of 0.1 reach the goal; the episode ends on the check before step 11.
    assert steps == [10, 10, 10]
    assert env.resets == 3 and planner.resets == 3
    assert len(env.applied) == 30
    assert env.is_episode_complete()


def test_max_episode_steps_ends_an_episode_the_environment_would_not():
    env = LineWorld(start=0.0, goal=1.0)
    agent, _ = _broker_agent(direction=-1.0)  # walks away from the goal: never complete by itself
    assert _runtime.Runtime(env, agent, num_episodes=2, max_episode_steps=7).run() == [7, 7]
    assert env.x == pytest.approx(-0.7)
    # The limit only caps: a shorter natural episode keeps its own length.
    agent, _ = _broker_agent()
    assert _runtime.Runtime(LineWorld(), agent, max_episode_steps=50).run() == [10]


def test_subscribers_see_events_in_order_and_exactly_what_was_applied():
    log: list[str] = []
    env = LineWorld(start=0.7, goal=1.0, log=log)
    agent, _ = _broker_agent()
    first, second = RecordingSubscriber("a", log), RecordingSubscriber("b", log)
    _runtime.Runtime(env, agent, subscribers=[first, second], num_episodes=2).run()
    episode = ["env.reset", "a.start", "b.start", *["a.step", "b.step"] * 3, "a.end", "b.end"]
    assert log == episode * 2
    # on_step receives the very observation the agent saw and the very action the environment applied.
    assert [action for _, action in first.steps] == env.applied
    assert all(a is b for (_, a), (_, b) in zip(first.steps, second.steps, strict=True))
    states = [float(obs["state"][0]) for obs, _ in first.steps]
    assert states == pytest.approx([0.7, 0.8, 0.9] * 2)


def test_broker_is_reset_so_every_episode_requests_a_fresh_chunk_first():
    # 10 steps per episode with chunks of 4: a broker that kept its chunk would start episode 2 by replaying the
    # last two actions of episode 1's third chunk (planned at x=0.8, so two zero moves) and need 12 steps.
    env = LineWorld(start=0.0, goal=1.0)
    agent, planner = _broker_agent(horizon=4)
    assert _runtime.Runtime(env, agent, num_episodes=3).run() == [10, 10, 10]
    assert planner.requests == pytest.approx([0.0, 0.4, 0.8] * 3)


def test_agent_without_chunks_and_plain_agent_reset():
    class Greedy(_agent.Agent):
        def __init__(self):
            self.resets = 0

        def get_action(self, observation: dict) -> dict:
            return {"actions": np.array([1.0], np.float32)}

        def reset(self) -> None:
            self.resets += 1

    agent = Greedy()
    assert _runtime.Runtime(LineWorld(start=0.5), agent, num_episodes=2).run() == [5, 5]
    assert agent.resets == 2

    class DuckPolicy:  # anything with `infer` works; `reset` is optional
        def infer(self, obs: dict) -> dict:
            return {"actions": np.array([1.0], np.float32)}

    duck_agent = policy_agent.PolicyAgent(DuckPolicy())
    assert _runtime.Runtime(LineWorld(start=0.8), duck_agent).run() == [2]


def test_mark_episode_complete_ends_only_the_current_episode():
    class StopAfter(_subscriber.Subscriber):
        def __init__(self, n: int):
            self.n, self.seen, self.runtime = n, 0, None

        def on_episode_start(self) -> None:
            self.seen = 0

        def on_step(self, observation: dict, action: dict) -> None:
            self.seen += 1
            if self.seen == self.n:
                self.runtime.mark_episode_complete()

    stopper = StopAfter(3)
    agent, _ = _broker_agent()
    runtime = _runtime.Runtime(LineWorld(), agent, subscribers=[stopper], num_episodes=2)
    stopper.runtime = runtime
    assert runtime.run() == [3, 3]


def test_episode_complete_at_reset_takes_no_step():
    log: list[str] = []
    env = LineWorld(start=1.0, goal=1.0, log=log)
    agent, planner = _broker_agent()
    assert _runtime.Runtime(env, agent, subscribers=[RecordingSubscriber("s", log)]).run() == [0]
    assert log == ["env.reset", "s.start", "s.end"]
    assert planner.requests == []


def test_a_failing_step_propagates_without_ending_the_episode_for_subscribers():
    class Broken(LineWorld):
        def apply_action(self, action: dict) -> None:
            raise RuntimeError("motor fault")

    log: list[str] = []
    agent, _ = _broker_agent()
    with pytest.raises(RuntimeError, match="motor fault"):
        _runtime.Runtime(Broken(log=log), agent, subscribers=[RecordingSubscriber("s", log)]).run()
    assert log == ["env.reset", "s.start"]


def test_rate_limit_sleeps_only_the_rest_of_the_period(monkeypatch):
    requested: list[float] = []

    def recording_sleep(seconds: float) -> None:
        requested.append(seconds)
        _real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    hz, period = 50.0, 0.02

    # Fast steps: each step starts at least one period after the previous one.
    agent, _ = _broker_agent()
    start = time.monotonic()
    assert _runtime.Runtime(LineWorld(), agent, max_hz=hz).run() == [10]
    elapsed = time.monotonic() - start
    assert elapsed >= 9 * period - 1e-3
    assert elapsed < 9 * period + 2.0  # loose: a busy machine may oversleep, never undersleep
    # At most one wait between consecutive steps (a step slowed past the period by a busy machine needs none).
    assert len(requested) <= 9 and all(0 < s <= period for s in requested)

    # Steps that take 15 ms of the 20 ms period: at most the remaining 5 ms is slept.
    requested.clear()
    agent, _ = _broker_agent()
    assert _runtime.Runtime(LineWorld(step_delay_s=0.015), agent, max_hz=hz).run() == [10]
    assert all(s <= period - 0.015 + 1e-9 for s in requested), requested

    # Steps longer than the period: no sleeping at all.
    requested.clear()
    agent, _ = _broker_agent()
    assert _runtime.Runtime(LineWorld(start=0.7, step_delay_s=0.025), agent, max_hz=hz).run() == [3]
    assert requested == []

    # No limit: never sleeps.
    agent, _ = _broker_agent()
    assert _runtime.Runtime(LineWorld(), agent).run() == [10]
    assert requested == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_hz": -1.0}, "max_hz must be 0"),
        ({"num_episodes": -1}, "num_episodes must be 0 or more"),
        ({"max_episode_steps": -5}, "max_episode_steps must be 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    agent, _ = _broker_agent()
    with pytest.raises(ValueError, match=message):
        _runtime.Runtime(LineWorld(), agent, **kwargs)


def test_zero_episodes_runs_nothing():
    env = LineWorld()
    agent, _ = _broker_agent()
    assert _runtime.Runtime(env, agent, num_episodes=0).run() == []
    assert env.resets == 0
