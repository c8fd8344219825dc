"""A scripted demonstrator of adjustable quality, generic over `openpi.sim.base.SimEnv`.

RECAP needs data of mixed quality: fast successes, slow successes and failures, so that the value model
has something to rank and the advantage indicator has something to separate. `ScriptedExpert(quality)`
degrades the env's noise-free expert in the three ways a human teleoperator does:

* Gaussian action noise with ``sigma = noise_scale * (1 - quality)`` on every action dimension;
* hesitation: with probability ``hesitation_prob * (1 - quality)`` per step it starts 2-4 idle steps
  (the env's ``idle_action()`` when it has one, else the zero action);
* wrong-way segments: with probability ``wrong_way_prob * (1 - quality)`` per step it starts 3-6 steps of
  ``base.distractor_action`` (on the tabletop: heading for, and possibly pressing, a wrong button).

``quality = 1`` is exactly the noise-free expert. Every step reports whether its action is the noise-free
expert's (``clean``), so collection can tell expert frames from degraded ones.

The default probabilities (0.25 each, up from an initial 0.15) were chosen by measurement so that quality
0.5 gives about two thirds successes. Tabletop ``press_red``, seeds 0-199, default env (40-step limit)::

    quality  success  mean length  successes' length (mean / std / min / max)  wrong button  timeout
    0.00     0.145    27.3         22.2 /  8.6 / 7 / 40                         0.540         0.315
    0.25     0.350    25.6         21.5 / 10.0 / 5 / 39                         0.405         0.245
    0.50     0.675    20.4         17.7 /  9.3 / 5 / 40                         0.220         0.105
    0.75     0.865    13.2         13.2 /  6.8 / 5 / 37                         0.135         0.000
    1.00     1.000     9.3          9.3 /  3.1 / 5 / 19                         0.000         0.000
"""

from typing import Any

import numpy as np

from openpi.sim import base


def idle_action(env: base.SimEnv) -> np.ndarray:
    """The env's `idle_action()` when it has one (e.g. "do not press"), else the zero action."""
    own = getattr(env, "idle_action", None)
    if own is not None:
        return np.asarray(own(), dtype=np.float32)
    return np.zeros(env.action_dim, dtype=np.float32)


class ScriptedExpert:
    """The env's expert degraded by noise, hesitation and wrong-way segments; deterministic given `seed`."""

    def __init__(
        self,
        quality: float,
        seed: int = 0,
        *,
        noise_scale: float = 0.5,
        hesitation_prob: float = 0.25,
        hesitation_steps: tuple[int, int] = (2, 4),
        wrong_way_prob: float = 0.25,
        wrong_way_steps: tuple[int, int] = (3, 6),
    ):
        if not 0.0 <= quality <= 1.0:
            raise base.SimError(f"ScriptedExpert quality must be in [0, 1] (1 = noise-free), got {quality}.")
        for name, (low, high) in (("hesitation_steps", hesitation_steps), ("wrong_way_steps", wrong_way_steps)):
            if not 1 <= low <= high:
                raise base.SimError(f"{name} must be (low, high) with 1 <= low <= high, got {(low, high)}.")
        self.quality = float(quality)
        self.noise_sigma = noise_scale * (1.0 - self.quality)
        self.hesitation_prob = hesitation_prob * (1.0 - self.quality)
        self.wrong_way_prob = wrong_way_prob * (1.0 - self.quality)
        self.hesitation_steps = hesitation_steps
        self.wrong_way_steps = wrong_way_steps
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start a new episode's randomness (call together with `env.reset`)."""
        self._rng = np.random.default_rng(seed)
        self.mode = "expert"  # "expert", "hesitate" or "wrong_way": what the last action was
        self._left = 0  # steps left in the current hesitation / wrong-way segment
        self._distractor = 0

    def act(self, env: base.SimEnv) -> tuple[np.ndarray, bool]:
        """(action to apply, whether it is exactly the noise-free expert's action) for the env's current state."""
        expert = np.asarray(env.expert_action(), dtype=np.float32)
        if self._left == 0:
            u = self._rng.random()
            if u < self.hesitation_prob:
                self.mode, self._left = "hesitate", int(self._rng.integers(*self.hesitation_steps, endpoint=True))
            elif u < self.hesitation_prob + self.wrong_way_prob:
                self.mode, self._left = "wrong_way", int(self._rng.integers(*self.wrong_way_steps, endpoint=True))
                self._distractor = int(self._rng.integers(0, 2))
            else:
                self.mode = "expert"
        if self._left > 0:
            self._left -= 1
        if self.mode == "hesitate":
            action = idle_action(env)
        elif self.mode == "wrong_way":
            action = self._noisy(base.distractor_action(env, self._distractor))
        else:
            action = self._noisy(expert)
        return action, bool(np.array_equal(action, expert))

    def _noisy(self, action: np.ndarray) -> np.ndarray:
        if self.noise_sigma > 0:
            action = action + self._rng.normal(0.0, self.noise_sigma, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def rollout(env: base.SimEnv, expert: ScriptedExpert, seed: int) -> dict[str, Any]:
    """One episode of `expert` on `env` from `seed`: success, length and how many actions were clean."""
    env.reset(seed)
    expert.reset(seed)
    clean_steps = 0
    while not env.done:
        action, clean = expert.act(env)
        clean_steps += clean
        env.step(action)
    return {"success": env.success, "steps": env.num_steps, "clean_steps": clean_steps}
