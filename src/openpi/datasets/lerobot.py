"""LeRobot datasets (v2.1 and v3.0): the one import the rest of openpi uses.

    from openpi.datasets import lerobot
    ds = lerobot.LeRobotDataset.open("/data/my_dataset")       # or "<org>/<name>" under $HF_LEROBOT_HOME
    writer = lerobot.LeRobotDatasetWriter.create(root, fps=10, features=..., robot_type="yam")
    lerobot.copy_with_columns(src, dst, {"adv_ind": labels})

The pieces live in `info` (layout facts), `reader`, `writer`, `rewrite` (copy_with_columns), `video`,
`parquet_schema` and `episode_stats`.
"""

from openpi.datasets.info import DEFAULT_FEATURES
from openpi.datasets.info import lerobot_home
from openpi.datasets.reader import EpisodeInfo
from openpi.datasets.reader import LeRobotDataset
from openpi.datasets.reader import VideoSegment
from openpi.datasets.rewrite import copy_with_columns
from openpi.datasets.rewrite import infer_feature
from openpi.datasets.video import VideoDecoder
from openpi.datasets.video import VideoEncoding
from openpi.datasets.writer import LeRobotDatasetWriter

__all__ = [
    "DEFAULT_FEATURES",
    "EpisodeInfo",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "VideoDecoder",
    "VideoEncoding",
    "VideoSegment",
    "copy_with_columns",
    "infer_feature",
    "lerobot_home",
]
