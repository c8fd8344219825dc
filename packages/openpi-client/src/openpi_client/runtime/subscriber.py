"""Hooks that watch the episode loop without steering it (loggers, recorders, video writers, metrics)."""

from __future__ import annotations


class Subscriber:
    """Receives the episode's events in order: `on_episode_start`, `on_step` per step, `on_episode_end`.

    The hooks are no-ops by default (not abstract) so a subscriber overrides only the events it cares about.
    """

    def on_episode_start(self) -> None:
        """Called after the environment and the agent were reset, before the first step."""

    def on_step(self, observation: dict, action: dict) -> None:
        """Called after `action` (the agent's reply to `observation`) was applied to the environment."""

    def on_episode_end(self) -> None:
        """Called once the episode is over, whatever ended it."""
