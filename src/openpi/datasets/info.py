"""The LeRobot on-disk layout: `meta/info.json`, path templates, and what each feature's spec means.

Both LeRobot formats we handle keep their schema in `meta/info.json`; everything else (where the
parquet and mp4 files are, how a feature is stored in parquet) follows from it. This module holds those
facts in one place so the reader, the writer and the copy/merge tools cannot disagree about them.

    v2.1  one parquet per episode:  data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet
          one mp4 per episode/cam:  videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4
          meta/episodes.jsonl, meta/tasks.jsonl, meta/episodes_stats.jsonl
    v3.0  many episodes per file:   data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet
                                    videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4
          meta/episodes/chunk-XXX/file-XXX.parquet, meta/tasks.parquet, meta/stats.json
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from openpi.shared import atomic
from openpi.shared import errors

V20 = "v2.0"
V21 = "v2.1"
V30 = "v3.0"
# Versions the writer produces. v2.0 (what openpi's pinned LeRobot writes) is read too: it has the v2.1
# layout with dataset-level meta/stats.json instead of meta/episodes_stats.jsonl.
SUPPORTED_VERSIONS = (V21, V30)
READABLE_VERSIONS = (V20, V21, V30)

HF_LEROBOT_HOME = "HF_LEROBOT_HOME"
DEFAULT_LEROBOT_HOME = "~/.cache/huggingface/lerobot"

DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_MB = 100
DEFAULT_VIDEO_FILE_SIZE_MB = 200

V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
V21_EPISODES_PATH = "meta/episodes.jsonl"
V21_TASKS_PATH = "meta/tasks.jsonl"
V21_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
V30_TASKS_PATH = "meta/tasks.parquet"

# Columns every LeRobot frame carries besides the user's features (LeRobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

CAMERA_DTYPES = ("video", "image")
NUMERIC_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def lerobot_home() -> pathlib.Path:
    """LeRobot's cache root: `$HF_LEROBOT_HOME`, else `~/.cache/huggingface/lerobot`."""
    return pathlib.Path(os.environ.get(HF_LEROBOT_HOME) or DEFAULT_LEROBOT_HOME).expanduser()


def resolve_root(root_or_repo_id: str | os.PathLike) -> pathlib.Path:
    """A local dataset directory, or `<org>/<name>` looked up under the LeRobot cache (local paths win)."""
    text = os.fspath(root_or_repo_id)
    local = pathlib.Path(text).expanduser()
    if local.is_dir():
        return local.resolve()
    parts = text.split("/")
    if not local.is_absolute() and len(parts) == 2 and all(parts):
        cached = lerobot_home() / text
        if cached.is_dir():
            return cached.resolve()
        raise errors.DatasetError(
            f"Dataset {text!r} is neither a local directory nor in the LeRobot cache at {cached}; "
            f"download it there (or set ${HF_LEROBOT_HOME}) or pass the dataset's root directory."
        )
    raise errors.DatasetError(
        f"Dataset root {local} does not exist; pass the directory that contains meta/info.json "
        "or a '<org>/<name>' repo id under the LeRobot cache."
    )


def load_info(root: pathlib.Path) -> dict[str, Any]:
    """Reads and checks `meta/info.json` (present, valid JSON, a version we read, the keys we need)."""
    path = root / INFO_PATH
    if not path.is_file():
        raise errors.DatasetError(
            f"{path} is missing, so {root} is not a LeRobot dataset root; pass the directory that contains "
            "meta/info.json (not its meta/ or data/ subfolder)."
        )
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.DatasetError(f"{path} is not valid JSON ({exc}); restore it from the original dataset.") from exc
    if not isinstance(info, dict):
        raise errors.DatasetError(f"{path} must hold a JSON object; restore it from the original dataset.")
    version = info.get("codebase_version")
    if version not in READABLE_VERSIONS:
        raise errors.DatasetError(
            f"{path} has codebase_version {version!r}, but only {', '.join(READABLE_VERSIONS)} can be read; "
            "convert the dataset with LeRobot's converter to v2.1 or v3.0 first."
        )
    for key in ("fps", "features", "total_episodes", "total_frames"):
        if key not in info:
            raise errors.DatasetError(f"{path} lacks the required key {key!r}; the file is incomplete.")
    return info


def has_episode_files(version: str) -> bool:
    """v2.0 and v2.1 keep one parquet (and one mp4 per camera) per episode; v3.0 packs episodes into files."""
    return version in (V20, V21)


def camera_keys(features: dict[str, Any], dtype: str) -> list[str]:
    """Feature names stored as `dtype` ("video" or "image"), in info.json order."""
    return [k for k, f in features.items() if f.get("dtype") == dtype]


def is_scalar_feature(feature: dict[str, Any]) -> bool:
    """LeRobot stores shape-[1] features as plain parquet scalars (not one-element lists)."""
    return list(feature.get("shape", [])) == [1]


def write_json_atomic(path: pathlib.Path, obj: Any, *, indent: int | None = 4) -> None:
    """Writes JSON to a temporary sibling, fsyncs, then renames it over `path`."""
    write_bytes_atomic(path, (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode())


def write_bytes_atomic(path: pathlib.Path, data: bytes) -> None:
    atomic.write_bytes(path, data)
