"""The deterministic takeover rule that stands in for a human operator during RECAP collection in simulation.

In the real recipe a person watches the robot and grabs the teleoperation device when it is stuck or about
to do something harmful; those corrections become ``intervention = 1`` frames (always "positive" in
RECAP). `Operator` reproduces that decision with a fixed rule, so that collection is reproducible and its
numbers mean the same thing from run to run.
"""

import collections

import numpy as np

from openpi.sim import base


class Operator:
    """Takes over from the policy when it stalls or proposes an unsafe action, drives with the expert, hands back.

    The rule, evaluated once per env step by `filter(env, proposed_action)` before the action is applied:

    1. **Driving** (a takeover is under way): the call returns ``(env.expert_action(), True)`` whatever was
       proposed. A takeover lasts exactly ``handback_steps`` calls, counting the call that started it; after
       the last of them the operator hands back, and its stall window starts empty.
    2. **Watching** (otherwise): it appends ``env.progress()`` of the current state to the stall window, which
       holds the progress of at most the last ``stall_steps + 1`` watched states since the episode started or
       the last hand-back. It takes over, starting with this call, when

       * **stall**: the window is full and ``progress_now - progress_(stall_steps steps ago) < min_progress``
         (so at the earliest on the ``stall_steps + 1``-th watched call), or
       * **unsafe**: ``env.unsafe(proposed_action)`` is True (on the tabletop: a press over a wrong button,
         or a move that would leave the arena); the unsafe action is never applied.

       Otherwise it returns ``(proposed_action, False)``.

    Collection records ``intervention = 1`` exactly for the frames whose call returned True. The noise-free
    expert is never interrupted on the tabletop (it gains ``speed`` progress per step and is always safe).
    The defaults are tuned to the tabletop's progress units; the stall rule only makes sense for an env whose
    expert gains at least ``min_progress`` over every ``stall_steps`` steps, so choose them per env.
    ``reason`` says why the current or last takeover started ("stall" or "unsafe").
    """

    def __init__(self, stall_steps: int = 6, min_progress: float = 0.02, handback_steps: int = 5):
        if stall_steps < 1 or handback_steps < 1 or min_progress < 0:
            raise base.SimError(
                "Operator needs stall_steps >= 1, handback_steps >= 1 and min_progress >= 0; got "
                f"stall_steps={stall_steps}, handback_steps={handback_steps}, min_progress={min_progress}."
            )
        self.stall_steps = stall_steps
        self.min_progress = float(min_progress)
        self.handback_steps = handback_steps
        self.reset()

    @classmethod
    def for_env(cls, env: base.SimEnv) -> "Operator":
        """The operator with the env's own thresholds when it declares them (`env.operator_settings`: keyword
        arguments of this class), else the defaults, which are in tabletop units."""
        return cls(**dict(getattr(env, "operator_settings", None) or {}))

    def reset(self) -> None:
        """Forget the previous episode (call together with `env.reset`)."""
        self._window: collections.deque[float] = collections.deque(maxlen=self.stall_steps + 1)
        self._driving_left = 0
        self.reason: str | None = None
        self.num_takeovers = 0
        self.num_intervened_steps = 0

    @property
    def driving(self) -> bool:
        """Whether the expert will drive the next step whatever is proposed."""
        return self._driving_left > 0

    def filter(self, env: base.SimEnv, proposed_action: np.ndarray) -> tuple[np.ndarray, bool]:
        """(action to apply, intervened) for this step; see the class docstring for the exact rule."""
        if self._driving_left == 0:
            self._window.append(float(env.progress()))
            stalled = (
                len(self._window) == self._window.maxlen and self._window[-1] - self._window[0] < self.min_progress
            )
            if not stalled and not env.unsafe(proposed_action):
                return np.asarray(proposed_action, dtype=np.float32), False
            self.reason = "stall" if stalled else "unsafe"
            self.num_takeovers += 1
            self._driving_left = self.handback_steps
            self._window.clear()
        self._driving_left -= 1
        self.num_intervened_steps += 1
        return np.asarray(env.expert_action(), dtype=np.float32), True
