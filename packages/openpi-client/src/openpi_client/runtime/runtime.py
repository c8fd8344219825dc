"""The episode loop shared by robot clients, simulated rollouts and closed-loop evaluation.

Per step: ``obs = environment.get_observation()``, ``action = agent.get_action(obs)``,
``environment.apply_action(action)``, then every subscriber's ``on_step(obs, action)``. Subscribers see the
step only after it was applied, so a recorder never stores an action the robot did not execute.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import time

from openpi_client.runtime import agent as _agent
from openpi_client.runtime import environment as _environment
from openpi_client.runtime import subscriber as _subscriber

logger = logging.getLogger(__name__)


class Runtime:
    """Runs `num_episodes` episodes of `agent` acting in `environment`.

    Args:
        environment: The robot or simulator.
        agent: Chooses each step's action (typically a `PolicyAgent`).
        subscribers: Told about every episode start, step and end, in this order.
        max_hz: Control rate limit. Each step starts no earlier than ``1 / max_hz`` seconds after the previous
            one; only the remainder of the period is slept, so a step that took 30 ms of a 33 ms period waits
            3 ms. 0 runs as fast as possible (simulation, evaluation).
        num_episodes: Episodes that `run` runs.
        max_episode_steps: Ends an episode after this many steps even if the environment does not say it is
            complete; 0 leaves ending it to the environment (or to `mark_episode_complete`).
    """

    def __init__(
        self,
        environment: _environment.Environment,
        agent: _agent.Agent,
        subscribers: Sequence[_subscriber.Subscriber] = (),
        max_hz: float = 0,
        num_episodes: int = 1,
        max_episode_steps: int = 0,
    ) -> None:
        if max_hz < 0:
            raise ValueError(f"max_hz must be 0 (no limit) or a positive rate in Hz, got {max_hz}.")
        if num_episodes < 0:
            raise ValueError(f"num_episodes must be 0 or more, got {num_episodes}.")
        if max_episode_steps < 0:
            raise ValueError(
                f"max_episode_steps must be 0 (no limit) or a positive step count, got {max_episode_steps}."
            )
        self._environment = environment
        self._agent = agent
        self._subscribers = tuple(subscribers)
        self._period_s = 1.0 / max_hz if max_hz > 0 else 0.0
        self._num_episodes = num_episodes
        self._max_episode_steps = max_episode_steps
        self._episode_complete = True

    def run(self) -> list[int]:
        """Runs every episode; returns the number of steps each one took."""
        return [self.run_episode() for _ in range(self._num_episodes)]

    def run_episode(self) -> int:
        """Resets the environment and the agent, steps until the episode is over, and returns its step count.

        The agent is reset with the environment so nothing (such as a half-replayed action chunk) leaks from
        one episode into the next. If a step raises, the exception propagates without `on_episode_end`:
        a recorder must not mistake an aborted episode for a finished one.
        """
        self._environment.reset()
        self._agent.reset()
        self._episode_complete = False
        for subscriber in self._subscribers:
            subscriber.on_episode_start()

        steps = 0
        previous_start: float | None = None
        while not self._episode_complete:
            if self._max_episode_steps and steps >= self._max_episode_steps:
                break
            # Checked before the wait, so a finished episode does not idle for one more period.
            if self._environment.is_episode_complete():
                break
            if self._period_s and previous_start is not None:
                remaining = previous_start + self._period_s - time.monotonic()
                if remaining > 0:
                    time.sleep(remaining)
                if self._episode_complete:  # marked complete from another thread while waiting
                    break
            previous_start = time.monotonic()
            self._step()
            steps += 1

        self._episode_complete = True
        for subscriber in self._subscribers:
            subscriber.on_episode_end()
        logger.debug("Episode finished after %d steps", steps)
        return steps

    def mark_episode_complete(self) -> None:
        """Ends the current episode after the step in progress (e.g. from a subscriber, or an operator's key)."""
        self._episode_complete = True

    def _step(self) -> None:
        observation = self._environment.get_observation()
        action = self._agent.get_action(observation)
        self._environment.apply_action(action)
        for subscriber in self._subscribers:
            subscriber.on_step(observation, action)
