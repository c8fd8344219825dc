"""Replays one predicted action chunk step by step, so a control loop can ask for one action per tick.

The policy predicts H actions per call; calling it every tick would waste H-1 of them and make the
control rate depend on inference latency. The broker calls the inner policy once, then returns
``chunk[0]``, ``chunk[1]``, ... on the following calls, and asks for a new chunk once ``action_horizon``
steps have been replayed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from openpi_client import base_policy as _base_policy


def _step_of(tree: Any, step: int) -> Any:
    """Picks step `step` from every array in a nested dict; non-array leaves (timings, strings) pass through."""
    if isinstance(tree, dict):
        return {k: _step_of(v, step) for k, v in tree.items()}
    if isinstance(tree, np.ndarray) and tree.ndim >= 1:
        return tree[step, ...]
    return tree


def _shortest_chunk(tree: Any) -> int | None:
    if isinstance(tree, dict):
        lengths = [n for v in tree.values() if (n := _shortest_chunk(v)) is not None]
        return min(lengths) if lengths else None
    if isinstance(tree, np.ndarray) and tree.ndim >= 1:
        return tree.shape[0]
    return None


class ActionChunkBroker(_base_policy.BasePolicy):
    """Wraps a policy whose array outputs have the chunk (horizon) as their first axis."""

    def __init__(self, policy: _base_policy.BasePolicy, action_horizon: int):
        if action_horizon < 1:
            raise ValueError(f"action_horizon must be at least 1, got {action_horizon}.")
        self._policy = policy
        self._action_horizon = action_horizon
        self._chunk: dict | None = None
        self._step = 0

    def infer(self, obs: dict) -> dict:
        """Returns the next step of the current chunk, fetching a new chunk (using `obs`) when needed."""
        if self._chunk is None:
            chunk = self._policy.infer(obs)
            length = _shortest_chunk(chunk)
            if length is None or length < self._action_horizon:
                raise ValueError(
                    f"The policy returned chunks of {length} steps but the broker replays {self._action_horizon}; "
                    "set action_horizon to at most the server's action horizon (see its metadata)."
                )
            self._chunk = chunk
            self._step = 0
        result = _step_of(self._chunk, self._step)
        self._step += 1
        if self._step >= self._action_horizon:
            self._chunk = None
        return result

    def reset(self) -> None:
        """Drops the rest of the current chunk (e.g. at an episode boundary) and resets the inner policy."""
        self._policy.reset()
        self._chunk = None
        self._step = 0
