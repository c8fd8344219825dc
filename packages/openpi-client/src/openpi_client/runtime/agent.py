"""The decision-making side of the episode loop."""

from __future__ import annotations

import abc


class Agent(abc.ABC):
    """Maps one observation to one step's action dict.

    Kept separate from `openpi_client.base_policy.BasePolicy` because an agent answers for a single control
    tick, while a policy may answer with a whole chunk; `agents.policy_agent.PolicyAgent` bridges the two.
    """

    @abc.abstractmethod
    def get_action(self, observation: dict) -> dict:
        """Returns the action dict for this step (at least ``"actions"``)."""

    def reset(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Forgets per-episode state; called by `Runtime` before every episode. Stateless agents need not override."""
