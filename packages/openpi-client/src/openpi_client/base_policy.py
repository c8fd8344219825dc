"""The one interface every policy speaks: a local model, a remote server, or a wrapper around either."""

from __future__ import annotations

import abc


class BasePolicy(abc.ABC):
    """Maps an observation dict to an action dict (at least ``"actions"``: an [H, D] chunk)."""

    @abc.abstractmethod
    def infer(self, obs: dict) -> dict:
        """Returns the actions for one (unbatched) observation."""

    def reset(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Forgets per-episode state; stateless policies need not override this."""
