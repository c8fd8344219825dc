"""A synthetic YAM bimanual dataset whose images and actions carry a learnable signal: the embedded demo data.

Nothing can be downloaded on a fresh laptop, yet the whole RECAP loop (train the policy, train the value
model, relabel, fine-tune) has to be shown working in minutes. This module renders a tiny top-down world
that a small model can actually learn:

* A table (head camera, 64x64 by default) holds one target square whose colour names the task. The arm on
  the target's side (left arm for targets on the left half, right arm otherwise) reaches for it. The
  target's position is visible only in the images, never in the state, so a policy must look to act.
* ``observation.state`` / ``action`` are 14 floats in YAM order (``left_joint_0..5, left_gripper,
  right_joint_0..5, right_gripper``). The first two joints of an arm are its end effector's (x, y) on the
  table; the other four are fixed smooth functions of (x, y), so they look like a kinematic chain. The
  action is the next commanded state (absolute, as YAM records it); grippers close near the target.
* Progress is visible: the effector markers approach the target in the head image, a bar along the bottom
  edge shows the remaining distance, and the active wrist camera sees the target grow as it gets close.
  Failures are visibly different: the policy drifts away from the target until the episode times out.
* Four kinds of episodes, cycled per task: human demonstrations (``intervention`` 1 throughout),
  autonomous successes (at varied speeds, so values differ between fast and slow), autonomous failures, and
  autonomous episodes that drift off and are corrected by a human segment before finishing autonomously.
* The five RECAP columns come from `openpi.recap.labels` over the whole dataset (per-task max length), and
  ``meta/recap.json`` records that label scale, as `add_recap_columns` does.

Episode ``i`` depends only on ``(seed, i)``, so datasets of different sizes share their first episodes.
"""

from collections.abc import Sequence
import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

from openpi.datasets import recap_columns
from openpi.recap import labels as labels_lib
from openpi.shared import atomic
from openpi.shared import errors

TASKS = (
    "pick up the red cube",
    "pick up the green cylinder",
    "pick up the blue bowl",
)
TASK_COLORS = ((220, 40, 40), (40, 190, 70), (50, 90, 230))

JOINT_NAMES = (
    *(f"left_joint_{i}" for i in range(6)),
    "left_gripper",
    *(f"right_joint_{i}" for i in range(6)),
    "right_gripper",
)
HEAD_CAMERA = "observation.images.head_camera"
LEFT_WRIST_CAMERA = "observation.images.left_wrist_camera"
RIGHT_WRIST_CAMERA = "observation.images.right_wrist_camera"
CAMERAS = (HEAD_CAMERA, LEFT_WRIST_CAMERA, RIGHT_WRIST_CAMERA)
STATE = "observation.state"
ACTION = "action"
ROBOT_TYPE = "yam"

DEMO, SUCCESS, FAILURE, CORRECTED = "demo", "success", "failure", "corrected"
KINDS = (DEMO, SUCCESS, FAILURE, CORRECTED)

_TABLE = np.array((96, 78, 60), dtype=np.uint8)
_LEFT_MARK = np.array((255, 255, 255), dtype=np.uint8)
_RIGHT_MARK = np.array((255, 220, 0), dtype=np.uint8)
_BAR = np.array((235, 235, 235), dtype=np.uint8)
_REACH = 0.1  # an effector this close to the target has succeeded
_GRASP = 0.3  # the gripper closes inside this distance
_REST = {0: np.array((-0.6, -0.7)), 1: np.array((0.6, -0.7))}  # arm index -> rest position of its effector


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the synthetic dataset.

    The default (24 episodes of up to 40 frames, about 570 in all, at 64x64) trains the demo's tiny models in minutes on 2 cores.
    """

    num_episodes: int = 24
    image_size: int = 64
    fps: int = 10
    max_length: int = 40
    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    labels: labels_lib.LabelConfig = dataclasses.field(default_factory=labels_lib.LabelConfig)

    def __post_init__(self):
        if self.num_episodes < 1:
            raise errors.ConfigError(f"num_episodes must be >= 1, got {self.num_episodes}.")
        if not 16 <= self.image_size <= 512:
            raise errors.ConfigError(f"image_size must be in [16, 512] pixels, got {self.image_size}.")
        if self.max_length < 16:
            raise errors.ConfigError(f"max_length must be >= 16 frames, got {self.max_length}.")
        if not 1 <= len(self.tasks) <= len(TASK_COLORS):
            raise errors.ConfigError(f"Give 1 to {len(TASK_COLORS)} task strings, got {len(self.tasks)}.")


@dataclasses.dataclass(frozen=True)
class SyntheticEpisode:
    """One generated episode: its frames (every feature, leading T) and the facts they were made from."""

    task: str
    kind: str
    success: bool
    target: np.ndarray  # (x, y) on the table in [-1, 1]
    frames: dict[str, np.ndarray]

    @property
    def length(self) -> int:
        return len(self.frames[STATE])


def features(image_size: int = 64, *, use_videos: bool = True) -> dict[str, dict[str, Any]]:
    """LeRobot feature specs: three RGB cameras, 14-dim state/action, and the five RECAP columns."""
    camera = {
        "dtype": "video" if use_videos else "image",
        "shape": [image_size, image_size, 3],
        "names": ["height", "width", "channels"],
    }
    vector = {"dtype": "float32", "shape": [len(JOINT_NAMES)], "names": list(JOINT_NAMES)}
    out: dict[str, dict[str, Any]] = {key: dict(camera) for key in CAMERAS}
    out[STATE] = dict(vector)
    out[ACTION] = dict(vector)
    out.update({k: dict(v) for k, v in recap_columns.RECAP_FEATURES.items()})
    return out


# ------------------------------------------------------------------------------------------------- kinematics


def joints(pos: np.ndarray) -> np.ndarray:
    """Six joint values of one arm from its effector position(s) ``[..., 2]``; joints 0/1 are x/y."""
    x, y = pos[..., 0], pos[..., 1]
    return np.stack([x, y, 0.5 * np.sin(np.pi * x), 0.5 * np.cos(np.pi * y), x * y, 0.25 * (x - y)], axis=-1)


def _vector(left: np.ndarray, left_grip: np.ndarray, right: np.ndarray, right_grip: np.ndarray) -> np.ndarray:
    return np.concatenate([joints(left), left_grip[:, None], joints(right), right_grip[:, None]], axis=-1).astype(
        np.float32
    )


def effector_positions(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) effector (x, y) from state or action vectors ``[..., 14]``."""
    return state[..., 0:2], state[..., 7:9]


# ------------------------------------------------------------------------------------------------- rendering


def _to_pixels(pos: np.ndarray, size: int) -> np.ndarray:
    # The table spans [-1, 1] in x (left to right) and y (bottom to top), inside a 10% margin.
    scale = 0.4 * size
    return np.stack([size / 2 - pos[..., 1] * scale, size / 2 + pos[..., 0] * scale], axis=-1)


def _fill_square(img: np.ndarray, rc: np.ndarray, half: float, color: np.ndarray) -> None:
    size = img.shape[-2]
    r0, c0 = np.clip(np.round(rc - half).astype(int), 0, size)
    r1, c1 = np.clip(np.round(rc + half).astype(int), 0, size)
    img[r0:r1, c0:c1] = color


def render_head(left: np.ndarray, right: np.ndarray, target: np.ndarray, color: np.ndarray, size: int) -> np.ndarray:
    """Top-down view ``[T, size, size, 3]``: target square, both effector markers, remaining-distance bar."""
    length = len(left)
    img = np.empty((length, size, size, 3), dtype=np.uint8)
    img[:] = _TABLE
    target_rc = _to_pixels(target, size)
    left_rc, right_rc = _to_pixels(left, size), _to_pixels(right, size)
    remaining = np.minimum(np.linalg.norm(left - target, axis=-1), np.linalg.norm(right - target, axis=-1))
    bar_height = max(2, size // 16)
    for t in range(length):
        _fill_square(img[t], target_rc, size / 14, color)
        _fill_square(img[t], left_rc[t], size / 28, _LEFT_MARK)
        _fill_square(img[t], right_rc[t], size / 28, _RIGHT_MARK)
        bar = round(float(min(remaining[t] / 2.0, 1.0)) * size)
        img[t, size - bar_height :, :bar] = _BAR
    return img


def render_wrist(
    effector: np.ndarray, grip: np.ndarray, target: np.ndarray, color: np.ndarray, size: int, tint: np.ndarray
) -> np.ndarray:
    """The arm's wrist view ``[T, size, size, 3]``: the target grows as the effector nears it; gripper jaws."""
    length = len(effector)
    img = np.empty((length, size, size, 3), dtype=np.uint8)
    img[:] = tint
    offset = target[None] - effector  # where the target is relative to the wrist
    dist = np.linalg.norm(offset, axis=-1)
    half = size * (0.04 + 0.3 * np.clip(1.0 - dist / 1.5, 0.0, 1.0))
    center = size / 2 + np.stack([-offset[:, 1], offset[:, 0]], axis=-1) * size * 0.5
    jaw_w = max(2, size // 12)
    for t in range(length):
        if half[t] > 0:
            _fill_square(img[t], center[t], half[t], color)
        # Gripper jaws from the sides: open (0) at the edges, closed (1) near the middle.
        reach = round(jaw_w + float(grip[t]) * (size / 2 - 2 * jaw_w))
        img[t, size - 3 * jaw_w :, :reach] = 40
        img[t, size - 3 * jaw_w :, size - reach :] = 40
    return img


# ------------------------------------------------------------------------------------------------- episodes


def episode_kind(index: int, num_tasks: int) -> tuple[int, str]:
    """Task and kind of episode ``index``: tasks cycle fastest, then kinds, so every task gets every kind."""
    return index % num_tasks, KINDS[(index // num_tasks) % len(KINDS)]


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.zeros_like(v)


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array((c * v[0] - s * v[1], s * v[0] + c * v[1]))


def _simulate(rng: np.random.Generator, kind: str, target: np.ndarray, start: np.ndarray, max_length: int):
    """Path of the active effector: positions [T+1] (the last one is the final command) and human flags [T]."""
    speed = rng.uniform(0.05, 0.09)
    pos = [start.copy()]
    human: list[int] = []
    drift_dir = _rotate(_unit(start - target), rng.uniform(-0.6, 0.6))
    drift_from = int(rng.integers(2, 6))
    correction = (int(rng.integers(4, 8)), int(rng.integers(5, 8)))  # (first human frame offset, human frames)
    # Operators stop a failing rollout at some point before the time limit.
    horizon = int(rng.integers(max_length * 3 // 4, max_length + 1)) if kind == FAILURE else max_length
    for t in range(horizon):
        p = pos[-1]
        to_target = target - p
        if kind == DEMO:
            is_human, step = True, _unit(to_target) * min(speed * 1.1, np.linalg.norm(to_target))
        elif kind == SUCCESS:
            is_human, step = False, _rotate(_unit(to_target), rng.normal(0, 0.25)) * speed
        elif kind == FAILURE:
            going_wrong = t >= drift_from
            direction = _rotate(drift_dir, rng.normal(0, 0.3)) if going_wrong else _unit(to_target)
            is_human, step = False, direction * speed * (0.8 if going_wrong else 1.0)
        else:  # CORRECTED: drift, a human segment steers back, then autonomous to the target
            first_human = drift_from + correction[0]
            is_human = first_human <= t < first_human + correction[1]
            if t >= drift_from and t < first_human:
                step = _rotate(drift_dir, rng.normal(0, 0.3)) * speed * 0.8
            elif is_human:
                step = _unit(to_target) * speed * 1.3
            else:
                step = _rotate(_unit(to_target), rng.normal(0, 0.2)) * speed
        step = step + rng.normal(0, 0.004, size=2) * (0.3 if is_human else 1.0)
        nxt = np.clip(p + step, -1.0, 1.0)
        human.append(int(is_human))
        pos.append(nxt)
        if kind != FAILURE and np.linalg.norm(nxt - target) < _REACH:
            break
    # The frame that reaches the target is the terminal one; it commands the position it is at.
    reached = kind != FAILURE and np.linalg.norm(pos[-1] - target) < _REACH
    if reached:
        pos.append(pos[-1].copy())
        human.append(human[-1])
    return np.asarray(pos), np.asarray(human, dtype=np.int64), bool(reached)


def _grip(dist: np.ndarray) -> np.ndarray:
    return np.clip((_GRASP - dist) / (_GRASP - _REACH), 0.0, 1.0)


def generate_episode(config: SyntheticConfig, index: int) -> SyntheticEpisode:
    """Episode ``index`` of the dataset (without RECAP labels, which need the whole dataset)."""
    rng = np.random.default_rng([config.seed, index])
    task_id, kind = episode_kind(index, len(config.tasks))
    side = int(rng.integers(0, 2))  # 0: target on the left half (left arm), 1: right half (right arm)
    target = np.array(((1 if side else -1) * rng.uniform(0.25, 0.85), rng.uniform(0.1, 0.85)))
    start = _REST[side] + rng.uniform(-0.15, 0.15, size=2)
    path, human, reached = _simulate(rng, kind, target, start, config.max_length)
    length = len(human)
    active = path  # [T+1, 2]: positions, then commanded positions shifted by one
    idle = np.repeat((_REST[1 - side] + rng.uniform(-0.15, 0.15, size=2))[None], length + 1, axis=0)
    idle = idle + rng.normal(0, 0.003, size=idle.shape)
    left, right = (active, idle) if side == 0 else (idle, active)
    grip_active = _grip(np.linalg.norm(active - target, axis=-1))
    grip_idle = np.zeros(length + 1)
    left_grip, right_grip = (grip_active, grip_idle) if side == 0 else (grip_idle, grip_active)

    state = _vector(left[:-1], left_grip[:-1], right[:-1], right_grip[:-1])
    action = _vector(left[1:], left_grip[1:], right[1:], right_grip[1:])
    color = np.array(TASK_COLORS[task_id], dtype=np.uint8)
    size = config.image_size
    frames = {
        HEAD_CAMERA: render_head(left[:-1], right[:-1], target, color, size),
        LEFT_WRIST_CAMERA: render_wrist(left[:-1], left_grip[:-1], target, color, size, np.array((60, 70, 90))),
        RIGHT_WRIST_CAMERA: render_wrist(right[:-1], right_grip[:-1], target, color, size, np.array((90, 70, 60))),
        STATE: state,
        ACTION: action,
        labels_lib.INTERVENTION: human,
    }
    return SyntheticEpisode(task=config.tasks[task_id], kind=kind, success=reached, target=target, frames=frames)


def generate(config: SyntheticConfig | None = None) -> list[SyntheticEpisode]:
    """All episodes, each with the five RECAP columns computed over the whole dataset."""
    config = config or SyntheticConfig()
    episodes = [generate_episode(config, i) for i in range(config.num_episodes)]
    per_episode = labels_lib.label_episodes(
        [
            labels_lib.Episode(task=ep.task, success=ep.success, intervention=ep.frames[labels_lib.INTERVENTION])
            for ep in episodes
        ],
        config.labels,
    )
    for ep, cols in zip(episodes, per_episode, strict=True):
        ep.frames.update(cols)
    return episodes


def write_dataset(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    version: str = "v3.0",
    use_videos: bool = True,
    overwrite: bool = False,
    episodes: Sequence[SyntheticEpisode] | None = None,
):
    """Generates and writes the dataset with the LeRobot writer; returns the opened `LeRobotDataset`.

    The writer stages everything in a hidden sibling and renames it into place on `finalize`, so an
    interrupted run never leaves a half-written dataset at ``root``.
    """
    from openpi.datasets import lerobot

    atomic.check_output_dir(root)  # before the episodes are generated
    config = config or SyntheticConfig()
    episodes = list(episodes) if episodes is not None else generate(config)
    writer = lerobot.LeRobotDatasetWriter.create(
        pathlib.Path(root),
        fps=config.fps,
        features=features(config.image_size, use_videos=use_videos),
        robot_type=ROBOT_TYPE,
        version=version,
        use_videos=use_videos,
        overwrite=overwrite,
    )
    with writer:
        for ep in episodes:
            writer.add_episode(ep.frames, ep.task)
        ds = writer.finalize()
    _record_label_scale(ds, config.labels)
    return ds


def _record_label_scale(ds, label_config: labels_lib.LabelConfig) -> None:
    """meta/recap.json with the scale the labels were computed on (per task, its longest episode), as
    `add_recap_columns` records it; episodes passed in that were labelled on another scale are left unrecorded."""
    import logging

    from openpi.recap import provenance

    normaliser = labels_lib.task_max_lengths(ds) if label_config.mode == "paper" else {}
    scale = provenance.LabelScale(mode=label_config.mode, c_fail=label_config.c_fail, task_normaliser=normaliser)
    try:
        provenance.check_labels_on_scale(ds, scale)
    except provenance.ProvenanceError as e:
        logging.getLogger(__name__).warning(
            "%s records no label scale: its episodes' labels are on another (%s)", ds.root, e
        )
        return
    provenance.write(ds.root, {"label_scale": scale.to_json()})
