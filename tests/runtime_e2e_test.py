"""The client runtime against the real websocket policy server on 127.0.0.1.

A robot client's whole chain: `Runtime` -> `PolicyAgent` -> `ActionChunkBroker` -> `WebsocketClientPolicy`
-> msgpack over a socket -> `WebsocketPolicyServer` -> policy. The served policy is a small numpy planner (the
pi0.6 model's own serving is covered by serving_e2e_test.py), so the test takes well under a second and can
check exactly which observations reached the server.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from openpi.serving import websocket_policy_server as wps
from openpi_client import action_chunk_broker
from openpi_client import base_policy
from openpi_client import websocket_client_policy as wcp
from openpi_client.runtime import environment as _environment
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime import subscriber as _subscriber
from openpi_client.runtime.agents import policy_agent

HORIZON = 4
STEP_SIZE = 0.1
CAMERA = "cam_high"


class ReachWorld(_environment.Environment):
    """A 2-D point moved by ``STEP_SIZE * clip(action)`` per step toward `goal`; sends a tiny camera frame too."""

    def __init__(self, start=(0.0, 0.0), goal=(0.6, -0.3)):
        self.start = np.asarray(start, np.float32)
        self.goal = np.asarray(goal, np.float32)
        self.pos = self.start.copy()

    def reset(self) -> None:
        self.pos = self.start.copy()

    def is_episode_complete(self) -> bool:
        return bool(np.abs(self.pos - self.goal).max() < 0.05)

    def get_observation(self) -> dict:
        frame = np.zeros((8, 8, 3), np.uint8)
        frame[..., 0] = np.uint8(100 * self.pos[0] % 256)
        return {"images": {CAMERA: frame}, "state": self.pos.copy(), "prompt": "reach the goal"}

    def apply_action(self, action: dict) -> None:
        assert action["actions"].shape == (2,), action["actions"].shape
        self.pos = (self.pos + STEP_SIZE * np.clip(action["actions"], -1.0, 1.0)).astype(np.float32)


class ServedPlanner(base_policy.BasePolicy):
    """Server-side policy: a chunk of `HORIZON` moves toward `goal`; records the states it was asked about."""

    def __init__(self, goal):
        self.goal = np.asarray(goal, np.float32)
        self.requests: list[np.ndarray] = []
        self._lock = threading.Lock()

    def infer(self, obs: dict) -> dict:
        assert obs["images"][CAMERA].dtype == np.uint8 and obs["prompt"] == "reach the goal"
        state = np.asarray(obs["state"])
        if state.shape != (2,) or not np.issubdtype(state.dtype, np.floating):
            raise wps.BadRequestError(f"'state' must be 2 floats (the point's x, y), got {state.dtype} {state.shape}.")
        pos = state.astype(np.float32)
        with self._lock:
            self.requests.append(pos.copy())
        moves = []
        for _ in range(HORIZON):
            move = np.clip((self.goal - pos) / STEP_SIZE, -1.0, 1.0)
            moves.append(move)
            pos = pos + STEP_SIZE * move
        return {"actions": np.stack(moves).astype(np.float32), "policy_timing": {"infer_ms": 0.01}}


class StepCounter(_subscriber.Subscriber):
    def __init__(self):
        self.episodes: list[list[float]] = []

    def on_episode_start(self) -> None:
        self.episodes.append([])

    def on_step(self, observation: dict, action: dict) -> None:
        # Each step's reply still carries the server's timing next to this step's action.
        assert action["server_timing"]["infer_ms"] >= 0
        self.episodes[-1].append(float(action["actions"][0]))


@pytest.fixture(scope="module")
def served():
    planner = ServedPlanner(goal=(0.6, -0.3))
    server = wps.WebsocketPolicyServer(planner, port=0, metadata={"action_horizon": HORIZON})
    with server.start_in_thread() as srv:
        yield planner, srv


def test_policy_agent_drives_episodes_over_the_websocket(served):
    planner, srv = served
    planner.requests.clear()
    with wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=10) as client:
        horizon = int(client.get_server_metadata()["action_horizon"])
        agent = policy_agent.PolicyAgent(action_chunk_broker.ActionChunkBroker(client, action_horizon=horizon))
        env, counter = ReachWorld(), StepCounter()
        steps = _runtime.Runtime(env, agent, subscribers=[counter], num_episodes=3, max_episode_steps=50).run()
    # 6 steps in x (3 of them also move y) reach the goal: chunks of 4 requested at steps 0 and 4 per episode.
    assert steps == [6, 6, 6]
    assert env.is_episode_complete()
    assert [len(e) for e in counter.episodes] == steps
    assert len(planner.requests) == 6
    # The broker was reset between episodes: every episode's first request was planned from the start position.
    np.testing.assert_allclose(planner.requests[0::2], np.zeros((3, 2)), atol=1e-6)
    np.testing.assert_allclose(planner.requests[1::2], np.tile([[0.4, -0.3]], (3, 1)), atol=1e-5)


def test_server_rejection_reaches_the_runtime_caller(served):
    """A request the server refuses stops the episode with the server's sentence, not with a made-up action."""

    class StringState(ReachWorld):
        def get_observation(self) -> dict:
            return {**super().get_observation(), "state": np.array(["a", "b"])}  # not a numeric state

    _, srv = served
    counter = StepCounter()
    with wcp.WebsocketClientPolicy(port=srv.port, connect_timeout_s=10) as client:
        agent = policy_agent.PolicyAgent(action_chunk_broker.ActionChunkBroker(client, action_horizon=HORIZON))
        with pytest.raises(wcp.ServerError, match=r"Bad request: 'state' must be 2 floats"):
            _runtime.Runtime(StringState(), agent, subscribers=[counter]).run()
        # The connection survives the refusal: the next run on the same client works.
        assert _runtime.Runtime(ReachWorld(), agent, subscribers=[counter]).run() == [6]
    assert [len(e) for e in counter.episodes] == [0, 6]
