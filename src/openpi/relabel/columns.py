"""The per-frame columns the advantage needs, read once from a dataset and checked (one clear error per problem)."""

import dataclasses
from typing import Any

import numpy as np

from openpi.recap import vocab
from openpi.shared import errors


@dataclasses.dataclass(frozen=True)
class DatasetColumns:
    """The per-frame columns the advantage needs, flat over the dataset, plus episode bounds."""

    reward: np.ndarray
    reward_label: np.ndarray
    intervention: np.ndarray
    task_index: np.ndarray
    bounds: list[tuple[int, int]]
    episode_ids: list[int]


def read_columns(ds: Any, human_col: str = vocab.INTERVENTION) -> DatasetColumns:
    """Reads and checks reward / reward_label / the human column / task_index; one clear error per problem."""
    for name, hint in (
        (vocab.REWARD, "the sparse success reward (1 on the last frame of a success)"),
        (vocab.REWARD_LABEL, "the dense per-step reward"),
        (human_col, "1 on human frames, 0 on autonomous ones; set --human_col if it has another name"),
        (vocab.TASK_INDEX, "the task of each frame"),
    ):
        if not ds.has_column(name):
            raise errors.DatasetError(
                f"Dataset {ds.root} has no {name!r} column ({hint}); add the RECAP columns first "
                "(scripts/add_recap_columns.py)."
            )
    num = ds.num_frames
    cols = {
        "reward": np.asarray(ds.column(vocab.REWARD), np.float32).reshape(num, -1)[:, 0],
        "reward_label": np.asarray(ds.column(vocab.REWARD_LABEL), np.float32).reshape(num, -1)[:, 0],
        "intervention": np.asarray(ds.column(human_col)).reshape(num, -1)[:, 0].astype(np.int64),
        "task_index": np.asarray(ds.column(vocab.TASK_INDEX)).reshape(num, -1)[:, 0].astype(np.int64),
    }
    for name in ("reward", "reward_label"):
        bad = np.flatnonzero(~np.isfinite(cols[name]))
        if bad.size:
            raise errors.DatasetError(f"Column {name!r} of {ds.root} is not finite at frame {int(bad[0])}; fix it.")
    bounds = [(int(ep.from_index), int(ep.to_index)) for ep in ds.episodes]
    episode_ids = [int(ep.episode_index) for ep in ds.episodes]
    return DatasetColumns(bounds=bounds, episode_ids=episode_ids, **cols)
