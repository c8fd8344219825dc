"""The five RECAP label columns, computed from each episode's outcome, its intervention flags and its task.

RECAP (see `shared/design/RECAP.md`) trains a value model on `value_label` and computes an N-step
advantage from `reward_label`; both are derived here, in one place, from three facts a robot operator
actually records: did the episode succeed, which frames a human drove, and which task it was.

Two labelling modes exist because users arrive with datasets made by different tools:

* ``"paper"`` (default, the method of the pi*0.6 paper). Per step ``r_t = -1`` for every non-terminal
  step; the terminal step gets ``0`` on success and ``-c_fail`` on failure. The return from frame ``t`` of
  an episode with ``T`` frames is ``G_t = -(T - 1 - t)`` on success and ``-(T - 1 - t) - c_fail`` on
  failure. It is divided by the task's maximum episode length ``L`` (over every episode of that task) so
  that a fast success scores better than a slow one, and clipped to ``[-1, 0]``:
  ``value_label_t = clip(G_t / L, -1, 0)``.
* ``"per_episode"`` (compatibility with community converters). ``value_label_t = -(T - 1 - t) / T`` on
  success (normalised by the episode's own length, so every success starts near -1) and a flat ``-1`` on
  failure; ``reward_label = -1 / T`` per step and ``0`` on the last frame, even on failure.

``reward_label`` in paper mode is defined so that the value target is exactly the remaining return:
``reward_label_t = value_label_t - value_label_{t+1}`` for ``t < T - 1`` and
``reward_label_{T-1} = value_label_{T-1}`` (the normalised terminal reward: ``0`` on success,
``-min(c_fail / L, 1)`` on failure). Hence, for every frame ``t``::

    sum(reward_label[t:T]) == value_label[t]

so an N-step advantage ``sum(reward_label[t:t+N]) + V(t+N) - V(t)`` is exactly zero when ``V`` is the
true value, with or without clipping. Before clipping bites this is simply ``-1/L`` per non-terminal
step plus the normalised terminal reward; on clipped frames (a failure's early frames) it is ``0``,
because the clipped value does not change there.

Initial ``adv_ind``: human frames (``intervention == 1``; a demonstration episode is human from start to
end) are ``"positive"``; autonomous frames are ``"none"`` until the value model relabels them.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
from typing import Any
from typing import Literal

import numpy as np

from openpi.recap.vocab import ADV_IND
from openpi.recap.vocab import COLUMNS  # noqa: F401 (the column list, as before)
from openpi.recap.vocab import INTERVENTION
from openpi.recap.vocab import NEGATIVE  # noqa: F401
from openpi.recap.vocab import NONE
from openpi.recap.vocab import POSITIVE
from openpi.recap.vocab import REWARD
from openpi.recap.vocab import REWARD_LABEL
from openpi.recap.vocab import VALUE_LABEL
from openpi.shared import errors

# Fixed-width unicode wide enough for every indicator value; keeps the column a plain numpy array.
ADV_IND_DTYPE = np.dtype("<U8")


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """How rewards and value targets are derived from episode outcomes.

    Attributes:
        mode: ``"paper"`` (per-task max-length normalisation, explicit failure penalty) or
            ``"per_episode"`` (community converters: own-length normalisation, failures flat -1).
        c_fail: failure penalty of the paper's terminal reward, in steps (the unit of ``r_t = -1``).
            ``None`` means the task's maximum episode length: the paper's "large constant" made concrete,
            so that every frame of a failed episode is worth less than any frame of any success of that
            task (all failed frames then clip to -1). A smaller value keeps the time-to-failure visible,
            e.g. ``c_fail = L / 2`` gives failed frames values in ``[-1, -0.5]``. It must exceed one step:
            a failure that costs no more than an ordinary step is indistinguishable from one, and
            `openpi.recap.advantage` replaces such terminal rewards with a full failure penalty (RECAP.md: the
            relabeller never trusts a failed ending without a penalty). Ignored in per-episode mode.
    """

    mode: Literal["paper", "per_episode"] = "paper"
    c_fail: float | None = None

    def __post_init__(self):
        if self.mode not in ("paper", "per_episode"):
            raise errors.ConfigError(
                f"LabelConfig.mode is {self.mode!r}, but it must be 'paper' or 'per_episode'; pick one of the two."
            )
        if self.c_fail is not None and not (np.isfinite(self.c_fail) and self.c_fail > 1):
            raise errors.ConfigError(
                f"LabelConfig.c_fail is {self.c_fail!r}, but a failure must cost more than one step: pass a finite "
                "number of steps > 1, or None for the task's maximum episode length."
            )


@dataclasses.dataclass(frozen=True)
class Episode:
    """What the labeller needs to know about one recorded episode.

    Attributes:
        task: the task string (episodes with the same string share a length normaliser).
        success: the episode's single outcome.
        intervention: per-frame flags, 1 where a human drove the robot (demo or correction), 0 where the
            policy did. ``None`` marks a demonstration episode: human from the first frame to the last.
        length: number of frames; required when ``intervention`` is ``None``, otherwise checked against it.
    """

    task: str
    success: bool
    intervention: np.ndarray | None = None
    length: int | None = None


def label_episodes(
    episodes: Sequence[Episode],
    config: LabelConfig = LabelConfig(),
    *,
    task_max_length: Mapping[str, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Returns the five RECAP columns for each episode (one dict of ``[T]`` arrays per episode).

    ``task_max_length`` overrides the per-task normaliser (paper mode), e.g. to label a new batch of
    episodes on the same scale as an existing dataset; by default it is the longest episode of each task
    among ``episodes``.
    """
    lengths = []
    flags = []
    for i, ep in enumerate(episodes):
        length, intervention = _episode_flags(ep, i)
        lengths.append(length)
        flags.append(intervention)
    columns = compute_columns(
        episode_lengths=np.asarray(lengths, dtype=np.int64),
        success=np.asarray([bool(ep.success) for ep in episodes], dtype=bool),
        tasks=[ep.task for ep in episodes],
        intervention=np.concatenate(flags) if flags else np.zeros(0, np.int64),
        config=config,
        task_max_length=task_max_length,
    )
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [{k: v[bounds[i] : bounds[i + 1]] for k, v in columns.items()} for i in range(len(episodes))]


def compute_columns(
    *,
    episode_lengths: np.ndarray,
    success: np.ndarray,
    tasks: Sequence[str],
    intervention: np.ndarray,
    config: LabelConfig = LabelConfig(),
    task_max_length: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Vectorised labelling of a whole dataset laid out episode after episode.

    Args:
        episode_lengths: ``[E]`` number of frames per episode, in dataset order.
        success: ``[E]`` outcome per episode.
        tasks: ``E`` task strings.
        intervention: ``[N]`` per-frame human flags (0/1), ``N = sum(episode_lengths)``, episodes concatenated.
        config: the labelling mode and failure penalty.
        task_max_length: optional per-task normaliser override (paper mode); must cover every task and be at
            least as long as that task's longest episode.

    Returns:
        The five columns as flat ``[N]`` arrays: ``intervention`` int64, ``reward``, ``reward_label`` and
        ``value_label`` float32, ``adv_ind`` ``<U8`` strings.
    """
    lengths = np.asarray(episode_lengths)
    success = np.asarray(success)
    intervention = np.asarray(intervention)
    _validate(lengths, success, tasks, intervention)

    num_frames = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    frame_episode = np.repeat(np.arange(len(lengths)), lengths)
    t = np.arange(num_frames, dtype=np.int64) - starts[frame_episode]
    length = lengths[frame_episode].astype(np.float64)
    steps_to_go = length - 1 - t
    ok = success.astype(bool)[frame_episode]
    last = steps_to_go == 0

    if config.mode == "paper":
        task_norm = _task_normaliser(lengths, tasks, task_max_length)
        norm = task_norm[frame_episode]
        c_fail = norm if config.c_fail is None else np.full_like(norm, float(config.c_fail))
        ret = -steps_to_go - np.where(ok, 0.0, c_fail)
        value = np.clip(ret / norm, -1.0, 0.0)
        # reward_label telescopes onto value: value[t] - value[t+1] inside an episode, value itself at the end.
        next_value = np.append(value[1:], 0.0)
        reward_label = np.where(last, value, value - next_value)
    else:
        value = np.where(ok, -steps_to_go / length, -1.0)
        reward_label = np.where(last, 0.0, -1.0 / length)

    human = intervention.astype(np.int64)
    adv_ind = np.where(human == 1, POSITIVE, NONE).astype(ADV_IND_DTYPE)
    return {
        INTERVENTION: human,
        REWARD: (last & ok).astype(np.float32),
        REWARD_LABEL: reward_label.astype(np.float32),
        # `+ 0.0` turns -0.0 into +0.0 so the last frame of a success stores a clean zero.
        VALUE_LABEL: (value.astype(np.float32) + np.float32(0.0)),
        ADV_IND: adv_ind,
    }


def _episode_flags(ep: Episode, index: int) -> tuple[int, np.ndarray]:
    if ep.intervention is None:
        if ep.length is None:
            raise errors.DatasetError(
                f"Episode {index} ({ep.task!r}) has no intervention flags and no length; pass `length=` for a "
                "demonstration episode or give its per-frame `intervention` array."
            )
        return int(ep.length), np.ones(int(ep.length), dtype=np.int64)
    flags = np.asarray(ep.intervention).reshape(-1)
    if ep.length is not None and int(ep.length) != flags.size:
        raise errors.DatasetError(
            f"Episode {index} ({ep.task!r}) says length={ep.length} but has {flags.size} intervention flags; make "
            "them agree (one flag per frame)."
        )
    return flags.size, flags


def _validate(lengths: np.ndarray, success: np.ndarray, tasks: Sequence[str], intervention: np.ndarray) -> None:
    if lengths.ndim != 1 or (lengths.size and not np.issubdtype(lengths.dtype, np.integer)):
        raise errors.DatasetError(
            f"episode_lengths must be a 1-D integer array, got shape {lengths.shape} dtype {lengths.dtype}; pass "
            "one frame count per episode."
        )
    if lengths.size and lengths.min() < 1:
        bad = int(np.argmin(lengths))
        raise errors.DatasetError(
            f"Episode {bad} has {int(lengths[bad])} frames; every episode needs at least one frame, drop empty ones."
        )
    if success.shape != lengths.shape or len(tasks) != lengths.size:
        raise errors.DatasetError(
            f"Got {lengths.size} episode lengths but {success.size} outcomes and {len(tasks)} tasks; pass exactly "
            "one success flag and one task per episode."
        )
    for i, task in enumerate(tasks):
        if not isinstance(task, str) or not task.strip():
            raise errors.DatasetError(f"Episode {i} has task {task!r}; every episode needs a non-empty task string.")
    if intervention.ndim != 1 or intervention.size != int(lengths.sum()):
        raise errors.DatasetError(
            f"The intervention column has shape {intervention.shape}, but the episodes hold {int(lengths.sum())} "
            "frames; pass one 0/1 flag per frame, episodes concatenated in order."
        )
    if intervention.size:
        bad = np.flatnonzero((intervention != 0) & (intervention != 1))
        if bad.size:
            frame = int(bad[0])
            episode = int(np.searchsorted(np.cumsum(lengths), frame, side="right"))
            start = int(lengths[:episode].sum())
            raise errors.DatasetError(
                f"intervention must be 0 or 1, but episode {episode} frame {frame - start} holds "
                f"{intervention[frame].item()!r}; mark human frames 1 and autonomous frames 0."
            )


def _task_normaliser(
    lengths: np.ndarray, tasks: Sequence[str], task_max_length: Mapping[str, int] | None
) -> np.ndarray:
    """Per-episode normaliser: the longest episode of its task (or the caller's override)."""
    longest: dict[str, int] = {}
    for length, task in zip(lengths.tolist(), tasks, strict=True):
        longest[task] = max(longest.get(task, 0), int(length))
    if task_max_length is not None:
        for task, length in longest.items():
            if task not in task_max_length:
                raise errors.ConfigError(
                    f"task_max_length has no entry for task {task!r}; add it or leave task_max_length unset."
                )
            if int(task_max_length[task]) < length:
                raise errors.ConfigError(
                    f"task_max_length[{task!r}] = {task_max_length[task]} is shorter than an episode of that task "
                    f"({length} frames); use at least the longest episode length."
                )
        longest = {task: int(task_max_length[task]) for task in longest}
    return np.asarray([longest[task] for task in tasks], dtype=np.float64)


def episode_tasks(ds: Any) -> list[str]:
    """The task of each episode: the task of its first frame (LeRobot allows several; labels need one)."""
    task_index = ds.column("task_index")
    out = []
    for ep in ds.episodes:
        index = int(task_index[ep.from_index])
        if index not in ds.tasks:
            raise errors.DatasetError(
                f"Episode {ep.episode_index} of {ds.root} uses task_index {index}, which the task table does not "
                "list; the dataset's meta/ folder is incomplete."
            )
        out.append(ds.tasks[index])
    return out


def task_max_lengths(ds: Any) -> dict[str, int]:
    """The longest episode of each task: the paper-mode normaliser `ds` was (or would be) labelled with."""
    out: dict[str, int] = {}
    for task, ep in zip(episode_tasks(ds), ds.episodes, strict=True):
        out[task] = max(out.get(task, 0), ep.length)
    return out
