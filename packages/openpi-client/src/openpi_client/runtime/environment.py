"""The robot (or simulator) side of the episode loop."""

from __future__ import annotations

import abc


class Environment(abc.ABC):
    """What `Runtime` needs from a robot or a simulator.

    A real robot integration implements these four methods and nothing else; the loop, the policy client
    and the chunk replay stay the same whether the actions move hardware or a simulated arm.
    """

    @abc.abstractmethod
    def reset(self) -> None:
        """Puts the world in the state an episode starts from (homing the arm, resetting a simulator)."""

    @abc.abstractmethod
    def is_episode_complete(self) -> bool:
        """True once the episode is over (success, failure, or the environment's own step limit)."""

    @abc.abstractmethod
    def get_observation(self) -> dict:
        """The current observation, e.g. ``{"images": {camera: uint8 [H, W, 3]}, "state": ..., "prompt": ...}``."""

    @abc.abstractmethod
    def apply_action(self, action: dict) -> None:
        """Applies the agent's reply for one step, e.g. ``{"actions": float array [action_dim]}``."""
