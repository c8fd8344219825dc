import numpy as np
import pytest

from openpi_client import action_chunk_broker
from openpi_client import base_policy


class CountingPolicy(base_policy.BasePolicy):
    """A real (tiny) policy: returns a chunk whose values encode the call number and step."""

    def __init__(self, horizon: int):
        self.horizon = horizon
        self.calls = 0
        self.resets = 0

    def infer(self, obs: dict) -> dict:
        self.calls += 1
        steps = np.arange(self.horizon, dtype=np.float32)[:, None]
        return {
            "actions": np.repeat(steps + 100 * self.calls, 14, axis=1),
            "server_timing": {"infer_ms": 1.0},
            "state": np.asarray(obs["state"]),
        }

    def reset(self) -> None:
        self.resets += 1


def test_replays_chunk_then_refetches():
    inner = CountingPolicy(horizon=5)
    broker = action_chunk_broker.ActionChunkBroker(inner, action_horizon=3)
    seen = [broker.infer({"state": np.zeros((5, 2))})["actions"][0] for _ in range(7)]
    assert seen == [100, 101, 102, 200, 201, 202, 300]
    assert inner.calls == 3
    out = broker.infer({"state": np.zeros((5, 2))})
    assert out["actions"].shape == (14,)
    assert out["server_timing"] == {"infer_ms": 1.0}


def test_reset_drops_chunk():
    inner = CountingPolicy(horizon=4)
    broker = action_chunk_broker.ActionChunkBroker(inner, action_horizon=4)
    broker.infer({"state": np.zeros((4, 1))})
    broker.reset()
    assert broker.infer({"state": np.zeros((4, 1))})["actions"][0] == 200
    assert inner.resets == 1


def test_horizon_longer_than_chunk_is_refused():
    broker = action_chunk_broker.ActionChunkBroker(CountingPolicy(horizon=2), action_horizon=5)
    with pytest.raises(ValueError, match="chunks of 2 steps"):
        broker.infer({"state": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="at least 1"):
        action_chunk_broker.ActionChunkBroker(CountingPolicy(horizon=2), action_horizon=0)
