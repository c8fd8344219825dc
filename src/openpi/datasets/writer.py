"""Writing LeRobot datasets (v3.0 by default, v2.1 on request) episode by episode.

    writer = LeRobotDatasetWriter.create(root, fps=10, features=features, robot_type="yam")
    writer.add_episode({"observation.state": state, "action": action, "observation.images.head": frames}, tasks)
    ds = writer.finalize()

Everything is written under a hidden sibling directory and renamed onto `root` by `finalize()`, so a
killed process never leaves a half-written dataset where a reader would find it. Episodes stream to disk
as they come (one parquet row group per episode; each camera's episode is encoded to its own mp4, then
appended to the current video file by remuxing), so memory stays at one episode. v3.0 packs episodes
into `file-XXX` parquet/mp4 files until `data_files_size_in_mb` / `video_files_size_in_mb` is reached,
like LeRobot; v2.1 writes one parquet and one mp4 per episode. Camera encoding: see `video.VideoEncoding`
(SVT-AV1, yuv420p, g=2, crf=30 by default: LeRobot's own settings).

String features and tasks take text only: None, NaN, bytes or numbers are refused with the frame named, never
written as "None", "nan", "b'...'" or "1" (LeRobot's string columns have no nulls to write instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import copy
import json
import os
import pathlib
import shutil
from typing import Any
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from openpi.datasets import episode_stats
from openpi.datasets import info as info_lib
from openpi.datasets import parquet_schema
from openpi.datasets import reader
from openpi.datasets import video as video_lib
from openpi.shared import atomic
from openpi.shared import errors


def normalize_features(features: Mapping[str, Mapping[str, Any]], *, use_videos: bool) -> dict[str, dict[str, Any]]:
    """User features plus LeRobot's default columns; cameras become "video" or "image" per `use_videos`."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in features.items():
        if name in info_lib.DEFAULT_FEATURES:
            continue
        if not isinstance(spec, Mapping) or "dtype" not in spec or "shape" not in spec:
            raise errors.DatasetError(
                f"Feature {name!r} must be a dict with 'dtype' and 'shape' (LeRobot's info.json schema), got {spec!r}."
            )
        spec = copy.deepcopy(dict(spec))
        spec["shape"] = [int(s) for s in spec["shape"]]
        spec.setdefault("names", None)
        if spec["dtype"] in info_lib.CAMERA_DTYPES:
            if len(spec["shape"]) != 3 or spec["shape"][2] != 3:
                raise errors.DatasetError(
                    f"Camera feature {name!r} needs shape [height, width, 3], got {spec['shape']}."
                )
            spec["dtype"] = "video" if use_videos else "image"
            if spec.get("names") is None:
                spec["names"] = ["height", "width", "channels"]
            if not use_videos:
                spec.pop("info", None)
        else:
            parquet_schema.arrow_type(name, spec)  # validates dtype and shape early
        out[name] = spec
    for name, spec in info_lib.DEFAULT_FEATURES.items():
        out[name] = copy.deepcopy(spec)
    return out


def coerce_feature(name: str, spec: Mapping[str, Any], raw: Any, where: str) -> np.ndarray:
    """Checks per-frame values [T, ...] against a feature spec and casts them to its dtype.

    Shape-[1] features accept [T] or [T, 1] and come back as [T, 1]; strings come back as an object array [T].
    """
    array = np.asarray(raw) if spec["dtype"] != "string" else np.asarray(raw, dtype=object)
    if array.ndim == 0:
        raise errors.DatasetError(f"{where}: {name!r} needs a leading frame axis, got a scalar.")
    shape = tuple(spec["shape"])
    if spec["dtype"] in info_lib.CAMERA_DTYPES:
        if array.dtype != np.uint8 or array.shape[1:] != shape:
            raise errors.DatasetError(
                f"{where}: camera {name!r} must be uint8 [T, {', '.join(map(str, shape))}], got "
                f"{array.dtype} {list(array.shape)}; resize/convert the images or fix the feature's shape."
            )
        return array
    if spec["dtype"] == "string":
        if array.shape[1:] not in ((), (1,)):
            raise errors.DatasetError(
                f"{where}: string feature {name!r} must be [T] or [T, 1], got {list(array.shape)}."
            )
        hint = "decode bytes; a string column has no nulls, so spell a missing value out, e.g. 'none' for adv_ind"
        return np.asarray(text_values(array.reshape(-1), where, f"string feature {name!r}", hint), dtype=object)
    if array.shape[1:] != shape and not (shape == (1,) and array.ndim == 1):
        raise errors.DatasetError(
            f"{where}: {name!r} has shape {list(array.shape)}, expected [T, {', '.join(map(str, shape))}] as "
            "declared in features."
        )
    target = np.dtype(spec["dtype"])
    if array.dtype.kind in "OUS":
        raise errors.DatasetError(
            f"{where}: {name!r} is declared {spec['dtype']} but holds {array.dtype} values; convert them to numbers "
            "or declare the feature as 'string'."
        )
    lossy = not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_
    if np.issubdtype(target, np.integer) and lossy and not np.all(np.equal(np.mod(array, 1), 0)):
        raise errors.DatasetError(
            f"{where}: {name!r} is declared {spec['dtype']} but holds non-integer values; round them or declare "
            "a float dtype."
        )
    return array.astype(target).reshape((len(array), *shape))


def text_values(values: Sequence[Any], where: str, what: str, hint: str) -> list[str]:
    """`values` as Python strings; anything that is not text is refused (one sentence naming the frame), because
    `str(value)` would write None, NaN, bytes and numbers as the words "None", "nan", "b'...'" and "1", which read
    back as real values. LeRobot's string columns have no nulls, so there is no missing value to write either."""
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise errors.DatasetError(
                f"{where}, frame {i}: {what} holds {value!r} ({type(value).__name__}), not a str; pass a str for "
                f"every frame ({hint})."
            )
    return [str(v) for v in values]  # np.str_ -> str


def _staging_dir(root: pathlib.Path) -> pathlib.Path:
    return root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"


def publish_dir(staging: pathlib.Path, root: pathlib.Path, *, overwrite: bool) -> None:
    """Renames a finished staging directory onto `root` (replacing an old one only when `overwrite`)."""
    if root.exists():
        if not overwrite:
            raise errors.DatasetError(f"{root} already exists; pass overwrite=True or choose another directory.")
        trash = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(root, trash)
        os.replace(staging, root)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, root)


class LeRobotDatasetWriter:
    """Creates a LeRobot dataset; see the module docstring."""

    def __init__(
        self,
        root: pathlib.Path,
        *,
        fps: int,
        features: dict[str, dict[str, Any]],
        robot_type: str | None,
        version: str,
        overwrite: bool,
        video_encoding: video_lib.VideoEncoding,
        chunks_size: int,
        data_files_size_in_mb: float,
        video_files_size_in_mb: float,
    ):
        self.root = root
        self.fps = fps
        self.features = features
        self.robot_type = robot_type
        self.version = version
        self.overwrite = overwrite
        self.video_encoding = video_encoding
        self.chunks_size = chunks_size
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self.staging = _staging_dir(root)
        self.staging.mkdir(parents=True)
        self.video_keys = info_lib.camera_keys(features, "video")
        self.image_keys = info_lib.camera_keys(features, "image")
        self.schema = parquet_schema.schema(features, version)
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.num_frames = 0
        self._finalized = False
        # v3.0 streaming state: the open data file and one open video file per camera.
        self._data_pos = (0, 0)
        self._data_writer: pq.ParquetWriter | None = None
        self._data_bytes = 0
        self._video_pos = dict.fromkeys(self.video_keys, (0, 0))
        self._videos: dict[str, video_lib.VideoConcatenator] = {}

    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        *,
        fps: int,
        features: Mapping[str, Mapping[str, Any]],
        robot_type: str | None = None,
        version: str = info_lib.V30,
        use_videos: bool = True,
        overwrite: bool = False,
        video_encoding: video_lib.VideoEncoding = video_lib.VideoEncoding(),
        chunks_size: int = info_lib.DEFAULT_CHUNKS_SIZE,
        data_files_size_in_mb: float = info_lib.DEFAULT_DATA_FILE_SIZE_MB,
        video_files_size_in_mb: float = info_lib.DEFAULT_VIDEO_FILE_SIZE_MB,
    ) -> LeRobotDatasetWriter:
        """Starts a new dataset at `root` (written to a hidden sibling until `finalize`)."""
        root = atomic.check_output_dir(root)
        if version not in info_lib.SUPPORTED_VERSIONS:
            raise errors.ConfigError(f"version must be one of {info_lib.SUPPORTED_VERSIONS}, got {version!r}.")
        if root.exists() and not overwrite:
            raise errors.DatasetError(f"{root} already exists; pass overwrite=True or choose another directory.")
        if int(fps) <= 0:
            raise errors.ConfigError(f"fps must be a positive integer, got {fps}.")
        root.parent.mkdir(parents=True, exist_ok=True)
        return cls(
            root,
            fps=int(fps),
            features=normalize_features(features, use_videos=use_videos),
            robot_type=robot_type,
            version=version,
            overwrite=overwrite,
            video_encoding=video_encoding,
            chunks_size=chunks_size,
            data_files_size_in_mb=data_files_size_in_mb,
            video_files_size_in_mb=video_files_size_in_mb,
        )

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        """Drops everything written so far (nothing ever appeared at `root`)."""
        self._close_files()
        shutil.rmtree(self.staging, ignore_errors=True)
        self._finalized = True

    # ------------------------------------------------------------------------------------------ episodes
    def add_episode(self, frames: Mapping[str, Any], tasks: str | Sequence[str]) -> int:
        """Adds one episode: every feature as an array with leading length T; `tasks` one string or T strings.

        Returns the new episode's index. Timestamps (frame_index / fps), indices and task indices are
        computed here, so `frames` must not contain them.
        """
        if self._finalized:
            raise errors.DatasetError(f"The writer for {self.root} is already finalized or aborted; create a new one.")
        episode_index = len(self.episodes)
        values = self._check_episode(frames, episode_index)
        length = len(next(iter(values.values()))) if values else 0
        if isinstance(tasks, str):
            task_list = [tasks] * length
        elif not isinstance(tasks, (Sequence, np.ndarray)) or isinstance(tasks, (bytes, bytearray)):
            raise errors.DatasetError(
                f"Episode {episode_index}: the tasks are {tasks!r} ({type(tasks).__name__}); pass one task string or "
                "one per frame."
            )
        else:
            task_list = text_values(list(tasks), f"Episode {episode_index}", "the task", "the task's text")
            if len(task_list) != length:
                raise errors.DatasetError(
                    f"Episode {episode_index}: got {len(task_list)} tasks for {length} frames; pass one task string "
                    "or one per frame."
                )
        for task in task_list:
            if task not in self.tasks:
                self.tasks[task] = len(self.tasks)
        frame_index = np.arange(length, dtype=np.int64)
        values["timestamp"] = (frame_index / self.fps).astype(np.float32)
        values["frame_index"] = frame_index
        values["episode_index"] = np.full(length, episode_index, dtype=np.int64)
        values["index"] = np.arange(self.num_frames, self.num_frames + length, dtype=np.int64)
        values["task_index"] = np.asarray([self.tasks[t] for t in task_list], dtype=np.int64)

        stats = self._episode_stats(values)
        table = pa.Table.from_arrays(
            [
                parquet_schema.to_arrow(name, spec, values[name], frame_index)
                for name, spec in parquet_schema.stored_features(self.features).items()
            ],
            schema=self.schema,
        )
        record: dict[str, Any] = {
            "episode_index": episode_index,
            "tasks": list(dict.fromkeys(task_list)),
            "length": length,
            "dataset_from_index": self.num_frames,
            "dataset_to_index": self.num_frames + length,
            "stats": stats,
        }
        try:
            if self.version == info_lib.V30:
                self._write_v30(record, table, values)
            else:
                self._write_v21(record, table, values)
        except BaseException:
            # A half-written episode cannot be taken back out of the open files: drop the whole staging dir.
            self.abort()
            raise
        self.episodes.append(record)
        self.num_frames += length
        return episode_index

    def _check_episode(self, frames: Mapping[str, Any], episode_index: int) -> dict[str, np.ndarray]:
        user = {k: f for k, f in self.features.items() if k not in info_lib.DEFAULT_FEATURES}
        unknown = sorted(set(frames) - set(user))
        if unknown:
            hint = (
                "the writer computes them"
                if set(unknown) <= set(info_lib.DEFAULT_FEATURES)
                else "declare them in features or drop them"
            )
            raise errors.DatasetError(
                f"Episode {episode_index}: keys {unknown} are not features of {self.root}; {hint}."
            )
        missing = [k for k in user if k not in frames]
        if missing:
            raise errors.DatasetError(
                f"Episode {episode_index} lacks the features {missing}; every feature is required."
            )
        values: dict[str, np.ndarray] = {}
        length = None
        for name, spec in user.items():
            array = coerce_feature(name, spec, frames[name], f"Episode {episode_index}")
            if length is None:
                length = len(array)
            if len(array) != length:
                raise errors.DatasetError(
                    f"Episode {episode_index}: {name!r} has {len(array)} frames but other features have {length}; "
                    "all features need the same number of frames."
                )
            values[name] = array
        if not length:
            raise errors.DatasetError(f"Episode {episode_index} has no frames; an episode needs at least one frame.")
        return values

    def _episode_stats(self, values: Mapping[str, np.ndarray]) -> dict[str, episode_stats.Stats]:
        quantiles = self.version == info_lib.V30
        stats = {}
        for name, spec in self.features.items():
            if spec["dtype"] in info_lib.CAMERA_DTYPES:
                stats[name] = episode_stats.image_stats(values[name], with_quantiles=quantiles)
            elif spec["dtype"] != "string":
                stats[name] = episode_stats.feature_stats(values[name], with_quantiles=quantiles)
        return stats

    # ------------------------------------------------------------------------------------------- v3.0
    def _write_v30(self, record: dict[str, Any], table: pa.Table, values: Mapping[str, np.ndarray]) -> None:
        limit = self.data_files_size_in_mb * 1024 * 1024
        if self._data_writer is not None and self._data_bytes + table.nbytes > limit:
            self._data_writer.close()
            self._data_writer = None
            self._data_pos = self._next_pos(self._data_pos)
        if self._data_writer is None:
            chunk, file = self._data_pos
            path = self.staging / info_lib.V30_DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(path, self.schema, compression="snappy")
            self._data_bytes = 0
        self._data_writer.write_table(table)
        self._data_bytes += table.nbytes
        record["data/chunk_index"], record["data/file_index"] = self._data_pos

        video_limit = self.video_files_size_in_mb * 1024 * 1024
        for key in self.video_keys:
            episode_file = self.staging / ".episode_videos" / f"{key}.mp4"
            encoder = self._new_encoder(key, episode_file)
            try:
                encoder.add(values[key])
            finally:
                encoder.close()
            output = self._videos.get(key)
            if output is not None and output.bytes_written >= video_limit:
                output.close()
                del self._videos[key]
                self._video_pos[key] = self._next_pos(self._video_pos[key])
                output = None
            if output is None:
                chunk, file = self._video_pos[key]
                path = self.staging / info_lib.V30_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                output = self._videos[key] = video_lib.VideoConcatenator(path)
            start, end = output.append(episode_file, record["length"], self.fps)
            episode_file.unlink()
            record[f"videos/{key}/chunk_index"], record[f"videos/{key}/file_index"] = self._video_pos[key]
            record[f"videos/{key}/from_timestamp"] = start
            record[f"videos/{key}/to_timestamp"] = end

    def _next_pos(self, pos: tuple[int, int]) -> tuple[int, int]:
        chunk, file = pos
        file += 1
        if file >= self.chunks_size:
            chunk, file = chunk + 1, 0
        return chunk, file

    def _new_encoder(self, key: str, path: pathlib.Path) -> video_lib.VideoEncoder:
        height, width, _ = self.features[key]["shape"]
        return video_lib.VideoEncoder(path, fps=self.fps, height=height, width=width, encoding=self.video_encoding)

    # ------------------------------------------------------------------------------------------- v2.1
    def _write_v21(self, record: dict[str, Any], table: pa.Table, values: Mapping[str, np.ndarray]) -> None:
        ep = record["episode_index"]
        chunk = ep // self.chunks_size
        path = self.staging / info_lib.V21_DATA_PATH.format(episode_chunk=chunk, episode_index=ep)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")
        for key in self.video_keys:
            video_path = self.staging / info_lib.V21_VIDEO_PATH.format(
                episode_chunk=chunk, video_key=key, episode_index=ep
            )
            encoder = self._new_encoder(key, video_path)
            try:
                encoder.add(values[key])
            finally:
                encoder.close()

    # ----------------------------------------------------------------------------------------- finalize
    def _close_files(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for output in self._videos.values():
            output.close()
        self._videos = {}
        shutil.rmtree(self.staging / ".episode_videos", ignore_errors=True)

    def finalize(self) -> reader.LeRobotDataset:
        """Writes meta/ (info, tasks, episodes, stats), moves the dataset to `root` and opens it."""
        if self._finalized:
            raise errors.DatasetError(f"The writer for {self.root} is already finalized or aborted.")
        if not self.episodes:
            self.abort()
            raise errors.DatasetError(f"No episode was added to {self.root}; add at least one before finalize().")
        try:
            self._close_files()
            tasks = {index: task for task, index in self.tasks.items()}
            write_meta(self.staging, self.build_info(), tasks, self.episodes)
            publish_dir(self.staging, self.root, overwrite=self.overwrite)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._finalized = True
            raise
        self._finalized = True
        return reader.LeRobotDataset.open(self.root)

    def build_info(self) -> dict[str, Any]:
        features = copy.deepcopy(self.features)
        for key in self.video_keys:
            height, width, channels = features[key]["shape"]
            features[key]["info"] = {
                "video.height": height,
                "video.width": width,
                "video.codec": self.video_encoding.info_codec,
                "video.pix_fmt": self.video_encoding.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": self.fps,
                "video.channels": channels,
                "has_audio": False,
            }
        return make_info(
            version=self.version,
            robot_type=self.robot_type,
            fps=self.fps,
            features=features,
            num_episodes=len(self.episodes),
            num_frames=self.num_frames,
            num_tasks=len(self.tasks),
            chunks_size=self.chunks_size,
            data_files_size_in_mb=self.data_files_size_in_mb,
            video_files_size_in_mb=self.video_files_size_in_mb,
        )


def make_info(
    *,
    version: str,
    robot_type: str | None,
    fps: int,
    features: dict[str, Any],
    num_episodes: int,
    num_frames: int,
    num_tasks: int,
    chunks_size: int = info_lib.DEFAULT_CHUNKS_SIZE,
    data_files_size_in_mb: float = info_lib.DEFAULT_DATA_FILE_SIZE_MB,
    video_files_size_in_mb: float = info_lib.DEFAULT_VIDEO_FILE_SIZE_MB,
) -> dict[str, Any]:
    """info.json in the key order LeRobot writes for `version`."""
    has_video = any(f.get("dtype") == "video" for f in features.values())
    info: dict[str, Any] = {
        "codebase_version": version,
        "robot_type": robot_type,
        "total_episodes": num_episodes,
        "total_frames": num_frames,
        "total_tasks": num_tasks,
    }
    if version == info_lib.V21:
        info["total_videos"] = num_episodes * len(info_lib.camera_keys(features, "video"))
        info["total_chunks"] = (num_episodes + chunks_size - 1) // chunks_size if num_episodes else 0
        info["chunks_size"] = chunks_size
        info["fps"] = fps
        info["splits"] = {"train": f"0:{num_episodes}"}
        info["data_path"] = info_lib.V21_DATA_PATH
        info["video_path"] = info_lib.V21_VIDEO_PATH if has_video else None
    else:
        info["chunks_size"] = chunks_size
        info["data_files_size_in_mb"] = data_files_size_in_mb
        info["video_files_size_in_mb"] = video_files_size_in_mb
        info["fps"] = fps
        info["splits"] = {"train": f"0:{num_episodes}"}
        info["data_path"] = info_lib.V30_DATA_PATH
        info["video_path"] = info_lib.V30_VIDEO_PATH if has_video else None
    info["features"] = features
    return info


def write_meta(root: pathlib.Path, info: dict[str, Any], tasks: Mapping[int, str], episodes: list[dict]) -> None:
    """Writes meta/ for `episodes` (records with length, tasks, stats and, for v3.0, file locations)."""
    version = info["codebase_version"]
    if version == info_lib.V21:
        lines = [json.dumps({"task_index": i, "task": t}) for i, t in sorted(tasks.items())]
        info_lib.write_bytes_atomic(root / info_lib.V21_TASKS_PATH, ("\n".join(lines) + "\n").encode())
        lines = [
            json.dumps({"episode_index": e["episode_index"], "tasks": e["tasks"], "length": e["length"]})
            for e in episodes
        ]
        info_lib.write_bytes_atomic(root / info_lib.V21_EPISODES_PATH, ("\n".join(lines) + "\n").encode())
        lines = [
            json.dumps({"episode_index": e["episode_index"], "stats": episode_stats.to_json(e["stats"])})
            for e in episodes
        ]
        info_lib.write_bytes_atomic(root / info_lib.V21_EPISODES_STATS_PATH, ("\n".join(lines) + "\n").encode())
    else:
        write_v30_tasks(root / info_lib.V30_TASKS_PATH, tasks)
        write_v30_episodes(root, episodes)
        aggregated = episode_stats.aggregate([e["stats"] for e in episodes])
        info_lib.write_json_atomic(root / info_lib.STATS_PATH, episode_stats.to_json(aggregated))
    info_lib.write_json_atomic(root / info_lib.INFO_PATH, info)


def write_parquet_atomic(table: pa.Table, path: pathlib.Path, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp, **kwargs)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_v30_tasks(path: pathlib.Path, tasks: Mapping[int, str]) -> None:
    """meta/tasks.parquet as LeRobot writes it: a pandas frame indexed by the task string."""
    ordered = sorted(tasks.items())
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object"},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    for column in pandas_meta["columns"]:
        column["metadata"] = None
    table = pa.table(
        {
            "task_index": pa.array([i for i, _ in ordered], type=pa.int64()),
            "__index_level_0__": pa.array([t for _, t in ordered], type=pa.large_string()),
        }
    ).replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    write_parquet_atomic(table, path)


def episode_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One row of meta/episodes/*.parquet: identity, locations, then `stats/<feature>/<stat>` columns."""
    row = {k: v for k, v in record.items() if k != "stats"}
    for key, stats in record["stats"].items():
        for name, value in stats.items():
            row[f"stats/{key}/{name}"] = np.asarray(value).tolist()
    row["meta/episodes/chunk_index"] = 0
    row["meta/episodes/file_index"] = 0
    return row


def write_v30_episodes(root: pathlib.Path, episodes: list[dict[str, Any]]) -> None:
    rows = [episode_row(e) for e in episodes]
    # Keep the stats every episode has (merged v2.1 episodes lack the quantiles): no null stats cells.
    shared = set.intersection(*(set(r) for r in rows)) if rows else set()
    extra = dict.fromkeys(k for r in rows for k in r if k not in shared and not k.startswith("stats/"))
    keys = [k for k in rows[0] if k in shared] + list(extra) if rows else []
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    write_parquet_atomic(table, root / info_lib.V30_EPISODES_PATH.format(chunk_index=0, file_index=0))
