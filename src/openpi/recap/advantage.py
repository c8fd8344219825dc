"""N-step advantages, per-task thresholds and the advantage indicator (RECAP stage 5).

Pure numpy, no I/O: the relabelling pipeline (`openpi.relabel.relabel`) gathers the per-frame columns and the value
predictions, and this module turns them into `adv_ind` strings. Everything operates on flat per-frame arrays over the
whole dataset plus explicit episode boundaries, because LeRobot v3.0 stores many episodes per file and the threshold
must be computed over the whole dataset, never per file or per shard.

Conventions (RECAP.md, "Advantage and the indicator"):

    A_t = sum_{k=0}^{N-1} r_{t+k} + V(o_{t+N}) - V(o_t)

Near the end of an episode (t + N >= T) the sum stops at the terminal step and the bootstrap term is the true
terminal value, which is 0: after a success nothing is left to gain, and after a failure the failure penalty is
already inside the terminal reward. Community converters write a terminal `reward_label` of 0 on failed episodes, which
would make failure endings look like successes; we therefore decide success from the sparse `reward` column and give a
failed episode a proper failure terminal reward whenever its stored one carries no penalty.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses

import numpy as np

from openpi.recap.vocab import NEGATIVE
from openpi.recap.vocab import NONE  # noqa: F401
from openpi.recap.vocab import POSITIVE
from openpi.shared import errors

# Value of a failed ending on the normalised [-1, 0] scale when the dataset does not carry a penalty itself. The
# paper's C_fail is at least the task's maximum episode length, so a normalised, clipped failure return is -1.
DEFAULT_FAILURE_REWARD = -1.0


class AdvantageError(errors.UserError, ValueError):
    """Advantages cannot be computed from these inputs (bad settings, mismatched arrays, non-finite values)."""


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """How advantages and indicators are computed."""

    # N of the N-step estimate (paper: 50 in post-training).
    lookahead: int = 50
    # Fraction (in percent) of each task's autonomous frames that end up positive.
    top_percent: float = 30.0
    # Terminal reward used for a failed episode whose stored terminal reward carries no penalty.
    failure_reward: float = DEFAULT_FAILURE_REWARD

    def __post_init__(self):
        if self.lookahead < 1:
            raise AdvantageError(
                f"lookahead must be at least 1, got {self.lookahead}; pass a positive number of steps."
            )
        if not 0.0 <= self.top_percent <= 100.0:
            raise AdvantageError(f"top_percent must be within [0, 100], got {self.top_percent}.")
        if self.failure_reward > 0.0:
            raise AdvantageError(f"failure_reward must be <= 0 (a penalty), got {self.failure_reward}.")


@dataclasses.dataclass(frozen=True)
class AdvantageResult:
    """Per-frame outputs over the whole dataset plus the per-task thresholds that produced them."""

    # [num_frames] float64; NaN on frames that were not scored (human frames).
    advantage: np.ndarray
    # [num_frames] object array of "positive" / "negative".
    adv_ind: np.ndarray
    # task index -> eps; the indicator is `advantage > eps`. Tasks without autonomous frames are absent.
    thresholds: dict[int, float]
    # [num_frames] float32 rewards actually used (terminal rewards of failed episodes repaired).
    rewards: np.ndarray
    # [num_episodes] bool: episode ended in success, read from the sparse `reward` column.
    success: np.ndarray


def episode_success(reward: np.ndarray, bounds: Sequence[tuple[int, int]]) -> np.ndarray:
    """Success per episode from the sparse `reward` column (1 on the last frame of a success, else 0)."""
    reward = np.asarray(reward, dtype=np.float64).reshape(-1)
    return np.array([bool(np.any(reward[start:stop] > 0.0)) for start, stop in bounds], dtype=bool)


def repair_terminal_rewards(
    reward_label: np.ndarray,
    success: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    failure_reward: float = DEFAULT_FAILURE_REWARD,
) -> np.ndarray:
    """Returns `reward_label` with a real failure penalty on the last frame of every failed episode.

    A failed episode's stored terminal reward is kept only when it visibly carries a penalty, i.e. it is strictly below
    every non-terminal step reward of that episode and below zero. Otherwise (community data writes 0 there) it is
    replaced by `failure_reward`, so that an N-step estimate over a failure ending sees the failure.
    """
    rewards = np.asarray(reward_label, dtype=np.float32).reshape(-1).copy()
    for (start, stop), ok in zip(bounds, success, strict=True):
        if ok or stop <= start:
            continue
        last = rewards[stop - 1]
        steps = rewards[start : stop - 1]
        has_penalty = last < 0.0 and (steps.size == 0 or last < steps.min())
        if not has_penalty:
            rewards[stop - 1] = np.float32(failure_reward)
    return rewards


def n_step_advantage(rewards: np.ndarray, values: np.ndarray, lookahead: int) -> np.ndarray:
    """N-step advantage for every frame of ONE episode.

    `rewards[t]` is the per-step reward (the last entry is the terminal reward) and `values[t]` the predicted value of
    frame t; frames whose value is not needed may hold NaN, which then propagates only to the advantages that use it.
    When t + N >= T the reward sum stops at the terminal step and the bootstrap is the terminal value 0.
    """
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if rewards.shape != values.shape:
        raise AdvantageError(f"rewards {rewards.shape} and values {values.shape} must have the same length.")
    num = rewards.shape[0]
    t = np.arange(num)
    end = np.minimum(t + lookahead, num)
    csum = np.concatenate([[0.0], np.cumsum(rewards)])
    reward_sum = csum[end] - csum[t]
    bootstrap = np.zeros(num)
    inside = t + lookahead < num
    bootstrap[inside] = values[t[inside] + lookahead]
    return reward_sum + bootstrap - values


def frames_needing_values(autonomous: np.ndarray, bounds: Sequence[tuple[int, int]], lookahead: int) -> np.ndarray:
    """Sorted global frame indices whose value is needed: autonomous frames and their t+N bootstrap frames."""
    autonomous = np.asarray(autonomous, dtype=bool).reshape(-1)
    needed = np.zeros_like(autonomous)
    for start, stop in bounds:
        local = np.flatnonzero(autonomous[start:stop])
        if local.size == 0:
            continue
        needed[start + local] = True
        boot = local + lookahead
        needed[start + boot[boot < stop - start]] = True
    return np.flatnonzero(needed)


def task_thresholds(
    advantage: np.ndarray, task_index: np.ndarray, autonomous: np.ndarray, top_percent: float
) -> dict[int, float]:
    """Per-task eps such that `advantage > eps` holds for `top_percent` % of that task's autonomous frames.

    With n autonomous frames and k = round(n * top_percent / 100), eps sits halfway between the k-th and (k+1)-th
    largest advantage, so exactly k frames are positive unless advantages tie at the boundary. k = 0 gives eps = the
    maximum (nothing positive); k = n gives eps just below the minimum (everything positive).
    """
    advantage = np.asarray(advantage, dtype=np.float64).reshape(-1)
    task_index = np.asarray(task_index).reshape(-1)
    autonomous = np.asarray(autonomous, dtype=bool).reshape(-1)
    out: dict[int, float] = {}
    for task in np.unique(task_index[autonomous]):
        adv = np.sort(advantage[autonomous & (task_index == task)])[::-1]
        if np.isnan(adv).any():
            raise AdvantageError(
                f"Task {int(task)}: some autonomous frames have no advantage (NaN value prediction); check the value "
                "checkpoint (weights and norm stats) and the dataset's state column."
            )
        n = adv.size
        k = int(np.floor(n * top_percent / 100.0 + 0.5))
        if k <= 0:
            eps = adv[0]
        elif k >= n:
            eps = np.nextafter(adv[-1], -np.inf)
        else:
            eps = 0.5 * (adv[k - 1] + adv[k])
        out[int(task)] = float(eps)
    return out


def indicators(
    advantage: np.ndarray,
    task_index: np.ndarray,
    autonomous: np.ndarray,
    thresholds: Mapping[int, float],
) -> np.ndarray:
    """`adv_ind` strings: human frames (corrections, demonstrations) positive, autonomous frames `A > eps_task`."""
    advantage = np.asarray(advantage, dtype=np.float64).reshape(-1)
    task_index = np.asarray(task_index).reshape(-1)
    autonomous = np.asarray(autonomous, dtype=bool).reshape(-1)
    eps = np.full(advantage.shape, -np.inf)
    for task, value in thresholds.items():
        eps[task_index == task] = value
    positive = ~autonomous | (advantage > eps)
    return np.where(positive, POSITIVE, NEGATIVE).astype(object)


def compute(
    *,
    reward: np.ndarray,
    reward_label: np.ndarray,
    intervention: np.ndarray,
    task_index: np.ndarray,
    values: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    config: AdvantageConfig = AdvantageConfig(),
) -> AdvantageResult:
    """Advantages and indicators for a whole dataset.

    All per-frame arrays are flat over the dataset in frame order; `bounds` gives each episode's [start, stop) range.
    `values` must be finite at every index from `frames_needing_values`; other entries are ignored (use NaN).
    """
    num = len(np.asarray(reward).reshape(-1))
    for name, arr in (("reward_label", reward_label), ("intervention", intervention), ("task_index", task_index)):
        if len(np.asarray(arr).reshape(-1)) != num:
            raise AdvantageError(f"{name} has {len(np.asarray(arr).reshape(-1))} frames but reward has {num}.")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape[0] != num:
        raise AdvantageError(f"values has {values.shape[0]} frames but the dataset has {num}.")
    autonomous = np.asarray(intervention).reshape(-1) == 0
    success = episode_success(reward, bounds)
    rewards = repair_terminal_rewards(reward_label, success, bounds, config.failure_reward)
    needed = frames_needing_values(autonomous, bounds, config.lookahead)
    if not np.all(np.isfinite(values[needed])):
        bad = needed[~np.isfinite(values[needed])][0]
        raise AdvantageError(
            f"The value of frame {int(bad)} is needed for an advantage but is not finite (NaN/inf value prediction); "
            "check the value checkpoint (weights and norm stats) and the dataset's state column."
        )
    advantage = np.full(num, np.nan)
    for start, stop in bounds:
        if not autonomous[start:stop].any():
            continue
        adv = n_step_advantage(rewards[start:stop], values[start:stop], config.lookahead)
        advantage[start:stop] = np.where(autonomous[start:stop], adv, np.nan)
    thresholds = task_thresholds(advantage, task_index, autonomous, config.top_percent)
    adv_ind = indicators(advantage, task_index, autonomous, thresholds)
    return AdvantageResult(
        advantage=advantage, adv_ind=adv_ind, thresholds=thresholds, rewards=rewards, success=success
    )
