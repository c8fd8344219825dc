"""An agent backed by a policy: usually an `ActionChunkBroker` around a `WebsocketClientPolicy`."""

from __future__ import annotations

from openpi_client import base_policy as _base_policy
from openpi_client.runtime import agent as _agent


class PolicyAgent(_agent.Agent):
    """Answers every step with ``policy.infer(observation)``.

    With a broker as the policy, one server request serves several steps; resetting the agent resets the
    policy, so the broker drops the previous episode's unfinished chunk and the first step of every episode
    is planned from that episode's own first observation.
    """

    def __init__(self, policy: _base_policy.BasePolicy):
        self._policy = policy

    def get_action(self, observation: dict) -> dict:
        return self._policy.infer(observation)

    def reset(self) -> None:
        # Duck-typed policies (anything with `infer`) need not have a `reset`.
        reset = getattr(self._policy, "reset", None)
        if reset is not None:
            reset()
