"""Recorded simulator episodes -> a LeRobot v3.0 dataset with the five RECAP columns (stage 0 + stage 1).

The dataset is what a robot recorder plus `scripts/add_recap_columns.py` would produce: cameras under
`observation.images.<camera>`, `observation.state`, `action`, the operator's per-frame `intervention` flag, a
`success` column (1 on the last frame of a successful episode) and the RECAP columns labelled by the project's
one labelling code (`openpi.recap.labels.compute_columns`). The simulator also knows what no robot does: whether
each applied action was the noise-free expert's (`sim.clean_action`), which the experiment uses to check what
the relabeller calls positive.

Value labels use each task's step limit as its length normaliser (paper mode), and `c_fail` defaults to it too:
every iteration of the loop is labelled on the same scale, whatever its longest episode happens to be.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import os
import pathlib

import numpy as np

from openpi.datasets import lerobot
from openpi.datasets import recap_columns
from openpi.policies import sim_policy
from openpi.recap import labels as labels_lib
from openpi.recap import provenance
from openpi.sim import base
from openpi.sim import rollout

SUCCESS = "success"
CLEAN_ACTION = "sim.clean_action"
SEED = "sim.seed"
PROGRESS = "sim.progress"


def features(env: base.SimEnv, image_size: int | None) -> dict[str, dict]:
    """LeRobot features of a dataset recorded in `env` (cameras, state, action, flags, RECAP columns)."""
    out: dict[str, dict] = {}
    for camera in env.cameras:
        if image_size is None:
            raise base.SimError(f"The {env.env_name} env renders cameras {env.cameras}; pass their image size.")
        out[sim_policy.dataset_camera(camera)] = {
            "dtype": "video",
            "shape": [image_size, image_size, 3],
            "names": ["height", "width", "channels"],
        }
    out["observation.state"] = {"dtype": "float32", "shape": [env.state_dim], "names": None}
    out["action"] = {"dtype": "float32", "shape": [env.action_dim], "names": None}
    out[SUCCESS] = {"dtype": "int64", "shape": [1], "names": None}
    out[CLEAN_ACTION] = {"dtype": "int64", "shape": [1], "names": None}
    out[SEED] = {"dtype": "int64", "shape": [1], "names": None}
    out[PROGRESS] = {"dtype": "float32", "shape": [1], "names": None}
    out.update({name: dict(spec) for name, spec in recap_columns.RECAP_FEATURES.items()})
    return out


def recap_labels(
    episodes: Sequence[rollout.Episode], max_steps: dict[str, int], config: labels_lib.LabelConfig
) -> dict[str, np.ndarray]:
    """The five RECAP columns for `episodes`, each task normalised by its step limit (`max_steps[prompt]`)."""
    return labels_lib.compute_columns(
        episode_lengths=np.asarray([ep.length for ep in episodes], np.int64),
        success=np.asarray([ep.success for ep in episodes], bool),
        tasks=[ep.prompt for ep in episodes],
        intervention=np.concatenate([np.asarray(ep.intervention, np.int64) for ep in episodes]),
        config=config,
        task_max_length=max_steps,
    )


def write_dataset(
    root: str | os.PathLike,
    episodes: Sequence[rollout.Episode],
    env: base.SimEnv,
    *,
    fps: int = 10,
    image_size: int | None = None,
    use_videos: bool = False,
    labels: labels_lib.LabelConfig | None = None,
    task_max_steps: Mapping[str, int] | None = None,
    overwrite: bool = False,
) -> lerobot.LeRobotDataset:
    """Writes `episodes` (all recorded in tasks of `env`'s kind) as a LeRobot v3.0 dataset; returns it opened.

    `use_videos=False` stores camera frames as PNG (LeRobot's image mode): at toy resolutions it is smaller and
    faster to read than AV1 video. The write is staged and renamed into place by the dataset writer.
    """
    if not episodes:
        raise base.SimError("No episodes to write; collect at least one.")
    missing = [i for i, ep in enumerate(episodes) if len(ep.states) != ep.length or len(ep.progress) != ep.length]
    if missing:
        raise base.SimError(f"Episodes {missing[:5]} were recorded without frames (keep_frames=False).")
    # Each task's step limit is its normaliser (and, by the labels' default, its failure penalty); tasks of one
    # env may have different limits (MetaWorld), so they come per prompt when given.
    normaliser = {ep.prompt: int((task_max_steps or {}).get(ep.prompt, env.max_steps)) for ep in episodes}
    labels = labels or labels_lib.LabelConfig()
    columns = recap_labels(episodes, normaliser, labels)
    writer = lerobot.LeRobotDatasetWriter.create(
        pathlib.Path(root),
        fps=fps,
        features=features(env, image_size),
        robot_type=f"sim_{env.env_name}",
        use_videos=use_videos,
        overwrite=overwrite,
    )
    start = 0
    with writer:
        for ep in episodes:
            end = start + ep.length
            success = np.zeros((ep.length, 1), np.int64)
            success[-1] = int(ep.success)
            frames = {
                "observation.state": np.stack(ep.states),
                "action": np.stack(ep.actions),
                SUCCESS: success,
                CLEAN_ACTION: np.asarray(ep.clean, np.int64)[:, None],
                SEED: np.full((ep.length, 1), ep.seed, np.int64),
                PROGRESS: np.asarray(ep.progress, np.float32)[:, None],
                **{name: values[start:end] for name, values in columns.items()},
            }
            for camera, images in ep.images.items():
                frames[sim_policy.dataset_camera(camera)] = np.stack(images)
            writer.add_episode(frames, ep.prompt)
            start = end
        dataset = writer.finalize()
    recap_columns.validate_recap_columns(dataset)
    # meta/recap.json: the label scale, so merging iterations and relabelling can check it (openpi.recap.provenance).
    scale = provenance.LabelScale(mode=labels.mode, c_fail=labels.c_fail, task_normaliser=normaliser)
    provenance.write(dataset.root, {"label_scale": scale.to_json(), "recorded_in": f"openpi.sim {env.env_name}"})
    return dataset
