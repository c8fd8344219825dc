"""The simulation contract every simulated environment implements (`SimEnv`), and the sim's user errors.

Collection, evaluation, the scripted expert and the takeover operator only ever talk to an environment
through this protocol, so the embedded tabletop world and third-party benchmarks (MetaWorld) are
interchangeable. The observation dict is exactly what a robot client sends to the policy server and what
collection stores: ``{"images": {camera: uint8 [H, W, 3]}, "state": float32 [state_dim], "prompt": str}``.
"""

from typing import Any
from typing import Protocol
from typing import runtime_checkable

import numpy as np

from openpi.shared import errors


class SimError(errors.UserError, ValueError):
    """A simulated environment was asked for something it does not have (unknown env, task or camera)."""


@runtime_checkable
class SimEnv(Protocol):
    """One simulated task.

    Attributes are plain attributes (not methods) so that a runtime and a recorder can read them cheaply:
    ``env_name`` ("tabletop" or "metaworld"), ``task`` (e.g. "press_red"), ``prompt`` (the language
    instruction), ``max_steps`` (reaching it without success is a failure), ``action_dim``, ``state_dim``,
    ``cameras`` (names of the images in an observation; ``()`` for state-only envs), and the episode's
    ``done`` / ``success`` / ``num_steps``.

    Optional helpers the scripted expert uses when an env has them (and replaces by generic fallbacks when
    it does not): ``distractor_action(index)`` (what heading the wrong way means here, e.g. towards another
    button; fallback: the negated expert action) and ``idle_action()`` (standing still without side effects;
    fallback: the zero action).
    """

    env_name: str
    task: str
    prompt: str
    max_steps: int
    action_dim: int
    state_dim: int
    cameras: tuple[str, ...]
    done: bool
    success: bool
    num_steps: int

    def reset(self, seed: int) -> dict[str, Any]:
        """Start the episode determined by `seed` (same seed -> bit-identical observations) and observe it."""
        ...

    def step(self, action: np.ndarray) -> dict[str, Any]:
        """Apply one action (clipped to [-1, 1]) and return the new observation."""
        ...

    def expert_action(self) -> np.ndarray:
        """The noise-free scripted expert's action in the current state."""
        ...

    def progress(self) -> float:
        """A dense measure that grows as the task nears success (the operator's stall rule reads it)."""
        ...

    def unsafe(self, action: np.ndarray) -> bool:
        """Whether applying `action` now would leave the safe set (e.g. press a wrong button)."""
        ...


def distractor_action(env: SimEnv, index: int) -> np.ndarray:
    """An action that heads the wrong way: the env's own `distractor_action(index)` when it has one.

    Envs with distractors (the tabletop's other buttons) know what "the wrong way" means; for any other env
    the negated expert action is used, which undoes the expert's progress without knowing the task.
    """
    own = getattr(env, "distractor_action", None)
    if own is not None:
        return np.asarray(own(index), dtype=np.float32)
    return -np.asarray(env.expert_action(), dtype=np.float32)


def check_action(action: Any, action_dim: int, env_name: str) -> np.ndarray:
    """`action` as float32 [action_dim] clipped to [-1, 1]; a wrong shape or a non-finite value is a UserError."""
    arr = np.asarray(action, dtype=np.float32)
    if arr.shape != (action_dim,):
        raise SimError(
            f"The {env_name} env expects an action of shape ({action_dim},), got shape {arr.shape}; "
            f"send one action per step (slice the action chunk)."
        )
    if not np.all(np.isfinite(arr)):
        raise SimError(f"The {env_name} env got a non-finite action {arr.tolist()}; check the policy's output.")
    return np.clip(arr, -1.0, 1.0)
